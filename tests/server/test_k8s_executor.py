"""``fastseldon k8s`` manifests run as processes: each unit container's rendered env starts a real
``fastseldon serve`` (ports, parameters, ids from that env alone), and the executor is started
with the rendered arguments and ``ENGINE_PREDICTOR`` exactly as Seldon's operator starts
``seldon-container-engine``. The only rewrite is the network: the rendered ports are Seldon's
fixed 9000+/8000 (free ones here) and the Service DNS names point at 127.0.0.1. The answers must
equal ``fastseldon graph SPEC`` with every unit in-process. (The same manifests under
``podman kube play`` with the real images: tests/images/k8s_play.py, from s2i/test-images.sh.)"""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import requests
import yaml

from fastseldon.graph import k8s
from support.serving import free_port, running

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def sdep() -> dict[str, Any]:
    def container(name: str, model: str) -> dict[str, Any]:
        return {"name": name, "image": f"registry.example/{name}:1", "env": [{"name": "MODEL_NAME", "value": model}]}

    return {
        "apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment", "metadata": {"name": "chain"},
        "spec": {"predictors": [{
            "name": "main",
            "componentSpecs": [{"spec": {"containers": [container("scale", "MyModel")]}},
                               {"spec": {"containers": [container("lin", "LinearModel")]}}],
            "graph": {"name": "scale", "type": "TRANSFORMER", "children": [{"name": "lin", "type": "MODEL", "parameters": [
                {"name": "scale", "value": "3.0", "type": "FLOAT"}, {"name": "n_outputs", "value": "4", "type": "INT"}]}]},
        }]},
    }


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}:\n{log.read_text()}"
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready:\n{log.read_text()}")


@contextmanager
def process(args: list[str], env: dict[str, str], cwd: Path, ready: str) -> Iterator[subprocess.Popen[bytes]]:
    log = cwd / f"proc-{len(list(cwd.glob('proc-*')))}.log"
    with open(log, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "fastseldon", *args], cwd=cwd, stdout=sink,
                                stderr=subprocess.STDOUT, env={**os.environ, **env})
    try:
        _wait(ready, proc, log)
        yield proc
    finally:
        proc.terminate()
        proc.wait(30)


def test_rendered_units_and_executor_answer_as_fastseldon_graph(tmp_path):
    shutil.copy(EXAMPLES / "identity" / "MyModel.py", tmp_path)
    shutil.copy(EXAMPLES / "linear" / "LinearModel.py", tmp_path)
    doc = sdep()
    (tmp_path / "sdep.yaml").write_text(yaml.safe_dump(doc))
    objs = k8s.render(doc, namespace="ml")
    deploys = [o for o in objs if o["kind"] == "Deployment"]
    containers = {c["name"]: c for d in deploys for c in d["spec"]["template"]["spec"]["containers"]}
    engine = containers.pop(k8s.ENGINE)
    moved: dict[int, int] = {}  # rendered port -> a free one
    body = {"data": {"ndarray": [[1.0, 2.0, 3.0]]}}
    unit_env = {}
    for name, c in containers.items():
        env = {e["name"]: e["value"] for e in c["env"]}
        for key in ("PREDICTIVE_UNIT_HTTP_SERVICE_PORT", "PREDICTIVE_UNIT_GRPC_SERVICE_PORT",
                    "PREDICTIVE_UNIT_METRICS_SERVICE_PORT"):
            moved[int(env[key])] = free_port()
            env[key] = str(moved[int(env[key])])
        unit_env[name] = env
    env = {e["name"]: e["value"] for e in engine["env"]}
    predictor = json.loads(base64.b64decode(env["ENGINE_PREDICTOR"]))
    hosts = {}
    for node in (predictor["graph"], *predictor["graph"]["children"]):
        ep = node["endpoint"]
        hosts[node["name"]] = ep["service_host"]
        ep["service_host"] = "127.0.0.1"
        for key in ("service_port", "httpPort", "grpcPort"):
            ep[key] = moved[ep[key]]
    assert hosts == {"scale": "localhost", "lin": "chain-main-lin.ml.svc.cluster.local"}
    env["ENGINE_PREDICTOR"] = base64.b64encode(json.dumps(predictor).encode()).decode()
    args = list(engine["args"])
    http, grpc = free_port(), free_port()
    args[args.index("--http_port") + 1] = str(http)
    args[args.index("--grpc_port") + 1] = str(grpc)
    base = f"http://127.0.0.1:{http}"

    def start_unit(stack: ExitStack, name: str) -> None:
        uenv = unit_env[name]
        port = uenv["PREDICTIVE_UNIT_HTTP_SERVICE_PORT"]
        # the s2i run script's command line: the interface name, nothing else (env does the rest)
        stack.enter_context(process(["serve", uenv["MODEL_NAME"]], uenv, tmp_path, f"http://127.0.0.1:{port}/health/status"))
        reply = requests.post(f"http://127.0.0.1:{port}/predict", json=body, timeout=5).json()
        assert reply["meta"]["requestPath"] == {name: containers[name]["image"]}  # the unit's id and image

    with ExitStack() as stack:
        start_unit(stack, "scale")
        stack.enter_context(process(["graph", *args], env, tmp_path, base + "/live"))
        # ready means the graph can answer: not while a remote unit does not accept connections
        deadline = time.monotonic() + 30
        while True:  # (the start-up router answers 503 too, until the graph is built)
            not_yet = requests.get(base + "/ready", timeout=10)
            if "not reachable" in not_yet.text or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not_yet.status_code == 503 and "lin (http://127.0.0.1:" in not_yet.text, not_yet.text
        assert "scale" not in not_yet.text  # that one is up
        start_unit(stack, "lin")
        assert requests.get(base + "/ready", timeout=10).status_code == 200
        got = requests.post(base + "/api/v1.0/predictions", json=body, timeout=10)
        scraped = requests.get(base + "/prometheus", timeout=10)
    assert scraped.status_code == 200 and 'seldon_api_executor_client_requests_seconds_count{' in scraped.text
    assert 'model_name="lin"' in scraped.text  # the executor called the remote unit, and counted it
    with running([str(tmp_path / "sdep.yaml"), "--source", str(tmp_path)], command="graph", cwd=tmp_path) as server:
        want = requests.post(server.url + "/api/v1.0/predictions", json=body, timeout=10)
    assert got.status_code == want.status_code == 200
    assert len(got.json()["data"]["ndarray"][0]) == 4  # PREDICTIVE_UNIT_PARAMETERS reached the remote unit
    assert got.json() == want.json()
