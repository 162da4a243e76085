"""Where each user-hook call runs: on the event loop, on the thread pool, awaited, or batched.

One ``HookRunner`` per unit. It drives service steps (``run`` on the loop for REST,
``run_blocking`` on a gRPC handler thread) and places every hook call they yield:

* ``async def`` hooks are awaited on the loop;
* sync hooks measured cheaper than ``inline_seconds`` run right on the loop (a thread hop
  would cost more than the hook); their first calls go to the pool, and a hook that once
  took longer than that on the loop (time the loop thread waited for a CPU discounted) never
  runs there again, so a slow predict stalls other connections for at most one call (a hung
  one is the watchdog's, watchdog.py);
* on a gRPC thread sync hooks run on that thread;
* a batchable predict goes to the unit's adaptive batcher when batching is on.

The batcher places the calls it makes through the same runner (``offload``/``in_pool``).
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from time import perf_counter
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

from fastseldon.batching import AdaptiveBatcher, batcher_for
from fastseldon.errors import FastSeldonError, from_user_exception
from fastseldon.logs import UserErrors
from fastseldon.settings import UnitSettings
from fastseldon.steps import Call, Steps, drive_async, drive_sync
from fastseldon.user_model import WARMUP_CALLS, Hook, UserModel, is_not_implemented
from fastseldon.watchdog import activity, loop_run_delay

if TYPE_CHECKING:
    from fastseldon.service import SeldonService
    from fastseldon.types import InferRequest, InferResult, Message, Reply

log = logging.getLogger(__name__)

_R = TypeVar("_R")

# Warm-up calls that always go to the thread pool, so a slow first predict can't stall the loop.
PROBE_CALLS = WARMUP_CALLS


class HookRunner:
    """Places one unit's hook calls and drives its service steps."""

    def __init__(self, loop: asyncio.AbstractEventLoop, executor: Executor, inline_seconds: float):
        self.loop = loop
        self.executor = executor
        self.inline_seconds = inline_seconds
        self.batcher: AdaptiveBatcher | None = None

    @classmethod
    def for_unit(cls, loop: asyncio.AbstractEventLoop, executor: Executor, inline_seconds: float,
                 unit: UnitSettings, model: UserModel) -> HookRunner:
        """A runner for ``model``, with its batcher when the unit's settings turn batching on."""
        runner = cls(loop, executor, inline_seconds)
        if unit.batching:
            runner.batcher = batcher_for(runner, unit, model)
        return runner

    # -- placing one call

    async def invoke(self, call: Call) -> Any:
        hook = call.hook
        if call.batchable and self.batcher is not None and self.batcher.wants(call):
            return await self.batcher.submit(call)  # sync and async predicts alike
        if hook.is_async:
            return await hook.fn(*call.args, **call.kwargs)
        if self.may_inline(call):
            return self.on_loop(call)
        return await self._pooled(call)

    def may_inline(self, call: Call) -> bool:
        """Whether this sync hook call runs right on the loop (cheap so far, never slow there, not batched)."""
        return self.inline_ok(call.hook) and not (call.batchable and self.batcher is not None and self.batcher.wants(call))

    def inline_ok(self, hook: Hook) -> bool:
        """Whether ``hook`` may run on the loop: called enough to know its cost, cheap, never slow there."""
        return hook.calls >= PROBE_CALLS and not hook.off_loop and hook.cost < self.inline_seconds

    def on_loop(self, call: Call) -> Any:
        """A sync hook on the loop thread, watched for the call that is too slow to stay there."""
        return self._on_loop(call.hook, call.args, call.kwargs)

    def _on_loop(self, hook: Hook, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        start = perf_counter()
        try:
            return hook.fn(*args, **kwargs)
        finally:
            seconds = perf_counter() - start
            hook.record(seconds if seconds <= self.inline_seconds else self._slow_on_loop(hook, seconds))

    def _slow_on_loop(self, hook: Hook, seconds: float) -> float:
        """A call on the loop took longer than the budget: its own time, net of what the scheduler
        explains (the loop thread waited for a CPU: a busy or CPU-throttled machine). Counted in
        full, such waits would send every cheap hook to the pool now and then (its cost estimate
        jumps at any slow call), and in time for good. A hook slow on its own never runs on the
        loop again."""
        own = max(0.0, seconds - loop_run_delay.since_mark())
        if own > self.inline_seconds:
            hook.off_loop = True
            log.info("%s took %.1f ms on the event loop (budget %g us): it runs on the thread pool from now on",
                     hook.name, own * 1000, self.inline_seconds * 1e6)
        return own

    def _pooled(self, call: Call) -> Any:
        """A sync hook on the pool, registered with the watchdog under the request that asked for it."""
        hook = call.hook
        work = activity.tracked(activity.loop_route(), lambda: hook.timed_call(*call.args, **call.kwargs))
        return self.loop.run_in_executor(self.executor, work)

    def invoke_blocking(self, call: Call) -> Any:
        """From a gRPC handler thread: sync hooks run right here, the rest go via the loop."""
        if call.batchable and self.batcher is not None and self.batcher.wants(call):
            return self.batcher.submit_blocking(call)  # the batch resolves this thread's future directly
        return self.call_here(call)

    def call_here(self, call: Call) -> Any:
        """On a thread other than the loop's: a sync hook runs on it, an async one on the loop."""
        hook = call.hook
        if hook.is_async:
            return asyncio.run_coroutine_threadsafe(self.offload(call), self.loop).result()
        return hook.timed_call(*call.args, **call.kwargs)

    async def offload(self, call: Call) -> Any:
        """Off the loop whatever it costs: awaited when async, else on the pool (the batcher's way)."""
        hook = call.hook
        if hook.is_async:
            return await hook.fn(*call.args, **call.kwargs)
        return await self._pooled(call)

    async def in_pool(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Any sync function on the pool (the batcher stacks rows there, off the loop)."""
        return await self.loop.run_in_executor(self.executor, fn, *args)

    # -- driving a service endpoint

    @overload
    def plain(self, service: SeldonService, endpoint: str, msg: Message,
              as_message: Literal[False] = False) -> Reply | None: ...

    @overload
    def plain(self, service: SeldonService, endpoint: str, msg: Message, as_message: Literal[True]) -> Message | None: ...

    def plain(self, service: SeldonService, endpoint: str, msg: Message, as_message: bool = False) -> Reply | Message | None:
        """``endpoint``'s reply computed right here on the loop when it is plain (service.plain_call)
        and its hook may run inline: the steps' answer without driving them; None when it is not.
        With ``as_message``, that reply as the next unit's request (an in-process graph hop).

        Every cheap unit's request (REST, and each in-process graph hop) comes this way, so it is
        written flat: no Call object unless a batcher has to look at it."""
        hook = service.plain.get(endpoint)
        if hook is None or not self.inline_ok(hook):
            return None
        if self.batcher is not None:  # a predict the batcher would stack goes the stepped way, to it
            call = service.plain_call(endpoint, msg)
            if call is None or not self.may_inline(call):
                return None
        try:
            try:
                out = self._on_loop(hook, (msg.payload, msg.names), service.hook_kwargs(hook, msg))
            except Exception as exc:
                if not is_not_implemented(exc):
                    raise
                absent = service.plain_absent(endpoint, msg)
                return absent.to_message() if as_message else absent
            return service.plain_message(endpoint, msg, out) if as_message else service.plain_reply(endpoint, msg, out)
        except Exception as exc:  # noqa: BLE001 - user code: 500 with its message, logged with the traceback
            raise user_error(exc) from None

    def plain_infer(self, service: SeldonService, request: InferRequest) -> InferResult | None:
        """V2 inference the same way (service.plain_infer_call), or None when predict is not plain here."""
        call = service.plain_infer_call(request)
        if call is None or not self.may_inline(call):
            return None
        return self._plain(call, self.on_loop, lambda out: service.plain_infer_result(request, out),
                           service.infer_absent)

    def plain_blocking(self, service: SeldonService, endpoint: str, msg: Message) -> Reply | None:
        """``plain`` from a gRPC handler thread: the plain hook runs right on it (or goes to the batcher
        when that takes the call, as ``invoke_blocking`` places it); None when the endpoint is not plain."""
        call = service.plain_call(endpoint, msg)
        if call is None:
            return None
        return self._plain(call, self.invoke_blocking, lambda out: service.plain_reply(endpoint, msg, out),
                           lambda: service.plain_absent(endpoint, msg))

    def plain_infer_blocking(self, service: SeldonService, request: InferRequest) -> InferResult | None:
        """``plain_infer`` from a gRPC handler thread, placed as ``plain_blocking`` places its call."""
        call = service.plain_infer_call(request)
        if call is None:
            return None
        return self._plain(call, self.invoke_blocking, lambda out: service.plain_infer_result(request, out),
                           service.infer_absent)

    def _plain(self, call: Call, place: Callable[[Call], Any], reply: Callable[[Any], _R],
               absent: Callable[[], _R]) -> _R:
        """Make a plain hook's call with ``place`` (on the loop, or on this gRPC thread): ``reply(out)``,
        or ``absent()`` when it raised Seldon's SeldonNotImplementedError (the fall-through); any other
        error the user's, as ``run`` reports it."""
        try:
            try:
                out = place(call)
            except Exception as exc:
                if not is_not_implemented(exc):
                    raise
                return absent()
            return reply(out)
        except Exception as exc:  # noqa: BLE001 - user code: 500 with its message, logged with the traceback
            raise user_error(exc) from None

    async def run(self, steps: Steps) -> Any:
        try:
            return await drive_async(steps, self.invoke)
        except Exception as exc:  # noqa: BLE001 - user code: 500 with its message, logged with the traceback
            raise user_error(exc) from None

    def run_blocking(self, steps: Steps) -> Any:
        try:
            return drive_sync(steps, self.invoke_blocking)
        except Exception as exc:  # noqa: BLE001
            raise user_error(exc) from None


_user_errors = UserErrors(log)


def user_error(exc: Exception) -> FastSeldonError:
    """Our errors pass; anything else came from user code and is logged before it becomes a 500."""
    if isinstance(exc, FastSeldonError):
        return exc
    _user_errors.log(exc)
    return from_user_exception(exc)
