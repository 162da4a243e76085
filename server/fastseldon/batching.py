"""Adaptive batching: concurrent predict calls on stackable arrays become one call of the user's predict.

Turning ``--max-batch-size`` above 1 declares that the model's ``predict`` works row by row
along axis 0 (Triton's and MLServer's contract too). Requests that agree on the hook, dtype,
shape past axis 0 and the other positional arguments (Seldon's ``names``) are stacked with
``np.concatenate`` into one call; the result is cut back by each request's row count.

When a batch goes (MLServer's adaptive batcher, with the pitfalls of its issues fixed), once
fewer than ``max_in_flight`` batches are running:
  * it holds ``max_batch_size`` rows, or
  * ``max_batch_time`` has passed since its *first* item arrived (``time.monotonic``), or
  * the event loop went one whole iteration without a new arrival: nothing else is
    waiting to join, so a lone or sequential caller never sits out the window, or
  * it queued behind a running batch: it goes as soon as that one finishes, and the loop
    answers the finished batch's callers while it runs.
So batches grow with load on their own, and predict never idles while requests wait.

Errors stay with the requests that caused them: when a batched predict raises, its members
are re-run one at a time so one bad request doesn't fail its neighbours. A batched predict
that returns the wrong number of rows fails every member with a message saying so. The
number of waiting requests is bounded on its own (503 / RESOURCE_EXHAUSTED), never by
blocking the caller.
"""
from __future__ import annotations

import asyncio
import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from fastseldon.errors import QueueFull, UserModelError
from fastseldon.steps import Call
from fastseldon.user_model import Hook, is_not_implemented, is_seldon_response

if TYPE_CHECKING:
    from fastseldon.settings import UnitSettings
    from fastseldon.user_model import UserModel

log = logging.getLogger(__name__)

# numpy dtype kinds that are stacked: bool, ints, floats (the numeric V2 datatypes). Strings,
# bytes, object and structured arrays always run alone, as without batching.
STACKABLE_KINDS = frozenset("biuf")
WAIT_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5, float("inf"))


class Placement(Protocol):
    """How the batcher's own calls are run: the unit's HookRunner (runner.py)."""

    loop: asyncio.AbstractEventLoop

    def offload(self, call: Call) -> Awaitable[Any]: ...

    def in_pool(self, fn: Callable[..., Any], *args: Any) -> Awaitable[Any]: ...

    def call_here(self, call: Call) -> Any: ...


class BatchRowsError(UserModelError):
    """A batched predict returned something that can't be cut back into one part per request."""


def default_queue_limit(max_batch_size: int) -> int:
    return max(1024, 16 * max_batch_size)


# --------------------------------------------------------------------------- pure pieces


def _freeze(value: Any) -> Hashable:
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    hash(value)  # TypeError for anything else unhashable: the caller then runs alone
    return value


def batch_key(call: Call) -> Hashable | None:
    """What calls must share to be stacked into one predict; None when this call can't be stacked."""
    if not call.args:
        return None
    x = call.args[0]
    if type(x) is not np.ndarray or x.ndim == 0 or x.shape[0] == 0 or x.dtype.kind not in STACKABLE_KINDS:
        return None
    try:
        rest = _freeze(call.args[1:])
    except TypeError:
        return None
    return (id(call.hook), x.dtype, x.shape[1:], rest)


def _row_count(data: Any) -> int | None:
    if isinstance(data, np.ndarray):
        return data.shape[0] if data.ndim else None
    if isinstance(data, (str, bytes, bytearray, dict)) or not hasattr(data, "__getitem__"):
        return None
    try:
        return len(data)
    except TypeError:
        return None


def _describe(data: Any) -> str:
    if isinstance(data, np.ndarray):
        return f"an array of shape {data.shape}"
    return f"a {type(data).__name__}"


def _per_output(data: Any, total: int) -> bool:
    """A dict of arrays, or a list/tuple of arrays, each with ``total`` rows: several outputs
    (V2's reading of such a result), split output by output rather than as a list of rows."""
    values = list(data.values()) if isinstance(data, dict) else data if isinstance(data, (list, tuple)) else None
    return values is not None and bool(values) and all(isinstance(v, np.ndarray) and v.ndim > 0 and v.shape[0] == total for v in values)


