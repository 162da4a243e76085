#!/usr/bin/env bash
# The seldon-core environments CI runs (issue 12): a user's requirements.txt with seldon-core
# must leave a working server. For each version: a fresh venv, fastseldon installed from this
# tree, *then* `pip install seldon-core==VERSION` (which pins protobuf, numpy<2 and, for 1.17,
# prometheus_client<0.9 below what fastseldon would pick), then the Seldon REST and gRPC server
# tests, whose models include one subclassing the real SeldonComponent and returning
# SeldonResponse. The native codec, built against numpy 2, must load on the numpy 1.26
# seldon-core leaves (FASTSELDON_REQUIRE_EXT=1).
#
#   bash tests/seldon-core-envs.sh [1.17.1] [1.19.0]     (default: both)
#
# Every environment runs on one Python 3.12 (pyenv's or python3.12 on PATH; 1.19 needs it, 1.17
# installs there too), so fastseldon's wheel, native codec included, is built once (pip wheel
# --no-deps) and installed in each venv; without 3.12 a 1.17.x environment runs on python3 (its
# own wheel). pip installs with --no-compile (byte-compiling every installed module was most of
# an install's time; the tests compile what they import) and its cache is the user's, as for any
# install. Each environment says how long it took.
# Venvs go under $FASTSELDON_SELDON_ENVS (default: a temporary folder, removed afterwards); each
# run clears them and builds the wheel anew.
set -euo pipefail
cd "$(dirname "$0")/.."

versions=("$@")
[ "${#versions[@]}" -eq 0 ] && versions=(1.17.1 1.19.0)
root="${FASTSELDON_SELDON_ENVS:-$(mktemp -d)}"
[ -n "${FASTSELDON_SELDON_ENVS:-}" ] || trap 'rm -rf "$root"' EXIT
wheels="$root/wheels"
rm -rf "$wheels"
mkdir -p "$wheels"

python312() {
    if command -v pyenv >/dev/null 2>&1; then
        local found
        found="$(find "$(pyenv root)/versions" -maxdepth 3 -path '*/3.12*/bin/python3.12' 2>/dev/null | sort | tail -n 1)"
        [ -n "$found" ] && { echo "$found"; return 0; }
    fi
    command -v python3.12
}

# fastseldon's wheel for the venv's Python: built by the first venv of that Python, reused by the others
wheel_for() {
    local python="$1" tag found
    tag="$("$python" -c 'import sys; print(f"cp{sys.version_info.major}{sys.version_info.minor}")')"
    found="$(find "$wheels" -name "fastseldon-*-$tag-*.whl" | head -n 1)"
    if [ -z "$found" ]; then
        local start=$SECONDS
        "$python" -m pip wheel -q . --no-deps -w "$wheels" >&2
        found="$(find "$wheels" -name "fastseldon-*-$tag-*.whl" | head -n 1)"
        [ -n "$found" ] || { echo "no fastseldon wheel for $tag in $wheels" >&2; return 1; }
        echo "   built $(basename "$found") in $((SECONDS - start)) s" >&2
    fi
    echo "$found"
}

summary=()
for version in "${versions[@]}"; do
    start=$SECONDS
    if ! py="$(python312)"; then
        case "$version" in
            1.19*) echo "seldon-core $version needs Python 3.12" >&2; exit 1 ;;
            *) py=python3 ;;
        esac
    fi
    venv="$root/seldon-core-$version"
    echo "== seldon-core $version ($("$py" --version)): fastseldon first, then seldon-core==$version"
    "$py" -m venv --clear "$venv"
    wheel="$(wheel_for "$venv/bin/python")"
    "$venv/bin/python" -m pip install -q --no-compile "$wheel" pytest requests
    "$venv/bin/python" -m pip install -q --no-compile "seldon-core==$version"
    "$venv/bin/python" -c 'import google.protobuf as p, numpy as n, seldon_core.version as s
from importlib.metadata import version
m = version("prometheus_client")
print(f"   seldon-core {s.__version__}, protobuf {p.__version__}, numpy {n.__version__}, prometheus_client {m}")'
    # run from a folder outside the tree, so `import fastseldon` is the installed package
    (cd tests && FASTSELDON_REQUIRE_EXT=1 "$venv/bin/python" -c 'import fastseldon.codec as c; assert c.IMPLEMENTATION == "native", c.IMPLEMENTATION; print("   codec:", c.IMPLEMENTATION)')
    installed=$((SECONDS - start))
    (cd tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir=. -c /dev/null \
        server/test_seldon_rest.py server/test_seldon_grpc.py)
    took="seldon-core $version: $((SECONDS - start)) s ($installed s venv and installs, $((SECONDS - start - installed)) s tests)"
    echo "== $took"
    summary+=("$took")
done
printf '== %s\n' "${summary[@]}"
