"""The scenario table: what is sent, over which API, to which servers, against which targets.

Adding a scenario is one `Scenario(...)` line; adding a target is one `Target(...)` line.
Payload bytes are built in `payloads.py` from the fields here.
"""
from __future__ import annotations

from dataclasses import dataclass

# API families. A server lists the families it speaks (servers.py); a scenario names one.
SELDON_REST = "seldon-rest"
SELDON_GRPC = "seldon-grpc"
V2_REST = "v2-rest"
V2_GRPC = "v2-grpc"

MODEL_NAME = "bench"  # the V2 model name every V2 server is started with


@dataclass(frozen=True)
class Scenario:
    """One request shape sent to one API."""

    name: str
    api: str  # one of the API families above
    encoding: str  # seldon: ndarray | tensor; v2-rest: json | binary; v2-grpc: raw | typed
    rows: int
    cols: int
    dtype: str = "float64"  # numpy dtype name of the payload
    model: str = "identity"  # identity | cost | graph (see models/; graph: graphs.py, graph servers only)
    cost_us: int = 0  # per-call busy time of the cost model
    chain: int = 0  # graph scenarios: units in the chain (graphs.py); the graph servers are started per chain
    smoke: bool = False  # part of the few-seconds smoke run

    @property
    def transport(self) -> str:
        return "grpc" if self.api.endswith("grpc") else "http"

    @property
    def size_label(self) -> str:
        return f"{self.rows}x{self.cols}"


def _seldon(encoding: str, api: str, cols: int, **kw) -> Scenario:
    proto = "grpc" if api == SELDON_GRPC else "rest"
    return Scenario(f"seldon-{proto}-{encoding}-1x{cols}", api, encoding, 1, cols, **kw)


def _v2(encoding: str, api: str, cols: int, dtype: str, **kw) -> Scenario:
    proto = "grpc" if api == V2_GRPC else "rest"
    tag = {"float32": "fp32", "float64": "fp64"}[dtype]
    return Scenario(f"v2-{proto}-{encoding}-{tag}-1x{cols}", api, encoding, 1, cols, dtype, **kw)


SCENARIOS: tuple[Scenario, ...] = (
    _seldon("ndarray", SELDON_REST, 10, smoke=True),
    _seldon("tensor", SELDON_REST, 10),
    _seldon("ndarray", SELDON_REST, 10_000),
    _seldon("tensor", SELDON_REST, 10_000),
    _seldon("tensor", SELDON_GRPC, 10, smoke=True),
    _seldon("tensor", SELDON_GRPC, 10_000),
    _v2("json", V2_REST, 10, "float64"),
    _v2("json", V2_REST, 10_000, "float64"),
    _v2("json", V2_REST, 10, "float32"),
    _v2("binary", V2_REST, 10_000, "float32"),
    _v2("raw", V2_GRPC, 10, "float64"),
    _v2("raw", V2_GRPC, 10_000, "float64"),
    _v2("raw", V2_GRPC, 10_000, "float32"),
    # issue 6's report: small and 1x10 000 FP32 on every V2 encoding
    _v2("json", V2_REST, 10_000, "float32"),
    _v2("binary", V2_REST, 10, "float32"),
    _v2("raw", V2_GRPC, 10, "float32"),
    # The same front with a model that costs 1 ms of CPU per call: shows how much of the
    # server's overhead still matters once the model does real work.
    Scenario("seldon-rest-ndarray-1x10-cost1ms", SELDON_REST, "ndarray", 1, 10, model="cost", cost_us=1000),
    # Issues 13 and 18: chains of 1, 3 and 5 units (in one process, and all remote) against their model
    # alone, over REST; the 3-unit chain over gRPC too (remote units called over gRPC); graphs.py.
    *(Scenario(f"graph-chain{n}-rest-ndarray-1x10", SELDON_REST, "ndarray", 1, 10, model="graph", chain=n)
      for n in (1, 3, 5)),
    Scenario("graph-chain3-grpc-tensor-1x10", SELDON_GRPC, "tensor", 1, 10, model="graph", chain=3),
)

