#!/usr/bin/env bash
# The seldon-core environments CI runs (issue 12): a user's requirements.txt with seldon-core
# must leave a working server. For each version: a fresh venv, fastseldon installed from this
# tree, *then* `pip install seldon-core==VERSION` (which pins protobuf and numpy<2 below what
# fastseldon would pick), then the Seldon REST and gRPC server tests, whose models include one
# subclassing the real SeldonComponent and returning SeldonResponse. The native codec, built
# against numpy 2, must load on the numpy 1.26 seldon-core leaves (FASTSELDON_REQUIRE_EXT=1).
#
#   bash tests/seldon-core-envs.sh [1.17.1] [1.19.0]     (default: both)
#
# 1.17.x runs on this Python; 1.19 needs Python >= 3.12 (pyenv's or python3.12 on PATH).
# Venvs go under $FASTSELDON_SELDON_ENVS (default: a temporary folder, removed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."

versions=("$@")
[ "${#versions[@]}" -eq 0 ] && versions=(1.17.1 1.19.0)
root="${FASTSELDON_SELDON_ENVS:-$(mktemp -d)}"
[ -n "${FASTSELDON_SELDON_ENVS:-}" ] || trap 'rm -rf "$root"' EXIT

python312() {
    if command -v pyenv >/dev/null 2>&1; then
        local found
        found="$(find "$(pyenv root)/versions" -maxdepth 3 -path '*/3.12*/bin/python3.12' 2>/dev/null | sort | tail -n 1)"
        [ -n "$found" ] && { echo "$found"; return 0; }
    fi
    command -v python3.12
}

for version in "${versions[@]}"; do
    start=$SECONDS
    case "$version" in
        1.19*) py="$(python312)" || { echo "seldon-core $version needs Python 3.12" >&2; exit 1; } ;;
        *) py=python3 ;;
    esac
    venv="$root/seldon-core-$version"
    echo "== seldon-core $version ($("$py" --version)): fastseldon first, then seldon-core==$version"
    "$py" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    "$venv/bin/python" -m pip install -q . pytest requests
    "$venv/bin/python" -m pip install -q "seldon-core==$version"
    "$venv/bin/python" -c 'import google.protobuf as p, numpy as n, seldon_core.version as s; print(f"   seldon-core {s.__version__}, protobuf {p.__version__}, numpy {n.__version__}")'
    # run from a folder outside the tree, so `import fastseldon` is the installed package
    (cd tests && FASTSELDON_REQUIRE_EXT=1 "$venv/bin/python" -c 'import fastseldon.codec as c; assert c.IMPLEMENTATION == "native", c.IMPLEMENTATION; print("   codec:", c.IMPLEMENTATION)')
    (cd tests && "$venv/bin/python" -m pytest -q -p no:cacheprovider --rootdir=. -c /dev/null \
        server/test_seldon_rest.py server/test_seldon_grpc.py)
    echo "== seldon-core $version: $((SECONDS - start)) s"
done
