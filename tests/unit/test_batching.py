"""The adaptive batcher in-process, on a real event loop (stdlib asyncio and uvloop) with real
predict functions: stacking rules, flush conditions, splitting, errors, limits."""
from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import uvloop

from fastseldon.batching import AdaptiveBatcher, BatchRowsError, QueueFull, batch_key, model_allows_batching, split_rows
from fastseldon.errors import UserModelError
from fastseldon.runner import HookRunner
from fastseldon.steps import Call
from fastseldon.user_model import Hook
from support.waiting import until, wait_until


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request):
    """Run a coroutine to completion on a fresh loop of the given flavour."""
    factory = asyncio.new_event_loop if request.param == "asyncio" else uvloop.new_event_loop

    def runner(coro):
        loop = factory()
        try:
            return loop.run_until_complete(coro)
        finally:
            loop.close()

    return runner


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(max_workers=8)
    yield pool
    pool.shutdown(wait=True)


class Recorder:
    """A sync predict that records every call it gets (rows, names, meta) and doubles X plus one."""

    def __init__(self, delay: float = 0.0, fail_on_negative: bool = True):
        self.calls: list[dict] = []
        self.delay = delay
        self.fail_on_negative = fail_on_negative
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0

    def predict(self, X, names, meta=None):
        with self.lock:
            self.calls.append({"rows": X.shape[0], "shape": X.shape, "dtype": X.dtype, "names": names, "meta": meta})
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if self.delay:
                time.sleep(self.delay)
            if self.fail_on_negative and (X < 0).any():
                raise ValueError("negative input")
            return X * 2 + 1
        finally:
            with self.lock:
                self.running -= 1


def hook_of(fn, accepts_meta=True) -> Hook:
    return Hook("predict", fn, asyncio.iscoroutinefunction(fn), accepts_meta)


def call(hook: Hook, x, names=(), meta=None) -> Call:
    return Call(hook, (x, list(names)), {"meta": meta or {}} if hook.accepts_meta else {}, batchable=True)


def batcher(executor, **kw) -> AdaptiveBatcher:
    kw.setdefault("max_batch_size", 64)
    kw.setdefault("max_batch_time", 0.005)
    return AdaptiveBatcher(runner=HookRunner(asyncio.get_running_loop(), executor, 0.0), **kw)


def rows_for(i: int, n: int = 1, width: int = 3) -> np.ndarray:
    return np.arange(n * width, dtype=np.float64).reshape(n, width) + 1000 * i


# --------------------------------------------------------------------------- pure pieces


@pytest.mark.parametrize("x, stackable", [
    (np.zeros((2, 3)), True),
    (np.zeros(4, dtype=np.int32), True),  # 1-D: four rows of scalars (axis 0 is the batch axis)
    (np.zeros((1, 2), dtype=bool), True),
    (np.array([["a", "b"]]), False),  # strings run alone
    (np.zeros((1, 2), dtype=np.complex128), False),
    (np.array([[None, 1]], dtype=object), False),
    (np.array(3.0), False),  # 0-d
    (np.zeros((0, 3)), False),  # no rows
    (np.zeros(2, dtype=[("a", "i4")]), False),  # structured
    ([[1, 2]], False),  # not an array
    ("text", False),
])
def test_batch_key_stackable(x, stackable):
    h = hook_of(Recorder().predict)
    assert (batch_key(call(h, x)) is not None) is stackable


def test_batch_key_separates_what_cannot_share_a_call():
    a, b = hook_of(Recorder().predict), hook_of(Recorder().predict)
    base = batch_key(call(a, np.zeros((1, 3))))
    assert batch_key(call(a, np.ones((5, 3)))) == base  # row count doesn't matter
    assert batch_key(call(a, np.zeros((1, 4)))) != base  # trailing shape
    assert batch_key(call(a, np.zeros((1, 3), dtype=np.float32))) != base  # dtype
    assert batch_key(call(a, np.zeros((1, 3)), names=["x", "y", "z"])) != base  # feature names
    assert batch_key(call(b, np.zeros((1, 3)))) != base  # another hook
    assert batch_key(call(a, np.zeros((1, 3)), meta={"puid": "other"})) == base  # meta is per request
    assert batch_key(Call(a, (np.zeros((1, 3)), [{"unhashable": []}]), batchable=True)) is None


