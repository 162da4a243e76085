"""Production hardening (issue 17) in-process: settings and their environment names, JSON logs and
user-error logging, the watchdog's pieces, hook placement once a hook was slow, the start-up
router and gRPC table, the gRPC front's deadlines and timeout, and the metrics collectors."""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time

import grpc
import pytest

from fastseldon import grpc as front
from fastseldon import watchdog
from fastseldon.app import LIVE_PATHS, App, starting_methods, starting_router
from fastseldon.errors import FastSeldonError
from fastseldon.http import Request
from fastseldon.logs import JsonFormatter, UserErrors
from fastseldon.metrics import WorkerProcesses, process_stat
from fastseldon.proto import grpc_service_pb2 as v2pb
from fastseldon.runner import PROBE_CALLS
from fastseldon.settings import ServerSettings, UnitSettings, build_parser, from_args, parse_size
from fastseldon.user_model import UserModel
from support.serving import free_port
from support.waiting import wait_until

# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("text, size", [("1048576", 2**20), ("512K", 512 * 2**10), ("100M", 100 * 2**20), ("2G", 2 * 2**30),
                                        ("1.5M", 3 * 2**19), ("64Mi", 64 * 2**20), ("64MiB", 64 * 2**20), ("8kb", 8192)])
def test_parse_size(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "M", "12Q", "-1K", "lots"])
def test_parse_size_refuses_nonsense(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_hardening_defaults_are_nginx_and_gunicorn_like():
    s, _ = from_args(build_parser().parse_args(["M"]), {})
    assert (s.worker_timeout, s.request_timeout, s.max_requests, s.max_requests_jitter, s.max_worker_memory) == (30, 0, 0, 0, 0)
    assert (s.max_request_line, s.max_header_bytes, s.max_headers, s.header_timeout, s.body_timeout) == (8192, 32768, 100, 60, 60)
    assert s.max_grpc_message_bytes == s.max_body_bytes == 100 * 2**20 and s.log_format == "text"


def test_hardening_flags_and_environment_names():
    parser = build_parser()
    env = {"GUNICORN_TIMEOUT": "12", "GUNICORN_MAX_REQUESTS": "1000", "GUNICORN_MAX_REQUESTS_JITTER": "50",
           "FASTSELDON_REQUEST_TIMEOUT": "2.5", "FASTSELDON_MAX_WORKER_MEMORY": "2G", "FASTSELDON_MAX_BODY_BYTES": "8M",
           "FASTSELDON_MAX_HEADER_BYTES": "16K", "FASTSELDON_LOG_FORMAT": "JSON", "FASTSELDON_HEADER_TIMEOUT": "5"}
    s, _ = from_args(parser.parse_args(["M"]), env)
    assert (s.worker_timeout, s.max_requests, s.max_requests_jitter, s.request_timeout) == (12, 1000, 50, 2.5)
    assert (s.max_worker_memory, s.max_body_bytes, s.max_grpc_message_bytes) == (2 * 2**30, 8 * 2**20, 8 * 2**20)
    assert (s.max_header_bytes, s.log_format, s.header_timeout) == (16384, "json", 5)
    s, _ = from_args(parser.parse_args(["M", "--worker-timeout", "0", "--max-requests", "7", "--max-body-bytes", "3G",
                                        "--log-format", "text", "--max-headers", "10"]), env)
    assert (s.worker_timeout, s.max_requests, s.log_format, s.max_headers) == (0, 7, "text", 10)
    assert s.max_grpc_message_bytes == 2**31 - 1  # grpcio's options are C ints
    s, _ = from_args(parser.parse_args(["M"]), {"FASTSELDON_WORKER_TIMEOUT": "3", "GUNICORN_TIMEOUT": "99"})
    assert s.worker_timeout == 3  # our name first


@pytest.mark.parametrize("argv, env, message", [
    (["M", "--workers", "0"], {}, "--workers must be at least 1"),
    (["M"], {"FASTSELDON_WORKERS": "0"}, "environment variable FASTSELDON_WORKERS must be at least 1"),
    (["M"], {"GUNICORN_MAX_REQUESTS": "many"}, "environment variable GUNICORN_MAX_REQUESTS has a bad value: 'many'"),
    (["M", "--request-timeout", "-1"], {}, "--request-timeout must not be negative"),
    (["M", "--max-headers", "0"], {}, "--max-headers must be at least 1"),
    (["M"], {"FASTSELDON_LOG_FORMAT": "xml"}, "unknown log format 'xml'"),
])
def test_bad_hardening_settings_name_their_source(argv, env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        from_args(build_parser().parse_args(argv), env)


# --------------------------------------------------------------------------- logs


def _record(**extra) -> logging.LogRecord:
    record = logging.LogRecord("fastseldon.access", logging.INFO, __file__, 1, "%s %d", ("GET /x", 200), None)
    record.__dict__.update(extra)
    return record


def test_json_lines_carry_the_request_fields():
    line = JsonFormatter().format(_record(route="/x", status=200, latency_ms=0.25, puid="p1", client="1.2.3.4:5"))
    doc = json.loads(line)
    assert doc["message"] == "GET /x 200" and doc["level"] == "INFO" and doc["logger"] == "fastseldon.access"
    assert (doc["route"], doc["status"], doc["latency_ms"], doc["puid"], doc["client"]) == ("/x", 200, 0.25, "p1", "1.2.3.4:5")
    assert doc["time"].endswith("Z") and doc["pid"] == os.getpid() and "\n" not in line


def test_json_lines_hold_the_traceback():
    try:
        raise KeyError("k")
    except KeyError as exc:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), (type(exc), exc, exc.__traceback__))
    doc = json.loads(JsonFormatter().format(record))
    assert 'raise KeyError("k")' in doc["traceback"]


