#!/bin/bash
# Build a stand-in for docker.io/library/python:3.11-slim-bookworm from Debian packages, for
# machines that reach Debian's archive but no container registry (CI here). The builders'
# FROM then resolves to it. Cached: an image that already carries this recipe's key is
# reused; a real image of that name (no stand-in label) is left alone and used as is.
#
#   s2i/standin-base.sh [IMAGE]     (default docker.io/library/python:3.11-slim-bookworm)
#
# Needs root, mmdebstrap and podman. Every difference from the real image is listed in
# s2i/README.md ("The stand-in base"): Debian's python3.11 under /usr instead of CPython
# built under /usr/local, python3-dev and python-is-python3 installed, this machine's extra
# CA certificates trusted (and pip told to use the system bundle), apt's Release-date checks
# off (as on this machine).
#   FASTSELDON_STANDIN_REBUILD=1    build it again even when the cached one matches
#   FASTSELDON_DEBIAN_MIRROR        Debian mirror (default http://deb.debian.org)
set -euo pipefail

IMAGE=${1:-docker.io/library/python:3.11-slim-bookworm}
MIRROR=${FASTSELDON_DEBIAN_MIRROR:-http://deb.debian.org}
PODMAN=${PODMAN:-podman}
LABEL=io.fastseldon.standin
PACKAGES=python3,python3-venv,python3-pip,python3-dev,python-is-python3,ca-certificates
EXTRA_CA_DIR=/usr/local/share/ca-certificates

say() { echo "standin-base: $*" >&2; }
die() { echo "standin-base: error: $*" >&2; exit 1; }

command -v mmdebstrap >/dev/null || die "mmdebstrap not installed (apt-get install mmdebstrap)"
command -v "$PODMAN" >/dev/null || die "$PODMAN not installed (apt-get install podman)"

# The recipe. Its key (a hash of these settings and of the CA certificates that go into the
# image, not of this file's comments) labels the image; a stand-in with another key is rebuilt.
# The hooks run in mmdebstrap's shell, where $1 is the new root: single quotes are meant.
# shellcheck disable=SC2016
options=(
    --variant=minbase --include="$PACKAGES"
    --aptopt='Acquire::Check-Valid-Until "false"'
    # as Debian's slim images: no manuals, info pages, translations or docs (copyrights kept)
    --dpkgopt='path-exclude=/usr/share/man/*'
    --dpkgopt='path-exclude=/usr/share/info/*'
    --dpkgopt='path-exclude=/usr/share/locale/*'
    --dpkgopt='path-exclude=/usr/share/doc/*'
    --dpkgopt='path-include=/usr/share/doc/*/copyright'
    # this machine's extra CA certificates (an egress proxy's), so apt and pip in RUN steps trust it
    --customize-hook="if [ -d $EXTRA_CA_DIR ]; then cp -a $EXTRA_CA_DIR/. \"\$1$EXTRA_CA_DIR/\"; fi"
    --customize-hook='chroot "$1" update-ca-certificates --fresh >/dev/null'
    # pip's own certifi bundle knows nothing of them: point pip at the system bundle
    --customize-hook='printf "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n" > "$1/etc/pip.conf"'
    --customize-hook='rm -rf "$1/var/lib/apt/lists/"* "$1/var/cache/apt/"*.bin "$1/var/log/"*.log'
)
sources=(
    "deb $MIRROR/debian bookworm main"
    "deb $MIRROR/debian bookworm-updates main"
    "deb $MIRROR/debian-security bookworm-security main"
)
changes=(
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    --change 'ENV LANG=C.UTF-8'
    --change 'CMD ["python3"]'
)
key=$(
    {
        printf '%s\n' "${options[@]}" "${sources[@]}" "${changes[@]}"
        if [ -d "$EXTRA_CA_DIR" ]; then find "$EXTRA_CA_DIR" -type f -name '*.crt' -print0 | sort -z | xargs -0r cat; fi
    } | sha256sum | cut -c1-16
)

if "$PODMAN" image exists "$IMAGE"; then
    have=$("$PODMAN" image inspect --format "{{ index .Labels \"$LABEL\" }}" "$IMAGE" 2>/dev/null || true)
    if [ -z "$have" ] || [ "$have" = "<no value>" ]; then
        say "$IMAGE is here and is not a stand-in: using it as it is"
        exit 0
    fi
    if [ "$have" = "$key" ] && [ "${FASTSELDON_STANDIN_REBUILD:-}" != "1" ]; then
        say "$IMAGE: cached stand-in (key $key)"
        exit 0
    fi
    say "$IMAGE: stand-in of another recipe (key $have), building key $key"
fi

old_id=$("$PODMAN" image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
start=$SECONDS
say "building $IMAGE from Debian bookworm ($MIRROR): $PACKAGES"
mmdebstrap "${options[@]}" bookworm - "${sources[@]}" \
    | "$PODMAN" import "${changes[@]}" \
        --change "LABEL $LABEL=$key" \
        --change "LABEL io.fastseldon.standin.for=$IMAGE" \
        - "$IMAGE" >/dev/null
say "built $IMAGE (key $key) in $((SECONDS - start)) s"
# the previous stand-in, now without a name (kept while images built on it remain)
if [ -n "$old_id" ]; then "$PODMAN" rmi "$old_id" >/dev/null 2>&1 || true; fi