@pytest.mark.parametrize("out, counts, expected", [
    (np.arange(6).reshape(3, 2), [1, 2], [[[0, 1]], [[2, 3], [4, 5]]]),
    (np.arange(3), [2, 1], [[0, 1], [2]]),
    ([[1], [2], [3]], [1, 1, 1], [[[1]], [[2]], [[3]]]),
    ((7, 8), [1, 1], [(7,), (8,)]),
])
def test_split_rows(out, counts, expected):
    parts = split_rows(out, counts)
    assert [p.tolist() if isinstance(p, np.ndarray) else p for p in parts] == expected


@pytest.mark.parametrize("out, message", [
    (np.zeros((2, 2)), "returned 2 rows for a batch of 3 rows from 2 requests"),
    (np.float64(1.0), "with no rows to split"),
    (np.array(5), "array of shape ()"),
    ({"a": [1, 2, 3]}, "a dict with no rows"),
    ("abc", "a str with no rows"),
    (None, "a NoneType with no rows"),
])
def test_split_rows_wrong_count_is_a_clear_error(out, message):
    with pytest.raises(BatchRowsError, match="one row per input row") as info:
        split_rows(out, [1, 2])
    assert message in info.value.message
    assert info.value.http_status == 500 and info.value.grpc_code == "INTERNAL"


def test_split_rows_several_outputs_are_cut_output_by_output():
    probs, labels = np.arange(6.0).reshape(3, 2), np.array([7, 8, 9])
    parts = split_rows((probs, labels), [2, 1])
    assert type(parts[0]) is tuple and len(parts[0]) == 2
    assert parts[0][0].tolist() == [[0, 1], [2, 3]] and parts[0][1].tolist() == [7, 8]
    assert parts[1][0].tolist() == [[4, 5]] and parts[1][1].tolist() == [9]
    named = split_rows({"p": probs, "l": labels}, [1, 2])
    assert named[0]["p"].tolist() == [[0, 1]] and named[1]["l"].tolist() == [8, 9]
    # a list of per-row arrays (rows, not outputs) is cut as rows
    rows = split_rows([np.zeros(4), np.ones(4), np.full(4, 2.0)], [1, 2])
    assert len(rows[0]) == 1 and len(rows[1]) == 2 and rows[1][1].tolist() == [2.0] * 4
    with pytest.raises(BatchRowsError):
        split_rows({"p": probs, "l": labels[:2]}, [2, 1])


@pytest.mark.parametrize("obj, allowed", [
    (object(), True),
    (type("Fixed", (), {"batchable": False})(), False),
    (type("Dynamic", (), {"batchable": True})(), True),
    (type("Broken", (), {"batchable": property(lambda self: 1 / 0)})(), False),
])
def test_model_can_opt_out_of_batching(obj, allowed):
    assert model_allows_batching(obj) is allowed


def test_split_rows_seldon_response_keeps_tags_and_slices_data():
    class SeldonResponse:
        def __init__(self, data, tags=None, metrics=None):
            self.data, self.tags, self.metrics = data, tags, metrics

    parts = split_rows(SeldonResponse(np.arange(3), {"t": 1}, [{"key": "k"}]), [1, 2])
    assert [type(p).__name__ for p in parts] == ["SeldonResponse"] * 2
    assert parts[0].data.tolist() == [0] and parts[1].data.tolist() == [1, 2]
    assert parts[0].tags == parts[1].tags == {"t": 1}


# --------------------------------------------------------------------------- coalescing and splitting


def test_concurrent_calls_share_predict_and_get_their_own_rows(run, executor):
    model = Recorder(delay=0.002)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor, max_batch_size=16)
        inputs = [rows_for(i, n=1 + i % 3) for i in range(24)]
        outs = await asyncio.gather(*(b.submit(call(h, x, meta={"puid": f"p{i}"})) for i, x in enumerate(inputs)))
        return inputs, outs, b

    inputs, outs, b = run(main())
    for x, out in zip(inputs, outs):
        np.testing.assert_array_equal(out, x * 2 + 1)
    rows = [c["rows"] for c in model.calls]
    assert sum(rows) == sum(x.shape[0] for x in inputs)
    assert max(rows) > 1 and all(r <= 16 for r in rows)
    assert len(model.calls) < len(inputs)
    assert b.waiting == 0 and b.in_flight == 0


def test_batched_call_gets_first_requests_names_and_meta(run, executor):
    model = Recorder(delay=0.01)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor)
        blocker = asyncio.ensure_future(b.submit(call(h, rows_for(99), names=["a", "b", "c"], meta={"puid": "blocker"})))
        await until(lambda: model.running)  # the blocker's predict is running; these queue behind it
        await asyncio.gather(*(b.submit(call(h, rows_for(i), names=["a", "b", "c"], meta={"puid": f"p{i}"}))
                               for i in range(4)))
        await blocker

    run(main())
    assert [c["rows"] for c in model.calls] == [1, 4]
    assert model.calls[1]["names"] == ["a", "b", "c"]
    assert model.calls[1]["meta"] == {"puid": "p0"}


