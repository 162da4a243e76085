"""Adaptive batching against the real server (a `fastseldon serve` subprocess on free ports):
concurrent clients over Seldon REST/gRPC and V2 REST/gRPC each get exactly their own rows back,
batches are observed in the model's own call log, errors stay with the request that caused them,
and payloads that can't be stacked never wait for a batch.

To make batch membership deterministic, a *blocker* request (a row holding BLOCK) occupies the
one batch slot for BLOCK_SECONDS; the requests sent meanwhile all queue and then run as one call.
"""
from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from string import Template

import grpc
import numpy as np
import pytest
import requests

from fastseldon.proto import prediction_pb2 as pb
from fastseldon.proto import prediction_pb2_grpc as pbg
from support.serving import running

BLOCK = 999.0
BLOCK_SECONDS = 1.5

# string.Template: the model's source has braces of its own
MODEL_SOURCE = Template('''
import asyncio, json, threading, time
import numpy as np

BLOCK = $block


class BatchProbe:
    """Logs every predict call (rows, first puid) as a JSON line; returns X * 2 + 1 after 5 ms.
    A row holding BLOCK holds the call for $seconds s; a negative value raises; 777 returns one row."""

    def __init__(self, log):
        self.log = log
        self.lock = threading.Lock()

    def _record(self, **entry):
        with self.lock, open(self.log, "a") as f:
            f.write(json.dumps(entry) + "\\n")

    def _before(self, X, meta):
        if not isinstance(X, np.ndarray) or X.dtype.kind not in "biuf":
            self._record(event="other", type=type(X).__name__, dtype=str(getattr(X, "dtype", "")))
            return "other"
        kind = "start" if (X == BLOCK).any() else "call"
        self._record(event=kind, rows=int(X.shape[0]), puid=(meta or {}).get("puid"), id=(meta or {}).get("id"))
        return kind

    def _after(self, X):
        time.sleep(0.005)  # a fixed cost per call, so concurrent requests overlap
        if (X < 0).any():
            raise ValueError("negative values are not allowed")
        if (X == 777).any():
            return X[:1]
        return X * 2 + 1

    def predict(self, X, features_names, meta=None):
        kind = self._before(X, meta)
        if kind == "other":
            return X
        if kind == "start":
            time.sleep($seconds)
            self._record(event="end")
        return self._after(X)


class AsyncBatchProbe(BatchProbe):
    async def predict(self, X, features_names, meta=None):
        kind = self._before(X, meta)
        if kind == "other":
            return X
        if kind == "start":
            await asyncio.sleep($seconds)
            self._record(event="end")
        return self._after(X)
''').substitute(block=repr(BLOCK), seconds=repr(BLOCK_SECONDS))


# --------------------------------------------------------------------------- fixtures and helpers


class Probe:
    """A running server plus the call log its model writes."""

    def __init__(self, server, log: Path):
        self.server = server
        self.log = log
        self.channel = grpc.insecure_channel(server.grpc_target)

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def clear(self) -> None:
        self.log.write_text("")

    def wait_for(self, event: str, count: int = 1, timeout: float = 30) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            entries = self.entries()
            if sum(e["event"] == event for e in entries) >= count:
                return entries
            time.sleep(0.01)
        raise AssertionError(f"no {event!r} in the model log after {timeout}s: {self.entries()}\n{self.server.output()}")


def start_probe(tmp_path: Path, cls: str, *extra: str):
    (tmp_path / "BatchProbe.py").write_text(MODEL_SOURCE)
    log = tmp_path / f"{cls}-calls.jsonl"
    params = json.dumps([{"name": "log", "value": str(log), "type": "STRING"}])
    return running([f"BatchProbe.{cls}" if cls != "BatchProbe" else "BatchProbe", "--parameters", params,
                    "--model-name", "probe", *extra], cwd=tmp_path), log


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("batching")
    ctx, log = start_probe(tmp, "BatchProbe", "--max-batch-size", "32", "--max-batch-time-ms", "20")
    with ctx as server:
        p = Probe(server, log)
        yield p
        p.channel.close()


def rows(i: int, n: int, width: int = 3) -> np.ndarray:
    """Distinct content per client: client i, row r holds i*100 + r*10 + column."""
    return (i * 100 + np.arange(n)[:, None] * 10 + np.arange(width)[None, :]).astype(np.float64)


