"""The five Seldon service types as plain logic: which hook runs, and what the reply holds.

Each endpoint is a generator that *yields* the user-hook calls it needs (``Call``) and
*returns* a ``Reply``. A driver runs the calls: ``run_async`` on the event loop (REST),
``run_sync`` on a gRPC handler thread. The logic is written once, whoever drives it, and
it stays callable in-process with numpy in and out (for inference graphs later).
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Generator

import numpy as np

from fastseldon.errors import BadMetadata, BadMetric, BadRequest, FastSeldonError, NotImplementedHook, UserModelError
from fastseldon.metrics import Metrics
from fastseldon.seldon_protocol import DATA_KINDS, Message, Reply, message_from_proto
from fastseldon.settings import Settings
from fastseldon.user_model import Hook, UserModel, is_not_implemented

log = logging.getLogger(__name__)

METRIC_TYPES = ("COUNTER", "GAUGE", "TIMER")
METADATA_KEYS = {"name", "versions", "platform", "inputs", "outputs", "custom"}


@dataclass(slots=True)
class Call:
    """One user-hook invocation a service step asks its driver to make."""

    hook: Hook
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    batchable: bool = False  # a predict on a stackable array: the batcher may coalesce it


Steps = Generator[Call, Any, Any]


def user_error(exc: BaseException) -> FastSeldonError:
    """Map an exception from user code to our error family, keeping Seldon's own status hints."""
    if isinstance(exc, FastSeldonError):
        return exc
    status = getattr(exc, "status_code", None)
    reason = getattr(exc, "reason", None)
    message = getattr(exc, "message", None) or str(exc)
    if isinstance(status, int) and 400 <= status < 500:
        return BadRequest(message, http_status=status, reason=reason if isinstance(reason, str) else None)
    return UserModelError(message or type(exc).__name__)


def _call_kwargs(hook: Hook, meta: Any) -> dict[str, Any]:
    return {"meta": meta} if hook.accepts_meta else {}


