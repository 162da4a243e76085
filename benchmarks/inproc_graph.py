"""In-process CPU cost of one Seldon REST request through a graph, next to the same request to one unit.

The graph benchmark's chain (graphs.py: PlusOne -> TimesTwo -> MinusOne, every unit in this
process) and its model alone, each driven through HttpProtocol with a mock transport, so what
is counted is our own layers, not the network or the load generator:

    python benchmarks/inproc_graph.py [columns] [requests] [chain|single] [units]

prints CPU µs per request for both and their ratio (the throughput ratio the graph scenario
measures under load, without the noise). Under callgrind, take the difference of two request
counts as benchmarks/inproc_request.py explains. Hooks are forced inline.
"""
from __future__ import annotations

import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "models")]

from benchmarks import graphs  # noqa: E402
from benchmarks.inproc_request import _Transport  # noqa: E402


def _graph_router(loop: asyncio.AbstractEventLoop, folder: Path, units: int = graphs.TARGET_CHAIN) -> Any:
    from fastseldon.graph import spec
    from fastseldon.graph.app import load_graph_app
    from fastseldon.settings import ServerSettings

    predictor = spec.load_file(graphs.write_spec(folder, units))
    app = loop.run_until_complete(load_graph_app(ServerSettings(inline_hook_seconds=10.0), predictor,
                                                 HERE / "models", {}, loop))
    return app.router


def _single_router(loop: asyncio.AbstractEventLoop) -> Any:
    from graph_units import MinusOne  # type: ignore[import-not-found]

    from fastseldon.app import App
    from fastseldon.settings import ServerSettings, UnitSettings
    from fastseldon.user_model import UserModel

    unit = UnitSettings(interface_name="graph_units.MinusOne", model_name="m")
    return App(ServerSettings(inline_hook_seconds=10.0), unit, UserModel.from_object(MinusOne()), loop).router


def measure(loop: asyncio.AbstractEventLoop, router: Any, columns: int, count: int,
            check: Callable[[bytes], bool]) -> float:
    """CPU seconds per request after a warm-up."""
    from fastseldon import http

    state = http.ServerState(router)
    proto = http.HttpProtocol(router, state, loop, max_body=1 << 30, keepalive_timeout=75.0)
    transport = _Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    body = json.dumps({"data": {"ndarray": np.random.rand(1, columns).tolist()}}).encode()
    request = (b"POST /api/v1.0/predictions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body

    async def run(n: int) -> None:
        for _ in range(n):
            sent = len(transport.out)
            proto.data_received(request)
            while len(transport.out) == sent:  # its answer (a call on the thread pool takes a few turns)
                await asyncio.sleep(0)

    loop.run_until_complete(run(200))
    out = b"".join(transport.out)
    assert b"200 OK" in out and check(out), out[:300]
    start = time.process_time()
    loop.run_until_complete(run(count))
    return (time.process_time() - start) / count


def main(columns: int = 10, count: int = 5000, only: str = "", units: int = graphs.TARGET_CHAIN) -> None:
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as tmp:
        g = s = 0.0
        if only != "single":
            g = measure(loop, _graph_router(loop, Path(tmp), units), columns, count, lambda out: b"requestPath" in out)
        if only != "chain":
            s = measure(loop, _single_router(loop), columns, count, lambda out: True)
    print(f"columns={columns} requests={count}: single {s * 1e6:.1f} us, chain of {units} {g * 1e6:.1f} us"
          + (f", single/chain {s / g:.2f} (target >= {graphs.TARGET})" if s and g else ""))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 10, int(sys.argv[2]) if len(sys.argv) > 2 else 5000,
         sys.argv[3] if len(sys.argv) > 3 else "", int(sys.argv[4]) if len(sys.argv) > 4 else graphs.TARGET_CHAIN)