def _user_error(value: int) -> Exception:
    try:
        raise ValueError(f"bad {value}")
    except ValueError as exc:
        return exc


def test_user_errors_traceback_once_per_distinct_error_at_info(caplog):
    logger = logging.getLogger("test.user_errors.info")
    errors = UserErrors(logger)
    with caplog.at_level(logging.INFO, logger=logger.name):
        for value in (1, 1, 2, 1):
            errors.log(_user_error(value))
    with_tb = [r.getMessage() for r in caplog.records if r.exc_info]
    assert with_tb == ["user model error: ValueError: bad 1", "user model error: ValueError: bad 2"]
    assert len(caplog.records) == 4 and "traceback logged the first time" in caplog.records[1].getMessage()
    assert 'raise ValueError(f"bad {value}")' in caplog.text  # the user's frame


def test_user_errors_traceback_every_time_at_debug(caplog):
    logger = logging.getLogger("test.user_errors.debug")
    errors = UserErrors(logger)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        for _ in range(3):
            errors.log(_user_error(1))
    assert sum(1 for r in caplog.records if r.exc_info) == 3


# --------------------------------------------------------------------------- the watchdog's pieces


def test_activity_tracks_calls_on_threads_and_the_loop_route():
    activity = watchdog.Activity()
    assert activity.loop_route() == "no request" and activity.oldest_call() is None
    activity.request = Request("POST", "/predict", "", {}, b"")
    assert activity.loop_route() == "POST /predict"
    first = activity.begin("/a")
    time.sleep(0.01)
    activity.begin("/b")
    assert activity.oldest_call()[1] == "/a"
    activity.end(first)
    assert activity.oldest_call()[1] == "/b"
    assert activity.tracked("/c", lambda: len(activity.calls))() == 2  # registered while it runs
    assert len(activity.calls) == 1


def _messages(fd: int) -> list[bytes]:
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 65536).split(b"\n")[:-1]
    except BlockingIOError:
        return []


def test_heartbeat_beats_from_the_loop_and_names_a_stuck_loop_and_a_hung_call():
    read, write = os.pipe()
    report = watchdog.Report(write)
    beat = watchdog.Heartbeat(report, timeout=0.5)  # beats every 0.1 s
    loop = asyncio.new_event_loop()
    token = None
    try:
        beat.start(loop)
        loop.run_until_complete(asyncio.sleep(0.35))
        assert _messages(read).count(b"B") >= 3
        watchdog.activity.request = Request("POST", "/stuck", "", {}, b"")
        time.sleep(0.5)  # the loop is blocked: no beats, and the monitor thread says where
        got = _messages(read)
        assert b"B" not in got and b"SPOST /stuck" in got
        token = watchdog.activity.begin("/seldon.protos.Model/Predict")
        wait_until(lambda: any(m.startswith(b"H") for m in _messages(read)), timeout=3, what="the hung call reported")
    finally:
        if token is not None:
            watchdog.activity.end(token)
        watchdog.activity.request = None
        beat.stop()
        loop.close()
        report.close()
        os.close(read)