def split_rows(out: Any, counts: Sequence[int]) -> list[Any]:
    """Cut a batched predict's result into one part per request, ``counts[i]`` rows each.

    Arrays, lists and tuples are sliced along axis 0. Several outputs (a dict of arrays, or a
    list/tuple of arrays that each hold every row) are sliced output by output. A
    SeldonResponse is copied with its ``data`` cut (its tags and metrics go to every part).
    Raises BatchRowsError when the rows that came back don't match the rows that went in.
    """
    response = is_seldon_response(out)
    data = out.data if response else out
    total = sum(counts)
    several = _per_output(data, total)
    rows = total if several else _row_count(data)
    if rows != total:
        got = f"{rows} rows" if rows is not None else f"{_describe(data)} with no rows to split"
        raise BatchRowsError(
            f"predict returned {got} for a batch of {total} rows from {len(counts)} requests; with adaptive "
            f"batching on (--max-batch-size) predict must return one row per input row along axis 0"
        )
    parts: list[Any] = []
    start = 0
    for count in counts:
        stop = start + count
        if not several:
            part = data[start:stop]
        elif isinstance(data, dict):
            part = {k: v[start:stop] for k, v in data.items()}
        else:
            part = type(data)(v[start:stop] for v in data)
        start = stop
        if response:
            wrapped = copy.copy(out)
            wrapped.data = part
            part = wrapped
        parts.append(part)
    return parts


# --------------------------------------------------------------------------- metrics


class BatchMetrics:
    """Prometheus histograms for one worker's batcher (multiprocess mode: registry=None)."""

    def __init__(self, model: str, max_batch_size: int):
        from prometheus_client import Counter, Histogram

        sizes = sorted({2**i for i in range(max(1, max_batch_size).bit_length())} | {max_batch_size})
        buckets = tuple(float(s) for s in sizes) + (float("inf"),)
        self.rows = Histogram("fastseldon_batch_size_rows", "Rows per predict call made by the batcher",
                              ["model"], buckets=buckets, registry=None).labels(model)
        self.requests = Histogram("fastseldon_batch_size_requests", "Requests coalesced into one predict call",
                                  ["model"], buckets=buckets, registry=None).labels(model)
        self.wait = Histogram("fastseldon_batch_queue_wait_seconds",
                              "Time a request waited in the batch queue before its predict call started",
                              ["model"], buckets=WAIT_BUCKETS, registry=None).labels(model)
        self.retried = Counter("fastseldon_batch_isolation_retries", "Batches whose predict raised and were "
                               "re-run one request at a time", ["model"], registry=None).labels(model)
        self.rejected = Counter("fastseldon_batch_rejected", "Requests refused because the batch queue was full",
                                ["model"], registry=None).labels(model)


# --------------------------------------------------------------------------- the batcher


@dataclass(slots=True, eq=False)
class _Item:
    call: Call
    rows: int
    future: asyncio.Future | Future  # a concurrent Future for callers on other threads (gRPC)
    arrived: float  # time.monotonic()


@dataclass(slots=True, eq=False)
class _Batch:
    key: Hashable
    hook: Hook
    items: list[_Item]
    rows: int
    opened: float  # arrival of the first item: the deadline counts from here
    closed: bool = False  # full (or a big request ended it): takes no more items
    waited: bool = False  # queued behind a running batch: go as soon as a slot frees


