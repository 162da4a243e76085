#!/bin/bash
# Build fastseldon's s2i images for real with podman, run them, and check their answers.
#
#   s2i/test-images.sh            (from anywhere; needs root, podman, runc, mmdebstrap, and
#                                  this checkout installed in the current Python: pip install -e '.[test]')
#
# What it does, in order, timing each step:
#   1. the base image docker.io/library/python:3.11-slim-bookworm: used as it is when it is
#      here, else the stand-in s2i/standin-base.sh builds from Debian packages (cached);
#      FASTSELDON_PULL_BASE=1 pulls the real one instead
#   2. the CPU builder (s2i/cpu/Dockerfile) and the GPU builder with CUDA from PyPI
#      (s2i/gpu-pypi/Dockerfile); for each: `usage` names the tagged builder, every Python
#      package in it is pinned by s2i/constraints.txt; for the GPU one: its CUDA library
#      check passes, and fails once the cuDNN wheel is taken out
#   3. three app images with `fastseldon build --engine podman`: examples/identity (CPU), an
#      ONNX_MODEL source (--gpu: the PyPI-CUDA builder when the CUDA-base one is not here)
#      and a model with a requirements.txt (an sdist on a local index), built twice with
#      --incremental: the second build gets the first one's pip cache through save-artifacts
#      and does not build the sdist again; `fastseldon build`'s refusals (no interface
#      module; a builder image that is not here)
#   4. each app image as a container, as uid 1001 and as an arbitrary uid in group 0: Seldon
#      REST and gRPC, V2 REST and gRPC, metrics (tests/images/probe.py), `usage`, the source
#      label holds no path of this machine, SIGTERM (podman stop) ends it with status 0
#   5. Kubernetes: the executor image (s2i/executor/Dockerfile, `fastseldon graph` as its
#      entrypoint, on the CPU builder) and an app image holding a graph's units; `fastseldon k8s`
#      manifests of that graph, per-component and one-pod, played with `podman kube play`,
#      answering Seldon REST/gRPC and V2 as `fastseldon graph` does (tests/images/k8s_play.py)
#   6. the image sizes and the minutes each step took
#
# Podman runs with a containers.conf written here (runc, cgroupfs, default ulimits nofile
# 20000 and nproc 32768, which this kind of sandbox allows) unless CONTAINERS_CONF is set;
# RUN steps and containers use the host network. Images stay in podman's store, so a second
# run reuses the base, the builders' layers and the downloads.
#   FASTSELDON_IMAGES_KEEP=1     keep the work directory and the app images
#   FASTSELDON_OCI_RUNTIME       OCI runtime for the generated containers.conf (default runc)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PYTHON=${PYTHON:-python}
PODMAN=${PODMAN:-podman}
export PODMAN

say() { echo "== test-images: $*"; }
die() { echo "test-images: FAILED: $*" >&2; exit 1; }

missing=()
for tool in "$PODMAN" runc mmdebstrap; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
    die "not installed: ${missing[*]} (s2i/install-image-tools.sh installs them; .ci/run runs it)"
fi
"$PYTHON" -c 'import fastseldon, grpc, numpy, onnx, requests' 2>/dev/null \
    || die "$PYTHON cannot import fastseldon and the test packages: pip install -e '.[test,onnx]'"
VERSION=$("$PYTHON" -c 'import fastseldon; print(fastseldon.__version__)')
BASE=docker.io/library/python:3.11-slim-bookworm
CPU=fastseldon/s2i-cpu:$VERSION
EXECUTOR=localhost/fastseldon/executor:$VERSION
GPU=fastseldon/s2i-gpu-pypi:$VERSION
APP=localhost/fastseldon-test

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fastseldon-images.XXXXXX")
containers=()
index_pid=
remove_apps() {
    local app
    for app in identity onnx reqs k8s; do "$PODMAN" rmi -f "$APP/$app:$VERSION" >/dev/null 2>&1 || true; done
}
cleanup() {
    local status=$?
    for c in "${containers[@]}"; do "$PODMAN" rm -f -t 0 "$c" >/dev/null 2>&1 || true; done
    if [ -n "$index_pid" ]; then kill "$index_pid" 2>/dev/null || true; fi
    if [ "${FASTSELDON_IMAGES_KEEP:-}" = "1" ]; then
        echo "test-images: kept $WORK"
    else
        remove_apps
        rm -rf "$WORK"  # last: it holds the containers.conf podman runs with
    fi
    exit "$status"
}
trap cleanup EXIT

