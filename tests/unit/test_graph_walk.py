"""The graph executor in-process, over stand-in units: the walk's order and the puid it makes up."""
from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import numpy as np

from fastseldon.graph import spec
from fastseldon.graph.app import Puids
from fastseldon.graph.executor import GraphExecutor
from fastseldon.types import Feedback, Message


class Recorder:
    """A unit that records each call and adds its number to the data."""

    def __init__(self, name: str, calls: list[str], add: float):
        self.name, self.calls, self.add = name, calls, add

    def call_now(self, method: str, msg: Message, puid: str) -> Message | None:
        if self.name.startswith("m"):  # the models answer right away, the rest are awaited
            return self._answer(method, msg)
        return None

    async def call(self, method: str, msg: Message, puid: str) -> Message:
        return self._answer(method, msg)

    def _answer(self, method: str, msg: Message) -> Message:
        self.calls.append(f"{self.name}.{method}")
        return Message(msg.kind, np.asarray(msg.payload) + self.add, msg.names, msg.meta)

    async def route(self, msg: Message, puid: str) -> int:
        self.calls.append(f"{self.name}.route")
        return 1

    async def aggregate(self, msgs: list[Message], puid: str) -> Message:
        self.calls.append(f"{self.name}.aggregate")
        return Message("ndarray", sum(np.asarray(m.payload) for m in msgs), [], {})

    async def send_feedback(self, feedback: Feedback, puid: str) -> Message:
        return Message("ndarray", np.array([]), [], {})

    def metadata(self) -> dict[str, Any]:
        return {}


def _predictor(graph: dict[str, Any]) -> spec.Predictor:
    names = [n["name"] for n in _nodes(graph)]
    containers = [{"name": n, "image": f"{n}:1", "env": [{"name": "MODEL_NAME", "value": "X"}]} for n in names]
    return spec.from_document({"apiVersion": "machinelearning.seldon.io/v1", "kind": "SeldonDeployment",
                               "metadata": {"name": "d"},
                               "spec": {"predictors": [{"name": "p", "graph": graph,
                                                        "componentSpecs": [{"spec": {"containers": containers}}]}]}})


def _nodes(graph: dict[str, Any]) -> list[dict[str, Any]]:
    return [graph, *(n for c in graph.get("children", []) for n in _nodes(c))]


def test_walk_order_input_route_children_aggregate_output() -> None:
    graph = {"name": "r", "type": "ROUTER", "methods": ["TRANSFORM_OUTPUT"], "children": [
        {"name": "a", "type": "MODEL"},
        {"name": "c", "type": "COMBINER", "children": [{"name": "m1", "type": "MODEL"},
                                                        {"name": "t", "type": "TRANSFORMER",
                                                         "children": [{"name": "m2", "type": "MODEL"}]}]}]}
    predictor = _predictor(graph)
    calls: list[str] = []
    adds = {"r": 1000, "a": 1, "c": 0, "m1": 10, "t": 100, "m2": 20}
    units = {n: Recorder(n, calls, v) for n, v in adds.items()}
    out, routing = asyncio.run(GraphExecutor(predictor, units).predict(Message("ndarray", np.array([[0.0]]))))
    # the router picks child 1 (the combiner); both of its children run; the output phase last
    assert calls[0] == "r.route" and calls[-2:] == ["c.aggregate", "r.transform_output"]
    assert sorted(calls[1:-2]) == ["m1.predict", "m2.predict", "t.transform_input"]
    assert calls.index("t.transform_input") < calls.index("m2.predict")
    assert float(out.payload[0][0]) == 10 + 100 + 20 + 1000
    assert routing == {"r": -1, "c": -1, "m1": -1, "t": -1, "m2": -1}


def test_new_puid_is_a_version4_uuid_and_unique() -> None:
    puids = Puids(batch=7)  # refills mid-way many times
    seen = {puids() for _ in range(2000)}
    assert len(seen) == 2000
    assert puids.of(b"given-1") == "given-1" and puids.of(None) not in seen
    for p in list(seen)[:50] + list(seen)[-50:]:
        u = uuid.UUID(p)
        assert str(u) == p and u.version == 4 and u.variant == uuid.RFC_4122


def test_default_names_spelled_out_encode_as_the_cached_default() -> None:
    """A graph passes Seldon's default names on as a list; the reply must read as for no names at all."""
    from fastseldon import seldon_protocol as sp
    from fastseldon.types import Reply, default_names

    for columns in (1, 10, 300, 5000):
        arr = np.arange(2 * columns, dtype=np.float64).reshape(2, columns)
        for kind in ("ndarray", "tensor"):
            plain = sp.reply_to_json(Reply(arr, kind, None, {"puid": "p"}))
            spelled = sp.reply_to_json(Reply(arr, kind, list(default_names(columns)), {"puid": "p"}))
            other = sp.reply_to_json(Reply(arr, kind, [f"c{i}" for i in range(columns)], {"puid": "p"}))
            assert spelled == plain and other != plain
            assert json.loads(other)["data"]["names"][-1] == f"c{columns - 1}"
