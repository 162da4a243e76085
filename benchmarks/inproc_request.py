"""In-process cost of one Seldon REST request through HttpProtocol + App, for instruction counting.

Wall clocks on a shared box are noise; instruction counts are not. Run it under callgrind
for two request counts and take the difference (the warm-up and set-up cancel out):

    for n in 40 200; do PYTHONHASHSEED=0 PYTHONPATH=<tree>/server valgrind --tool=callgrind \\
        "$(python -c 'import sys; print(sys.executable)')" benchmarks/inproc_request.py 10 $n [v2]; done

instructions per request = (I(200) - I(40)) / 800 (N requests = 5 * the second argument). A third
argument ``v2`` sends V2 JSON (FP64 1xCOLUMNS to /v2/models/m/infer) instead of Seldon's ndarray. It works on this tree and on older
revisions (``python -m benchmarks run --baseline-rev REV`` exports and builds them under
.bench-cache/rev-<sha>/; point PYTHONPATH at its ``server`` folder, or ``_pkg`` for the old layout).
Hooks are forced inline, so placement heuristics don't change what is counted.
"""
from __future__ import annotations

import asyncio
import inspect
import json
import sys
import time
from typing import Any

import numpy as np


class Identity:
    def predict(self, X: Any, names: Any) -> Any:
        return X


class _Transport:
    def __init__(self) -> None:
        self.out: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.out.append(data)

    def writelines(self, chunks: list[bytes]) -> None:
        self.out.extend(chunks)

    def close(self) -> None: ...

    def abort(self) -> None: ...

    def is_closing(self) -> bool:
        return False

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def get_extra_info(self, *args: Any, **kwargs: Any) -> Any:
        return None


def _app(loop: asyncio.AbstractEventLoop) -> Any:
    from fastseldon.app import App
    from fastseldon.user_model import UserModel

    model = UserModel.from_object(Identity())
    if "unit" in inspect.signature(App.__init__).parameters:
        from fastseldon.settings import ServerSettings, UnitSettings

        return App(ServerSettings(inline_hook_seconds=10.0), UnitSettings(interface_name="Identity", model_name="m"),
                   model, loop)
    from fastseldon import v2_protocol  # the layout before the structure issue
    from fastseldon.settings import Settings  # type: ignore[attr-defined]

    app = App(Settings(interface_name="Identity", model_name="m", inline_hook_seconds=10.0), model, loop)  # type: ignore[call-arg]
    v2_protocol.register(app)  # type: ignore[attr-defined]
    return app


def main(columns: int, count: int, protocol: str = "seldon") -> None:
    from fastseldon import http

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    app = _app(loop)
    try:
        state = http.ServerState(app.router)  # type: ignore[call-arg]
    except TypeError:
        state = http.ServerState()  # type: ignore[call-arg]
    proto = http.HttpProtocol(app.router, state, loop, max_body=1 << 30, keepalive_timeout=75.0)
    transport = _Transport()
    proto.connection_made(transport)  # type: ignore[arg-type]
    if protocol == "v2":
        path = b"/v2/models/m/infer"
        body = json.dumps({"inputs": [{"name": "x", "shape": [1, columns], "datatype": "FP64",
                                       "data": np.random.rand(columns).tolist()}]}).encode()
    else:
        path = b"/api/v1.0/predictions"
        body = json.dumps({"data": {"ndarray": np.random.rand(1, columns).tolist()}}).encode()
    request = (b"POST %s HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % (path, len(body))) + body

    async def run(n: int) -> None:
        for _ in range(n):
            proto.data_received(request)
            await asyncio.sleep(0)

    loop.run_until_complete(run(200))  # warm-up: the hook moves onto the loop
    transport.out.clear()
    start = time.process_time()
    loop.run_until_complete(run(count * 5))
    spent = (time.process_time() - start) / (count * 5)
    assert any(b"200 OK" in chunk for chunk in transport.out[:3]), transport.out[:2]
    print(f"{protocol} columns={columns} requests={count * 5} cpu={spent * 1e6:.1f} us/request")


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4])
