"""The one place that reads CLI flags and environment variables.

Flags win over environment variables, which win over defaults. Seldon's own variable names
(PREDICTIVE_UNIT_*, GUNICORN_WORKERS, GRPC_THREADS, ...) are honoured so an existing
deployment's environment means the same thing here.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

SERVICE_TYPES = ("MODEL", "ROUTER", "TRANSFORMER", "OUTPUT_TRANSFORMER", "COMBINER", "OUTLIER_DETECTOR")
API_TYPES = ("REST", "GRPC", "BOTH")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
ONNX_CLASS = "fastseldon.runtimes.onnx.OnnxModel"


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """The process: ports, workers, limits, timeouts, logging. Built once, never mutated."""

    host: str = "0.0.0.0"
    http_port: int = 9000
    grpc_port: int = 5000
    metrics_port: int = 6000
    metrics_path: str = "/metrics"
    api_type: str = "BOTH"
    workers: int = 1
    grpc_threads: int = 4
    log_level: str = "INFO"
    access_log: bool = False
    max_body_bytes: int = 100 * 1024 * 1024
    max_grpc_message_bytes: int = 100 * 1024 * 1024  # from --max-body-bytes: a gRPC message is a body too
    keepalive_timeout: float = 75.0
    graceful_timeout: float = 20.0
    inline_hook_seconds: float = 0.0005
    # watchdog, timeouts and recycling (gunicorn's --timeout, --max-requests, --max-requests-jitter)
    worker_timeout: float = 30.0  # a worker whose loop (or a call on a thread) is stuck this long is replaced; 0: off
    request_timeout: float = 0.0  # 504 / DEADLINE_EXCEEDED past this; 0: off
    max_requests: int = 0  # a worker that served this many requests is replaced gracefully; 0: never
    max_requests_jitter: int = 0
    max_worker_memory: int = 0  # bytes of resident memory past which a worker is replaced gracefully; 0: off
    # HTTP limits (nginx's defaults: 8 KiB request line, 32 KiB of headers, 60 s to send them or to send more body)
    max_request_line: int = 8192
    max_header_bytes: int = 32 * 1024
    max_headers: int = 100
    header_timeout: float = 60.0
    body_timeout: float = 60.0
    log_format: str = "text"

    @property
    def http_enabled(self) -> bool:
        return self.api_type in ("REST", "BOTH") and self.http_port > 0

    @property
    def grpc_enabled(self) -> bool:
        return self.api_type in ("GRPC", "BOTH") and self.grpc_port > 0


@dataclass(frozen=True, slots=True)
class UnitSettings:
    """One predictive unit: what to load, how it is exposed, and how its predict is batched.

    A graph holds one of these per node under a single ServerSettings.
    """

    interface_name: str
    service_type: str = "MODEL"
    model_name: str = ""
    parameters: str = "[]"
    persistence: int = 0
    max_batch_size: int = 0
    max_batch_time_ms: float = 0.0
    max_batches_in_flight: int = 1
    max_batch_queue: int = 0  # requests waiting for a batch per worker; 0: max(1024, 16 x max_batch_size)
    payload_passthrough: bool = False
    include_metrics_in_response: bool = True
    predictive_unit_id: str = ""
    predictive_unit_image: str = ""
    deployment_name: str = ""
    predictor_name: str = ""
    predictor_version: str = ""
    model_metadata: str = ""
    feedback_metrics: bool = True  # Seldon counts feedback unless SELDON_EXECUTOR_ENABLED=false (its legacy mode)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 1 and self.max_batch_time_ms >= 0


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    """Seldon's rule: unset -> default, else true iff one of 1/true/t (any case)."""
    value = env.get(name)
    if value is None:
        return default
    return value.strip().lower() in ("1", "true", "t")


def _first(env: Mapping[str, str], names: tuple[str, ...], default: Any) -> Any:
    for name in names:
        if env.get(name):
            return env[name]
    return default


def _device(value: str) -> str:
    value = value.lower()
    if value in ("auto", "cpu", "cuda", "gpu") or (value.startswith("cuda:") and value[5:].isdigit()):
        return "cuda" if value == "gpu" else value
    raise argparse.ArgumentTypeError(f"invalid device {value!r}: use auto, cpu, cuda or cuda:N")