def test_a_full_report_pipe_drops_messages_instead_of_blocking():
    read, write = os.pipe()
    report = watchdog.Report(write)
    start = time.monotonic()
    for _ in range(100_000):
        report.send(watchdog.BEAT)
    assert time.monotonic() - start < 5
    report.close()
    os.close(read)


# --------------------------------------------------------------------------- where hooks run


class Timed:
    def __init__(self) -> None:
        self.threads: list[str] = []
        self.sleep = 0.0

    def predict(self, X, names):
        self.threads.append(threading.current_thread().name)
        time.sleep(self.sleep)
        return X


def _app(loop, obj) -> App:
    # a 5 ms budget: a cheap call stays under it even on a loaded box
    return App(ServerSettings(inline_hook_seconds=0.005), UnitSettings(interface_name="Timed", model_name="m"),
               UserModel.from_object(obj), loop)


def _predict(loop, app: App) -> int:
    handler = app.router.resolve("POST", "/predict")
    request = Request("POST", "/predict", "", {b"content-type": b"application/json"}, b'{"data":{"ndarray":[[1]]}}')
    return loop.run_until_complete(handler(request)).status


def test_a_hook_that_was_slow_on_the_loop_never_runs_there_again():
    loop = asyncio.new_event_loop()
    try:
        model = Timed()
        app = _app(loop, model)
        loop_thread = threading.current_thread().name
        model.sleep = 0.02  # a slow first call is forgiven (cold caches, lazy imports) once the average forgets it
        _predict(loop, app)
        model.sleep = 0.0
        for _ in range(PROBE_CALLS + 100):
            _predict(loop, app)
            if model.threads[-1] == loop_thread:
                break
        assert model.threads[-1] == loop_thread, "cheap after the warm-up: on the loop"
        model.sleep = 0.02
        watchdog.loop_run_delay.refresh()  # what a worker's heartbeat does every second
        _predict(loop, app)  # slow on the loop once (sleeping: no time spent waiting for a CPU) ...
        model.sleep = 0.0
        del model.threads[:]
        for _ in range(50):  # ... and never on the loop again, however cheap it gets
            _predict(loop, app)
        assert all(name.startswith("hook") for name in model.threads), model.threads
        app.close()
    finally:
        loop.close()


def test_a_call_slowed_by_the_scheduler_does_not_send_a_hook_off_the_loop_for_good():
    """A busy or CPU-throttled machine makes any call slow now and then: the time the loop
    thread spent waiting for a CPU is not the hook's."""
    from fastseldon.runner import HookRunner
    from fastseldon.user_model import Hook

    delay = watchdog.loop_run_delay
    if delay.mark is None:
        pytest.skip("no /proc/thread-self/schedstat here")
    hook = Hook("predict", lambda: None, False, False, calls=10)
    runner = HookRunner(asyncio.new_event_loop(), None, 0.0005)  # type: ignore[arg-type]
    try:
        delay.refresh()
        delay.mark -= 60_000_000  # as if the loop thread had waited 60 ms for a CPU since the last reading
        own = runner._slow_on_loop(hook, 0.05)  # a 50 ms call that waiting explains: forgiven
        assert not hook.off_loop and own < 0.0005  # and its cost estimate does not take the wait either
        delay.refresh()
        own = runner._slow_on_loop(hook, 0.05)  # a 50 ms call with (next to) no waiting: the hook's own
        assert hook.off_loop and own > 0.04
    finally:
        delay.refresh()
        runner.loop.close()


# --------------------------------------------------------------------------- the start-up router and gRPC table