if [ -z "${CONTAINERS_CONF:-}" ]; then
    cat >"$WORK/containers.conf" <<EOF
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
runtime = "${FASTSELDON_OCI_RUNTIME:-runc}"
cgroup_manager = "cgroupfs"
events_logger = "file"
EOF
    export CONTAINERS_CONF=$WORK/containers.conf
fi
say "$("$PODMAN" --version), runtime $("$PODMAN" info --format '{{.Host.OCIRuntime.Name}}'), storage $("$PODMAN" info --format '{{.Store.GraphDriverName}}'), CONTAINERS_CONF=$CONTAINERS_CONF"

image_id() { "$PODMAN" image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }
# After a rebuild, the image a tag pointed to before is left without a name: remove it (and
# with it the layers no other image uses), so repeated runs do not fill the disk. Images
# that still have children or containers stay.
retire() {  # tag, id it had before
    local now
    now=$(image_id "$1")
    if [ -n "$2" ] && [ "$2" != "$now" ]; then "$PODMAN" rmi "$2" >/dev/null 2>&1 || true; fi
}

timings=()
step_start=0
step() { step_name=$1; step_start=$SECONDS; say "$step_name"; }
step_done() { timings+=("$(printf '%-60s %4d s' "$step_name" $((SECONDS - step_start)))"); }
run_start=$SECONDS

# app images of an earlier run (FASTSELDON_IMAGES_KEEP=1) would keep the builders they were
# built on from being removed when those are rebuilt
remove_apps

# ---------------------------------------------------------------- 1. the base
step "base image $BASE"
if [ "${FASTSELDON_PULL_BASE:-}" = "1" ]; then
    "$PODMAN" pull "$BASE"
else
    s2i/standin-base.sh "$BASE"
fi
step_done

# ---------------------------------------------------------------- 2. the builders
check_builder() {  # image: usage names it with its tag; every Python package is pinned
    local image=$1 out
    out=$("$PODMAN" run --rm --network none "$image")
    grep -qF "s2i build <source dir or git URL> $image my-model:latest" <<<"$out" \
        || die "usage of $image does not name $image:"$'\n'"$out"
    "$PODMAN" run --rm --network none "$image" pip list --format=freeze >"$WORK/freeze.txt"
    "$PYTHON" tests/images/probe.py pins s2i/constraints.txt "$WORK/freeze.txt" || die "$image holds unpinned packages"
    say "$image: usage names it; every package pinned by s2i/constraints.txt"
}

step "CPU builder $CPU"
# the codec's build stage (the same in both builders' Dockerfiles), tagged so that its
# cached layers stay and its previous version can be removed
STAGE=$APP/codec-build:$VERSION
before=$(image_id "$STAGE")
"$PODMAN" build --network host -f s2i/cpu/Dockerfile --target build -t "$STAGE" .
retire "$STAGE" "$before"
before=$(image_id "$CPU")
"$PODMAN" build --network host -f s2i/cpu/Dockerfile -t "$CPU" .
retire "$CPU" "$before"
check_builder "$CPU"
step_done

step "GPU builder, CUDA from PyPI, $GPU"
before=$(image_id "$GPU")
"$PODMAN" build --network host -f s2i/gpu-pypi/Dockerfile -t "$GPU" .
retire "$GPU" "$before"
check_builder "$GPU"
CHECK=/usr/local/libexec/fastseldon/check_onnxruntime_gpu.py
"$PODMAN" run --rm --network none "$GPU" python "$CHECK" --verbose || die "the CUDA library check fails in $GPU"
# the classic silent CPU fall-back: a cuDNN that is not there. The check must catch it.
if "$PODMAN" run --rm --network none "$GPU" sh -c "pip uninstall -y -q nvidia-cudnn-cu12 && exec python $CHECK" \
    >"$WORK/nocudnn.out" 2>"$WORK/nocudnn.err"; then
    cat "$WORK/nocudnn.out" "$WORK/nocudnn.err"
    die "the CUDA library check passed without the cuDNN wheel"