def seldon_rest(server, x: np.ndarray, puid: str, kind: str = "ndarray") -> tuple[int, dict]:
    data = {"ndarray": x.tolist()} if kind == "ndarray" else {"tensor": {"shape": list(x.shape), "values": x.ravel().tolist()}}
    r = requests.post(server.url + "/api/v1.0/predictions", json={"data": data, "meta": {"puid": puid}}, timeout=60)
    return r.status_code, r.json()


def seldon_rest_array(reply: dict) -> np.ndarray:
    data = reply["data"]
    if "ndarray" in data:
        return np.array(data["ndarray"], dtype=np.float64)
    return np.array(data["tensor"]["values"], dtype=np.float64).reshape(data["tensor"]["shape"])


def seldon_grpc(channel, x: np.ndarray, puid: str) -> tuple[grpc.StatusCode, pb.SeldonMessage | str]:
    m = pb.SeldonMessage()
    m.data.tensor.shape.extend(x.shape)
    m.data.tensor.values.extend(x.ravel().tolist())
    m.meta.puid = puid
    try:
        return grpc.StatusCode.OK, pbg.ModelStub(channel).Predict(m, timeout=60)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()


def v2_rest(server, x: np.ndarray, rid: str) -> tuple[int, dict]:
    body = {"id": rid, "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP64", "data": x.ravel().tolist()}]}
    r = requests.post(server.url + "/v2/models/probe/infer", json=body, timeout=60)
    return r.status_code, r.json()


def v2_rest_array(reply: dict) -> np.ndarray:
    out = reply["outputs"][0]
    return np.array(out["data"], dtype=np.float64).reshape(out["shape"])


def v2_grpc(channel, x: np.ndarray, rid: str):
    from fastseldon.proto import grpc_service_pb2 as v2
    from fastseldon.proto import grpc_service_pb2_grpc as v2g

    req = v2.ModelInferRequest(model_name="probe", id=rid)
    tensor = req.inputs.add(name="x", datatype="FP64", shape=list(x.shape))
    tensor.contents.fp64_contents.extend(x.ravel().tolist())
    try:
        reply = v2g.GRPCInferenceServiceStub(channel).ModelInfer(req, timeout=60)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    out = reply.outputs[0]
    if reply.raw_output_contents:
        values = np.frombuffer(reply.raw_output_contents[0], dtype="<f8")
    else:
        values = np.array(out.contents.fp64_contents, dtype=np.float64)
    return grpc.StatusCode.OK, (reply, values.reshape(list(out.shape)))


def blocked(probe: Probe, senders: list, via: str = "rest"):
    """Occupy the batch slot with a blocker, run ``senders`` concurrently while it holds, return
    their results (in order) and the model log entries written after the blocker ended."""
    probe.clear()
    with ThreadPoolExecutor(max_workers=len(senders) + 1) as pool:
        if via == "rest":
            blocker = pool.submit(seldon_rest, probe.server, np.full((1, 3), BLOCK), "blocker")
        else:
            blocker = pool.submit(seldon_grpc, probe.channel, np.full((1, 3), BLOCK), "blocker")
        probe.wait_for("start")
        futures = [pool.submit(fn) for fn in senders]
        results = [f.result(timeout=120) for f in futures]
        assert blocker.result(timeout=120)[0] in (200, grpc.StatusCode.OK)
    entries = probe.entries()
    ends = [i for i, e in enumerate(entries) if e["event"] == "end"]
    assert ends, entries
    return results, entries[ends[0] + 1:], entries[:ends[0]]


# --------------------------------------------------------------------------- own rows back, one call per batch


@pytest.mark.parametrize("kind", ["ndarray", "tensor"])
def test_seldon_rest_concurrent_clients_share_one_predict_and_get_their_own_rows(probe, kind):
    inputs = [rows(i, 1 + i % 3) for i in range(8)]
    senders = [lambda i=i, x=x: seldon_rest(probe.server, x, f"rest-{i}", kind) for i, x in enumerate(inputs)]
    results, after, _ = blocked(probe, senders)
    for i, (x, (status, reply)) in enumerate(zip(inputs, results)):
        assert status == 200, reply
        np.testing.assert_array_equal(seldon_rest_array(reply), x * 2 + 1)
        assert reply["meta"]["puid"] == f"rest-{i}"  # each reply keeps its own puid
    calls = [e for e in after if e["event"] == "call"]
    assert [c["rows"] for c in calls] == [sum(x.shape[0] for x in inputs)], after
    assert calls[0]["puid"].startswith("rest-")  # the batched call got one member's meta (the first to arrive)


