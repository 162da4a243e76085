"""Wait for a condition instead of sleeping for a guessed time.

A test that sleeps "long enough" for something to happen is slow when the box is idle and
flaky when it is loaded. These poll a predicate until it holds and fail the test, saying
what was awaited, when it doesn't hold by the deadline.
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.01, what: str = "") -> T:
    """Poll ``predicate`` (from this thread) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(interval)


async def until(predicate: Callable[[], T], timeout: float = 10.0, interval: float = 0.0005, what: str = "") -> T:
    """``wait_until`` for coroutines: the event loop keeps running between polls."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        await asyncio.sleep(interval)
