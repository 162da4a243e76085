"""Seldon's graph walk: transform input, route, children, aggregate, transform output; and feedback.

The semantics are the Go executor's (../shared/protocols/seldon-graph.md §1): a node's
input phase runs when it is a MODEL or TRANSFORMER or lists TRANSFORM_INPUT (then
/transform-input wins over /predict); a router's answer picks the children (-1 all of them,
concurrently; -2 none: the current message goes on; N child N); a combiner aggregates the
children's outputs, any other parent passes on child 0's; an output transformer runs last.
The first error aborts the walk (for concurrent children: the first failing child in spec
order). Feedback walks the same tree along ``response.meta.routing``.
"""
from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np

from fastseldon.errors import BadRequest
from fastseldon.graph.spec import Node, Predictor
from fastseldon.graph.units import GraphUnit
from fastseldon.types import Feedback, Message

# An observer of every node call: (node, method, seconds, error or None)
Observer = Callable[[Node, str, float, BaseException | None], None]
# What records a node method's successful calls, worked out once per (node, method): seconds -> None
Recorder = Callable[[Node, str], Callable[[float], None]]


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the walk does at one node, worked out once from its type and ``methods``."""

    node: Node
    unit: GraphUnit | None
    input_method: str | None  # transform_input / predict, or None: no input phase
    routes: bool  # the unit's route() picks the children
    aggregates: bool
    output: bool  # transform_output after the children
    children: tuple[_Plan, ...]
    passes_on: bool  # one child, called with this node's message and answering for it (no router, no combiner)
    record_input: Callable[[float], None]  # the input phase's successful calls (observe's, made once)


class GraphExecutor:
    """Runs one predictor's graph over its units (in-process, remote or built in)."""

    def __init__(self, predictor: Predictor, units: dict[str, GraphUnit], *, routing_injection: bool = False,
                 seed: int | None = None, observe: Observer | None = None, record: Recorder | None = None):
        self.predictor = predictor
        self.root = predictor.graph
        self.units = units
        self.routing_injection = routing_injection
        self.random = random.Random(seed)
        self.observe: Observer = observe or _unobserved
        self._record = record or (lambda node, method: lambda seconds: self.observe(node, method, seconds, None))
        self._ratio = {n.name: _ratio_a(n) for n in self.root.walk() if n.implementation == "RANDOM_ABTEST"}
        self._plan = self._plan_of(self.root)

    def _plan_of(self, node: Node) -> _Plan:
        unit = self.units.get(node.name)
        has = unit is not None
        input_method = None
        if has and node.does("TRANSFORM_INPUT"):
            input_method = "transform_input" if node.type == "TRANSFORMER" or "TRANSFORM_INPUT" in node.methods else "predict"
        routes, aggregates = has and node.does("ROUTE"), node.does("AGGREGATE")
        passes_on = len(node.children) == 1 and not routes and not aggregates and node.implementation != "RANDOM_ABTEST"
        return _Plan(node, unit, input_method, routes, aggregates, has and node.does("TRANSFORM_OUTPUT"),
                     tuple(self._plan_of(c) for c in node.children), passes_on,
                     self._record(node, input_method) if input_method else _unrecorded)

    # -- predict

    async def predict(self, msg: Message, puid: str = "") -> tuple[Message, dict[str, int]]:
        """The graph's answer and the routing it took (node name -> -1 / -2 / N)."""
        routing: dict[str, int] = {}
        out = await self._predict(self._plan, msg, routing, puid)
        if self.routing_injection:
            out = Message(out.kind, out.payload, out.names, {**out.meta, "routing": dict(routing)}, out.raw)
        return out, routing

    def _observed(self, node: Node, method: str, start: float, error: BaseException | None) -> None:
        self.observe(node, method, perf_counter() - start, error)

    async def _timed(self, node: Node, method: str, call: Awaitable[Any]) -> Any:
        start = perf_counter()
        try:
            out = await call
        except BaseException as exc:
            self._observed(node, method, start, exc)
            raise
        self._observed(node, method, start, None)
        return out

    async def _predict(self, plan: _Plan, msg: Message, routing: dict[str, int], puid: str) -> Message:
        """One subtree's answer. A spine of parents that just pass their message on to their one child
        is walked in this loop (no coroutine per level); their output phases run on the way back up."""
        outputs: list[_Plan] = []  # nodes whose transform_output runs after their subtree, outermost first
        while True:
            node, unit = plan.node, plan.unit
            if plan.input_method is not None:
                assert unit is not None
                # the call every MODEL and TRANSFORMER makes: no coroutine when the unit can answer right away
                start = perf_counter()
                try:
                    out = unit.call_now(plan.input_method, msg, puid)
                    msg = out if out is not None else await unit.call(plan.input_method, msg, puid)
                except BaseException as exc:
                    self.observe(node, plan.input_method, perf_counter() - start, exc)
                    raise
                plan.record_input(perf_counter() - start)
                routing[node.name] = -1
            if plan.output:
                outputs.append(plan)
            if not plan.passes_on:
                break
            if plan.input_method is None:
                routing[node.name] = -1  # (set by the input phase otherwise)
            plan = plan.children[0]
        if plan.children:
            msg = await self._children(plan, msg, routing, puid)
        for done in reversed(outputs):
            assert done.unit is not None
            msg = await self._timed(done.node, "transform_output", done.unit.call("transform_output", msg, puid))
            routing[done.node.name] = -1
        return msg

    async def _children(self, plan: _Plan, msg: Message, routing: dict[str, int], puid: str) -> Message:
        node, unit, children = plan.node, plan.unit, plan.children
        if plan.routes:
            assert unit is not None
            route = await self._timed(node, "route", unit.route(msg, puid))
        elif node.implementation == "RANDOM_ABTEST":
            route = 0 if self.random.random() < self._ratio[node.name] else 1
        else:
            route = -1
        routing[node.name] = route
        if route == -2:
            return msg  # no child: the current message goes on (and the output phase still runs)
        outputs: list[Message]
        if route == -1 and len(children) == 1:
            outputs = [await self._predict(children[0], msg, routing, puid)]  # no task for a lone child
        elif route == -1:
            outcomes = await asyncio.gather(*(self._predict(c, msg, routing, puid) for c in children),
                                            return_exceptions=True)
            for outcome in outcomes:  # the first failure in spec order wins, as in Seldon
                if isinstance(outcome, BaseException):
                    raise outcome
            outputs = [o for o in outcomes if isinstance(o, Message)]
        elif 0 <= route < len(children):
            outputs = [await self._predict(children[route], msg, routing, puid)]
        else:
            raise BadRequest(f"router {node.name!r} returned route {route}, but it has {len(children)} "
                             f"children (valid: -2, -1, 0..{len(children) - 1})")
        if plan.aggregates:
            routing[node.name] = -1
            if unit is not None:
                return await self._timed(node, "aggregate", unit.aggregate(outputs, puid))
            if node.implementation == "AVERAGE_COMBINER":
                return average(outputs)
        return outputs[0]

    # -- feedback

    async def feedback(self, feedback: Feedback, puid: str = "") -> Message:
        """Send ``feedback`` to every MODEL/ROUTER (or SEND_FEEDBACK) node on the routed path."""
        return await self._feedback(self.root, feedback, puid)

    async def _feedback(self, node: Node, feedback: Feedback, puid: str) -> Message:
        if node.children:
            route = feedback.routing.get(node.name, -1)
            if route == -1:
                targets = list(node.children)
            elif 0 <= route < len(node.children):
                targets = [node.children[route]]
            else:
                targets = []  # -2 (no child was called) or a route this graph can't have taken
            outcomes = await asyncio.gather(*(self._feedback(c, feedback, puid) for c in targets),
                                            return_exceptions=True)
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        unit = self.units.get(node.name)
        if node.does("SEND_FEEDBACK") and unit is not None:
            return await self._timed(node, "send_feedback", unit.send_feedback(feedback, puid))
        return Message("ndarray", np.array([]), [], {})