BY_NAME = {s.name: s for s in SCENARIOS}


@dataclass(frozen=True)
class Target:
    """fastseldon's peak throughput on `scenario` divided by `baseline`'s on `baseline_scenario`."""

    label: str
    scenario: str
    baseline: str  # a server name, or "grpc-echo-best" for the better of the two echo servers
    minimum: float  # the ratio to reach
    baseline_scenario: str = ""  # defaults to `scenario`

    @property
    def against(self) -> str:
        return self.baseline_scenario or self.scenario


# The targets of issues 5 and 18 (one server process each); where issue 18 raised one of issue 5's,
# the higher one is here. MLServer and KServe speak only V2, so fastseldon's Seldon scenarios are
# compared with their V2 scenario carrying the same numbers; Seldon Core speaks only Seldon's
# protocol, so fastseldon's V2 scenarios are compared with its Seldon scenario of the same size.
TARGETS: tuple[Target, ...] = (
    Target("REST 1x10 vs Seldon Core", "seldon-rest-ndarray-1x10", "seldon-core", 30),
    Target("REST 1x10 vs MLServer", "seldon-rest-ndarray-1x10", "mlserver", 10, "v2-rest-json-fp64-1x10"),
    Target("REST 1x10 vs httptools ceiling", "seldon-rest-ndarray-1x10", "ceiling-http", 0.50),
    Target("REST 1x10 tensor vs Seldon Core", "seldon-rest-tensor-1x10", "seldon-core", 20),
    Target("REST 1x10000 vs Seldon Core", "seldon-rest-ndarray-1x10000", "seldon-core", 30),
    Target("REST 1x10000 vs MLServer", "seldon-rest-ndarray-1x10000", "mlserver", 4, "v2-rest-json-fp64-1x10000"),
    Target("REST 1x10000 tensor vs Seldon Core", "seldon-rest-tensor-1x10000", "seldon-core", 30),
    Target("gRPC 1x10 vs Seldon Core", "seldon-grpc-tensor-1x10", "seldon-core", 4),
    Target("gRPC 1x10 vs threaded grpcio echo", "seldon-grpc-tensor-1x10", "grpc-echo-threaded", 0.80),
    Target("gRPC 1x10000 vs Seldon Core", "seldon-grpc-tensor-1x10000", "seldon-core", 10),
    Target("gRPC 1x10000 vs MLServer", "seldon-grpc-tensor-1x10000", "mlserver", 2, "v2-grpc-raw-fp64-1x10000"),
    Target("V2 REST 1x10 vs httptools ceiling", "v2-rest-json-fp64-1x10", "ceiling-http", 0.50),
    Target("V2 REST 1x10 vs Seldon Core", "v2-rest-json-fp64-1x10", "seldon-core", 30, "seldon-rest-ndarray-1x10"),
    Target("V2 REST 1x10 vs MLServer", "v2-rest-json-fp64-1x10", "mlserver", 10),
    Target("V2 REST 1x10000 vs MLServer", "v2-rest-json-fp64-1x10000", "mlserver", 4),
    Target("V2 gRPC 1x10 vs KServe", "v2-grpc-raw-fp64-1x10", "kserve", 3),
    Target("V2 gRPC 1x10000 vs MLServer", "v2-grpc-raw-fp64-1x10000", "mlserver", 2),
)


def select(names: list[str] | None, smoke: bool = False) -> list[Scenario]:
    """Scenarios named (exact names or prefixes such as ``seldon-rest``); all, or the smoke set."""
    if not names:
        return [s for s in SCENARIOS if s.smoke] if smoke else [s for s in SCENARIOS if s.model == "identity"]
    if names == ["all"]:
        return list(SCENARIOS)
    chosen: list[Scenario] = []
    for name in names:
        matches = [s for s in SCENARIOS if s.name == name] or [s for s in SCENARIOS if s.name.startswith(name)]
        if not matches:
            known = ", ".join(s.name for s in SCENARIOS)
            raise SystemExit(f"unknown scenario {name!r}; known: {known}")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen
