#!/usr/bin/env bash
# Install what the benchmark harness needs, outside the project's own environment.
#
#   bash benchmarks/setup.sh [tools] [plots] [seldon-core] [mlserver] [kserve] [bentoml] [profile]   (no argument: all)
#
# tools        wrk (HTTP/1.1 keep-alive load) and h2load (gRPC load over HTTP/2), from Debian.
# plots        benchmarks/requirements.txt (matplotlib, requests, pyyaml) into the *current* Python: the harness
#              itself runs there; fastseldon never imports matplotlib.
# seldon-core  seldon-core==1.19.0 in its own Python 3.12 venv (1.19 requires Python >= 3.12).
# mlserver     mlserver==1.7.1 in its own venv. With uvloop 0.23 its multi-process mode
#              (parallel_workers >= 1, the default) dies at start: the inference worker calls
#              asyncio.get_event_loop() with no loop set and uvloop 0.23 raises "There is no
#              current event loop in thread 'MainThread'". uvloop is pinned below 0.22 there
#              (MLSERVER_UVLOOP); with one worker the harness runs it with parallel_workers=0
#              (inference in the server process, one process like the other servers).
# kserve       kserve==0.21.0 (its python model server: FastAPI/uvicorn REST, grpc.aio gRPC) in its own venv.
# bentoml      bentoml==1.4.40 in its own venv.
# profile      py-spy in its own venv, for `python -m benchmarks profile`.
#
# Venvs live under $FASTSELDON_BENCH_CACHE (default: .bench-cache/ at the repository root).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
CACHE="${FASTSELDON_BENCH_CACHE:-$ROOT/.bench-cache}"
SELDON_VERSION="1.19.0"
MLSERVER_VERSION="1.7.1"
MLSERVER_UVLOOP="${MLSERVER_UVLOOP:-uvloop<0.22}"
KSERVE_VERSION="0.21.0"
BENTOML_VERSION="1.4.40"
PY="${PYTHON:-python3}"

steps=("$@")
[ "${#steps[@]}" -eq 0 ] && steps=(tools plots seldon-core mlserver kserve bentoml profile)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

find_python312() {
    # pyenv first (its root, not a fixed path), then whatever python3.12 is on PATH.
    if command -v pyenv >/dev/null 2>&1; then
        local root
        root="$(pyenv root)"
        for cand in "$root"/versions/3.12*/bin/python3.12; do
            [ -x "$cand" ] && { echo "$cand"; return 0; }
        done
    fi
    command -v python3.12 2>/dev/null && return 0
    return 1
}

make_venv() {  # make_venv DIR PYTHON PACKAGES...
    local dir="$1" python="$2"; shift 2
    if [ ! -x "$dir/bin/python" ]; then
        "$python" -m venv "$dir"
    fi
    "$dir/bin/python" -m pip install -q --upgrade pip
    "$dir/bin/python" -m pip install -q "$@"
}

for step in "${steps[@]}"; do
    case "$step" in
    tools)
        if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
            as_root apt-get update -qq
            DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq wrk nghttp2-client >/dev/null
        fi
        echo "tools: $(command -v wrk) $(command -v h2load)"
        ;;
    plots)
        "$PY" -m pip install -q -r "$HERE/requirements.txt"
        echo "plots: matplotlib in $("$PY" -c 'import sys; print(sys.prefix)')"
        ;;
    seldon-core)
        py312="$(find_python312)" || { echo "seldon-core: no Python 3.12 found (pyenv or PATH)" >&2; exit 1; }
        make_venv "$CACHE/seldon-core" "$py312" "seldon-core==$SELDON_VERSION" numpy
        echo "seldon-core: $CACHE/seldon-core/bin/seldon-core-microservice"
        ;;
    mlserver)
        make_venv "$CACHE/mlserver" "$PY" "mlserver==$MLSERVER_VERSION" "$MLSERVER_UVLOOP" numpy
        echo "mlserver: $CACHE/mlserver/bin/mlserver"
        ;;
    kserve)
        make_venv "$CACHE/kserve" "$PY" "kserve==$KSERVE_VERSION" numpy
        echo "kserve: $CACHE/kserve/bin/python (models/kserve_model.py)"
        ;;
    bentoml)
        make_venv "$CACHE/bentoml" "$PY" "bentoml==$BENTOML_VERSION" numpy
        echo "bentoml: $CACHE/bentoml/bin/bentoml"
        ;;
    profile)
        make_venv "$CACHE/tools" "$PY" py-spy
        echo "profile: $CACHE/tools/bin/py-spy"
        ;;
    *)
        echo "unknown step: $step (tools, plots, seldon-core, mlserver, kserve, bentoml, profile)" >&2
        exit 2
        ;;
    esac
done
