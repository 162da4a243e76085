"""The seam between service logic and whoever runs user hooks.

A service endpoint is a generator: it *yields* the hook calls it needs (``Call``) and
*returns* its reply. A driver resumes it with each call's result, or throws the call's
error back in so the step decides (fall through, fail). The same logic is then driven on
the event loop (``drive_async``), on a gRPC handler thread (``drive_sync``), or by a graph
executor that ``yield from``s several units' steps.
"""
from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastseldon.user_model import Hook


@dataclass(slots=True)
class Call:
    """One user-hook invocation a service step asks its driver to make."""

    hook: Hook
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    batchable: bool = False  # a predict on a stackable array: the batcher may coalesce it


Steps = Generator[Call, Any, Any]

_DONE = object()


def _advance(steps: Steps, value: Any, error: BaseException | None) -> tuple[Any, Any]:
    """Resume a step generator with a hook's result (or its error): (next Call, _DONE) or (_DONE, reply)."""
    try:
        return (steps.throw(error) if error is not None else steps.send(value)), _DONE
    except StopIteration as stop:
        return _DONE, stop.value


async def drive_async(steps: Steps, invoke: Callable[[Call], Awaitable[Any]]) -> Any:
    """Drive a step generator on the event loop; hook errors are thrown back into it."""
    call, result = _advance(steps, None, None)
    while call is not _DONE:
        try:
            value, error = await invoke(call), None
        except Exception as exc:  # noqa: BLE001 - handed to the step, which decides
            value, error = None, exc
        call, result = _advance(steps, value, error)
    return result


def drive_sync(steps: Steps, invoke: Callable[[Call], Any]) -> Any:
    """Drive a step generator on the calling thread (gRPC handlers)."""
    call, result = _advance(steps, None, None)
    while call is not _DONE:
        try:
            value, error = invoke(call), None
        except Exception as exc:  # noqa: BLE001 - handed to the step, which decides
            value, error = None, exc
        call, result = _advance(steps, value, error)
    return result