def _unwrap(out: Any) -> tuple[Any, dict[str, Any], list[Any]]:
    """Seldon's SeldonResponse(data, tags, metrics) is recognised by duck typing."""
    if type(out).__name__ == "SeldonResponse" and hasattr(out, "data"):
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

    def __init__(self, model: UserModel, settings: Settings, metrics: Metrics):
        self.model = model
        self.settings = settings
        self.metrics = metrics
        self._request_path = (
            {settings.predictive_unit_id: settings.predictive_unit_image} if settings.predictive_unit_id else {}
        )
        self.metadata, self.metadata_error = self._build_metadata()

    # -- which endpoints want the undecoded message

    def wants_raw(self, endpoint: str) -> bool:
        hooks = getattr(self.model, endpoint)
        return bool(hooks) and hooks[0].raw

    # -- endpoints

    def predict(self, msg: Message) -> Steps:
        return (yield from self._unit(self.model.predict, msg, "predict", lambda m: []))

    def transform_input(self, msg: Message) -> Steps:
        return (yield from self._unit(self.model.transform_input, msg, "inputtransform", lambda m: m.payload))

    def transform_output(self, msg: Message) -> Steps:
        return (yield from self._unit(self.model.transform_output, msg, "outputtransform", lambda m: m.payload))

    def route(self, msg: Message) -> Steps:
        for hook in self.model.route:
            try:
                if hook.raw:
                    return (yield from self._raw_reply((yield Call(hook, (msg.raw,))), "router"))
                out = yield Call(hook, (msg.payload, msg.names), _call_kwargs(hook, msg.meta))
            except Exception as exc:
                if is_not_implemented(exc):
                    continue
                raise
            data, tags, metrics = _unwrap(out)
            if isinstance(data, np.ndarray) and data.size == 1 and np.issubdtype(data.dtype, np.integer):
                data = int(data.ravel()[0])
            if not isinstance(data, int):
                raise BadRequest(f"Routing response must be int but got {data!r}")
            meta = {"puid": msg.meta["puid"]} if msg.meta.get("puid") else {}
            return (yield from self._reply(np.array([[data]]), msg.kind, [meta], "router", tags, metrics))
        raise NotImplementedHook("Route not defined")

    def aggregate(self, msgs: list[Message], raw: Any) -> Steps:
        if not msgs:
            raise BadRequest("aggregate needs at least one SeldonMessage")
        for hook in self.model.aggregate:
            try:
                if hook.raw:
                    return (yield from self._raw_reply((yield Call(hook, (raw,))), "aggregate"))
                out = yield Call(hook, ([m.payload for m in msgs], [m.names for m in msgs]))
            except Exception as exc:
                if is_not_implemented(exc):
                    continue
                raise
            data, tags, metrics = _unwrap(out)
            return (yield from self._reply(data, msgs[0].kind, [m.meta for m in msgs], "aggregate", tags, metrics))
        raise NotImplementedHook("Aggregate not defined")

    def send_feedback(self, feedback: Any) -> Steps:
        """``feedback`` is a seldon.protos.Feedback proto on both REST and gRPC, as in Seldon."""
        request = message_from_proto(feedback.request) if feedback.HasField("request") else Message("ndarray", np.array([]))
        self.metrics.feedback(float(feedback.reward))
        out: Any = None
        for hook in self.model.send_feedback:
            try:
                if hook.raw:
                    out = yield Call(hook, (feedback,))
                else:
                    truth = message_from_proto(feedback.truth).payload if feedback.HasField("truth") else None
                    routing = feedback.response.meta.routing.get(self.settings.predictive_unit_id or "0")
                    out = yield Call(hook, (request.payload, request.names, float(feedback.reward), truth), {"routing": routing})
            except Exception as exc:
                if is_not_implemented(exc):
                    continue
                raise
            break
        data, tags, metrics = _unwrap(out)
        if data is None:
            data = np.array([])
        meta = {"puid": request.meta["puid"]} if request.meta.get("puid") else {}
        return (yield from self._reply(data, request.kind, [meta], "feedback", tags, metrics, request_meta=False))

    def health_status(self) -> Steps:
        for hook in self.model.health_status:
            try:
                out = yield Call(hook)
            except Exception as exc:
                if is_not_implemented(exc):
                    out = "not implemented - assuming healthy"
                    break
                raise
            if hook.raw:
                return (yield from self._raw_reply(out, "health"))
            break
        else:
            out = "healthy"
        data, tags, metrics = _unwrap(out)
        return (yield from self._reply(data, "none", [{}], "health", tags, metrics))

    # -- shared pieces

    def _unit(self, hooks: tuple[Hook, ...], msg: Message, method: str, default: Callable[[Message], Any]) -> Steps:
        for hook in hooks:
            try:
                if hook.raw:
                    return (yield from self._raw_reply((yield Call(hook, (msg.raw,))), method))
                out = yield Call(
                    hook,
                    (msg.payload, msg.names),
                    _call_kwargs(hook, msg.meta),
                    batchable=method == "predict" and msg.kind in DATA_KINDS and isinstance(msg.payload, np.ndarray),
                )
            except Exception as exc:
                if is_not_implemented(exc):
                    continue
                raise
            break
        else:
            out = default(msg)
        data, tags, metrics = _unwrap(out)
        return (yield from self._reply(data, msg.kind, [msg.meta], method, tags, metrics))

    def _custom(self, method: str, runtime_tags: dict[str, Any], runtime_metrics: list[Any]) -> Steps:
        """User tags() and metrics() plus a SeldonResponse's own; metrics go to Prometheus."""
        tags: dict[str, Any] = {}
        if self.model.tags is not None:
            user_tags = yield Call(self.model.tags)
            if user_tags:
                if not isinstance(user_tags, dict):
                    raise UserModelError(f"tags() must return a dict, got {user_tags!r}")
                tags.update(user_tags)
        tags.update(runtime_tags)
        metrics: list[dict[str, Any]] = []
        if self.model.metrics is not None:
            metrics = validate_metrics((yield Call(self.model.metrics)) or [])
        if runtime_metrics:
            metrics += validate_metrics(runtime_metrics)
        if metrics:
            self.metrics.record_custom(metrics, method)
        return tags, metrics

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
        meta: dict[str, Any] = {}
        tags: dict[str, Any] = {}
        metrics: list[Any] = []
        path = dict(self._request_path)
        for m in metas:
            if not m:
                continue
            if request_meta:
                tags.update(m.get("tags") or {})
                metrics.extend(m.get("metrics") or [])
                path.update(m.get("requestPath") or {})
        tags.update(custom_tags)
        if self.settings.include_metrics_in_response:
            metrics.extend(custom_metrics)
        if metrics:
            meta["metrics"] = metrics
        puid = metas[0].get("puid") if metas and metas[0] else None
        if puid:
            meta["puid"] = puid
        if path:
            meta["requestPath"] = path
        if tags:
            meta["tags"] = tags
        return Reply(data, kind, self.model.class_names(), meta)

    def _raw_reply(self, out: Any, method: str) -> Steps:
        """A *_raw hook's result goes out as-is; only its meta.metrics are harvested."""
        status = 200
        if isinstance(out, dict):
            meta = out.get("meta")
            if isinstance(meta, dict) and meta.get("metrics"):
                self.metrics.record_custom(validate_metrics(meta["metrics"]), method)
                if not self.settings.include_metrics_in_response:
                    out = {**out, "meta": {k: v for k, v in meta.items() if k != "metrics"}}
            code = (out.get("status") or {}).get("code") if isinstance(out.get("status"), dict) else None
            if isinstance(code, int) and 100 <= code < 600:
                status = code
        if False:  # pragma: no cover - keeps this a generator for ``yield from``
            yield
        return Reply(out, "raw", None, {}, raw=True, status=status)

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
                user = hook.fn()
                if user:
                    if not isinstance(user, dict):
                        raise ValueError(f"init_metadata() must return a dict, got {type(user).__name__}")
                    meta.update(user)
            if self.settings.model_metadata:
                env_meta = json.loads(self.settings.model_metadata)
                if not isinstance(env_meta, dict):
                    raise ValueError("MODEL_METADATA must be a JSON object")
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


# --------------------------------------------------------------------------- drivers

Invoke = Callable[[Call], Awaitable[Any]]


async def run_async(steps: Steps, invoke: Invoke) -> Any:
    """Drive a service generator on the event loop; hook errors are thrown back into it."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            call = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            value = await invoke(call)
        except Exception as exc:  # noqa: BLE001 - handed to the step, which decides
            value, error = None, exc


def run_sync(steps: Steps, invoke: Callable[[Call], Any]) -> Any:
    """Drive a service generator on the calling thread (gRPC handlers)."""
    value: Any = None
    error: BaseException | None = None
    while True:
        try:
            call = steps.throw(error) if error is not None else steps.send(value)
        except StopIteration as stop:
            return stop.value
        error = None
        try:
            value = invoke(call)
        except Exception as exc:  # noqa: BLE001
            value, error = None, exc