def test_starting_router_is_live_and_not_ready():
    router = starting_router()
    loop = asyncio.new_event_loop()
    try:
        for path in LIVE_PATHS:
            response = loop.run_until_complete(router.resolve("GET", path)(Request("GET", path, "", {}, b"")))
            assert response.status == 200
        for method, path in (("GET", "/health/status"), ("GET", "/v2/health/ready"), ("GET", "/v2/models/m/ready"),
                             ("POST", "/api/v1.0/predictions"), ("POST", "/v2/models/m/infer"), ("GET", "/anything")):
            with pytest.raises(FastSeldonError) as caught:
                router.resolve(method, path)
            rendered = router.render_error(path, caught.value)
            assert rendered.status == 503 and b"loading" in rendered.body
            if path.startswith("/v2"):
                assert json.loads(rendered.body) == {"error": "the model is loading: not ready yet"}
            else:
                assert json.loads(rendered.body)["status"]["reason"] == "MICROSERVICE_UNAVAILABLE"
    finally:
        loop.close()


def test_starting_grpc_methods_are_live_and_not_ready():
    methods = starting_methods()
    service = "/inference.GRPCInferenceService/"
    assert v2pb.ServerLiveResponse.FromString(methods[service + "ServerLive"](b"")).live
    assert not v2pb.ServerReadyResponse.FromString(methods[service + "ServerReady"](b"")).ready
    assert not v2pb.ModelReadyResponse.FromString(methods[service + "ModelReady"](b"")).ready
    for name in ("/seldon.protos.Model/Predict", service + "ModelInfer"):
        with pytest.raises(FastSeldonError) as caught:
            methods[name](b"")
        assert caught.value.grpc_code == "UNAVAILABLE"


# --------------------------------------------------------------------------- the gRPC front: swap, deadline, timeout


def _call(channel, method: str, request: bytes = b"", timeout: float = 10) -> bytes:
    return channel.unary_unary(method, request_serializer=lambda b: b, response_deserializer=lambda b: b)(request, timeout=timeout)


def test_grpc_method_table_swaps_and_bounds_calls_with_the_request_timeout():
    from concurrent.futures import ThreadPoolExecutor

    started: list[bytes] = []

    def slow(request: bytes) -> bytes:
        started.append(request)
        time.sleep(float(request))
        return b"done"

    pool = ThreadPoolExecutor(4)
    table = front.MethodTable({"/t.T/Ping": lambda request: b"loading"}, request_timeout=0.5, pool=pool)
    port = free_port()
    server = front.start(ServerSettings(host="127.0.0.1", grpc_port=port, grpc_threads=2), table)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert _call(channel, "/t.T/Ping") == b"loading"
            table.replace({"/t.T/Ping": lambda request: b"ready", "/t.T/Slow": slow})
            assert _call(channel, "/t.T/Ping") == b"ready"
            assert _call(channel, "/t.T/Slow", b"0.01") == b"done"
            start = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                _call(channel, "/t.T/Slow", b"3")
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - start < 2
            assert err.value.details() == "request timed out after 0.5s"
            for _ in range(4):  # the handler threads were freed: more calls than threads still get answers
                assert _call(channel, "/t.T/Ping") == b"ready"
            assert table.served >= 6
    finally:
        server.stop(None)
        pool.shutdown(wait=False, cancel_futures=True)


def test_grpc_calls_register_with_the_watchdog_while_they_run():
    seen: list[int] = []

    def look(request: bytes) -> bytes:
        seen.append(sum(route == "/t.T/Look" for _, route in list(watchdog.activity.calls.values())))
        return b""

    port = free_port()
    server = front.start(ServerSettings(host="127.0.0.1", grpc_port=port, grpc_threads=2), {"/t.T/Look": look})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            _call(channel, "/t.T/Look")
    finally:
        server.stop(None)
    assert seen == [1] and all(route != "/t.T/Look" for _, route in watchdog.activity.calls.values())


# --------------------------------------------------------------------------- metrics


def test_process_stat_and_worker_collector_read_proc():
    stat = process_stat(os.getpid())
    assert stat is not None and stat["rss"] > 10 * 2**20 and stat["cpu"] > 0 and stat["start"] > 1e9
    assert process_stat(2**22 + 12345) is None
    families = {f.name: f for f in WorkerProcesses(lambda: {0: os.getpid()}).collect()}
    assert set(families) == {"fastseldon_worker_resident_memory_bytes", "fastseldon_worker_cpu_seconds",
                             "fastseldon_worker_open_fds", "fastseldon_worker_start_time_seconds"}
    (sample,) = families["fastseldon_worker_resident_memory_bytes"].samples
    assert sample.labels == {"worker": "0"} and sample.value > 0