class AdaptiveBatcher:
    """Coalesces concurrent ``submit(call)``s on one event loop into batched predict calls."""

    def __init__(
        self,
        *,
        runner: Placement,
        max_batch_size: int,
        max_batch_time: float,
        max_in_flight: int = 1,
        max_queue: int | None = None,
        metrics: BatchMetrics | None = None,
    ):
        if max_batch_size < 1 or max_in_flight < 1 or max_batch_time < 0:
            raise ValueError("max_batch_size and max_in_flight must be >= 1 and max_batch_time >= 0")
        self.runner = runner
        self.loop = runner.loop
        self.max_batch_size = max_batch_size
        self.max_batch_time = max_batch_time
        self.max_in_flight = max_in_flight
        self.max_queue = max_queue if max_queue is not None else default_queue_limit(max_batch_size)
        self.metrics = metrics
        self._queue: deque[_Batch] = deque()  # waiting batches, oldest first
        self._open: dict[Hashable, _Batch] = {}  # the batch still taking items, per key
        self._waiting = 0  # requests queued, not yet running
        self._in_flight = 0
        self._arrivals = 0
        self._arrivals_seen = -1
        self._tick_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task] = set()
        self._warned_rows = False
        # calls handed over by other threads, taken in by the loop in one go (one wake-up per burst)
        self._inbox: list[tuple[Hashable, _Item]] = []
        self._inbox_lock = threading.Lock()

    # -- public

    def wants(self, call: Call) -> bool:
        """Whether ``call`` can be stacked at all; the rest run exactly as without batching."""
        return batch_key(call) is not None

    @property
    def waiting(self) -> int:
        return self._waiting

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def submit(self, call: Call) -> Any:
        """Run ``call`` (a predict on an array) as part of a batch; returns this call's own rows."""
        key = batch_key(call)
        if key is None:
            return await self.runner.offload(call)
        if self._waiting >= self.max_queue:
            raise self._refuse()
        future = self.loop.create_future()
        item = _Item(call, call.args[0].shape[0], future, time.monotonic())
        self._admit(key, item)
        try:
            return await future
        except asyncio.CancelledError:
            self._withdraw(key, item)
            raise

    def submit_blocking(self, call: Call) -> Any:
        """``submit`` for a caller on another thread (a gRPC handler): blocks until its rows are back.

        The thread never runs a coroutine: it leaves the call in an inbox, wakes the loop only
        when the inbox was empty, and waits on a plain Future the batch resolves directly.
        """
        key = batch_key(call)
        if key is None:  # not stackable: as without batching
            return self.runner.call_here(call)
        item = _Item(call, call.args[0].shape[0], Future(), time.monotonic())
        with self._inbox_lock:
            self._inbox.append((key, item))
            wake = len(self._inbox) == 1
        if wake:
            self.loop.call_soon_threadsafe(self._take_inbox)
        return item.future.result()

    def _take_inbox(self) -> None:
        with self._inbox_lock:
            inbox, self._inbox = self._inbox, []
        for key, item in inbox:
            if self._waiting >= self.max_queue:
                item.future.set_exception(self._refuse())
            else:
                self._admit(key, item)

    def _refuse(self) -> QueueFull:
        if self.metrics is not None:
            self.metrics.rejected.inc()
        return QueueFull(f"batch queue is full ({self._waiting} requests waiting); retry later")

    def _admit(self, key: Hashable, item: _Item) -> None:
        self._enqueue(key, item.call.hook, item)
        self._waiting += 1
        self._arrivals += 1
        self._schedule()

    # -- queueing

    def _enqueue(self, key: Hashable, hook: Hook, item: _Item) -> None:
        batch = self._open.get(key)
        if batch is not None and batch.rows + item.rows > self.max_batch_size:
            batch.closed = True  # this request doesn't fit: the batch is as full as it gets
            del self._open[key]
            batch = None
        if batch is None:
            batch = _Batch(key, hook, [], 0, item.arrived)
            self._queue.append(batch)
            self._open[key] = batch
        batch.items.append(item)
        batch.rows += item.rows
        if batch.rows >= self.max_batch_size:  # full, or one request already big enough alone
            batch.closed = True
            del self._open[key]

    def _withdraw(self, key: Hashable, item: _Item) -> None:
        """A waiter was cancelled before its batch ran: take it out so it costs nothing."""
        for batch in self._queue:
            if item in batch.items:
                batch.items.remove(item)
                batch.rows -= item.rows
                self._waiting -= 1
                if not batch.items:
                    self._queue.remove(batch)
                    if self._open.get(key) is batch:
                        del self._open[key]
                return

    # -- dispatch

    def _schedule(self) -> None:
        if self._tick_handle is None:
            self._tick_handle = self.loop.call_soon(self._tick)

    def _tick(self) -> None:
        """Start every batch that is due while slots are free; look again next loop iteration."""
        self._tick_handle = None
        if not self._queue or self._in_flight >= self.max_in_flight:
            return  # a finishing batch schedules the next look
        quiet = self._arrivals == self._arrivals_seen
        self._arrivals_seen = self._arrivals
        now = time.monotonic()
        while self._queue and self._in_flight < self.max_in_flight:
            batch = self._due(now, quiet)
            if batch is None:
                break
            self._launch(batch, now)
        if self._queue and self._in_flight < self.max_in_flight:
            # Requests arrived during the last iteration: give the next one a chance to join.
            # This chain ends one iteration after arrivals stop, or at the deadline.
            self._schedule()

    def _due(self, now: float, quiet: bool) -> _Batch | None:
        for batch in self._queue:
            if batch.closed or batch.waited or quiet or now - batch.opened >= self.max_batch_time:
                return batch
        return None

    def _launch(self, batch: _Batch, now: float) -> None:
        self._queue.remove(batch)
        if self._open.get(batch.key) is batch:
            del self._open[batch.key]
        self._waiting -= len(batch.items)
        self._in_flight += 1
        if self.metrics is not None:
            self.metrics.rows.observe(batch.rows)
            self.metrics.requests.observe(len(batch.items))
            wait = self.metrics.wait
            for item in batch.items:
                wait.observe(now - item.arrived)
        task = self.loop.create_task(self._execute(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _execute(self, batch: _Batch) -> None:
        items = batch.items
        try:
            if len(items) == 1:
                await self._run_member(items[0])
                return
            try:
                out = await self._call_stacked(batch.hook, items)
            except Exception as exc:  # noqa: BLE001 - user code: isolate the request that caused it
                if is_not_implemented(exc):
                    for item in items:
                        _fail(item.future, exc)
                    return
                log.warning("batched predict of %d requests raised %s: %s; re-running them one at a time",
                            len(items), type(exc).__name__, exc)
                if self.metrics is not None:
                    self.metrics.retried.inc()
                for item in items:
                    await self._run_member(item)
                return
            try:
                parts = split_rows(out, [item.rows for item in items])
            except BatchRowsError as exc:
                log.error("%s", exc.message)
                for item in items:
                    _fail(item.future, BatchRowsError(exc.message))
                return
            for item, part in zip(items, parts):
                if not item.future.done():
                    item.future.set_result(part)
        except asyncio.CancelledError:
            for item in items:
                if not item.future.done():
                    item.future.cancel()
            raise
        finally:
            self._in_flight -= 1
            # What queued while this batch ran has waited long enough: it goes next, at once, and
            # the loop answers this batch's callers while the next one runs (double buffering).
            for waiting in self._queue:
                waiting.waited = True
            if self._queue:
                self._schedule()

    async def _call_stacked(self, hook: Hook, items: list[_Item]) -> Any:
        calls = [item.call for item in items]
        if hook.is_async:
            first = calls[0]
            return await hook.fn(np.concatenate([c.args[0] for c in calls]), *first.args[1:], **first.kwargs)
        return await self.runner.in_pool(_stacked_call, hook, calls)

    async def _run_member(self, item: _Item) -> None:
        if item.future.done():
            return
        try:
            out = await self.runner.offload(item.call)
        except Exception as exc:  # noqa: BLE001 - this request's own error
            _fail(item.future, exc)
            return
        data = out.data if is_seldon_response(out) else out
        if not self._warned_rows and not _per_output(data, item.rows) and _row_count(data) != item.rows:
            self._warned_rows = True  # a lone call passes through unchanged, but say it once
            log.warning("predict returned %s for %d input rows: such results can't be split when requests are "
                        "batched under load; fix predict or turn batching off", _describe(data), item.rows)
        if not item.future.done():
            item.future.set_result(out)


def _stacked_call(hook: Hook, calls: list[Call]) -> Any:
    """On an executor thread: stack the rows (a copy the loop shouldn't pay for) and call predict."""
    first = calls[0]
    return hook.timed_call(np.concatenate([c.args[0] for c in calls]), *first.args[1:], **first.kwargs)


def _fail(future: asyncio.Future | Future, exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def model_allows_batching(obj: Any) -> bool:
    """A model object may say ``batchable = False`` (e.g. an ONNX graph with a fixed batch size)."""
    try:
        return getattr(obj, "batchable", True) is not False
    except Exception as exc:  # noqa: BLE001 - a user property that fails: don't stack its inputs
        log.warning("reading %s.batchable failed (%s): batching off", type(obj).__name__, exc)
        return False


def batcher_for(runner: Placement, unit: UnitSettings, model: UserModel) -> AdaptiveBatcher | None:
    """The batcher for one unit with --max-batch-size > 1, or None when its model opts out."""
    if not model_allows_batching(model.obj):
        log.info("%s.batchable is False: adaptive batching stays off for this model", model.class_name)
        return None
    queue = unit.max_batch_queue or default_queue_limit(unit.max_batch_size)
    batcher = AdaptiveBatcher(
        runner=runner,
        max_batch_size=unit.max_batch_size,
        max_batch_time=unit.max_batch_time_ms / 1000.0,
        max_in_flight=max(1, unit.max_batches_in_flight),
        max_queue=queue,
        metrics=BatchMetrics(unit.model_name, unit.max_batch_size),
    )
    log.info("adaptive batching on: up to %d rows per predict, %.3g ms window, %d batch(es) in flight, queue %d",
             unit.max_batch_size, unit.max_batch_time_ms, batcher.max_in_flight, queue)
    return batcher
