"""Python opcodes per request, per function: a deterministic cost measure for a noisy machine.

The same in-process drive as inproc_graph.py (HttpProtocol with a mock transport, hooks
inline), traced with ``sys.settrace`` opcode events; the figure is the difference of two
request counts, so start-up and warm-up drop out:

    python benchmarks/opcodes.py [chain|single] [units] [top]

prints opcodes per request and the ``top`` functions by opcodes. Opcodes are not time (a C
call is one opcode), but every Python-level layer shows, and two runs agree to the opcode.
"""
from __future__ import annotations

import asyncio
import collections
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE / "models")]

from benchmarks import inproc_graph  # noqa: E402


def count(mode: str = "chain", units: int = 3, small: int = 100, large: int = 300) -> dict[str, float]:
    """Opcodes per request by function (``file:line:name``) for the chain of ``units`` or the unit alone."""
    counts: collections.Counter[str] = collections.Counter()

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        frame.f_trace_opcodes = True
        if event == "opcode":
            code = frame.f_code
            counts[f"{Path(code.co_filename).name}:{code.co_firstlineno}:{code.co_name}"] += 1
        return tracer

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    with tempfile.TemporaryDirectory() as tmp:
        router = (inproc_graph._graph_router(loop, Path(tmp), units) if mode == "chain"
                  else inproc_graph._single_router(loop))
        inproc_graph.measure(loop, router, 10, 50, lambda out: True)
        runs = []
        for n in (small, large):
            counts.clear()
            sys.settrace(tracer)
            try:
                inproc_graph.measure(loop, router, 10, n, lambda out: True)
            finally:
                sys.settrace(None)
            runs.append(counts.copy())
    loop.close()
    a, b = runs
    return {k: (b[k] - a.get(k, 0)) / (large - small) for k in b}


def main(mode: str = "chain", units: int = 3, top: int = 30) -> None:
    per = count(mode, units)
    print(f"{mode}{f' of {units}' if mode == 'chain' else ''}: {sum(per.values()):.0f} opcodes per request")
    for name, n in sorted(per.items(), key=lambda kv: -kv[1])[:top]:
        print(f"{n:8.1f}  {name}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "chain", int(sys.argv[2]) if len(sys.argv) > 2 else 3,
         int(sys.argv[3]) if len(sys.argv) > 3 else 30)