def parse_size(text: str) -> int:
    """Bytes, with an optional binary suffix: ``1048576``, ``512K``, ``100M``, ``2G`` (``Mi``/``MiB`` too)."""
    value = str(text).strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(value[-1:], 1)
    number = value[:-1] if scale > 1 else value
    try:
        size = int(float(number) * scale)
    except ValueError:
        raise ValueError(f"invalid size {text!r}: use bytes or a K, M, G suffix") from None
    if size < 0:
        raise ValueError(f"invalid size {text!r}: must not be negative")
    return size


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser(prog: str = "fastseldon serve") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Serve a Seldon user model class over Seldon v1 and V2.")
    p.add_argument("interface_name", nargs="?", help="MyModel (MyModel.py in the working directory) or package.module.Class")
    p.add_argument("--service-type", type=str.upper, choices=SERVICE_TYPES)
    p.add_argument("--model-name", help="name in metadata, metrics and V2 routes (default: the class name)")
    p.add_argument("--parameters", help="Seldon parameters JSON list [{name, value, type}] (env PREDICTIVE_UNIT_PARAMETERS)")
    p.add_argument("--persistence", type=int, nargs="?", const=1, help="accepted for compatibility; ignored")
    p.add_argument("--host", help="address to bind (default 0.0.0.0)")
    p.add_argument("--http-port", type=int, help="REST port (env PREDICTIVE_UNIT_HTTP_SERVICE_PORT, default 9000)")
    p.add_argument("--grpc-port", type=int, help="gRPC port (env PREDICTIVE_UNIT_GRPC_SERVICE_PORT, default 5000)")
    p.add_argument("--metrics-port", type=int, help="Prometheus port (env PREDICTIVE_UNIT_METRICS_SERVICE_PORT, default 6000)")
    p.add_argument("--api-type", type=str.upper, choices=API_TYPES, help="which fronts to run (default BOTH; "
                   "API_TYPE in the environment is ignored, as Seldon ignores it)")
    p.add_argument("--workers", type=int, help="worker processes sharing the ports (env FASTSELDON_WORKERS or GUNICORN_WORKERS)")
    p.add_argument("--grpc-threads", type=int, help="gRPC handler threads per worker (env GRPC_THREADS, default 4)")
    p.add_argument("--grpc-workers", type=int, help="0 disables gRPC (seldon-core-microservice compatibility)")
    p.add_argument("--log-level", type=str.upper, choices=LOG_LEVELS, help="(env SELDON_LOG_LEVEL, default INFO)")
    p.add_argument("--access-log", action="store_true", default=None, help="log every request (env GUNICORN_ACCESS_LOG)")
    p.add_argument("--inline-hook-us", type=float, help="sync hooks measured faster than this run on the event loop, "
                   "slower ones on a thread pool (env FASTSELDON_INLINE_HOOK_US, default 500; 0 = always the pool)")
    p.add_argument("--max-body-bytes", type=_size_arg, help="largest request body or gRPC message accepted, and largest gRPC "
                   "reply sent (env FASTSELDON_MAX_BODY_BYTES, default 100M)")
    p.add_argument("--keepalive", type=float, help="idle keep-alive timeout in seconds (default 75; keep it above your proxy's)")
    p.add_argument("--graceful-timeout", type=float, help="seconds to finish in-flight requests on SIGTERM (default 20)")
    p.add_argument("--worker-timeout", type=float, help="replace a worker whose event loop, or a call on one of its threads, "
                   "is stuck this many seconds (env FASTSELDON_WORKER_TIMEOUT or GUNICORN_TIMEOUT, default 30; 0 = off)")
    p.add_argument("--request-timeout", type=float, help="answer 504 / DEADLINE_EXCEEDED to a request still running after this "
                   "many seconds (env FASTSELDON_REQUEST_TIMEOUT, default 0 = off)")
    p.add_argument("--max-requests", type=int, help="replace a worker, gracefully, after it served this many requests "
                   "(env FASTSELDON_MAX_REQUESTS or GUNICORN_MAX_REQUESTS, default 0 = never)")
    p.add_argument("--max-requests-jitter", type=int, help="add up to this many requests to each worker's --max-requests "
                   "(env FASTSELDON_MAX_REQUESTS_JITTER or GUNICORN_MAX_REQUESTS_JITTER, default 0)")
    p.add_argument("--max-worker-memory", type=_size_arg, help="replace a worker, gracefully, once its resident memory is over "
                   "this (e.g. 2G; env FASTSELDON_MAX_WORKER_MEMORY, default 0 = off)")
    p.add_argument("--max-request-line", type=int, help="longest request line (414 above it; env FASTSELDON_MAX_REQUEST_LINE, "
                   "default 8192)")
    p.add_argument("--max-header-bytes", type=_size_arg, help="largest header section (431 above it; env FASTSELDON_MAX_HEADER_BYTES, "
                   "default 32K)")
    p.add_argument("--max-headers", type=int, help="most header fields (431 above it; env FASTSELDON_MAX_HEADERS, default 100)")
    p.add_argument("--header-timeout", type=float, help="seconds a client has to send a request's headers (408 then close; "
                   "env FASTSELDON_HEADER_TIMEOUT, default 60)")
    p.add_argument("--body-timeout", type=float, help="seconds a request body may stall between reads (408 then close; "
                   "env FASTSELDON_BODY_TIMEOUT, default 60)")
    p.add_argument("--log-format", type=str.lower, choices=LOG_FORMATS, help="text, or json: one object per line "
                   "(env FASTSELDON_LOG_FORMAT, default text)")
    p.add_argument("--max-batch-size", type=int, help="adaptive batching: most rows per predict call (env MAX_BATCH_SIZE; off)")
    p.add_argument("--max-batch-time-ms", type=float, help="adaptive batching: longest wait for a batch to fill (env MAX_BATCH_TIME_MS)")
    p.add_argument("--max-batches-in-flight", type=int, help="adaptive batching: predict calls running at once per worker "
                   "(env MAX_BATCHES_IN_FLIGHT, default 1)")
    p.add_argument("--max-batch-queue", type=int, help="adaptive batching: requests waiting per worker before 503 (env MAX_BATCH_QUEUE)")
    p.add_argument("--onnx", metavar="PATH", help="serve an ONNX model file with no user code")
    p.add_argument("--repository", metavar="DIR", help="serve every model in DIR side by side, by name: one folder per model "
                   "(a MyModel.py with its .s2i/environment, or an .onnx file), or NAME.onnx files")
    p.add_argument("--device", type=_device, help="ONNX device: auto, cpu, cuda or cuda:N (env DEVICE, default auto)")
    # Accepted so seldon-core-microservice command lines keep working; gunicorn/Flask knobs mean nothing here.
    for legacy in ("--threads", "--single-threaded", "--tracing"):
        p.add_argument(legacy, type=int, nargs="?", const=1, help=argparse.SUPPRESS)
    p.add_argument("--debug", nargs="?", const=True, help=argparse.SUPPRESS)
    p.add_argument("--pidfile", help=argparse.SUPPRESS)
    return p