def test_different_trailing_shapes_and_dtypes_go_to_different_batches(run, executor):
    model = Recorder(delay=0.01)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor)
        blocker = asyncio.ensure_future(b.submit(call(h, rows_for(99))))
        await until(lambda: model.running)
        inputs = [np.ones((1, 3)), np.ones((2, 4)), np.ones((1, 3), dtype=np.float32), np.ones((1, 3)) * 5,
                  np.ones((2, 4)) * 7, np.ones((1, 3), dtype=np.float32) * 9]
        outs = await asyncio.gather(*(b.submit(call(h, x)) for x in inputs))
        await blocker
        return inputs, outs

    inputs, outs = run(main())
    for x, out in zip(inputs, outs):
        assert out.dtype == x.dtype and out.shape == x.shape
        np.testing.assert_array_equal(out, x * 2 + 1)
    groups = sorted((c["shape"], str(c["dtype"])) for c in model.calls[1:])
    assert groups == [((2, 3), "float32"), ((2, 3), "float64"), ((4, 4), "float64")]


def test_batches_never_exceed_max_and_a_big_request_goes_alone(run, executor):
    model = Recorder(delay=0.005)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor, max_batch_size=4)
        blocker = asyncio.ensure_future(b.submit(call(h, rows_for(99))))
        await until(lambda: model.running)
        sizes = [3, 10, 1, 2, 2, 4]
        inputs = [rows_for(i, n) for i, n in enumerate(sizes)]
        outs = await asyncio.gather(*(b.submit(call(h, x)) for x in inputs))
        await blocker
        return inputs, outs

    inputs, outs = run(main())
    for x, out in zip(inputs, outs):
        np.testing.assert_array_equal(out, x * 2 + 1)
    # FIFO; a request that doesn't fit closes the open batch; the 10-row request runs on its own
    assert [c["rows"] for c in model.calls[1:]] == [3, 10, 1 + 2, 2, 4]


def test_async_predict_is_batched_and_awaited(run, executor):
    sizes: list[int] = []

    async def predict(X, names):
        sizes.append(X.shape[0])
        await asyncio.sleep(0.005)
        return X - 1

    h = hook_of(predict, accepts_meta=False)

    async def main():
        b = batcher(executor)
        inputs = [rows_for(i, 2) for i in range(10)]
        first = asyncio.ensure_future(b.submit(call(h, inputs[0])))
        await until(lambda: sizes)  # the first predict is awaiting its simulated cost
        rest = await asyncio.gather(*(b.submit(call(h, x)) for x in inputs[1:]))
        return inputs, [await first, *rest]

    inputs, outs = run(main())
    for x, out in zip(inputs, outs):
        np.testing.assert_array_equal(out, x - 1)
    assert sizes == [2, 18]


# --------------------------------------------------------------------------- flush conditions


def test_a_sequential_caller_never_waits_for_the_window(run, executor):
    """A 60 s window: each lone call must still be answered at once (nothing else is waiting)."""
    model = Recorder()
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor, max_batch_time=60.0)
        for i in range(5):
            out = await asyncio.wait_for(b.submit(call(h, rows_for(i))), timeout=10)
            np.testing.assert_array_equal(out, rows_for(i) * 2 + 1)

    run(main())
    assert [c["rows"] for c in model.calls] == [1] * 5


def test_fewer_than_max_rows_flush_without_waiting_for_the_window(run, executor):
    model = Recorder()
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor, max_batch_size=100, max_batch_time=60.0)
        return await asyncio.wait_for(asyncio.gather(*(b.submit(call(h, rows_for(i))) for i in range(3))), timeout=10)

    outs = run(main())
    assert [c["rows"] for c in model.calls] == [3]
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, rows_for(i) * 2 + 1)


def test_deadline_counts_from_the_first_item_while_arrivals_keep_coming(run, executor):
    """Arrivals on every loop iteration never let the loop go quiet: only the deadline can close
    a batch, so a long trickle must be cut into several batches (one batch = no deadline)."""
    model = Recorder()
    h = hook_of(model.predict)
    window = 0.05

    async def main():
        b = batcher(executor, max_batch_size=10**9, max_batch_time=window)
        pending = []
        loop = asyncio.get_running_loop()
        stop = loop.time() + 8 * window
        i = 0
        while loop.time() < stop:
            pending.append(asyncio.ensure_future(b.submit(call(h, rows_for(i)))))
            i += 1
            await asyncio.sleep(0)
        outs = await asyncio.gather(*pending)
        return i, outs

    n, outs = run(main())
    for i, out in enumerate(outs):
        np.testing.assert_array_equal(out, rows_for(i) * 2 + 1)
    rows = [c["rows"] for c in model.calls]
    assert sum(rows) == n
    assert len(rows) >= 3, rows


