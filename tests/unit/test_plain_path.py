"""The plain path (one sync hook, called right on the loop) answers exactly as the step machinery does.

A graph's in-process unit skips driving the service's step generator when the endpoint is
plain (service.plain); these cases drive the same unit both ways and compare every field of
the message passed on, including errors and Seldon's fall-through.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastseldon.errors import FastSeldonError
from fastseldon.graph.units import LocalUnit
from fastseldon.metrics import Metrics
from fastseldon.runner import PROBE_CALLS, HookRunner
from fastseldon.service import SeldonService
from fastseldon.settings import UnitSettings
from fastseldon.types import Message
from fastseldon.user_model import UserModel
from tests.support.plain_models import Absent, Double, Failing, Tagged, WithTags


def _unit(obj: Any, loop: asyncio.AbstractEventLoop, pool: ThreadPoolExecutor, **settings: Any) -> LocalUnit:
    unit = UnitSettings(interface_name=type(obj).__name__, model_name="m", predictive_unit_id="node",
                        predictive_unit_image="img:1", **settings)
    model = UserModel.from_object(obj)
    service = SeldonService(model, unit, Metrics(unit))
    return LocalUnit("node", service, HookRunner.for_unit(loop, pool, 10.0, unit, model))


def _both(obj: Any, method: str, msg: Message, **settings: Any) -> tuple[Any, Any, bool]:
    """(plain answer, steps answer, whether the plain path was taken); errors as (type, status, message)."""
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(2)
    unit = _unit(obj, loop, pool, **settings)

    async def answer(plain: bool) -> Any:
        try:
            if plain:
                return await unit.call(method, msg, "p")
            return await unit._run(getattr(unit.service, method)(msg))
        except FastSeldonError as exc:
            return (type(exc).__name__, exc.http_status, exc.message)

    try:
        for _ in range(PROBE_CALLS):  # the first calls go to the pool; after them, inline
            loop.run_until_complete(answer(False))
        taken = unit.service.plain_call(method, msg) is not None
        taken = taken and unit.runner.may_inline(unit.service.plain_call(method, msg))  # type: ignore[arg-type]
        return loop.run_until_complete(answer(True)), loop.run_until_complete(answer(False)), taken
    finally:
        pool.shutdown()
        loop.close()


def _fields(m: Any) -> Any:
    if isinstance(m, Message):
        payload = m.payload.tolist() if isinstance(m.payload, np.ndarray) else m.payload
        return (m.kind, payload, list(m.names), m.meta)
    return m


X = np.array([[1.0, 2.0, 3.0]])
META = {"puid": "abc", "tags": {"up": "stream"}, "requestPath": {"before": "b:1"}, "metrics": [{"key": "k"}]}


@pytest.mark.parametrize(("obj", "method", "plain"), [
    (Double(), "predict", True),
    (Double(), "transform_input", True),
    (Double(), "transform_output", True),  # no hook: passed through by the steps, not plain
    (Tagged(), "predict", True),
    (Absent(), "predict", True),
    (Absent(), "transform_input", True),
    (Failing(), "predict", True),
    (WithTags(), "predict", False),
])
def test_plain_path_answers_as_the_steps(obj: Any, method: str, plain: bool) -> None:
    msg = Message("ndarray", X, ["x", "y", "z"], dict(META))
    got, want, taken = _both(obj, method, msg)
    expect_plain = plain and method in SeldonService(UserModel.from_object(obj), UnitSettings(interface_name="x"),
                                                     Metrics(UnitSettings(interface_name="x"))).plain
    assert taken == expect_plain
    assert _fields(got) == _fields(want)


def test_plain_path_keeps_seldon_meta_rules() -> None:
    msg = Message("tensor", X, [], dict(META))
    got, _want, taken = _both(Tagged(), "predict", msg, include_metrics_in_response=True)
    assert taken
    assert got.kind == "tensor" and got.names == ["a", "b", "c"]
    assert got.meta["tags"] == {"up": "stream", "who": "tagged"}
    assert got.meta["requestPath"] == {"node": "img:1", "before": "b:1"}
    assert got.meta["puid"] == "abc"
    assert [m["key"] for m in got.meta["metrics"]] == ["k", "hits"]


def test_plain_path_user_error_is_500_with_message() -> None:
    got, want, taken = _both(Failing(), "predict", Message("ndarray", X, [], {}))
    assert taken and got == want and got[1] == 500 and "bad row" in got[2]


_meta_values = st.one_of(st.none(), st.just({}), st.just([]), st.text(max_size=3),
                         st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=3),
                         st.lists(st.dictionaries(st.sampled_from(["key", "type", "value"]), st.integers(0, 3)), max_size=2))


@settings(max_examples=300, deadline=None)
@given(meta=st.dictionaries(st.sampled_from(["tags", "metrics", "requestPath", "puid", "routing", "other"]), _meta_values,
                            max_size=5),
       unit_id=st.sampled_from(["", "node"]))
def test_the_plain_replys_meta_is_the_general_merge_of_one_request(meta: dict[str, Any], unit_id: str) -> None:
    """_passed_on_meta is _merged_meta([m], {}, []) written for one request: same keys, order and values."""
    unit = UnitSettings(interface_name="Double", model_name="m", predictive_unit_id=unit_id, predictive_unit_image="img:1")
    service = SeldonService(UserModel.from_object(Double()), unit, Metrics(unit))
    try:
        general: Any = service._merged_meta([meta], {}, [])
    except (TypeError, ValueError, AttributeError) as exc:
        general = type(exc)
    try:
        passed: Any = service._passed_on_meta(meta)
    except (TypeError, ValueError, AttributeError) as exc:
        passed = type(exc)
    assert passed == general and (not isinstance(passed, dict) or list(passed) == list(general))