def from_args(args: argparse.Namespace, env: Mapping[str, str] | None = None) -> tuple[ServerSettings, UnitSettings]:
    """Combine parsed flags with the environment (raises ValueError on bad values)."""
    env = os.environ if env is None else env
    unit = _unit_from(args, env)
    return _server_from(args, env, unit), unit


def _picker(env: Mapping[str, str]) -> Callable[..., Any]:
    def pick(flag: Any, names: tuple[str, ...], default: Any, cast: Any = str) -> Any:
        if flag is not None:
            return flag
        try:
            return cast(_first(env, names, default))
        except ValueError:
            raise ValueError(f"{_source(env, names)} has a bad value: {_first(env, names, default)!r}") from None

    return pick


def _predictor_version(labels: str) -> str:
    """PREDICTOR_LABELS is Seldon's JSON of the predictor's labels; its ``version`` labels metrics."""
    if not labels:
        return ""
    try:
        return str(json.loads(labels).get("version", ""))
    except (ValueError, AttributeError):
        return ""


def _onnx_name(path: str) -> str:
    """``iris.onnx`` -> ``iris``; a folder (``model_uri`` style) -> the folder's name."""
    name = os.path.basename(os.path.normpath(path))
    return name[:-len(".onnx")] if name.endswith(".onnx") else name


