"""The five Seldon service types and V2 inference as plain logic: which hook runs, and what the reply holds.

Each endpoint is a step generator (steps.py): it *yields* the user-hook calls it needs and
*returns* a ``Reply`` or ``InferResult``. Whoever drives it (runner.py on the loop or a gRPC
thread, a graph executor) places the calls. Everything here is in-memory types (types.py):
no wire format, no front.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
import yaml
from google.protobuf import json_format

from fastseldon.codec.datatypes import DATATYPES, datatype_for, dtype_for
from fastseldon.errors import BadMetadata, BadMetric, BadRequest, CodecError, NotImplementedHook, UserModelError
from fastseldon.metrics import Metrics
from fastseldon.settings import UnitSettings
from fastseldon.steps import Call, Steps
from fastseldon.types import DATA_KINDS, Feedback, InferRequest, InferResult, Message, Reply, Tensor, message_of
from fastseldon.user_model import Hook, UserModel, is_not_implemented, is_seldon_response

log = logging.getLogger(__name__)

METRIC_TYPES = ("COUNTER", "GAUGE", "TIMER")
# endpoint -> the method label Seldon's metrics and tags use
_METHODS = {"predict": "predict", "transform_input": "inputtransform", "transform_output": "outputtransform"}


def _absent(endpoint: str, msg: Message) -> Any:
    """What a data endpoint answers when the model has no hook for it: no prediction, or the input untouched."""
    return [] if endpoint == "predict" else msg.payload

METADATA_KEYS = {"name", "versions", "platform", "inputs", "outputs", "custom"}


def _call_kwargs(hook: Hook, meta: Any) -> dict[str, Any]:
    return {"meta": meta} if hook.accepts_meta else {}


def _first_implemented(hooks: tuple[Hook, ...], make_call: Callable[[Hook], Call], *, final: bool = False) -> Steps:
    """Call the endpoint's hooks in Seldon's order until one does not raise SeldonNotImplementedError.

    Returns (hook, result), or (None, None) when every hook is absent or falls through. With
    ``final`` (Seldon's route and aggregate) only ``*_raw`` hooks fall through: the plain hook's
    SeldonNotImplementedError is the answer, a 400 with its message.
    """
    for hook in hooks:
        try:
            out = yield make_call(hook)
        except Exception as exc:
            if is_not_implemented(exc):
                if final and not hook.raw:
                    raise NotImplementedHook(_message(exc)) from None
                continue
            raise
        return hook, out
    return None, None


def _message(exc: BaseException) -> str:
    """Seldon's exceptions keep their text in ``message`` (``str()`` of them is empty)."""
    message = getattr(exc, "message", None)
    return message if isinstance(message, str) and message else str(exc)


def _wire(raw: Any) -> str | None:
    """Which wire a request came on, from its undecoded form: a proto (gRPC) or parsed JSON / bytes (REST)."""
    if raw is None:
        return None
    return "grpc" if hasattr(raw, "SerializeToString") else "rest"


def _unwrap(out: Any) -> tuple[Any, dict[str, Any], list[Any]]:
    """Seldon's SeldonResponse(data, tags, metrics) as its three parts; anything else is data."""
    if is_seldon_response(out):
        return out.data, dict(getattr(out, "tags", None) or {}), list(getattr(out, "metrics", None) or [])
    return out, {}, []


def validate_metrics(metrics: Any) -> list[dict[str, Any]]:
    if not isinstance(metrics, (list, tuple)):
        raise BadMetric(f"Bad metric created during request: metrics must be a list, got {metrics!r}")
    out = []
    for m in metrics:
        if not isinstance(m, dict) or "key" not in m or "value" not in m or m.get("type") not in METRIC_TYPES:
            raise BadMetric(f"Bad metric created during request: {m!r}")
        if isinstance(m["value"], bool) or not isinstance(m["value"], (int, float, np.number)):
            raise BadMetric(f"Bad metric created during request: value of {m['key']!r} is not a number")
        tags = m.get("tags") or {}
        if not isinstance(tags, dict):
            raise BadMetric(f"Bad metric created during request: tags of {m['key']!r} must be a map")
        out.append({"key": str(m["key"]), "type": m["type"], "value": float(m["value"]), **({"tags": tags} if tags else {})})
    return out


class SeldonService:
    """Seldon's MODEL / ROUTER / TRANSFORMER / OUTPUT_TRANSFORMER / COMBINER semantics."""

    def __init__(self, model: UserModel, settings: UnitSettings, metrics: Metrics):
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self._request_path = (
            {settings.predictive_unit_id: settings.predictive_unit_image} if settings.predictive_unit_id else {}
        )
        self.metadata, self.metadata_error = self._build_metadata()
        self.plain = self._plain_hooks()

    # -- which endpoints want the undecoded message

    def wants_raw(self, endpoint: str, wire: str = "rest") -> bool:
        """A ``*_raw`` or legacy ``*_<wire>`` hook gets the undecoded request: on REST the body must
        stay plain JSON (no arrays), on gRPC it is the proto."""
        hooks = getattr(self.model, endpoint)
        return (bool(hooks) and hooks[0].raw) or f"{endpoint}_{wire}" in self.model.legacy

    def _legacy(self, endpoint: str, wire: str | None) -> Hook | None:
        return self.model.legacy.get(f"{endpoint}_{wire}") if wire else None

    def _legacy_reply(self, hook: Hook, raw: Any, method: str) -> Steps:
        """A legacy ``*_rest``/``*_grpc`` hook: the request as the wire gave it, its reply sent as is
        (Seldon harvests no metrics from these)."""
        out = yield Call(hook, (raw,))
        return _as_is(out, method)

    # -- endpoints

    def predict(self, msg: Message) -> Steps:
        return (yield from self._unit("predict", msg))

    def transform_input(self, msg: Message) -> Steps:
        return (yield from self._unit("transform_input", msg))

    def transform_output(self, msg: Message) -> Steps:
        return (yield from self._unit("transform_output", msg))

    def route(self, msg: Message) -> Steps:
        legacy = self._legacy("route", _wire(msg.raw))
        if legacy is not None:
            return (yield from self._legacy_reply(legacy, msg.raw, "router"))
        hook, out = yield from _first_implemented(self.model.route, lambda h: self._unit_call(h, msg), final=True)
        if hook is None:
            # a SeldonComponent's own route() raises "route is not implemented", which Seldon answers
            raise NotImplementedHook("route is not implemented" if "route" in self.model.inherited else "Route not defined")
        if hook.raw:
            return (yield from self._raw_reply(out, "router"))
        data, tags, metrics = _unwrap(out)
        if isinstance(data, np.ndarray) and data.size == 1 and np.issubdtype(data.dtype, np.integer):
            data = int(data.ravel()[0])
        if not isinstance(data, int):
            raise BadRequest(f"Routing response must be int but got {data!r}")
        meta = {"puid": msg.meta["puid"]} if msg.meta.get("puid") else {}
        return (yield from self._reply(np.array([[data]]), msg.kind, [meta], "router", tags, metrics))

    def aggregate(self, msgs: list[Message], raw: Any) -> Steps:
        legacy = self._legacy("aggregate", _wire(raw))
        if legacy is not None:
            return (yield from self._legacy_reply(legacy, raw, "aggregate"))
        if not msgs:
            raise BadRequest("aggregate needs at least one SeldonMessage")
        hook, out = yield from _first_implemented(
            self.model.aggregate,
            lambda h: Call(h, (raw,)) if h.raw else Call(h, ([m.payload for m in msgs], [m.names for m in msgs])),
            final=True,
        )
        if hook is None:
            raise NotImplementedHook(
                "aggregate is not implemented" if "aggregate" in self.model.inherited else "Aggregate not defined")
        if hook.raw:
            return (yield from self._raw_reply(out, "aggregate"))
        data, tags, metrics = _unwrap(out)
        return (yield from self._reply(data, msgs[0].kind, [m.meta for m in msgs], "aggregate", tags, metrics))

    def send_feedback(self, feedback: Feedback, wire: str | None = None) -> Steps:
        """``wire`` ("rest" or "grpc"): which legacy ``send_feedback_<wire>`` hook applies, if any."""
        request = feedback.request
        self.metrics.feedback(feedback.reward)
        legacy = self._legacy("send_feedback", wire)
        if legacy is not None:
            # Seldon hands send_feedback_rest the Feedback as protobuf's JSON text and
            # send_feedback_grpc the proto; either answers a dict that becomes a SeldonMessage
            arg = json_format.MessageToJson(feedback.raw) if wire == "rest" else feedback.raw
            out = yield Call(legacy, (arg,))
            return Reply(out if out is not None else {}, "raw", None, {}, raw=True)
        routing = feedback.routing.get(self.settings.predictive_unit_id or "0")

        def make_call(hook: Hook) -> Call:
            if hook.raw:
                return Call(hook, (feedback.raw,))
            truth = feedback.truth.payload if feedback.truth is not None else None
            return Call(hook, (request.payload, request.names, feedback.reward, truth), {"routing": routing})

        _hook, out = yield from _first_implemented(self.model.send_feedback, make_call)
        data, tags, metrics = _unwrap(out)
        if data is None:
            data = np.array([])
        meta = {"puid": request.meta["puid"]} if request.meta.get("puid") else {}
        return (yield from self._reply(data, request.kind, [meta], "feedback", tags, metrics, request_meta=False))

    def health_status(self) -> Steps:
        hooks = self.model.health_status
        hook, out = yield from _first_implemented(hooks, lambda h: Call(h))
        if hook is None:
            # Seldon: a health_status() that raises SeldonNotImplementedError (a SeldonComponent's
            # own does) means "assuming healthy"; none at all, just "healthy"
            plain = any(not h.raw for h in hooks) or "health_status" in self.model.inherited
            out = "not implemented - assuming healthy" if plain else "healthy"
        elif hook.raw:
            return _as_is(out, "health")  # Seldon sends health_status_raw's reply untouched
        data, tags, metrics = _unwrap(out)
        return (yield from self._reply(data, "none", [{}], "health", tags, metrics))

    # -- Open Inference Protocol (V2)

    def infer(self, request: InferRequest) -> Steps:
        """V2 inference on the user's predict (or predict_raw); returns an InferResult.

        Inputs: one input -> ``predict(array, [])``; several -> ``predict({name: array}, [names])``.
        ``predict_raw`` gets ``request.as_dict()``; a dict with ``outputs`` it returns is a V2
        response, anything else is mapped like predict's result (see ``_v2_outputs``).
        The hook's ``meta`` holds the request's ``id`` and ``parameters`` when it sent them.
        """
        hook, out = yield from _first_implemented(self.model.predict, lambda h: self._infer_call(h, request))
        if hook is None:
            raise NotImplementedHook("predict not defined")
        metrics = validate_metrics((yield from self._user_metrics()) or []) if self.model.metrics is not None else []
        return self._infer_result(request, hook.raw, out, metrics)

    def plain_infer_call(self, request: InferRequest) -> Call | None:
        """The one hook call V2 inference makes for ``request`` when predict is plain (see ``plain_call``), else None."""
        hook = self.plain.get("predict")
        return None if hook is None else self._infer_call(hook, request)

    def plain_infer_result(self, request: InferRequest, out: Any) -> InferResult:
        """The InferResult of a plain predict that answered ``out``: what ``infer``'s steps return."""
        return self._infer_result(request, False, out, [])

    @staticmethod
    def infer_absent() -> InferResult:
        """V2 inference when predict raised SeldonNotImplementedError: there is no answer."""
        raise NotImplementedHook("predict not defined")

    def _infer_call(self, hook: Hook, request: InferRequest) -> Call:
        if hook.raw:
            return Call(hook, (request.as_dict(),))
        inputs = request.inputs
        meta = {k: v for k, v in (("id", request.id), ("parameters", request.parameters)) if v}
        if len(inputs) == 1:
            x = inputs[0].data
            return Call(hook, (x, []), _call_kwargs(hook, meta), batchable=x.ndim > 0 and x.dtype.kind in "biuf")
        return Call(hook, ({t.name: t.data for t in inputs}, [t.name for t in inputs]), _call_kwargs(hook, meta))

    def _infer_result(self, request: InferRequest, raw: bool, out: Any, metrics: list[dict[str, Any]]) -> InferResult:
        data, _tags, runtime_metrics = _unwrap(out)
        if runtime_metrics:
            metrics += validate_metrics(runtime_metrics)
        if metrics:
            self.metrics.record_custom(metrics, "predict")
        parameters: dict[str, Any] = {}
        if raw and isinstance(data, dict) and isinstance(data.get("outputs"), list):
            parameters = data.get("parameters") or {}
            if not isinstance(parameters, dict):
                raise UserModelError(f"predict_raw returned parameters that are not a dict: {parameters!r}")
            outputs = [_v2_raw_output(item, i) for i, item in enumerate(data["outputs"])]
        else:
            outputs = self._v2_outputs(data)
        if request.outputs is not None:
            by_name = {t.name: t for t in outputs}
            missing = [o.name for o in request.outputs if o.name not in by_name]
            if missing:
                raise BadRequest(f"Unknown output(s) {missing}; the model's outputs are {list(by_name)}")
            outputs = [by_name[o.name] for o in request.outputs]
        return InferResult(outputs, parameters)

    @cached_property
    def _v2_declared_outputs(self) -> list[str]:
        """Output names init_metadata() declares ({name, datatype, shape} entries), in order."""
        outputs = self.metadata.get("outputs")
        entries = outputs if isinstance(outputs, list) else []
        return [o["name"] for o in entries if isinstance(o, dict) and isinstance(o.get("name"), str)]

    @cached_property
    def _v2_declared_types(self) -> dict[str, str]:
        """Output name -> the datatype init_metadata() declares for it."""
        outputs = self.metadata.get("outputs")
        entries = outputs if isinstance(outputs, list) else []
        return {o["name"]: o["datatype"] for o in entries
                if isinstance(o, dict) and isinstance(o.get("name"), str) and o.get("datatype") in DATATYPES}

    def _v2_outputs(self, data: Any) -> list[Tensor]:
        """Name predict's result as V2 outputs.

        - a dict: one output per entry, named by its key;
        - a tuple or list of numpy arrays: several outputs, named after init_metadata()'s
          ``outputs`` when the counts match, else after ``class_names`` when the counts match,
          else ``output-0``, ``output-1``, ...;
        - anything else: one output, named after init_metadata()'s only output, else ``output-0``.
        Datatypes follow the arrays' dtypes (str/bytes -> BYTES); a value that is not an array
        (a list: no element type of its own) takes the datatype init_metadata() declares for
        that output, so e.g. an ONNX model's FP32 outputs stay FP32.
        """
        declared_types = self._v2_declared_types

        def tensor(name: str, value: Any) -> Tensor:
            return _v2_tensor(name, value, None if isinstance(value, np.ndarray) else declared_types.get(name))

        if isinstance(data, dict):
            return [tensor(str(k), v) for k, v in data.items()]
        several = isinstance(data, (list, tuple)) and bool(data) and all(isinstance(v, np.ndarray) for v in data)
        values = list(data) if several else [data]
        declared = self._v2_declared_outputs
        if len(declared) == len(values):
            names = declared
        else:
            class_names = self.model.class_names() if several else None
            if class_names is not None and len(class_names) == len(values):
                names = [str(n) for n in class_names]
            else:
                names = [f"output-{i}" for i in range(len(values))]
        return [tensor(n, v) for n, v in zip(names, values)]

    # -- shared pieces

    # -- the plain path: one sync hook, nothing around it

    def _plain_hooks(self) -> dict[str, Hook]:
        """The data endpoints a caller may run without the step machinery: the endpoint has exactly one
        hook, plain and sync, no legacy ``*_rest``/``*_grpc`` variant, and the model has no tags() or
        metrics(). ``plain_reply`` then gives the very reply the steps would (same ``_assemble``)."""
        if self.model.tags is not None or self.model.metrics is not None:
            return {}
        out = {}
        for endpoint in ("predict", "transform_input", "transform_output"):
            hooks: tuple[Hook, ...] = getattr(self.model, endpoint)
            legacy = any(f"{endpoint}_{w}" in self.model.legacy for w in ("rest", "grpc"))
            if len(hooks) == 1 and not hooks[0].raw and not hooks[0].is_async and not legacy:
                out[endpoint] = hooks[0]
        return out

    def plain_call(self, endpoint: str, msg: Message) -> Call | None:
        """The one hook call ``endpoint`` makes for ``msg``, when it is a plain endpoint (else None)."""
        hook = self.plain.get(endpoint)
        if hook is None:
            return None
        return self._unit_call(hook, msg, endpoint == "predict" and isinstance(msg.payload, np.ndarray))

    @staticmethod
    def hook_kwargs(hook: Hook, msg: Message) -> dict[str, Any]:
        """The keyword arguments a data hook gets beside (X, names): ``meta``, when it takes it."""
        return _call_kwargs(hook, msg.meta)

    def plain_reply(self, endpoint: str, msg: Message, out: Any) -> Reply:
        """The reply of a plain endpoint whose hook answered ``out``."""
        if type(out) is np.ndarray or not is_seldon_response(out):  # _assemble with no tags or metrics of its own
            return Reply(out, msg.kind, self.model.class_names(), self._passed_on_meta(msg.meta))
        data, tags, metrics = _unwrap(out)
        if tags or metrics:
            tags, metrics = self._runtime_custom(_METHODS[endpoint], {}, [], tags, metrics)
        return self._assemble(data, msg.kind, [msg.meta], tags, metrics)

    def plain_message(self, endpoint: str, msg: Message, out: Any) -> Message:
        """``plain_reply(...).to_message()`` with no Reply in between: an in-process graph hop."""
        if type(out) is np.ndarray or not is_seldon_response(out):
            return message_of(out, msg.kind, self.model.class_names(), self._passed_on_meta(msg.meta))
        return self.plain_reply(endpoint, msg, out).to_message()

    def plain_absent(self, endpoint: str, msg: Message) -> Reply:
        """A plain endpoint whose hook raised SeldonNotImplementedError: Seldon's default answer."""
        return self._assemble(_absent(endpoint, msg), msg.kind, [msg.meta], {}, [])

    def _unit_call(self, hook: Hook, msg: Message, batchable: bool = False) -> Call:
        if hook.raw:
            return Call(hook, (msg.raw,))
        return Call(hook, (msg.payload, msg.names), _call_kwargs(hook, msg.meta), batchable=batchable)

    def _unit(self, endpoint: str, msg: Message) -> Steps:
        method = _METHODS[endpoint]
        legacy = self._legacy(endpoint, _wire(msg.raw))
        if legacy is not None:
            return (yield from self._legacy_reply(legacy, msg.raw, method))
        hooks: tuple[Hook, ...] = getattr(self.model, endpoint)
        batchable = method == "predict" and msg.kind in DATA_KINDS and isinstance(msg.payload, np.ndarray)
        hook, out = yield from _first_implemented(hooks, lambda h: self._unit_call(h, msg, batchable))
        if hook is None:
            out = _absent(endpoint, msg)
        elif hook.raw:
            return (yield from self._raw_reply(out, method))
        data, tags, metrics = _unwrap(out)
        return (yield from self._reply(data, msg.kind, [msg.meta], method, tags, metrics))

    def _custom(self, method: str, runtime_tags: dict[str, Any], runtime_metrics: list[Any]) -> Steps:
        """User tags() and metrics() plus a SeldonResponse's own; metrics go to Prometheus."""
        tags: dict[str, Any] = {}
        if self.model.tags is not None:
            try:
                user_tags = yield Call(self.model.tags)
            except Exception as exc:
                if not is_not_implemented(exc):
                    raise
                user_tags = None  # Seldon: no tags
            if user_tags:
                if not isinstance(user_tags, dict):
                    raise UserModelError(f"tags() must return a dict, got {user_tags!r}")
                tags.update(user_tags)
        metrics: list[dict[str, Any]] = []
        if self.model.metrics is not None:
            user_metrics = (yield from self._user_metrics()) or []
            metrics = _tagged(validate_metrics(user_metrics), method, user_metrics)
        return self._runtime_custom(method, tags, metrics, runtime_tags, runtime_metrics)

    def _runtime_custom(self, method: str, tags: dict[str, Any], metrics: list[dict[str, Any]],
                        runtime_tags: dict[str, Any], runtime_metrics: list[Any]) -> tuple[dict[str, Any], list[Any]]:
        """Add a SeldonResponse's own tags and metrics to the user's; record the metrics."""
        if runtime_tags:
            tags.update(runtime_tags)
        if runtime_metrics:
            metrics += _tagged(validate_metrics(runtime_metrics), method, runtime_metrics)
        if metrics:
            self.metrics.record_custom(metrics, method)
        return tags, metrics

    def _user_metrics(self) -> Steps:
        """The user's metrics(); one raising SeldonNotImplementedError has none (as in Seldon)."""
        assert self.model.metrics is not None
        try:
            return (yield Call(self.model.metrics))
        except Exception as exc:
            if not is_not_implemented(exc):
                raise
            return []

    def _reply(
        self,
        data: Any,
        kind: str,
        metas: list[dict[str, Any]],
        method: str,
        runtime_tags: dict[str, Any] | None = None,
        runtime_metrics: list[Any] | None = None,
        request_meta: bool = True,
    ) -> Steps:
        custom_tags, custom_metrics = yield from self._custom(method, runtime_tags or {}, runtime_metrics or [])
        return self._assemble(data, kind, metas, custom_tags, custom_metrics, request_meta)

    def _assemble(self, data: Any, kind: str, metas: list[dict[str, Any]], custom_tags: dict[str, Any],
                  custom_metrics: list[Any], request_meta: bool = True) -> Reply:
        return Reply(data, kind, self.model.class_names(), self._merged_meta(metas, custom_tags, custom_metrics, request_meta))

    def _passed_on_meta(self, m: dict[str, Any]) -> dict[str, Any]:
        """``_merged_meta([m], {}, [])``, the meta of every plain reply (each hop of an in-process graph
        makes one), without the general merge's loop and empty collections (tested equal)."""
        meta: dict[str, Any] = {}
        if not m:
            if self._request_path:
                meta["requestPath"] = dict(self._request_path)
            return meta
        if found := m.get("metrics"):
            meta["metrics"] = list(found)
        if puid := m.get("puid"):
            meta["puid"] = puid
        path = dict(self._request_path)
        if found := m.get("requestPath"):
            path.update(found)
        if path:
            meta["requestPath"] = path
        if found := m.get("tags"):
            meta["tags"] = dict(found)
        return meta

    def _merged_meta(self, metas: list[dict[str, Any]], custom_tags: dict[str, Any], custom_metrics: list[Any],
                     request_meta: bool = True) -> dict[str, Any]:
        """The reply's meta: the requests' tags, metrics and requestPath merged with this unit's own, as Seldon does."""
        tags: dict[str, Any] = {}
        metrics: list[Any] = []
        path = dict(self._request_path)
        if request_meta:
            for m in metas:
                if m:
                    if found := m.get("tags"):
                        tags.update(found)
                    if found := m.get("metrics"):
                        metrics.extend(found)
                    if found := m.get("requestPath"):
                        path.update(found)
        if custom_tags:
            tags.update(custom_tags)
        if custom_metrics and self.settings.include_metrics_in_response:
            metrics.extend(custom_metrics)
        meta: dict[str, Any] = {}
        if metrics:
            meta["metrics"] = metrics
        if metas and metas[0] and (puid := metas[0].get("puid")):
            meta["puid"] = puid
        if path:
            meta["requestPath"] = path
        if tags:
            meta["tags"] = tags
        return meta

    def _raw_reply(self, out: Any, method: str) -> Steps:
        """A *_raw hook's result goes out as-is; only its meta.metrics are harvested (recorded, and
        dropped from the reply when INCLUDE_METRICS_IN_CLIENT_RESPONSE is false), from a dict
        (REST) or a SeldonMessage proto (gRPC; seldon_core's own class or ours) alike."""
        include = self.settings.include_metrics_in_response
        if isinstance(out, dict):
            meta = out.get("meta")
            if isinstance(meta, dict) and meta.get("metrics"):
                self.metrics.record_custom(_tagged(validate_metrics(meta["metrics"]), method, meta["metrics"]), method)
                for m in meta["metrics"]:  # as Seldon's metrics update does to the reply it returns
                    if isinstance(m.get("tags"), dict):
                        m["tags"]["method"] = method
                if not include:
                    out = {**out, "meta": {k: v for k, v in meta.items() if k != "metrics"}}
        elif hasattr(out, "SerializeToString") and hasattr(out, "meta") and len(out.meta.metrics):
            metrics = [{"key": m.key, "type": METRIC_TYPES[m.type] if 0 <= m.type < 3 else m.type, "value": m.value,
                        **({"tags": dict(m.tags)} if len(m.tags) else {})} for m in out.meta.metrics]
            self.metrics.record_custom(validate_metrics(metrics), method)
            if not include:
                del out.meta.metrics[:]
        if False:  # pragma: no cover - keeps this a generator for ``yield from``
            yield
        return _as_is(out, method)

    # -- metadata (built once; an invalid one is reported on every metadata call)

    def _build_metadata(self) -> tuple[dict[str, Any], str | None]:
        image = self.settings.predictive_unit_image
        version = image.rsplit(":", 1)[1] if ":" in image else ""
        meta: dict[str, Any] = {
            "name": self.settings.model_name,
            "versions": [version],
            "platform": "",
            "inputs": [],
            "outputs": [],
            "custom": {},
        }
        try:
            hook = self.model.init_metadata
            if hook is not None and not hook.is_async:
                try:
                    user = hook.fn()
                except Exception as exc:
                    if not is_not_implemented(exc):
                        raise
                    user = {}
                if user:
                    if not isinstance(user, dict):
                        raise ValueError(f"init_metadata() must return a dict, got {type(user).__name__}")
                    meta.update(user)
            if self.settings.model_metadata:
                try:  # YAML, as Seldon reads it (so JSON too, trailing commas and all)
                    env_meta = yaml.safe_load(self.settings.model_metadata)
                except yaml.YAMLError as exc:  # Seldon logs it and goes on without
                    log.error("Reading metadata from MODEL_METADATA env variable failed: %s", exc)
                    env_meta = {}
                if not isinstance(env_meta, dict):
                    raise ValueError("MODEL_METADATA must be a mapping")
                meta.update(env_meta)
            unknown = set(meta) - METADATA_KEYS
            if unknown:
                raise ValueError(f"unknown metadata keys {sorted(unknown)}")
            if not isinstance(meta["inputs"], list) or not isinstance(meta["outputs"], list):
                raise ValueError("metadata inputs and outputs must be lists")
            if not isinstance(meta["versions"], list):
                raise ValueError("metadata versions must be a list")
            if not isinstance(meta["custom"], dict) or not all(isinstance(v, str) for v in meta["custom"].values()):
                raise ValueError("metadata custom must map strings to strings")
        except Exception as exc:  # noqa: BLE001 - user code and user-supplied data
            log.error("model metadata is invalid: %s", exc)
            return meta, "Model metadata unavailable"
        return meta, None

    def get_metadata(self) -> dict[str, Any]:
        if self.metadata_error:
            raise BadMetadata(self.metadata_error)
        return self.metadata


def _as_is(out: Any, method: str) -> Reply:
    """A wire-shaped reply (dict or proto) sent as is. Only Seldon's predict route takes its HTTP
    status from a dict's ``status.code``."""
    status = 200
    if method == "predict" and isinstance(out, dict) and isinstance(out.get("status"), dict):
        code = out["status"].get("code")
        if isinstance(code, int) and 100 <= code < 600:
            status = code
    return Reply(out, "raw", None, {}, raw=True, status=status)


def _tagged(validated: list[dict[str, Any]], method: str, originals: Any) -> list[dict[str, Any]]:
    """Seldon's metrics update writes ``method`` into each metric's own ``tags`` dict, so a metric
    that came with ``tags`` (even empty) is answered with ``method`` among them."""
    for out, original in zip(validated, originals):
        if isinstance(original, dict) and isinstance(original.get("tags"), dict):
            out["tags"] = {**original["tags"], "method": method}
    return validated


# --------------------------------------------------------------------------- V2 outputs


def _v2_tensor(name: str, value: Any, datatype: str | None = None) -> Tensor:
    """A model's output value as a named V2 tensor; values numpy can't type are the model's fault."""
    try:
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        if datatype is not None:
            arr = arr if datatype == "BYTES" else arr.astype(dtype_for(datatype), copy=False)
        else:
            datatype = datatype_for(arr.dtype)
    except (CodecError, ValueError, TypeError, OverflowError) as exc:
        raise UserModelError(f"Model output {name!r} is not a V2 tensor: {exc}") from None
    if datatype == "BYTES":
        if arr.dtype.kind == "O" and not all(isinstance(v, (bytes, str)) for v in arr.flat):
            raise UserModelError(f"Model output {name!r} holds objects that are neither str nor bytes")
        if arr.dtype.kind not in "OSU":
            raise UserModelError(f"Model output {name!r} is declared BYTES but holds {arr.dtype} values")
    return Tensor(name, datatype, arr)


def _v2_raw_output(item: Any, index: int) -> Tensor:
    """One ``outputs`` entry of a V2 response dict returned by predict_raw."""
    if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "data" not in item:
        raise UserModelError(f"predict_raw outputs[{index}] needs a name and data")
    datatype = item.get("datatype")
    tensor = _v2_tensor(item["name"], item["data"], datatype if isinstance(datatype, str) else None)
    shape = item.get("shape")
    if shape is not None:
        try:
            tensor.data = tensor.data.reshape(shape)
        except (ValueError, TypeError) as exc:
            raise UserModelError(f"predict_raw output {item['name']!r}: data does not fit shape {shape}: {exc}") from None
    params = item.get("parameters")
    if isinstance(params, dict):
        tensor.parameters = dict(params)
    return tensor