def test_max_batch_time_zero_still_coalesces_what_queued_behind_a_running_batch(run, executor):
    model = Recorder(delay=0.01)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor, max_batch_time=0.0)
        first = asyncio.ensure_future(b.submit(call(h, rows_for(0))))
        await until(lambda: model.running)
        await asyncio.gather(first, *(b.submit(call(h, rows_for(i))) for i in range(1, 6)))

    run(main())
    assert [c["rows"] for c in model.calls] == [1, 5]


def test_one_batch_in_flight_by_default_more_when_configured(run, executor):
    def measure(in_flight: int) -> int:
        model = Recorder(delay=0.05)
        h = hook_of(model.predict)

        async def main():
            b = batcher(executor, max_batch_size=2, max_in_flight=in_flight)
            await asyncio.gather(*(b.submit(call(h, rows_for(i))) for i in range(12)))

        run(main())
        assert all(c["rows"] <= 2 for c in model.calls)
        return model.most_running

    assert measure(1) == 1
    assert measure(3) == 3


# --------------------------------------------------------------------------- errors and limits


def test_a_failing_batch_is_retried_one_by_one_so_only_the_bad_request_fails(run, executor):
    model = Recorder(delay=0.01)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor)
        blocker = asyncio.ensure_future(b.submit(call(h, rows_for(99))))
        await until(lambda: model.running)
        inputs = [rows_for(1), -rows_for(2), rows_for(3, 2), rows_for(4)]
        outs = await asyncio.gather(*(b.submit(call(h, x)) for x in inputs), return_exceptions=True)
        await blocker
        return inputs, outs

    inputs, outs = run(main())
    assert isinstance(outs[1], ValueError) and str(outs[1]) == "negative input"
    for i in (0, 2, 3):
        np.testing.assert_array_equal(outs[i], inputs[i] * 2 + 1)
    assert [c["rows"] for c in model.calls] == [1, 5, 1, 1, 2, 1]


def test_wrong_row_count_fails_the_batch_with_a_clear_message_but_not_a_lone_call(run, executor):
    started: list[int] = []

    def predict(X, names):
        started.append(X.shape[0])
        time.sleep(0.01)
        return X[:1]  # one row whatever comes in

    h = hook_of(predict, accepts_meta=False)

    async def main():
        b = batcher(executor)
        lone = await b.submit(call(h, rows_for(0, 3)))
        blocker = asyncio.ensure_future(b.submit(call(h, rows_for(99))))
        await until(lambda: len(started) == 2)  # the lone call, then the blocker
        outs = await asyncio.gather(*(b.submit(call(h, rows_for(i))) for i in range(3)), return_exceptions=True)
        await blocker
        return lone, outs

    lone, outs = run(main())
    np.testing.assert_array_equal(lone, rows_for(0, 3)[:1])  # unbatched: as without batching
    assert all(isinstance(o, BatchRowsError) for o in outs)
    assert len({id(o) for o in outs}) == 3  # one exception object per request
    assert "predict returned 1 rows for a batch of 3 rows from 3 requests" in outs[0].message


def test_user_error_with_a_single_member_is_not_retried(run, executor):
    model = Recorder()
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor)
        with pytest.raises(ValueError, match="negative input"):
            await b.submit(call(h, -rows_for(1)))

    run(main())
    assert len(model.calls) == 1


def test_full_queue_refuses_at_once_with_503_resource_exhausted(run, executor):
    model = Recorder(delay=0.05)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor, max_batch_size=2, max_queue=3)
        running = asyncio.ensure_future(b.submit(call(h, rows_for(99))))
        await until(lambda: model.running)
        outs = await asyncio.wait_for(
            asyncio.gather(*(b.submit(call(h, rows_for(i))) for i in range(6)), return_exceptions=True), timeout=10)
        await running
        return outs

    outs = run(main())
    refused = [o for o in outs if isinstance(o, QueueFull)]
    assert len(refused) == 3
    assert refused[0].http_status == 503 and refused[0].grpc_code == "RESOURCE_EXHAUSTED"
    for i, out in enumerate(outs[:3]):
        np.testing.assert_array_equal(out, rows_for(i) * 2 + 1)