def _unit_from(args: argparse.Namespace, env: Mapping[str, str]) -> UnitSettings:
    pick = _picker(env)
    interface = args.interface_name
    parameters = args.parameters if args.parameters is not None else env.get("PREDICTIVE_UNIT_PARAMETERS", "[]")
    if args.onnx:
        interface = interface or ONNX_CLASS
        extra = [
            {"name": "model_uri", "value": os.path.abspath(args.onnx), "type": "STRING"},
            {"name": "device", "value": args.device or env.get("DEVICE", "auto"), "type": "STRING"},
        ]
        parameters = json.dumps(json.loads(parameters or "[]") + extra)
    if not interface:
        raise ValueError("an interface name (e.g. MyModel or package.module.Class) or --onnx PATH is required")
    batch_size = pick(args.max_batch_size, ("MAX_BATCH_SIZE",), 0, int)
    unit = UnitSettings(
        interface_name=interface,
        service_type=pick(args.service_type, ("SERVICE_TYPE",), "MODEL", str.upper),
        # an ONNX file with no --model-name is named after the file (iris.onnx -> iris)
        model_name=args.model_name or (_onnx_name(args.onnx) if args.onnx and interface == ONNX_CLASS
                                       else interface.rsplit(".", 1)[-1]),
        parameters=parameters,
        persistence=args.persistence or 0,
        max_batch_size=batch_size,
        max_batch_time_ms=pick(args.max_batch_time_ms, ("MAX_BATCH_TIME_MS",), 5.0 if batch_size > 1 else 0.0, float),
        max_batches_in_flight=max(1, pick(args.max_batches_in_flight, ("MAX_BATCHES_IN_FLIGHT",), 1, int)),
        max_batch_queue=max(0, pick(args.max_batch_queue, ("MAX_BATCH_QUEUE",), 0, int)),
        payload_passthrough=_env_bool(env, "PAYLOAD_PASSTHROUGH", False),
        include_metrics_in_response=env.get("INCLUDE_METRICS_IN_CLIENT_RESPONSE", "true").lower() == "true",
        predictive_unit_id=env.get("PREDICTIVE_UNIT_ID", ""),
        predictive_unit_image=env.get("PREDICTIVE_UNIT_IMAGE", ""),
        deployment_name=env.get("SELDON_DEPLOYMENT_ID", ""),
        predictor_name=env.get("PREDICTOR_ID", ""),
        predictor_version=_predictor_version(env.get("PREDICTOR_LABELS", "")),
        model_metadata=env.get("MODEL_METADATA", ""),
        feedback_metrics=env.get("SELDON_EXECUTOR_ENABLED", "true").lower() != "false",
    )
    if unit.service_type not in SERVICE_TYPES:
        raise ValueError(f"unknown service type {unit.service_type!r}; valid are {', '.join(SERVICE_TYPES)}")
    return unit


