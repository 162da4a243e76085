"""Differential: the same model file served by seldon-core 1.19 and by fastseldon gives the same answers.

Both servers run from one Python 3.12 venv holding seldon-core 1.19.0 (support/seldon_envs.py makes
it once): ``seldon-core-microservice`` on one side, this working tree's fastseldon (on PYTHONPATH,
pure-Python codec) on the other, each in tests/models with the model importing the real seldon_core.
Every request below goes to both; status and body (parsed JSON, or the gRPC reply as a dict) must
be equal, and so must the custom and feedback metric series (labels without worker_id; counters
summed over Seldon's REST and gRPC processes, gauges their latest). Where the README documents a deliberate difference
(gRPC status codes, legacy hooks of the other wire) nothing is compared.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import pytest
import requests
from google.protobuf import json_format
from prometheus_client.parser import text_string_to_metric_families

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pbg
from support.seldon_envs import REPO, reference_env
from support.serving import MODELS, free_port


@dataclass
class Endpoint:
    name: str
    proc: subprocess.Popen
    http: int
    grpc: int
    metrics: int
    log: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http}"


@pytest.fixture(scope="module")
def venv():
    return reference_env()


def _wait(endpoint: Endpoint, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if endpoint.proc.poll() is not None:
            raise AssertionError(f"{endpoint.name} exited:\n{open(endpoint.log, errors='replace').read()}")
        try:
            if requests.get(endpoint.url + "/health/status", timeout=0.5).status_code == 200:  # ping answers while loading
                with grpc.insecure_channel(f"127.0.0.1:{endpoint.grpc}") as channel:
                    grpc.channel_ready_future(channel).result(timeout=5)
                return
        except (requests.RequestException, grpc.FutureTimeoutError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{endpoint.name} did not start:\n{open(endpoint.log, errors='replace').read()}")


@contextmanager
def _serve(name: str, cmd: list[str], env: dict[str, str], tmp_path) -> Iterator[Endpoint]:
    http, grpc_port, metrics = free_port(), free_port(), free_port()
    ports = {"PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http), "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(grpc_port),
             "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(metrics)}
    log = str(tmp_path / f"{name}.log")
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=MODELS, env={**os.environ, **env, **ports}, stdout=sink, stderr=subprocess.STDOUT,
                                start_new_session=True)
    endpoint = Endpoint(name, proc, http, grpc_port, metrics, log)
    try:
        _wait(endpoint)
        yield endpoint
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture
def pair(venv, tmp_path):
    """pair(model) -> (seldon-core, fastseldon), both serving tests/models/<model>.py."""
    stack = []

    def start(model: str, **env: str):
        base = {**{k: "" for k in os.environ if k.startswith("FASTSELDON_")}, **env}  # neither inherits our settings
        seldon = _serve("seldon-core", [str(venv / "bin" / "seldon-core-microservice"), model, "--service-type", "MODEL"],
                        {**base, "PYTHONPATH": ""}, tmp_path)
        ours = _serve("fastseldon", [str(venv / "bin" / "python"), "-m", "fastseldon", "serve", model, "--service-type", "MODEL"],
                      {**base, "PYTHONPATH": str(REPO / "server"), "FASTSELDON_NO_EXT": "1"}, tmp_path)
        a, b = seldon.__enter__(), ours.__enter__()
        stack.extend([seldon, ours])
        return a, b

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


def _rest(endpoint: Endpoint, method: str, path: str, body=None):
    r = requests.request(method, endpoint.url + path, json=body, timeout=10)
    try:
        return r.status_code, r.json()
    except ValueError:
        return r.status_code, r.text


def _same_rest(seldon: Endpoint, ours: Endpoint, calls) -> None:
    for method, path, body in calls:
        expected, got = _rest(seldon, method, path, body), _rest(ours, method, path, body)
        assert got == expected, f"{method} {path} {body}: seldon-core {expected}, fastseldon {got}"


def _grpc(endpoint: Endpoint, service: str, method: str, request):
    with grpc.insecure_channel(f"127.0.0.1:{endpoint.grpc}") as channel:
        stub = getattr(pbg, f"{service}Stub")(channel)
        return json_format.MessageToDict(getattr(stub, method)(request))


def _same_grpc(seldon: Endpoint, ours: Endpoint, calls) -> None:
    for service, method, request in calls:
        expected, got = _grpc(seldon, service, method, request), _grpc(ours, service, method, request)
        assert got == expected, f"{service}/{method}: seldon-core {expected}, fastseldon {got}"


def _series(endpoint: Endpoint, names: set[str]) -> dict:
    """{(sample name, labels without worker_id): value summed over processes}."""
    text = requests.get(f"http://127.0.0.1:{endpoint.metrics}/metrics", timeout=10).text
    out: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in names:
                key = (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "worker_id")))
                # a gauge is per process (Seldon's REST and gRPC processes each hold one): the latest, not a sum
                out[key] = max(out.get(key, 0.0), sample.value) if family.type == "gauge" else out.get(key, 0.0) + sample.value
    return out


def _same_metrics(seldon: Endpoint, ours: Endpoint, names: set[str]) -> None:
    deadline = time.monotonic() + 10
    while True:  # fastseldon's workers flush about twice a second
        expected, got = _series(seldon, names), _series(ours, names)
        if got == expected or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert expected, "seldon-core exposed none of the series compared"
    assert got == expected


def _tensor(values, shape, puid=""):
    m = pb.SeldonMessage()
    m.data.tensor.shape.extend(shape)
    m.data.tensor.values.extend(values)
    if puid:
        m.meta.puid = puid
    return m


def test_seldon_component_subclass_and_seldon_response(pair):
    seldon, ours = pair("SeldonSubclass")
    _same_rest(seldon, ours, [
        ("POST", "/predict", {"data": {"ndarray": [[1, 2]]}, "meta": {"puid": "p1", "tags": {"req": 1}}}),
        ("POST", "/api/v1.0/predictions", {"data": {"tensor": {"shape": [1, 2], "values": [1.5, 2]}}}),
        ("POST", "/predict", {"strData": "hello"}),
        ("POST", "/predict", {"jsonData": {"fail": 1}}),  # model_error_handler-style exception: 402, to_dict()
        ("POST", "/transform-input", {"data": {"ndarray": [[5]]}}),
        ("POST", "/transform-output", {"strData": "x"}),
        ("POST", "/route", {"data": {"ndarray": [[1]]}}),
        ("POST", "/aggregate", {"seldonMessages": [{"data": {"ndarray": [[1]]}}]}),
        ("POST", "/api/v1.0/feedback", {"request": {"data": {"ndarray": [[1]]}}, "reward": 1.5}),
        ("GET", "/health/status", None),
    ])
    _same_grpc(seldon, ours, [
        ("Model", "Predict", _tensor([1, 2], [1, 2], "g1")),
        ("Transformer", "TransformInput", _tensor([3], [1, 1])),
        ("OutputTransformer", "TransformOutput", _tensor([3], [1, 1])),
        ("Model", "SendFeedback", pb.Feedback(request=_tensor([1], [1, 1]), reward=2.0)),
    ])
    _same_metrics(seldon, ours, {"subclass_calls_total", "seldon_api_model_feedback_total", "seldon_api_model_feedback_reward_total"})


def test_plain_class_hooks_tags_and_metrics(pair):
    seldon, ours = pair("Rich", PREDICTIVE_UNIT_ID="rich-unit", PREDICTIVE_UNIT_IMAGE="repo/rich:0.3")
    _same_rest(seldon, ours, [
        ("POST", "/predict", {"data": {"ndarray": [[1, 2]]},
                              "meta": {"puid": "x", "metrics": [{"key": "c", "type": "GAUGE", "value": 1}]}}),
        ("POST", "/route", {"data": {"ndarray": [[5]]}}),
        ("POST", "/aggregate", {"seldonMessages": [{"data": {"ndarray": [[1, 2]]}}, {"data": {"ndarray": [[3, 4]]}}]}),
        ("POST", "/send-feedback", {"request": {"data": {"ndarray": [[1]]}, "meta": {"puid": "f"}},
                                    "response": {"meta": {"routing": {"rich-unit": 1}}}, "reward": 0.5}),
    ])
    _same_grpc(seldon, ours, [("Model", "Predict", _tensor([1, 2], [1, 2]))])
    _same_metrics(seldon, ours, {"rich_calls_total", "rich_gauge", "rich_timer_sum", "rich_timer_count",
                                 "seldon_api_model_feedback_total", "seldon_api_model_feedback_reward_total"})


def test_legacy_hooks(pair):
    seldon, ours = pair("LegacyHooks")
    _same_rest(seldon, ours, [
        ("POST", "/predict", {"data": {"ndarray": [[1, 2]]}}),
        ("POST", "/transform-input", {"data": {"ndarray": [[1], [2]]}}),
        ("POST", "/route", {"data": {"ndarray": [[1]]}}),
        ("POST", "/aggregate", {"seldonMessages": [{"strData": "a"}, {"strData": "b"}]}),
        ("POST", "/api/v1.0/feedback", {"request": {"data": {"ndarray": [[1]]}}, "reward": 0.5}),
    ])
    # on gRPC Seldon 1.19 calls predict_grpc but the *_rest hook of the other endpoints (README)
    _same_grpc(seldon, ours, [("Model", "Predict", _tensor([1], [1, 1], "q"))])


@pytest.mark.parametrize("include", ["true", "false"])
def test_raw_proto_and_dict_replies(pair, include):
    seldon, ours = pair("RawProto", INCLUDE_METRICS_IN_CLIENT_RESPONSE=include)
    _same_rest(seldon, ours, [("POST", "/predict", {"data": {"ndarray": [[1]]}})])
    _same_grpc(seldon, ours, [("Model", "Predict", _tensor([1], [1, 1]))])
    _same_metrics(seldon, ours, {"raw_rest_total_calls_total", "raw_grpc_calls"})