def test_seldon_grpc_concurrent_clients_share_one_predict_and_get_their_own_rows(probe):
    inputs = [rows(i, 1 + i % 2) for i in range(6)]
    senders = [lambda i=i, x=x: seldon_grpc(probe.channel, x, f"grpc-{i}") for i, x in enumerate(inputs)]
    results, after, _ = blocked(probe, senders)
    for i, (x, (code, reply)) in enumerate(zip(inputs, results)):
        assert code == grpc.StatusCode.OK, reply
        got = np.array(reply.data.tensor.values).reshape(list(reply.data.tensor.shape))
        np.testing.assert_array_equal(got, x * 2 + 1)
        assert reply.meta.puid == f"grpc-{i}"
    assert [e["rows"] for e in after if e["event"] == "call"] == [sum(x.shape[0] for x in inputs)], after


def test_rest_and_grpc_requests_join_the_same_batch(probe):
    inputs = [rows(i, 2) for i in range(6)]
    senders = [(lambda i=i, x=x: seldon_rest(probe.server, x, f"m-{i}")) if i % 2 else
               (lambda i=i, x=x: seldon_grpc(probe.channel, x, f"m-{i}")) for i, x in enumerate(inputs)]
    results, after, _ = blocked(probe, senders)
    for i, (x, result) in enumerate(zip(inputs, results)):
        if i % 2:
            assert result[0] == 200
            np.testing.assert_array_equal(seldon_rest_array(result[1]), x * 2 + 1)
        else:
            assert result[0] == grpc.StatusCode.OK
            np.testing.assert_array_equal(np.array(result[1].data.tensor.values).reshape(2, 3), x * 2 + 1)
    assert [e["rows"] for e in after if e["event"] == "call"] == [12], after


def test_v2_rest_and_grpc_concurrent_clients_get_their_own_rows(probe):
    inputs = [rows(i, 1 + i % 3) for i in range(8)]
    senders = [(lambda i=i, x=x: v2_rest(probe.server, x, f"v2-{i}")) if i % 2 else
               (lambda i=i, x=x: v2_grpc(probe.channel, x, f"v2-{i}")) for i, x in enumerate(inputs)]
    results, after, _ = blocked(probe, senders)
    for i, (x, (status, reply)) in enumerate(zip(inputs, results)):
        if i % 2:
            assert status == 200, reply
            assert reply["id"] == f"v2-{i}"
            np.testing.assert_array_equal(v2_rest_array(reply), x * 2 + 1)
        else:
            assert status == grpc.StatusCode.OK, reply
            assert reply[0].id == f"v2-{i}"
            np.testing.assert_array_equal(reply[1], x * 2 + 1)
    calls = [e for e in after if e["event"] == "call"]
    assert [c["rows"] for c in calls] == [sum(x.shape[0] for x in inputs)], after
    assert calls[0]["id"].startswith("v2-")


def test_many_concurrent_clients_without_a_blocker(probe):
    """Free-running load: every reply carries its own rows, and some predict call held several."""
    probe.clear()
    inputs = [rows(i, 1 + i % 2) for i in range(64)]

    def send(i):
        if i % 2:
            status, reply = seldon_rest(probe.server, inputs[i], f"free-{i}")
            assert status == 200, reply
            return seldon_rest_array(reply)
        code, reply = seldon_grpc(probe.channel, inputs[i], f"free-{i}")
        assert code == grpc.StatusCode.OK, reply
        return np.array(reply.data.tensor.values).reshape(list(reply.data.tensor.shape))

    with ThreadPoolExecutor(max_workers=32) as pool:
        outs = list(pool.map(send, range(64)))
    for x, out in zip(inputs, outs):
        np.testing.assert_array_equal(out, x * 2 + 1)
    calls = [e["rows"] for e in probe.entries() if e["event"] == "call"]
    assert sum(calls) == sum(x.shape[0] for x in inputs)
    assert max(calls) > 2 and len(calls) < 64, calls


