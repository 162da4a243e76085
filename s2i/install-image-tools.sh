#!/bin/bash
# Installs what s2i/test-images.sh needs to build and run images without a Docker daemon
# (Debian/Ubuntu packages): podman and buildah (the engines), runc (the OCI runtime the
# script configures; crun fails on hybrid-cgroup kernels such as CI's), mmdebstrap (the
# stand-in base image when no registry can be reached). Uses sudo unless already root;
# installs only what is missing, so it is safe to run again.
set -euo pipefail

missing=()
for tool in podman buildah runc mmdebstrap; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if [ "${#missing[@]}" -eq 0 ]; then
    echo "image tools present: podman, buildah, runc, mmdebstrap"
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install-image-tools.sh: no apt-get on this machine; install by hand: ${missing[*]}" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

echo "installing image tools: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
# with podman's recommended packages (the CNI plugins for its default network, uidmap, ...)
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
echo "image tools installed: ${missing[*]}"
