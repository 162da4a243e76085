"""For s2i/test-images.sh: `fastseldon k8s` manifests run for real with `podman kube play`.

    python tests/images/k8s_play.py source DIR
        DIR: MyModel.py (identity) and LinearModel.py from examples/, one app image's source
    python tests/images/k8s_play.py play --units-image IMG --executor-image IMG --work DIR
        for each mode (per-component, one-pod): render a graph SeldonDeployment (a TRANSFORMER
        over Seldon's AVERAGE_COMBINER of two LinearModels, each unit in its own componentSpec)
        with those images, play its Deployments with podman, and send Seldon REST, Seldon gRPC,
        V2 REST and graph metadata requests through the executor's pod; every answer must equal
        what `fastseldon graph SPEC` (this checkout, all units in-process) answers on the same
        spec. Then the executor's /prometheus, and `podman kube play --down`.

What kube play cannot express is said where it is stood in for: it plays Pods and
Deployments, not Services, HorizontalPodAutoscalers or PodDisruptionBudgets (those are checked
by schema, kubernetes-validate --strict, and content, in tests/unit/test_k8s_render.py and
here by schema). A unit outside the executor's pod is reached in the cluster through its
Service's DNS name; here each such name is mapped to the unit pod's address with the
executor pod's hostAliases (a PodSpec field kube play honours), after the unit pods run.
Also left out for kube play (``for_kube_play``): the downward-API ``seldon-podinfo`` volume,
container ports (kube play would publish them on the host) and probes (their routes are checked
from outside). Exit status 0 when every answer matches; else a line per failure and status 1.
"""
from __future__ import annotations

import argparse
import copy
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import kubernetes_validate
import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
PODMAN = os.environ.get("PODMAN", "podman")
NAMESPACE = "models"
NOT_COMPARED = "metadata names"


