"""Production hardening (issue 17), against the real server: a hung or crashing model never takes
the server down, limits on every front, live vs ready, port clashes, metrics at start, JSON logs,
worker recycling, and the command line's messages. The model is tests/models/Fragile.py."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests

from fastseldon.proto import grpc_service_pb2 as v2pb
from fastseldon.proto import prediction_pb2 as pb
from support.serving import MODELS, free_port, running
from support.waiting import wait_until

V2 = "/inference.GRPCInferenceService/"
PREDICT = "/api/v1.0/predictions"


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _predict(url: str, value: float, session=None, timeout: float = 30) -> requests.Response:
    return (session or requests).post(url + PREDICT, json={"data": {"ndarray": [[value]]}}, timeout=timeout)


def _ping(url: str, timeout: float = 1.0) -> bool:
    try:
        with requests.Session() as s:  # a new connection each time: the kernel may pick any worker
            return s.get(url + "/health/ping", timeout=timeout).status_code == 200
    except requests.RequestException:
        return False


def _raw(method: str, fn_name: str, channel: grpc.Channel):
    return channel.unary_unary(fn_name, request_serializer=lambda b: b, response_deserializer=lambda b: b)


def _pid(server) -> int:
    return requests.get(server.url + "/health/status", timeout=5).json()["jsonData"]["pid"]


def _vm(pid: int, key: str) -> int:
    """A /proc/PID/status memory line (VmRSS, VmHWM) in bytes."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    raise KeyError(key)


# --------------------------------------------------------------------------- a hung predict


def test_hung_predict_on_the_loop_gets_the_worker_killed_and_replaced():
    with running(["Fragile", "--workers", "2", "--worker-timeout", "2"], expect_exit=None) as server:
        wait_until(lambda: len(_children(server.proc.pid)) == 2, what="two workers")
        session = requests.Session()
        for _ in range(6):  # past the warm-up calls, measured cheap: it runs on the event loop now
            assert _predict(server.url, 0, session).status_code == 200
        stuck_pid = session.get(server.url + "/health/status", timeout=5).json()["jsonData"]["pid"]  # this connection's worker
        hung = ThreadPoolExecutor(1).submit(_predict, server.url, 3600, session, 60)
        started = time.monotonic()
        # the other worker keeps answering while this one's loop is stuck
        wait_until(lambda: _ping(server.url, 0.5), timeout=10, what="a ping answered by the healthy worker")
        wait_until(lambda: stuck_pid not in _children(server.proc.pid), timeout=15, what="the stuck worker killed")
        killed_after = time.monotonic() - started
        with pytest.raises(requests.ConnectionError):
            hung.result(30)  # its connection died with the worker
        wait_until(lambda: len(_children(server.proc.pid)) == 2, timeout=15, what="a replacement worker")
        wait_until(lambda: all(_ping(server.url) for _ in range(10)), timeout=15, what="every ping answered again")
        assert _predict(server.url, 0).status_code == 200
        out = server.output()
    assert 1.5 < killed_after < 10, out
    assert f"worker {stuck_pid} timed out: its event loop has been blocked" in out
    assert "serving POST /api/v1.0/predictions" in out  # the stuck request's route
    assert "Fragile.py" in out and "in predict" in out  # faulthandler's stack dump, user frame included
    assert server.stop() == 0


def test_hung_predict_on_the_pool_keeps_health_answering_and_the_worker_is_replaced():
    with running(["Fragile", "--worker-timeout", "2", "--graceful-timeout", "1"], expect_exit=None) as server:
        first_pid = _pid(server)
        for _ in range(4):
            _predict(server.url, 0)
        _predict(server.url, 0.01)  # one slow call after the warm-up: this hook never runs on the loop again
        hung = ThreadPoolExecutor(1).submit(_predict, server.url, 3600, None, 60)
        deadline = time.monotonic() + 30
        pings = []
        while time.monotonic() < deadline:
            pings.append(_ping(server.url, 2.0))
            try:
                if _pid(server) != first_pid:
                    break
            except requests.RequestException:
                pings.append(False)
            time.sleep(0.1)
        assert _pid(server) != first_pid, server.output()
        assert all(pings) and len(pings) > 10, f"{pings}\n{server.output()}"  # health answered throughout
        assert _predict(server.url, 0).status_code == 200
        wait_until(lambda: hung.done(), timeout=15, what="the hung request to end with its old worker")
        out = server.output()
        wait_until(lambda: 'fastseldon_worker_restarts_total{reason="hung"} 1.0' in server.scrape("hung"), timeout=5,
                   what="the restart counted")
    assert "a call to POST /api/v1.0/predictions has run for" in out and "replacing the worker" in out, out
    assert server.stop() == 0