fi
grep -q 'libcudnn.so.9 does not resolve.*nvidia-cudnn-cu12' "$WORK/nocudnn.err" \
    || { cat "$WORK/nocudnn.err"; die "the check failed without cuDNN, but did not say libcudnn.so.9 / nvidia-cudnn-cu12"; }
say "without nvidia-cudnn-cu12 the check fails as it should: $(grep -m1 libcudnn "$WORK/nocudnn.err")"
step_done

# ---------------------------------------------------------------- 3. the app images
step "app images with fastseldon build"
port=$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$PYTHON" tests/images/probe.py sources "$WORK/sources" --index-url "http://127.0.0.1:$port/simple/"
"$PYTHON" -m http.server "$port" --bind 127.0.0.1 --directory "$WORK/sources/index" >"$WORK/index.log" 2>&1 &
index_pid=$!
build() {  # log name, then fastseldon build arguments
    local log=$WORK/build-$1.log
    shift
    if ! "$PYTHON" -m fastseldon build "$@" --engine podman --network host >"$log" 2>&1; then
        cat "$log"
        die "fastseldon build $*"
    fi
    grep '^fastseldon build:' "$log" | grep -v '^fastseldon build: running:' || true
}

mkdir -p "$WORK/empty"
if "$PYTHON" -m fastseldon build "$WORK/empty" "$APP/none:1" --engine podman >"$WORK/refuse.log" 2>&1 \
    || ! grep -q 'neither MyModel.py' "$WORK/refuse.log"; then
    cat "$WORK/refuse.log"
    die "fastseldon build did not refuse a source with neither MyModel.py nor ONNX_MODEL"
fi
if "$PYTHON" -m fastseldon build examples/identity "$APP/none:1" --cpu --engine podman \
    --builder localhost/fastseldon/absent:0 --pull never >"$WORK/absent.log" 2>&1 \
    || ! grep -q 'is not here' "$WORK/absent.log"; then
    cat "$WORK/absent.log"
    die "fastseldon build did not stop on a builder image that is not here"
fi
say "refused: an empty source; a builder image that is not here"

build identity examples/identity "$APP/identity:$VERSION" --cpu
build onnx "$WORK/sources/onnx" "$APP/onnx:$VERSION" --gpu
if ! "$PODMAN" image exists "fastseldon/s2i-gpu:$VERSION"; then
    grep -q "using $GPU" "$WORK/build-onnx.log" || die "fastseldon build --gpu did not take $GPU when the CUDA-base builder is not here"
fi
"$PODMAN" rmi -f "$APP/reqs:$VERSION" >/dev/null 2>&1 || true
build reqs-1 "$WORK/sources/reqs" "$APP/reqs:$VERSION" --incremental
grep -q 'Building wheel for tinyscale' "$WORK/build-reqs-1.log" || die "the first build did not build tinyscale's wheel"
before=$(image_id "$APP/reqs:$VERSION")
build reqs-2 "$WORK/sources/reqs" "$APP/reqs:$VERSION" --incremental
retire "$APP/reqs:$VERSION" "$before"
grep -q "save-artifacts go to /tmp/artifacts" "$WORK/build-reqs-2.log" || die "the incremental build did not run save-artifacts"
grep -q 'Restoring the pip cache from the previous build' "$WORK/build-reqs-2.log" || die "assemble did not restore the pip cache"
if grep -q 'Building wheel for tinyscale' "$WORK/build-reqs-2.log"; then
    die "the incremental build built tinyscale again instead of using the saved wheel"
fi
say "incremental: the second build reused the first one's wheel ($(grep -m1 -o 'Using cached tinyscale[^ ]*' "$WORK/build-reqs-2.log" || echo 'cached'))"
step_done

# ---------------------------------------------------------------- 4. the containers
free_ports() {
    "$PYTHON" - <<'EOF'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*(s.getsockname()[1] for s in socks))
EOF
}