def test_a_cancelled_waiter_is_withdrawn_before_its_batch_runs(run, executor):
    model = Recorder(delay=0.2)
    h = hook_of(model.predict)

    async def main():
        b = batcher(executor)
        running = asyncio.ensure_future(b.submit(call(h, rows_for(99))))
        await until(lambda: model.running)
        keep = asyncio.ensure_future(b.submit(call(h, rows_for(1))))
        drop = asyncio.ensure_future(b.submit(call(h, rows_for(2, 3))))
        await until(lambda: b.waiting == 2)
        drop.cancel()
        await until(lambda: b.waiting == 1)
        assert model.running and len(model.calls) == 1  # both were decided before the next batch ran
        out = await keep
        await running
        return out

    out = run(main())
    np.testing.assert_array_equal(out, rows_for(1) * 2 + 1)
    assert [c["rows"] for c in model.calls] == [1, 1]


def test_not_stackable_calls_run_alone(run, executor):
    seen = []

    def predict(X, names):
        seen.append(X)
        return X

    h = hook_of(predict, accepts_meta=False)

    async def main():
        b = batcher(executor)
        x = np.array([[None, "a"]], dtype=object)
        assert not b.wants(call(h, x))
        return await b.submit(call(h, x))

    out = run(main())
    assert out is seen[0]


def test_user_model_error_mapping_unchanged():
    """The batcher raises the user's own exception; the error family still maps it."""
    from fastseldon.errors import from_user_exception as user_error

    assert isinstance(user_error(ValueError("x")), UserModelError)
    assert isinstance(user_error(BatchRowsError("y")), BatchRowsError)


# --------------------------------------------------------------------------- callers on other threads (the gRPC front)


def _loop_in_thread(factory):
    loop = factory()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


@pytest.mark.parametrize("flavour", ["asyncio", "uvloop"])
def test_blocking_submit_from_many_threads_shares_predict_and_keeps_rows_apart(flavour, executor):
    loop, thread = _loop_in_thread(asyncio.new_event_loop if flavour == "asyncio" else uvloop.new_event_loop)
    model = Recorder(delay=0.01)
    h = hook_of(model.predict)
    try:
        b = AdaptiveBatcher(runner=HookRunner(loop, executor, 0.0), max_batch_size=64, max_batch_time=0.005)
        inputs = [rows_for(i, 1 + i % 3) for i in range(32)]
        with ThreadPoolExecutor(max_workers=32) as callers:
            outs = list(callers.map(lambda x: b.submit_blocking(call(h, x)), inputs))
        for x, out in zip(inputs, outs):
            np.testing.assert_array_equal(out, x * 2 + 1)
        rows = [c["rows"] for c in model.calls]
        assert sum(rows) == sum(x.shape[0] for x in inputs)
        assert max(rows) > 3 and len(rows) < 32, rows
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_blocking_submit_errors_and_queue_limit_reach_the_calling_thread(executor):
    loop, thread = _loop_in_thread(asyncio.new_event_loop)
    model = Recorder(delay=0.05)
    h = hook_of(model.predict)
    try:
        b = AdaptiveBatcher(runner=HookRunner(loop, executor, 0.0), max_batch_size=64, max_batch_time=0.005, max_queue=4)

        def send(x):
            try:
                return b.submit_blocking(call(h, x))
            except Exception as exc:  # noqa: BLE001 - the test inspects what each thread got
                return exc

        with ThreadPoolExecutor(max_workers=12) as callers:
            first = callers.submit(send, rows_for(99))
            wait_until(lambda: model.running)  # the first call holds the slot; the next ones queue (4 fit)
            rest = [callers.submit(send, x) for x in [rows_for(1), -rows_for(2)] + [rows_for(i) for i in range(3, 11)]]
            outs = [f.result(10) for f in rest]
            np.testing.assert_array_equal(first.result(10), rows_for(99) * 2 + 1)
        refused = [o for o in outs if isinstance(o, QueueFull)]
        served = [o for o in outs if not isinstance(o, QueueFull)]
        assert len(refused) == 6 and len(served) == 4
        assert sum(isinstance(o, ValueError) for o in served) <= 1
        for x, out in zip([rows_for(1), -rows_for(2)] + [rows_for(i) for i in range(3, 11)], outs):
            if isinstance(out, np.ndarray):
                np.testing.assert_array_equal(out, x * 2 + 1)
            elif isinstance(out, ValueError):
                assert (x < 0).all()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