def test_request_timeout_answers_504_and_the_connection_carries_on(tmp_path):
    with running(["Fragile", "--request-timeout", "1", "--grpc-threads", "2"], env={"FRAGILE_TRACE": str(tmp_path)}) as server:
        session = requests.Session()
        start = time.monotonic()
        r = _predict(server.url, 5, session)
        elapsed = time.monotonic() - start
        assert r.status_code == 504 and elapsed < 3, (r.status_code, elapsed)
        assert r.json()["status"]["info"] == "request timed out after 1s"
        assert _predict(server.url, 0, session).json()["data"]["ndarray"] == [[0.0]]  # same connection, next request
        r = requests.post(server.url + "/v2/models/Fragile/infer", timeout=10,
                          json={"inputs": [{"name": "x", "datatype": "FP64", "shape": [1, 1], "data": [4]}]})
        assert r.status_code == 504 and "timed out" in r.json()["error"]

        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = channel.unary_unary("/seldon.protos.Model/Predict", request_serializer=pb.SeldonMessage.SerializeToString,
                                       response_deserializer=pb.SeldonMessage.FromString)
            msg = pb.SeldonMessage()
            msg.data.tensor.shape.extend([1, 1])
            msg.data.tensor.values.append(5)
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub(msg, timeout=30)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - start < 3
            assert "timed out" in err.value.details()
        assert 'code="504"' in server.scrape('code="504"')


def test_grpc_call_past_its_deadline_is_not_started(tmp_path):
    with running(["Fragile", "--grpc-threads", "1"], env={"FRAGILE_TRACE": str(tmp_path)}) as server:
        with grpc.insecure_channel(server.grpc_target) as channel:
            stub = channel.unary_unary("/seldon.protos.Model/Predict", request_serializer=pb.SeldonMessage.SerializeToString,
                                       response_deserializer=pb.SeldonMessage.FromString)

            def message(value: float) -> pb.SeldonMessage:
                msg = pb.SeldonMessage()
                msg.data.tensor.shape.extend([1, 1])
                msg.data.tensor.values.append(value)
                return msg

            busy = stub.future(message(1.5), timeout=30)  # holds the only handler thread
            wait_until(lambda: any(p.name.startswith("1.5-") for p in tmp_path.iterdir()), what="the first call inside")
            with pytest.raises(grpc.RpcError) as err:
                stub(message(0.25), timeout=0.3)  # waits for the thread past its deadline
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            busy.result()
            time.sleep(0.3)
            assert stub(message(0.0), timeout=10).data.tensor.values == [0.0]
    assert not any(p.name.startswith("0.25-") for p in tmp_path.iterdir()), "a call past its deadline was started"


# --------------------------------------------------------------------------- crashes