# --------------------------------------------------------------------------- flush, errors, bypass, limits


def test_fewer_than_max_rows_flush_and_a_lone_caller_does_not_wait_the_window(tmp_path):
    """A 60 s window and a batch size of 1000: three queued requests still run as one call as soon
    as the slot frees, and a sequential caller is answered at once every time."""
    ctx, log = start_probe(tmp_path, "BatchProbe", "--max-batch-size", "1000", "--max-batch-time-ms", "60000")
    with ctx as server:
        probe = Probe(server, log)
        inputs = [rows(i, 1) for i in range(3)]
        results, after, _ = blocked(probe, [lambda i=i, x=x: seldon_rest(server, x, f"f-{i}") for i, x in enumerate(inputs)])
        for x, (status, reply) in zip(inputs, results):
            assert status == 200
            np.testing.assert_array_equal(seldon_rest_array(reply), x * 2 + 1)
        assert [e["rows"] for e in after if e["event"] == "call"] == [3]
        probe.clear()
        for i in range(5):
            status, reply = seldon_rest(server, rows(i, 2), f"seq-{i}")  # requests' own timeout: 60 s
            assert status == 200
            np.testing.assert_array_equal(seldon_rest_array(reply), rows(i, 2) * 2 + 1)
        assert [e["rows"] for e in probe.entries()] == [2] * 5
        probe.channel.close()


def test_a_bad_request_fails_alone_its_neighbours_succeed(probe):
    inputs = [rows(1, 1), -rows(2, 1), rows(3, 2), rows(4, 1)]
    results, after, _ = blocked(probe, [lambda i=i, x=x: seldon_rest(probe.server, x, f"e-{i}") for i, x in enumerate(inputs)])
    status, reply = results[1]
    assert status == 500
    assert reply["status"]["info"] == "negative values are not allowed"
    for i in (0, 2, 3):
        assert results[i][0] == 200
        np.testing.assert_array_equal(seldon_rest_array(results[i][1]), inputs[i] * 2 + 1)
    # one batched call of 5 rows that raised, then each request alone
    assert sorted(e["rows"] for e in after if e["event"] == "call") == [1, 1, 1, 2, 5]
    assert [e["rows"] for e in after if e["event"] == "call"][0] == 5


def test_a_batch_with_the_wrong_row_count_fails_with_a_clear_message(probe):
    inputs = [rows(1, 1), np.full((1, 3), 777.0), rows(3, 1)]
    results, after, _ = blocked(probe, [lambda i=i, x=x: seldon_rest(probe.server, x, f"w-{i}") for i, x in enumerate(inputs)])
    for status, reply in results:
        assert status == 500
        assert "predict returned 1 rows for a batch of 3 rows from 3 requests" in reply["status"]["info"]
    assert [e["rows"] for e in after if e["event"] == "call"] == [3]


@pytest.mark.parametrize("payload, kind", [
    ({"strData": "hello"}, "str"),
    ({"jsonData": {"a": [1, 2]}}, "dict"),
    ({"binData": "aGVsbG8="}, "bytes"),
    ({"data": {"ndarray": [["a", None]]}}, "ndarray"),  # an object array
    ({"data": {"ndarray": [["x", "y"]]}}, "ndarray"),  # a str array: the model's predict says no to it
])
def test_payloads_that_cannot_be_stacked_do_not_wait_for_the_batch_slot(probe, payload, kind):
    """Sent while the blocker holds the only batch slot: a bypassing request is answered (and
    logged by the model) before the blocker ends."""
    def send():
        return requests.post(probe.server.url + "/api/v1.0/predictions", json=payload, timeout=60)

    results, after, before = blocked(probe, [send])
    assert results[0].status_code == 200, results[0].text
    others = [e for e in before if e["event"] == "other"]
    assert [e["type"] for e in others] == [kind], before
    assert not [e for e in after if e["event"] != "end"], after