def sdep(units_image: str) -> dict[str, Any]:
    def container(name: str, model: str) -> dict[str, Any]:
        return {"name": name, "image": units_image, "env": [{"name": "MODEL_NAME", "value": model}],
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}

    def linear(name: str, seed: int) -> dict[str, Any]:
        return {"name": name, "type": "MODEL", "parameters": [
            {"name": "scale", "value": "2.0", "type": "FLOAT"}, {"name": "n_outputs", "value": "3", "type": "INT"},
            {"name": "seed", "value": str(seed), "type": "INT"}]}

    return {
        "apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
        "metadata": {"name": "kubeplay", "namespace": NAMESPACE},
        "spec": {"predictors": [{
            "name": "main",
            "componentSpecs": [{"spec": {"containers": [container("scale", "MyModel")]}},
                               {"spec": {"containers": [container("lin-a", "LinearModel")]}},
                               {"spec": {"containers": [container("lin-b", "LinearModel")]}, "pdbSpec": {"minAvailable": 1},
                                "hpaSpec": {"maxReplicas": 3, "metricsv2": [{"type": "Resource", "resource": {
                                    "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]}}],
            "graph": {"name": "scale", "type": "TRANSFORMER", "children": [{
                "name": "avg", "implementation": "AVERAGE_COMBINER", "children": [linear("lin-a", 1), linear("lin-b", 2)]}]},
        }]},
    }


def write_source(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / "examples" / "identity" / "MyModel.py", root / "MyModel.py")
    shutil.copy(ROOT / "examples" / "linear" / "LinearModel.py", root / "LinearModel.py")
    (root / ".s2i").mkdir(exist_ok=True)
    (root / ".s2i" / "environment").write_text("MODEL_NAME=MyModel\n")


# --------------------------------------------------------------------------- running things


def podman(*args: str, check: bool = True) -> str:
    done = subprocess.run([PODMAN, *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise RuntimeError(f"{PODMAN} {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, seconds: float, what: str, logs: Any = None) -> None:
    deadline = time.monotonic() + seconds
    last = ""
    while time.monotonic() < deadline:
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200:
                return
            last = f"{r.status_code} {r.text[:80]}"
        except requests.RequestException as exc:
            last = type(exc).__name__
        time.sleep(0.5)
    detail = logs() if logs else ""
    raise RuntimeError(f"{what} not ready at {url} within {seconds:.0f} s (last: {last})\n{detail}")


def pod_of(deployment: str) -> str:
    """The pod `podman kube play` made for a Deployment (``<name>-pod-0``; one replica)."""
    ids = podman("pod", "ps", "--filter", f"name=^{deployment}-pod", "--format", "{{.ID}}").split()
    if len(ids) != 1:
        raise RuntimeError(f"expected one pod for Deployment {deployment}, podman has {ids}")
    return ids[0]


def pod_ip(pod: str) -> str:
    """The pod's address on kube play's network (podman-default-kube-network)."""
    infra = podman("pod", "inspect", "--format", "{{.InfraContainerID}}", pod).strip()
    ips = podman("inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", infra).split()
    if not ips:
        raise RuntimeError(f"pod {pod} has no IP address on a podman network")
    return ips[0]


def pod_logs(pod: str) -> str:
    out = []
    for cid in podman("ps", "-a", "--filter", f"pod={pod}", "--format", "{{.ID}} {{.Names}}").splitlines():
        cid, _, name = cid.partition(" ")
        if "infra" in name:
            continue
        out.append(f"--- {name}\n" + podman("logs", "--tail", "30", cid, check=False))
    return "\n".join(out)


def for_kube_play(deploy: dict[str, Any]) -> dict[str, Any]:
    """What kube play would do otherwise, left out.

    * the downward-API podinfo volume and its mounts (kube play has no downward-API volumes;
      an emptyDir becomes one podman volume of that name, shared by every pod);
    * container ports: kube play publishes each on the host (Kubernetes publishes none), where
      this machine's other servers may hold them; pods reach each other by address;
    * probes: kube play runs a liveness probe as `curl` inside the container (these images have
      no curl, and a named port becomes port 0) and has no readiness. The probes' routes are
      checked from outside instead (``probe_routes``).
    """
    d = copy.deepcopy(deploy)
    pod = d["spec"]["template"]["spec"]
    dropped = {v["name"] for v in pod.get("volumes", []) if "downwardAPI" in v}
    pod["volumes"] = [v for v in pod.get("volumes", []) if v["name"] not in dropped]
    for c in pod["containers"]:
        c["volumeMounts"] = [m for m in c.get("volumeMounts", []) if m["name"] not in dropped]
        for key in ("ports", "readinessProbe", "livenessProbe"):
            c.pop(key, None)
    return d


def probe_routes(deploy: dict[str, Any], ip: str, what: str, logs: Any) -> list[str]:
    """Each container's rendered probes, from outside: ready within two minutes, then live."""
    failures = []
    for c in deploy["spec"]["template"]["spec"]["containers"]:
        ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
        ready, live = c["readinessProbe"]["httpGet"], c["livenessProbe"]["httpGet"]
        if ready["path"] == live["path"]:
            failures.append(f"{what} {c['name']}: readiness and liveness probe the same route {ready['path']}")
        wait_ready(f"http://{ip}:{ports.get(ready['port'], ready['port'])}{ready['path']}", 120,
                   f"{what} {c['name']} (readiness probe)", logs)
        r = requests.get(f"http://{ip}:{ports.get(live['port'], live['port'])}{live['path']}", timeout=10)
        if r.status_code != 200:
            failures.append(f"{what} {c['name']}: liveness probe {live['path']} answered {r.status_code}")
    return failures


@contextmanager
def played(path: Path, objs: list[dict[str, Any]]) -> Iterator[list[str]]:
    """`podman kube play` the Deployments; their pods, in order; `--down` afterwards, whatever happened."""
    if not objs:  # one-pod: no unit pods
        yield []
        return
    path.write_text(yaml.safe_dump_all(objs, sort_keys=False))
    try:
        podman("kube", "play", str(path))
        yield [pod_of(o["metadata"]["name"]) for o in objs]
    finally:
        podman("kube", "play", "--down", str(path), check=False)


@contextmanager
def reference(spec: Path, source: Path) -> Iterator[str]:
    """`fastseldon graph SPEC` from this checkout, every unit in-process: the answers to match."""
    http, grpc = free_port(), free_port()
    cmd = [sys.executable, "-m", "fastseldon", "graph", str(spec), "--source", str(source), "--http-port", str(http),
           "--grpc-port", str(grpc), "--metrics-port", "0"]
    log = spec.with_suffix(".log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{http}/ready", 60, "fastseldon graph", lambda: spec.with_suffix(".log").read_text())
        yield f"127.0.0.1:{http}:{grpc}"
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()


# --------------------------------------------------------------------------- the answers


def answers(address: str) -> dict[str, Any]:
    """The same requests to a graph executor: Seldon REST and gRPC, V2 REST, metadata."""
    import grpc
    from google.protobuf import json_format

    from fastseldon.proto import prediction_pb2 as pb
    from fastseldon.proto import prediction_pb2_grpc as pbg

    host, http, grpc_port = address.rsplit(":", 2)
    base = f"http://{host}:{http}"
    out: dict[str, Any] = {}
    for kind, body in (("ndarray", {"data": {"ndarray": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}}),
                       ("tensor", {"data": {"tensor": {"shape": [1, 4], "values": [0.5, -1.0, 2.0, 8.0]}}})):
        r = requests.post(base + "/api/v1.0/predictions", json=body, headers={"Seldon-Puid": "fixed"}, timeout=30)
        out[f"seldon rest {kind}"] = (r.status_code, r.json())
    bad = requests.post(base + "/api/v1.0/predictions", json={"data": {"ndarray": [[1.0], [2.0, 3.0]]}}, timeout=30)
    out["seldon rest ragged"] = (bad.status_code, bad.json().get("status", {}).get("reason"))
    v2 = {"inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [1.0, 2.0, 3.0, 4.0]}]}
    r = requests.post(base + "/v2/models/kubeplay/infer", json=v2, timeout=30)
    body = r.json()
    body.pop("id", None)
    out["v2 rest"] = (r.status_code, body)
    metadata = requests.get(base + "/api/v1.0/metadata", timeout=30)
    graph_meta = metadata.json()
    # a unit without init_metadata names itself after its class in its own server (fastseldon
    # serve), after its node in-process (fastseldon graph), after its image in Seldon's wrapper:
    # the names are reported, the rest must match
    names = {node: m.pop("name", None) for node, m in graph_meta.get("models", {}).items()}
    out["graph metadata"] = (metadata.status_code, graph_meta)
    out[NOT_COMPARED] = names
    with grpc.insecure_channel(f"{host}:{grpc_port}") as channel:
        request = pb.SeldonMessage()
        request.data.tensor.shape.extend([1, 3])
        request.data.tensor.values.extend([1.0, 2.0, 3.0])
        reply = pbg.SeldonStub(channel).Predict(request, timeout=30)
        out["seldon grpc"] = json_format.MessageToDict(reply)
    return out


def compare(mode: str, got: dict[str, Any], want: dict[str, Any]) -> list[str]:
    failures = []
    if got[NOT_COMPARED] != want[NOT_COMPARED]:
        print(f"== k8s play {mode}: metadata names (not compared): {got[NOT_COMPARED]} here, "
              f"{want[NOT_COMPARED]} from fastseldon graph")
    for key in want:
        if key != NOT_COMPARED and got.get(key) != want[key]:
            failures.append(f"{mode}: {key}: kube play answered {got.get(key)!r}, fastseldon graph {want[key]!r}")
    status, first = got["seldon rest ndarray"]
    if status != 200 or len(first["data"]["ndarray"][0]) != 3:
        failures.append(f"{mode}: the graph's answer is not three averaged outputs per row: {first!r}")
    return failures


def play(args: argparse.Namespace) -> int:
    from fastseldon.graph import k8s

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    source = work / "source"
    write_source(source)
    doc = sdep(args.units_image)
    spec = work / "sdep.yaml"
    spec.write_text(yaml.safe_dump(doc, sort_keys=False))
    failures: list[str] = []
    with reference(spec, source) as ref:
        want = answers(ref)
        for mode in k8s.MODES:
            started = time.monotonic()
            objs = k8s.render(doc, image=args.executor_image if mode == "per-component" else None, mode=mode)
            (work / f"{mode}.yaml").write_text(k8s.dump(objs))
            for obj in objs:  # what kube play does not run: by schema here, by content in the unit tests
                kubernetes_validate.validate(obj, "1.37.0", strict=True)
            kinds = sorted({o["kind"] for o in objs})
            deploys = [o for o in objs if o["kind"] == "Deployment"]
            engine = next(d for d in deploys if any(c["name"] == k8s.ENGINE
                                                    for c in d["spec"]["template"]["spec"]["containers"]))
            units = [d for d in deploys if d is not engine]
            services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
            with played(work / f"{mode}-units.yaml", [for_kube_play(d) for d in units]) as unit_pods:
                aliases = []
                for deploy, pod in zip(units, unit_pods):
                    labels = deploy["spec"]["template"]["metadata"]["labels"]
                    ip = pod_ip(pod)
                    names = [f"{name}.{NAMESPACE}.svc.cluster.local" for name, svc in services.items()
                             if svc["spec"]["selector"].items() <= labels.items()]
                    aliases.append({"ip": ip, "hostnames": names})
                    failures += probe_routes(deploy, ip, f"unit pod {deploy['metadata']['name']}",
                                             lambda pod=pod: pod_logs(pod))
                executor = for_kube_play(engine)
                if aliases:
                    executor["spec"]["template"]["spec"]["hostAliases"] = aliases
                with played(work / f"{mode}-executor.yaml", [executor]) as engine_pods:
                    ip = pod_ip(engine_pods[0])
                    failures += probe_routes(engine, ip, f"executor pod ({mode})", lambda: pod_logs(engine_pods[0]))
                    got = answers(f"{ip}:8000:5001")
                    failures += compare(mode, got, want)
                    scraped = requests.get(f"http://{ip}:8000/prometheus", timeout=10)
                    if scraped.status_code != 200 or "fastseldon_requests_total" not in scraped.text:
                        failures.append(f"{mode}: the executor's /prometheus answered {scraped.status_code}")
                    if mode == "per-component":  # the remote units were really called, over the network
                        lin_a = next(p for d, p in zip(units, unit_pods) if "lin-a" in d["metadata"]["name"])
                        if "LinearModel" not in pod_logs(lin_a):
                            failures.append(f"{mode}: unit pod lin-a's log does not show it serving LinearModel")
            print(f"== k8s play {mode}: {len(deploys)} Deployment(s) played ({len(units)} unit pods, the executor's "
                  f"pod), {sum(k != NOT_COMPARED for k in want)} answers equal to fastseldon graph's; not played, checked by schema: "
                  f"{', '.join(k for k in kinds if k != 'Deployment')} ({time.monotonic() - started:.0f} s)")
    for line in failures:
        print(f"k8s play: FAILED: {line}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="k8s_play.py")
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("source")
    s.add_argument("dir")
    p = sub.add_parser("play")
    p.add_argument("--units-image", required=True)
    p.add_argument("--executor-image", required=True)
    p.add_argument("--work", required=True)
    args = parser.parse_args(argv)
    if args.command == "source":
        write_source(Path(args.dir))
        return 0
    return play(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