def test_crashing_requests_never_stop_the_server_and_restarts_back_off():
    def answered() -> bool:
        try:
            r = _predict(server.url, 0, timeout=2)
        except requests.RequestException:
            return False
        return r.status_code == 200  # else 503 from a worker that is still loading

    with running(["Fragile", "--workers", "2"], expect_exit=None) as server:
        crashes = 0
        while crashes < 12:
            wait_until(answered, timeout=30, interval=0.05, what="a good request answered between the crashes")
            try:
                r = _predict(server.url, -1, timeout=10)  # os.abort() in the model
            except requests.ConnectionError:
                crashes += 1
            else:  # it reached a worker still loading (both were down a moment ago): "not ready"
                assert r.status_code == 503, r.text
            assert server.proc.poll() is None, f"the supervisor exited with {server.proc.returncode}:\n{server.output()}"
        wait_until(answered, timeout=30, interval=0.05, what="a good request answered after the crashes")
        text = server.scrape('reason="crash"} 12.0')
        out = server.output()
    assert 'fastseldon_worker_restarts_total{reason="crash"} 12.0' in text, text
    assert "restarting it in" in out and "killed by signal 6 (SIGABRT)" in out
    delays = [float(line.split("restarting it in ")[1].split("s")[0]) for line in out.splitlines() if "restarting it in" in line]
    assert len(delays) == 12 and max(delays) > min(delays) and max(delays) <= 10.0, delays  # exponential, capped
    assert "Fatal Python error: Aborted" in out  # faulthandler: the model's stack when it aborted
    assert server.stop() == 0


def test_supervisor_gives_up_non_zero_when_workers_can_no_longer_start(tmp_path):
    marker = tmp_path / "started-once"
    with running(["Fragile"], env={"FRAGILE_FAIL_AFTER_FIRST": str(marker)}, expect_exit=None) as server:
        with pytest.raises(requests.ConnectionError):
            _predict(server.url, -1)  # the worker dies; every restart fails in the constructor
        code = server.proc.wait(60)
        server.stopped = True
        out = server.output()
    assert code == 4, out
    errors = [line for line in out.splitlines() if line.startswith("fastseldon: error:")]
    assert len(errors) == 1 and "giving up" in errors[0] and "the weights are gone" in errors[0], out
    assert out.count("failed to start (Fragile(**{}) failed: RuntimeError: the weights are gone)") == 4, out


# --------------------------------------------------------------------------- HTTP limits