def _unobserved(node: Node, method: str, seconds: float, error: BaseException | None) -> None:
    pass


def _unrecorded(seconds: float) -> None:
    pass


def _ratio_a(node: Node) -> float:
    """RANDOM_ABTEST reads ``ratioA`` only when it is the node's one parameter (default 0.5)."""
    if len(node.parameters) == 1 and node.parameters[0].get("name") == "ratioA":
        return float(node.parameters[0]["value"])
    return 0.5


def average(outputs: list[Message]) -> Message:
    """AVERAGE_COMBINER: the element-wise mean of 2-D outputs of one shape; meta merged as Seldon's wrapper."""
    if not outputs:
        raise BadRequest("Combiner received no inputs")
    arrays = []
    for out in outputs:
        arr = np.asarray(out.payload)
        if arr.ndim != 2 or arr.dtype.kind not in "biuf":
            raise BadRequest("Combiner received data that is not 2 dimensional")
        arrays.append(arr)
    if any(a.shape != arrays[0].shape for a in arrays):
        raise BadRequest(f"Expected batch length and features to match, got shapes {[a.shape for a in arrays]}")
    first = outputs[0]
    return Message(first.kind, np.mean(np.stack(arrays), axis=0), first.names, merge_meta(outputs))


def merge_meta(messages: list[Message]) -> dict[str, Any]:
    """Seldon's combiner merge: tags and requestPath dict-updated in child order, metrics concatenated."""
    meta: dict[str, Any] = {}
    tags: dict[str, Any] = {}
    path: dict[str, Any] = {}
    metrics: list[Any] = []
    for m in messages:
        tags.update(m.meta.get("tags") or {})
        path.update(m.meta.get("requestPath") or {})
        metrics.extend(m.meta.get("metrics") or [])
    if messages and messages[0].meta.get("puid"):
        meta["puid"] = messages[0].meta["puid"]
    if metrics:
        meta["metrics"] = metrics
    if path:
        meta["requestPath"] = path
    if tags:
        meta["tags"] = tags
    return meta