def test_batch_metrics_on_the_metrics_port(probe):
    before = _samples(requests.get(probe.server.metrics_url, timeout=5).text)
    inputs = [rows(i, 2) for i in range(4)]
    blocked(probe, [lambda i=i, x=x: seldon_rest(probe.server, x, f"p-{i}") for i, x in enumerate(inputs)])
    after = _samples(requests.get(probe.server.metrics_url, timeout=5).text)

    def delta(name: str, le: str = "") -> float:
        return after.get((name, le), 0.0) - before.get((name, le), 0.0)

    assert delta("fastseldon_batch_size_rows_count") == 2  # the blocker's call and the batch's
    assert delta("fastseldon_batch_size_rows_bucket", "8.0") - delta("fastseldon_batch_size_rows_bucket", "4.0") == 1
    assert delta("fastseldon_batch_size_requests_bucket", "4.0") - delta("fastseldon_batch_size_requests_bucket", "2.0") == 1
    assert delta("fastseldon_batch_queue_wait_seconds_count") == 5
    # the four queued behind the blocker waited about as long as it ran; the blocker didn't wait
    assert delta("fastseldon_batch_queue_wait_seconds_count") - delta("fastseldon_batch_queue_wait_seconds_bucket", "0.5") == 4


def _samples(text: str) -> dict[tuple[str, str], float]:
    """Batch metric samples by (name, le), summed across workers and other labels."""
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("fastseldon_batch"):
            continue
        head, value = line.rsplit(" ", 1)
        le = re.search(r'le="([^"]+)"', head)
        key = (head.split("{", 1)[0], le.group(1) if le else "")
        out[key] = out.get(key, 0.0) + float(value)
    return out


def test_a_full_queue_answers_503_and_resource_exhausted(tmp_path):
    ctx, log = start_probe(tmp_path, "BatchProbe", "--max-batch-size", "2", "--max-batch-queue", "2")
    with ctx as server:
        probe = Probe(server, log)
        inputs = [rows(i, 1) for i in range(6)]
        senders = [(lambda i=i, x=x: seldon_rest(server, x, f"q-{i}")) if i < 4 else
                   (lambda i=i, x=x: seldon_grpc(probe.channel, x, f"q-{i}")) for i, x in enumerate(inputs)]
        results, _, _ = blocked(probe, senders)
        ok = [r for r in results if r[0] in (200, grpc.StatusCode.OK)]
        refused = [r for r in results if r[0] in (503, grpc.StatusCode.RESOURCE_EXHAUSTED)]
        assert len(ok) == 2 and len(refused) == 4, results
        assert all("batch queue is full" in (r[1]["status"]["info"] if r[0] == 503 else r[1]) for r in refused)
        probe.channel.close()


def test_async_predict_is_batched(tmp_path):
    ctx, log = start_probe(tmp_path, "AsyncBatchProbe", "--max-batch-size", "16")
    with ctx as server:
        probe = Probe(server, log)
        inputs = [rows(i, 2) for i in range(5)]
        senders = [(lambda i=i, x=x: seldon_rest(server, x, f"a-{i}")) if i % 2 else
                   (lambda i=i, x=x: seldon_grpc(probe.channel, x, f"a-{i}")) for i, x in enumerate(inputs)]
        results, after, _ = blocked(probe, senders)
        for i, (x, (_status, reply)) in enumerate(zip(inputs, results)):
            got = seldon_rest_array(reply) if i % 2 else np.array(reply.data.tensor.values).reshape(2, 3)
            np.testing.assert_array_equal(got, x * 2 + 1)
        assert [e["rows"] for e in after if e["event"] == "call"] == [10], after
        probe.channel.close()


def test_batching_off_by_default_each_request_is_its_own_call(tmp_path):
    ctx, log = start_probe(tmp_path, "BatchProbe")
    with ctx as server:
        probe = Probe(server, log)
        inputs = [rows(i, 1) for i in range(4)]
        results, after, before = blocked(probe, [lambda i=i, x=x: seldon_rest(server, x, f"o-{i}") for i, x in enumerate(inputs)])
        for x, (_status, reply) in zip(inputs, results):
            np.testing.assert_array_equal(seldon_rest_array(reply), x * 2 + 1)
        calls = [e["rows"] for e in before + after if e["event"] == "call"]
        assert calls == [1, 1, 1, 1]
        probe.channel.close()
