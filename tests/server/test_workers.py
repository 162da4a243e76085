"""Process model: SIGTERM drains in-flight requests; a killed worker is replaced quickly."""
from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from support.serving import running
from support.waiting import wait_until


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _entered(trace, seconds: float) -> int:
    """How many transform_input calls of ``seconds`` the model has started (see AsyncModel)."""
    return sum(1 for p in trace.iterdir() if p.name.startswith(f"{seconds}-"))


def test_sigterm_finishes_in_flight_requests(tmp_path):
    # 8 hook threads per worker: however the kernel spreads the eight slow calls, all can be inside
    with running(["AsyncModel", "--workers", "2", "--grpc-threads", "8"], expect_exit=None,
                 env={"ASYNC_MODEL_TRACE": str(tmp_path)}) as server:
        url = server.url + "/transform-input"
        slow = {"data": {"ndarray": [[0.8]]}}
        for _ in range(3):  # the hook's first calls are probes; make sure it is measured as slow
            requests.post(server.url + "/transform-input", json={"data": {"ndarray": [[0.05]]}}, timeout=10)
        fast_results: list[tuple[str, object]] = []
        stop = threading.Event()

        def stream():
            with requests.Session() as s:
                i = 0
                while not stop.is_set():
                    i += 1
                    try:
                        r = s.post(server.url + "/predict", json={"data": {"ndarray": [[i]]}}, timeout=10)
                    except requests.ConnectionError:
                        fast_results.append(("refused", i))
                        stop.wait(0.01)  # back off; the server is going away
                        continue
                    fast_results.append(("answered", (i, r.status_code, r.json())))

        streamers = [threading.Thread(target=stream) for _ in range(3)]
        for t in streamers:
            t.start()
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(requests.post, url, json=slow, timeout=30) for _ in range(8)]
            wait_until(lambda: _entered(tmp_path, 0.8) == 8, what="the eight slow calls inside the model")
            wait_until(lambda: sum(kind == "answered" for kind, _ in fast_results) > 10, what="fast answers flowing")
            server.proc.send_signal(signal.SIGTERM)
            responses = [f.result() for f in futures]
        code = server.proc.wait(30)
        server.stopped = True
        stop.set()
        for t in streamers:
            t.join()
    assert code == 0, server.output()
    assert [r.status_code for r in responses] == [200] * 8
    assert all(r.json()["data"]["ndarray"] == [[0.8]] for r in responses)
    answered = [v for kind, v in fast_results if kind == "answered"]
    assert len(answered) > 10
    for i, status, body in answered:  # every response that came back is whole and right
        assert status == 200 and body["data"]["ndarray"] == [[3 * i]]


def test_killed_worker_is_replaced_within_two_seconds():
    with running(["Rich"]) as server:
        first_pid = requests.get(server.url + "/health/status", timeout=5).json()["jsonData"]["pid"]
        assert _children(server.proc.pid) == [first_pid]
        os.kill(first_pid, signal.SIGKILL)
        killed_at = time.monotonic()

        def answered():
            try:
                r = requests.get(server.url + "/health/status", timeout=0.5)
            except requests.RequestException:
                return None
            return r if r.status_code == 200 else None

        try:
            r = wait_until(answered, timeout=2.0, interval=0.02, what="an answer within 2 s of the kill")
        except AssertionError as exc:
            raise AssertionError(f"{exc}:\n{server.output()}") from None
        elapsed = time.monotonic() - killed_at
        new_pid = r.json()["jsonData"]["pid"]
        assert new_pid != first_pid and elapsed < 2.0
        assert requests.post(server.url + "/predict", json={"data": {"ndarray": [[1]]}}, timeout=5).status_code == 200


def test_two_workers_share_the_port():
    with running(["Rich", "--workers", "2"]) as server:
        # the first worker may answer before the second listens
        wait_until(lambda: len(_children(server.proc.pid)) == 2, what="two workers")
        pids = set()
        for _ in range(200):
            with requests.Session() as s:  # new connection each time, so the kernel spreads them
                pids.add(s.get(server.url + "/health/status", timeout=5).json()["jsonData"]["pid"])
            if len(pids) == 2:
                break
        assert pids == set(_children(server.proc.pid))


def test_sync_hook_does_not_block_other_connections(tmp_path):
    with running(["AsyncModel"], env={"ASYNC_MODEL_TRACE": str(tmp_path)}) as server:
        for _ in range(3):
            requests.post(server.url + "/transform-input", json={"data": {"ndarray": [[0.05]]}}, timeout=10)
        with ThreadPoolExecutor(2) as pool:
            slow = pool.submit(requests.post, server.url + "/transform-input", json={"data": {"ndarray": [[1.5]]}}, timeout=30)
            wait_until(lambda: _entered(tmp_path, 1.5) == 1, what="the slow hook to start")
            start = time.monotonic()
            r = requests.post(server.url + "/predict", json={"data": {"ndarray": [[2]]}}, timeout=10)
            fast_elapsed = time.monotonic() - start
            assert r.json()["data"]["ndarray"] == [[6]]
            assert r.json()["meta"]["tags"] == {"async": True}
            assert not slow.done()  # the fast answer came while the slow hook was still running
            assert slow.result().status_code == 200
        assert fast_elapsed < 1.0
