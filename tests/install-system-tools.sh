#!/usr/bin/env bash
# Installs the system programs the test suite drives (Debian/Ubuntu packages; pip cannot
# provide them), so that `python -m pytest` finds them on PATH:
#   - package shellcheck: lints the s2i scripts (tests/server/test_s2i_images.py)
#   - package wrk: the HTTP/1.1 load generator of the benchmark harness and its smoke tests
#   - package nghttp2-client: h2load, the gRPC (HTTP/2) load generator of the same
# Uses sudo unless already root; installs only what is missing, so it is safe to run again.
set -euo pipefail

missing=()
command -v shellcheck >/dev/null || missing+=(shellcheck)
command -v wrk >/dev/null || missing+=(wrk)
command -v h2load >/dev/null || missing+=(nghttp2-client)
if [ "${#missing[@]}" -eq 0 ]; then
    echo "system tools present: shellcheck, wrk, h2load"
    exit 0
fi

if ! command -v apt-get >/dev/null; then
    echo "install-system-tools.sh: no apt-get on this machine; install by hand: ${missing[*]}" >&2
    exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi

echo "installing system tools: ${missing[*]}"
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system tools installed: ${missing[*]}"