def _exchange(port: int, data: bytes, *, chunk: int = 0, pause: float = 0.0, read_timeout: float = 10.0) -> tuple[bytes, float]:
    """Send ``data`` (in chunks with pauses, if asked), read until the server closes; (reply bytes, seconds to the close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as sock:
        start = time.monotonic()
        try:
            if chunk:
                for i in range(0, len(data), chunk):
                    sock.sendall(data[i:i + chunk])
                    if pause:
                        time.sleep(pause)
            else:
                sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while True:
                got = sock.recv(65536)
                if not got:
                    break
                reply += got
        except (ConnectionResetError, TimeoutError):
            pass
        return reply, time.monotonic() - start


@pytest.fixture(scope="module")
def limited():
    with running(["Fragile", "--header-timeout", "1", "--body-timeout", "1", "--max-request-line", "1024",
                  "--max-header-bytes", "4096", "--max-headers", "20", "--max-body-bytes", "1M"]) as server:
        yield server


@pytest.mark.parametrize("request_bytes, status", [
    (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
    (b"GET /health/ping HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(30)) + b"\r\n", 431),
    (b"GET /health/ping HTTP/1.1\r\nCookie: " + b"c" * 5000 + b"\r\n\r\n", 431),
], ids=["long-request-line", "too-many-headers", "too-many-header-bytes"])
def test_request_line_and_header_limits(limited, request_bytes, status):
    reply, _ = _exchange(limited.http_port, request_bytes)
    assert reply.startswith(f"HTTP/1.1 {status} ".encode()) and b"connection: close" in reply, reply[:300]
    assert requests.get(limited.url + "/health/ping", timeout=5).status_code == 200


def test_a_never_ending_header_is_refused_early_without_stalling_others(limited):
    done = threading.Event()
    result: dict = {}

    def flood():
        head = b"GET /health/ping HTTP/1.1\r\nX-Flood: "
        with socket.create_connection(("127.0.0.1", limited.http_port)) as sock:
            sock.sendall(head)
            sent = 0
            try:
                while sent < 128 * 2**20:
                    sock.sendall(b"f" * 65536)
                    sent += 65536
            except (BrokenPipeError, ConnectionResetError):
                pass
            result["sent"] = sent
            try:
                result["reply"] = sock.recv(65536)
            except ConnectionResetError:
                result["reply"] = b""
        done.set()

    thread = threading.Thread(target=flood)
    thread.start()
    latencies = []
    while not latencies or not done.is_set():  # other clients are answered promptly all along
        start = time.monotonic()
        assert requests.get(limited.url + "/health/ping", timeout=5).status_code == 200
        latencies.append(time.monotonic() - start)
    thread.join()
    assert result["sent"] < 8 * 2**20, result  # cut off after a few hundred KiB, not 128 MiB
    assert max(latencies) < 1.0, latencies


def test_slow_headers_get_408_and_the_connection_closed(limited):
    head = b"GET /health/ping HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"s" * 40
    reply, seconds = _exchange(limited.http_port, head, chunk=1, pause=0.05)  # a byte every 50 ms never finishes in time
    assert reply.startswith(b"HTTP/1.1 408 ") and b"connection: close" in reply, reply
    assert seconds < 4.0


def test_a_stalled_body_gets_408(limited):
    reply, seconds = _exchange(limited.http_port, b"POST /api/v1.0/predictions HTTP/1.1\r\nContent-Length: 100\r\n"
                               b"Content-Type: application/json\r\n\r\n{\"data\":")
    assert reply.startswith(b"HTTP/1.1 408 ") and b"stalled" in reply, reply
    assert seconds < 4.0


def test_an_idle_new_connection_is_closed_by_keepalive_not_held_forever():
    with running(["Fragile", "--keepalive", "1"]) as server:
        reply, seconds = _exchange(server.http_port, b"")
        assert reply == b"" and seconds < 4.0


# --------------------------------------------------------------------------- gRPC limits and memory


def test_grpc_messages_over_max_body_bytes_are_resource_exhausted():
    with running(["Fragile", "--max-body-bytes", "1M"]) as server:
        with grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 64 * 2**20),
                                                                ("grpc.max_receive_message_length", 64 * 2**20)]) as ch:
            infer = _raw("", V2 + "ModelInfer", ch)
            request = v2pb.ModelInferRequest(model_name="Fragile")
            tensor = request.inputs.add(name="x", datatype="FP32", shape=[1, 2**19])  # 2 MiB
            del tensor
            request.raw_input_contents.append(np.zeros(2**19, np.float32).tobytes())
            with pytest.raises(grpc.RpcError) as err:
                infer(request.SerializeToString(), timeout=30)
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            request.inputs[0].shape[:] = [1, 2**17]  # 512 KiB passes
            request.raw_input_contents[0] = np.zeros(2**17, np.float32).tobytes()
            reply = v2pb.ModelInferResponse.FromString(infer(request.SerializeToString(), timeout=30))
            assert len(reply.raw_output_contents[0]) == 2**19


def test_memory_for_a_64_mib_grpc_tensor(record_property):
    """Peak worker memory growth for one 64 MiB tensor in and out (identity model), over the
    tensor's size: the request, the reply and grpcio's copy of the reply make 3x. Three calls
    each; grpcio's receive buffers make single calls vary (seen: 3.0x to 5x), so the best of
    three is asserted and all are reported."""
    size = 64 * 2**20
    ratios: dict[str, list[float]] = {}
    with running(["Fragile", "--max-body-bytes", "512M"]) as server:
        pid = _children(server.proc.pid)[0]
        with grpc.insecure_channel(server.grpc_target, options=[("grpc.max_send_message_length", 512 * 2**20),
                                                                ("grpc.max_receive_message_length", 512 * 2**20)]) as ch:
            v2_request = v2pb.ModelInferRequest(model_name="Fragile")
            v2_request.inputs.add(name="x", datatype="FP32", shape=[1, size // 4])
            v2_request.raw_input_contents.append(np.arange(size // 4, dtype=np.float32).tobytes())
            cases = [("v2-raw", V2 + "ModelInfer", v2_request.SerializeToString())]
            for name, columns in (("seldon-tensor-64-columns", 64), ("seldon-tensor-1-row", size // 8)):
                seldon = pb.SeldonMessage()
                seldon.data.tensor.shape.extend([size // 8 // columns, columns])
                seldon.data.tensor.values.extend(np.arange(size // 8, dtype=np.float64))
                cases.append((name, "/seldon.protos.Model/Predict", seldon.SerializeToString()))
            for name, method, body in cases:
                call = _raw("", method, ch)
                call(body, timeout=60)  # once to warm up allocator pools
                for _ in range(3):
                    base = _vm(pid, "VmRSS")
                    with open(f"/proc/{pid}/clear_refs", "w") as f:
                        f.write("5")  # reset VmHWM to the current RSS
                    assert len(call(body, timeout=60)) >= size
                    ratios.setdefault(name, []).append(round((_vm(pid, "VmHWM") - base) / size, 2))
    for name, seen in ratios.items():
        record_property(f"memory_ratio_{name}", seen)
    print("peak worker memory growth / tensor size:", ratios)
    assert min(ratios["v2-raw"]) <= 3.5, ratios
    assert min(ratios["seldon-tensor-64-columns"]) <= 3.5, ratios
    # Seldon's default names: a [1, 8M] tensor's reply carries 8M "t:i" names, 2.4x the tensor itself
    assert min(ratios["seldon-tensor-1-row"]) <= 7.0, ratios


# --------------------------------------------------------------------------- recycling


def test_max_requests_recycles_workers_without_a_failed_request():
    with running(["Fragile", "--workers", "2", "--max-requests", "40", "--max-requests-jitter", "10"], expect_exit=None) as server:
        first = set(_children(server.proc.pid))
        failures: list[str] = []
        answered = [0]

        def client(n: int) -> None:
            with requests.Session() as s:
                for _ in range(n):
                    try:
                        r = _predict(server.url, 0, s, timeout=30)
                        if r.status_code != 200:
                            failures.append(f"{r.status_code} {r.text}")
                        else:
                            answered[0] += 1
                    except requests.RequestException as exc:
                        failures.append(repr(exc))

        threads = [threading.Thread(target=client, args=(100,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        def recycled() -> float:
            text = server.scrape('reason="max-requests"')
            return float(text.split('fastseldon_worker_restarts_total{reason="max-requests"} ')[1].split()[0])

        # 400 requests over workers that ask to be recycled after 40 to 50: a few replacements (an
        # old worker serves on until its successor is ready, so how many depends on timing)
        wait_until(lambda: recycled() >= 2, timeout=20, what="workers recycled")
        out = server.output()
        now = set(_children(server.proc.pid))
    assert failures == [], f"{failures[:5]}\n{out}"
    assert answered[0] == 400
    assert "(--max-requests); replacing it" in out and first != now, (first, now, out)
    assert server.stop() == 0


def test_max_worker_memory_replaces_a_leaking_worker():
    with running(["Fragile", "--max-worker-memory", "150M"], expect_exit=None) as server:
        first = _pid(server)
        assert _predict(server.url, -2).status_code == 200  # keeps 200 MiB alive
        wait_until(lambda: _pid(server) != first, timeout=20, interval=0.2, what="the leaking worker replaced")
        out = server.output()
    assert "over --max-worker-memory 150 MiB; replacing it" in out, out
    assert server.stop() == 0


# --------------------------------------------------------------------------- live vs ready


def test_live_before_ready_while_load_takes_8_seconds():
    with running(["Fragile", "--model-name", "fragile"], env={"FRAGILE_LOAD_SECONDS": "8"}, wait="live") as server:
        started = time.monotonic()
        url = server.url
        assert requests.get(url + "/health/ping", timeout=2).text == "pong"
        assert requests.get(url + "/v2/health/live", timeout=2).json() == {"live": True}
        for path in ("/health/status", "/v2/health/ready", "/v2/models/fragile/ready"):
            r = requests.get(url + path, timeout=2)
            assert r.status_code == 503, (path, r.status_code, r.text)
        r = _predict(url, 1)
        assert r.status_code == 503 and r.json()["status"]["reason"] == "MICROSERVICE_UNAVAILABLE"
        r = requests.post(url + "/v2/models/fragile/infer", json={"inputs": []}, timeout=2)
        assert r.status_code == 503 and "loading" in r.json()["error"]
        with grpc.insecure_channel(server.grpc_target) as ch:
            assert v2pb.ServerLiveResponse.FromString(_raw("", V2 + "ServerLive", ch)(b"", timeout=5)).live
            assert not v2pb.ServerReadyResponse.FromString(_raw("", V2 + "ServerReady", ch)(b"", timeout=5)).ready
            with pytest.raises(grpc.RpcError) as err:
                _raw("", "/seldon.protos.Model/Predict", ch)(b"", timeout=5)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
            assert time.monotonic() - started < 6, "all of that while load() was still running"
            wait_until(lambda: requests.get(url + "/v2/health/ready", timeout=2).status_code == 200, timeout=30,
                       what="ready after load()")
            assert v2pb.ServerReadyResponse.FromString(_raw("", V2 + "ServerReady", ch)(b"", timeout=5)).ready
        assert requests.get(url + "/v2/models/fragile/ready", timeout=2).json()["ready"] is True
        assert _predict(url, 0).status_code == 200
        assert requests.get(url + "/health/status", timeout=2).status_code == 200


# --------------------------------------------------------------------------- port clash


def _serve_on(http_port: int, grpc_port: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastseldon", "serve", "Fragile", "--http-port", str(http_port),
                           "--grpc-port", str(grpc_port), "--metrics-port", str(free_port())],
                          cwd=MODELS, capture_output=True, text=True, timeout=60)


def test_a_second_server_on_a_served_port_refuses_to_start():
    with running(["Fragile"]) as first:
        for http_port, grpc_port, what in ((first.http_port, free_port(), "HTTP"), (free_port(), first.grpc_port, "gRPC")):
            done = _serve_on(http_port, grpc_port)
            lines = [line for line in done.stderr.splitlines() if line.startswith("fastseldon: error:")]
            assert done.returncode != 0 and len(lines) == 1, done.stderr
            assert f"{what} port" in lines[0] and "already in use" in lines[0], lines
        for _ in range(20):  # and the first server still has all the traffic
            assert requests.get(first.url + "/health/status", timeout=5).status_code == 200


def test_a_port_served_by_something_else_is_refused():
    with socket.socket() as other:
        other.bind(("0.0.0.0", 0))
        other.listen()
        done = _serve_on(other.getsockname()[1], free_port())
    assert done.returncode != 0 and "already in use" in done.stderr, done.stderr


# --------------------------------------------------------------------------- metrics and logs


def test_metrics_are_present_at_start():
    with running(["Fragile"]) as server:
        text = requests.get(server.metrics_url, timeout=5).text
    for family in ("fastseldon_requests_total counter", "fastseldon_request_duration_seconds histogram",
                   "seldon_api_model_feedback_total counter", "process_resident_memory_bytes gauge",
                   "python_gc_objects_collected_total counter", "fastseldon_worker_restarts_total counter",
                   "fastseldon_worker_resident_memory_bytes gauge"):
        assert f"# TYPE {family}" in text, family
    assert 'fastseldon_worker_restarts_total{reason="crash"} 0.0' in text
    assert 'fastseldon_workers{state="ready"} 1.0' in text
    assert "python_info{" in text


def test_json_logs_parse_and_carry_the_access_fields_and_the_user_traceback():
    with running(["Fragile", "--log-format", "json", "--access-log"], expect_exit=None) as server:
        requests.post(server.url + PREDICT, json={"data": {"ndarray": [[1]]}}, headers={"Seldon-Puid": "p-123"}, timeout=5)
        for _ in range(2):
            assert _predict(server.url, -3).status_code == 500
        code = server.stop()
        lines = [line for line in server.output().splitlines() if line.strip()]
    assert code == 0
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message", "pid"} <= set(r) for r in records)
    access = [r for r in records if r["logger"] == "fastseldon.access" and r.get("puid") == "p-123"]
    assert len(access) == 1
    assert access[0]["route"] == PREDICT and access[0]["status"] == 200 and access[0]["latency_ms"] > 0
    assert access[0]["client"].startswith("127.0.0.1:") and access[0]["method"] == "POST"
    errors = [r for r in records if "user model error: ValueError: bad value -3" in r["message"]]
    assert len(errors) == 2
    assert "Fragile.py" in errors[0]["traceback"] and 'raise ValueError("bad value -3")' in errors[0]["traceback"]
    assert "traceback" not in errors[1]  # once per distinct error at INFO
    messages = [r["message"] for r in records]
    assert any(m.startswith("received SIGTERM: stopping 1 worker(s)") for m in messages)
    assert any("draining" in m for m in messages) and "fastseldon stopped" in messages


def test_user_error_tracebacks_every_time_at_debug():
    with running(["Fragile", "--log-level", "DEBUG"]) as server:
        for _ in range(2):
            assert _predict(server.url, -3).status_code == 500
        out = server.output()
    assert out.count('raise ValueError("bad value -3")') == 2, out


def test_a_shape_whose_element_count_overflows_is_400():
    with running(["Fragile", "--model-name", "fragile"]) as server:
        for shape in ([2**32, 2**32], [0, 2**62]):
            r = requests.post(server.url + "/v2/models/fragile/infer", timeout=5,
                              json={"inputs": [{"name": "x", "datatype": "FP32", "shape": shape, "data": []}]})
            assert r.status_code == 400 and "too large" in r.json()["error"], r.text
        with grpc.insecure_channel(server.grpc_target) as ch:
            request = v2pb.ModelInferRequest(model_name="fragile")
            request.inputs.add(name="x", datatype="FP32", shape=[0, 2**62])
            request.raw_input_contents.append(b"")
            with pytest.raises(grpc.RpcError) as err:
                _raw("", V2 + "ModelInfer", ch)(request.SerializeToString(), timeout=5)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "too large" in err.value.details()


def test_nan_is_written_as_seldon_writes_it():
    with running(["Fragile"]) as server:
        r = requests.post(server.url + PREDICT, data=b'{"data":{"ndarray":[[NaN, Infinity, -Infinity, 1.5]]}}',
                          headers={"content-type": "application/json"}, timeout=5)
    assert r.status_code == 200
    assert b'"ndarray":[[NaN,Infinity,-Infinity,1.5]]' in r.content


# --------------------------------------------------------------------------- command line


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    return subprocess.run([sys.executable, "-m", "fastseldon", *args, *ports], cwd=MODELS, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("args, env, message", [
    (["serve", "Fragile.py"], None, "'Fragile.py' is a file name; the interface name is the class: 'Fragile'"),
    (["serve", "Fragile", "--max-requsts", "5"], None, "unknown flag --max-requsts"),
    (["serve", "Fragile"], {"PREDICTIVE_UNIT_PARAMETERS": "[{oops"}, "PREDICTIVE_UNIT_PARAMETERS is not valid JSON"),
    (["serve", "Fragile"], {"PREDICTIVE_UNIT_PARAMETERS": '[{"name":"a","value":"x","type":"INT"}]'},
     "PREDICTIVE_UNIT_PARAMETERS: Bad model parameter"),
    (["serve", "Fragile", "--workers", "0"], None, "--workers must be at least 1"),
    (["serve", "Fragile"], {"GUNICORN_WORKERS": "0"}, "environment variable GUNICORN_WORKERS must be at least 1"),
    (["serve", "Fragile"], {"GUNICORN_TIMEOUT": "soon"}, "environment variable GUNICORN_TIMEOUT has a bad value"),
])
def test_command_line_messages(args, env, message):
    done = _cli(*args, env=env)
    lines = [line for line in done.stderr.splitlines() if "fastseldon: error" in line]
    assert done.returncode != 0 and len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


def test_sigterm_is_logged():
    with running(["Fragile", "--workers", "2"], expect_exit=None) as server:
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(30) == 0
        server.stopped = True
        out = server.output()
    assert "received SIGTERM: stopping 2 worker(s), finishing in-flight requests within 20s" in out
    assert out.count("draining: ") == 2 and out.count("stopped") >= 3 and "fastseldon stopped" in out