serve_and_check() {  # case image user
    local case=$1 image=$2 user=$3 name http grpc metrics status
    name=fastseldon-test-$case-$$-${user%%:*}
    read -r http grpc metrics < <(free_ports)
    containers+=("$name")
    "$PODMAN" run -d --name "$name" --network host ${user:+--user "$user"} \
        -e PREDICTIVE_UNIT_HTTP_SERVICE_PORT="$http" -e PREDICTIVE_UNIT_GRPC_SERVICE_PORT="$grpc" \
        -e PREDICTIVE_UNIT_METRICS_SERVICE_PORT="$metrics" "$image" >/dev/null
    if ! "$PYTHON" tests/images/probe.py check "$case" --http "$http" --grpc "$grpc" --metrics "$metrics"; then
        "$PODMAN" logs "$name" | tail -40
        die "$image ($case) as user ${user:-1001}"
    fi
    local ids
    ids="$("$PODMAN" exec "$name" id -u):$("$PODMAN" exec "$name" id -g)"
    [ "$ids" = "${user:-1001:0}" ] || die "$image runs as $ids, expected ${user:-1001:0}"
    "$PODMAN" stop -t 30 "$name" >/dev/null
    status=$("$PODMAN" inspect --format '{{.State.ExitCode}}' "$name")
    if [ "$status" != "0" ]; then
        "$PODMAN" logs "$name" | tail -40
        die "$image ($case) exited with status $status on SIGTERM"
    fi
    say "$image as uid:gid $ids: REST, gRPC, V2, metrics answer; SIGTERM -> exit status 0"
    "$PODMAN" rm "$name" >/dev/null
}

step "containers: answers, users, usage, labels, SIGTERM"
for case in identity onnx reqs; do
    image=$APP/$case:$VERSION
    [ "$("$PODMAN" image inspect --format '{{.Config.User}}' "$image")" = "1001" ] || die "$image does not run as 1001"
    serve_and_check "$case" "$image" ""
    serve_and_check "$case" "$image" "1000321:0"
    "$PODMAN" run --rm --network none "$image" /usr/libexec/s2i/usage | grep -q '^fastseldon s2i builder' \
        || die "usage does not run in $image"
    labels=$("$PODMAN" image inspect --format '{{json .Labels}}' "$image")
    if grep -qF "$ROOT" <<<"$labels" || grep -qF "$WORK" <<<"$labels"; then
        die "$image's labels hold a path of this machine: $labels"
    fi
    say "$image: usage runs; labels $("$PYTHON" -c 'import json, sys; d = json.loads(sys.argv[1]); print({k: v for k, v in d.items() if "s2i.build" in k})' "$labels")"
done
step_done

# ---------------------------------------------------------------- 5. Kubernetes manifests, played
step "fastseldon k8s: the executor image, a graph's units, podman kube play"
before=$(image_id "$EXECUTOR")
"$PODMAN" build --network host -f s2i/executor/Dockerfile --build-arg BUILDER_IMAGE="$CPU" -t "$EXECUTOR" .
retire "$EXECUTOR" "$before"
"$PYTHON" tests/images/k8s_play.py source "$WORK/sources/k8s"
build k8s "$WORK/sources/k8s" "$APP/k8s:$VERSION" --cpu
"$PYTHON" tests/images/k8s_play.py play --units-image "$APP/k8s:$VERSION" --executor-image "$EXECUTOR" \
    --work "$WORK/k8s" || die "fastseldon k8s manifests under podman kube play"
step_done

# ---------------------------------------------------------------- 6. sizes and minutes
say "image sizes"
for image in "$BASE" "$CPU" "$GPU" "$EXECUTOR" "$APP/identity:$VERSION" "$APP/onnx:$VERSION" "$APP/reqs:$VERSION" "$APP/k8s:$VERSION"; do
    printf '  %-56s %s\n' "$image" "$("$PODMAN" image inspect --format '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1 / 1e6}')"
done
store=$("$PODMAN" info --format '{{.Store.GraphRoot}}')
say "podman's store $store: $(du -sh "$store" 2>/dev/null | cut -f1) on disk"
say "minutes"
printf '  %s\n' "${timings[@]}"
total=$((SECONDS - run_start))
printf '  %-60s %4d s (%d min %02d s)\n' "total" "$total" $((total / 60)) $((total % 60))
say "all images built and checked"