def _server_from(args: argparse.Namespace, env: Mapping[str, str], unit: UnitSettings) -> ServerSettings:
    pick = _picker(env)
    # only the flag: Seldon 1.19 ignores API_TYPE in the environment (its own s2i examples set
    # API_TYPE=REST and still serve gRPC), so a deployment's variable must not turn a front off
    api_type = args.api_type or "BOTH"
    grpc_port = pick(args.grpc_port, ("PREDICTIVE_UNIT_GRPC_SERVICE_PORT",), 5000, int)
    if args.grpc_workers == 0 or (args.grpc_workers is None and env.get("GRPC_WORKERS") == "0"):
        grpc_port = 0
    workers = pick(args.workers, ("FASTSELDON_WORKERS", "GUNICORN_WORKERS"), 1, int)
    if workers < 1:
        source = "--workers" if args.workers is not None else _source(env, ("FASTSELDON_WORKERS", "GUNICORN_WORKERS"))
        raise ValueError(f"{source} must be at least 1 (got {workers})")
    max_body = pick(args.max_body_bytes, ("FASTSELDON_MAX_BODY_BYTES",), 100 * 1024 * 1024, parse_size)
    server = ServerSettings(
        host=args.host or env.get("FASTSELDON_HOST", "0.0.0.0"),
        http_port=pick(args.http_port, ("PREDICTIVE_UNIT_HTTP_SERVICE_PORT",), 9000, int),
        grpc_port=grpc_port,
        metrics_port=pick(args.metrics_port, ("PREDICTIVE_UNIT_METRICS_SERVICE_PORT",), 6000, int),
        metrics_path=env.get("PREDICTIVE_UNIT_METRICS_ENDPOINT", "/metrics"),
        api_type=api_type,
        workers=workers,
        # a gRPC handler thread holds its request until the batch answers: batches over gRPC need threads
        grpc_threads=max(1, pick(args.grpc_threads, ("GRPC_THREADS",), max(4, min(unit.max_batch_size, 128)), int)),
        log_level=pick(args.log_level, ("SELDON_LOG_LEVEL",), "INFO", str.upper),
        access_log=args.access_log if args.access_log is not None else _env_bool(env, "GUNICORN_ACCESS_LOG", False),
        inline_hook_seconds=pick(args.inline_hook_us, ("FASTSELDON_INLINE_HOOK_US",), 500.0, float) / 1e6,
        max_body_bytes=max_body,
        max_grpc_message_bytes=min(max_body, 2**31 - 1),  # grpcio's options are C ints
        keepalive_timeout=pick(args.keepalive, ("FASTSELDON_KEEPALIVE",), 75.0, float),
        graceful_timeout=pick(args.graceful_timeout, ("FASTSELDON_GRACEFUL_TIMEOUT",), 20.0, float),
        worker_timeout=pick(args.worker_timeout, ("FASTSELDON_WORKER_TIMEOUT", "GUNICORN_TIMEOUT"), 30.0, float),
        request_timeout=pick(args.request_timeout, ("FASTSELDON_REQUEST_TIMEOUT",), 0.0, float),
        max_requests=pick(args.max_requests, ("FASTSELDON_MAX_REQUESTS", "GUNICORN_MAX_REQUESTS"), 0, int),
        max_requests_jitter=pick(args.max_requests_jitter, ("FASTSELDON_MAX_REQUESTS_JITTER", "GUNICORN_MAX_REQUESTS_JITTER"), 0, int),
        max_worker_memory=pick(args.max_worker_memory, ("FASTSELDON_MAX_WORKER_MEMORY",), 0, parse_size),
        max_request_line=pick(args.max_request_line, ("FASTSELDON_MAX_REQUEST_LINE",), 8192, int),
        max_header_bytes=pick(args.max_header_bytes, ("FASTSELDON_MAX_HEADER_BYTES",), 32 * 1024, parse_size),
        max_headers=pick(args.max_headers, ("FASTSELDON_MAX_HEADERS",), 100, int),
        header_timeout=pick(args.header_timeout, ("FASTSELDON_HEADER_TIMEOUT",), 60.0, float),
        body_timeout=pick(args.body_timeout, ("FASTSELDON_BODY_TIMEOUT",), 60.0, float),
        log_format=pick(args.log_format, ("FASTSELDON_LOG_FORMAT",), "text", str.lower),
    )
    if server.log_level not in LOG_LEVELS:
        raise ValueError(f"unknown log level {server.log_level!r}")
    if server.log_format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {server.log_format!r}; use text or json")
    for name in ("worker_timeout", "request_timeout", "max_requests", "max_requests_jitter", "header_timeout", "body_timeout"):
        if getattr(server, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must not be negative")
    for name in ("max_request_line", "max_header_bytes", "max_headers"):
        if getattr(server, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    return server


# a unit's own environment (a graph node's container env, a repository model's .s2i/environment)
# -> UnitSettings field: the s2i names
UNIT_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "SERVICE_TYPE": ("service_type", str.upper),
    "MAX_BATCH_SIZE": ("max_batch_size", int),
    "MAX_BATCH_TIME_MS": ("max_batch_time_ms", float),
    "MAX_BATCHES_IN_FLIGHT": ("max_batches_in_flight", int),
    "MAX_BATCH_QUEUE": ("max_batch_queue", int),
    "PAYLOAD_PASSTHROUGH": ("payload_passthrough", lambda v: v.strip().lower() in ("1", "true", "t")),
    "INCLUDE_METRICS_IN_CLIENT_RESPONSE": ("include_metrics_in_response", lambda v: v.lower() == "true"),
    "MODEL_METADATA": ("model_metadata", str),
}


def unit_env_fields(env: Mapping[str, str]) -> dict[str, Any]:
    """UnitSettings fields from a unit's own environment (ValueError naming the variable on a bad value)."""
    fields: dict[str, Any] = {}
    for key, (name, cast) in UNIT_ENV.items():
        if env.get(key):
            try:
                fields[name] = cast(env[key])
            except ValueError:
                raise ValueError(f"{key} has a bad value {env[key]!r}") from None
    if fields.get("max_batch_size", 0) > 1 and "max_batch_time_ms" not in fields:
        fields["max_batch_time_ms"] = 5.0
    return fields


def _source(env: Mapping[str, str], names: tuple[str, ...]) -> str:
    """The environment variable a value came from, for error messages."""
    return next((f"environment variable {name}" for name in names if env.get(name)), names[0])
