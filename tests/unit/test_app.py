"""One worker's App in-process: routes, error rendering per protocol, the error family on both
wires, hook placement by the runner, and a Reply handed to the next unit without
serialization. No sockets: REST handlers get ``Request`` objects, gRPC methods get bytes."""
from __future__ import annotations

import asyncio
import json
import threading

import numpy as np
import pytest

from fastseldon.app import App
from fastseldon.errors import FastSeldonError
from fastseldon.http import Request, Response
from fastseldon.proto import grpc_service_pb2 as v2pb
from fastseldon.proto import prediction_pb2 as pb
from fastseldon.runner import PROBE_CALLS
from fastseldon.service import SeldonService
from fastseldon.settings import ServerSettings, UnitSettings
from fastseldon.steps import drive_sync
from fastseldon.user_model import UserModel


class SeldonNotImplementedError(Exception):
    """Same name as seldon_core's: raising it means "fall through to the next hook"."""


class NotFoundError(Exception):
    """Shaped like seldon_core's SeldonMicroserviceException with a user-chosen status."""

    def __init__(self, message: str):
        super().__init__(message)
        self.status_code = 404
        self.reason = "NO_SUCH_THING"


class Model:
    def __init__(self) -> None:
        self.threads: list[str] = []

    def predict(self, X, names):
        self.threads.append(threading.current_thread().name)
        if isinstance(X, np.ndarray) and X.size and X.flat[0] == 13:
            raise ValueError("unlucky input")
        if isinstance(X, np.ndarray) and X.size and X.flat[0] == 404:
            raise NotFoundError("no such row")
        return X * 2

    def health_status_raw(self):
        raise SeldonNotImplementedError("use health_status")

    def health_status(self):
        return {"checked": True}

    def init_metadata(self):
        return {"inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 2]}]}


class BadMetadataModel:
    def predict(self, X, names):
        return X

    def init_metadata(self):
        return {"not_a_metadata_key": 1}


class AddOne:
    def transform_input(self, X, names):
        return X + 1


@pytest.fixture
def loop():
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def make_app(loop, obj, **unit) -> App:
    settings = UnitSettings(interface_name=type(obj).__name__, model_name=unit.pop("model_name", "m"), **unit)
    return App(ServerSettings(), settings, UserModel.from_object(obj), loop)


def rest(loop, app: App, method: str, path: str, body: bytes = b"", content_type: bytes = b"application/json",
         query: str = "") -> Response:
    """Resolve and run a REST handler the way the front does (errors rendered by the router)."""
    try:
        handler = app.router.resolve(method, path)
    except FastSeldonError as exc:
        return app.router.render_error(path, exc)
    request = Request(method, path, query, {b"content-type": content_type}, body)
    return loop.run_until_complete(handler(request))


def seldon_request(values) -> bytes:
    return json.dumps({"data": {"ndarray": values}}).encode()


def test_seldon_rest_predict_goes_through_adapter_service_and_runner(loop):
    app = make_app(loop, Model())
    resp = rest(loop, app, "POST", "/api/v1.0/predictions", seldon_request([[1.0, 2.0]]))
    assert resp.status == 200
    assert json.loads(resp.body) == {"data": {"names": ["t:0", "t:1"], "ndarray": [[2.0, 4.0]]}, "meta": {}}


def test_form_encoded_json_is_parsed_by_the_seldon_adapter(loop):
    app = make_app(loop, Model())
    body = b"json=" + seldon_request([[3, 4]])
    resp = rest(loop, app, "POST", "/predict", body, b"application/x-www-form-urlencoded")
    assert json.loads(resp.body)["data"]["ndarray"] == [[6, 8]]


def test_errors_render_in_the_format_of_the_path_they_happened_on(loop):
    app = make_app(loop, Model())
    seldon = rest(loop, app, "POST", "/no/such/route")
    assert seldon.status == 404 and json.loads(seldon.body)["status"]["reason"] == "MICROSERVICE_BAD_DATA"
    v2 = rest(loop, app, "GET", "/v2/no/such/route")
    assert v2.status == 404 and set(json.loads(v2.body)) == {"error"}
    wrong_model = rest(loop, app, "POST", "/v2/models/other/infer", b"{}")
    assert wrong_model.status == 404 and "other" in json.loads(wrong_model.body)["error"]
    bad_body = rest(loop, app, "POST", "/api/v1.0/predictions", b"{not json")
    assert bad_body.status == 400 and "status" in json.loads(bad_body.body)


def test_a_user_exception_is_500_internal_on_both_wires(loop):
    app = make_app(loop, Model())
    resp = rest(loop, app, "POST", "/api/v1.0/predictions", seldon_request([[13.0]]))
    status = json.loads(resp.body)["status"]
    assert resp.status == 500 and status["info"] == "unlucky input" and status["reason"] == "MICROSERVICE_INTERNAL_ERROR"
    request = pb.SeldonMessage()
    request.data.tensor.shape.extend([1, 1])
    request.data.tensor.values.append(13.0)
    with pytest.raises(FastSeldonError) as caught:
        app.grpc_methods["/seldon.protos.Model/Predict"](request.SerializeToString())
    assert caught.value.grpc_code == "INTERNAL" and str(caught.value) == "unlucky input"


def test_a_user_chosen_status_keeps_http_and_grpc_in_step(loop):
    app = make_app(loop, Model())
    resp = rest(loop, app, "POST", "/api/v1.0/predictions", seldon_request([[404.0]]))
    assert resp.status == 404 and json.loads(resp.body)["status"]["reason"] == "NO_SUCH_THING"
    request = pb.SeldonMessage()
    request.data.ndarray.extend([404.0])
    with pytest.raises(FastSeldonError) as caught:
        app.grpc_methods["/seldon.protos.Model/Predict"](request.SerializeToString())
    assert (caught.value.http_status, caught.value.grpc_code) == (404, "NOT_FOUND")


def test_graph_metadata_is_501_and_unimplemented_not_invalid_argument(loop):
    app = make_app(loop, Model())
    with pytest.raises(FastSeldonError) as caught:
        app.grpc_methods["/seldon.protos.Seldon/GraphMetadata"](b"")
    assert (caught.value.http_status, caught.value.grpc_code) == (501, "UNIMPLEMENTED")


def test_invalid_metadata_is_500_internal_on_v2_rest_and_grpc(loop):
    app = make_app(loop, BadMetadataModel())
    resp = rest(loop, app, "GET", "/v2/models/m")
    assert resp.status == 500 and "error" in json.loads(resp.body)
    ask = v2pb.ModelMetadataRequest(name="m").SerializeToString()
    with pytest.raises(FastSeldonError) as caught:
        app.grpc_methods["/inference.GRPCInferenceService/ModelMetadata"](ask)
    assert (caught.value.http_status, caught.value.grpc_code) == (500, "INTERNAL")


def test_a_raw_hook_that_falls_through_reaches_the_plain_one(loop):
    app = make_app(loop, Model())
    resp = rest(loop, app, "GET", "/health/status")
    assert resp.status == 200 and json.loads(resp.body)["jsonData"] == {"checked": True}


def test_cheap_sync_hooks_move_onto_the_loop_after_the_probe_calls(loop):
    model = Model()
    app = make_app(loop, model)
    loop_thread = threading.current_thread().name
    for _ in range(PROBE_CALLS + 2):
        assert rest(loop, app, "POST", "/predict", seldon_request([[1.0]])).status == 200
    assert all(name.startswith("hook") for name in model.threads[:PROBE_CALLS])
    assert model.threads[PROBE_CALLS:] == [loop_thread, loop_thread]


def test_grpc_calls_run_sync_hooks_on_the_calling_thread(loop):
    model = Model()
    app = make_app(loop, model)
    request = pb.SeldonMessage()
    request.data.tensor.shape.extend([1, 2])
    request.data.tensor.values.extend([1.0, 2.0])
    reply = pb.SeldonMessage.FromString(app.grpc_methods["/seldon.protos.Model/Predict"](request.SerializeToString()))
    assert list(reply.data.tensor.values) == [2.0, 4.0] and list(reply.data.names) == ["t:0", "t:1"]
    assert model.threads == [threading.current_thread().name]


def test_a_reply_becomes_the_next_units_message_without_serialization():
    """Two services chained in-process, as a graph executor will: transformer -> model."""
    metrics = None
    first = SeldonService(UserModel.from_object(AddOne()), UnitSettings("AddOne"), metrics)  # type: ignore[arg-type]
    second = SeldonService(UserModel.from_object(Model()), UnitSettings("Model"), metrics)  # type: ignore[arg-type]

    def invoke(call):
        return call.hook.fn(*call.args, **call.kwargs)

    from fastseldon.types import Message

    x = np.array([[1.0, 2.0]])
    reply = drive_sync(first.transform_input(Message("tensor", x, ["a", "b"], {"puid": "p1"})), invoke)
    handed = reply.to_message()
    assert handed.kind == "tensor" and handed.names == ["t:0", "t:1"] and handed.meta["puid"] == "p1"
    assert handed.payload is reply.payload  # the same array object: nothing was encoded
    out = drive_sync(second.predict(handed), invoke)
    np.testing.assert_array_equal(out.payload, [[4.0, 6.0]])
