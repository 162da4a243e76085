"""``fastseldon graph SPEC``: serve a SeldonDeployment predictor's whole graph from one server."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any

from fastseldon.graph.spec import Predictor, SpecError, from_engine_predictor, load_file


def _parser() -> argparse.ArgumentParser:
    from fastseldon.settings import build_parser

    p = build_parser("fastseldon graph")
    p.description = ("Serve a SeldonDeployment's graph: in-process units (containers with MODEL_NAME), remote units "
                     "(endpoints or --remote) and the RANDOM_ABTEST / AVERAGE_COMBINER built-ins.")
    p.add_argument("--predictor", help="which predictor of the SeldonDeployment (default: the first)")
    p.add_argument("--source", help="folder holding the in-process units' code: DIR/<node>/ if it exists, else DIR "
                                    "(default: the spec's folder)")
    p.add_argument("--remote", action="append", default=[], metavar="NODE=URL",
                   help="run NODE elsewhere: http://host:port or grpc://host:port (repeatable)")
    p.add_argument("--sdep", help="deployment name with ENGINE_PREDICTOR (env SELDON_DEPLOYMENT_ID)")
    p.add_argument("--seed", type=int, help="seed for RANDOM_ABTEST draws (reproducible A/B splits)")
    # Seldon's executor's arguments, as its operator starts seldon-container-engine: this
    # command is a drop-in for that image (ENGINE_PREDICTOR holds the predictor)
    seldon = p.add_argument_group("Seldon executor arguments (seldon-container-engine drop-in)")
    seldon.add_argument("--namespace", help="the SeldonDeployment's namespace (accepted; informational)")
    seldon.add_argument("--http_port", dest="http_port", type=int, help="as --http-port (default 8000)")
    seldon.add_argument("--grpc_port", dest="grpc_port", type=int, help="as --grpc-port (default 5001)")
    seldon.add_argument("--protocol", type=str.lower, choices=("seldon", "v2", "kfserving", "tensorflow"),
                        help="the units' protocol: only seldon is served (V2 infer of the whole graph is answered too)")
    seldon.add_argument("--transport", type=str.lower, choices=("rest", "grpc"),
                        help="how units are called when their endpoint names no type (default rest)")
    seldon.add_argument("--prometheus_path", help="serve the metrics on the REST port at this path, as Seldon's "
                                                  "executor does (then no metrics port unless --metrics-port)")
    seldon.add_argument("--server_type", type=str.lower, choices=("rpc", "kafka"), help="rpc only")
    for ignored in ("--log_work_buffer_size", "--log_write_timeout_ms", "--full_health_checks"):
        seldon.add_argument(ignored, help=argparse.SUPPRESS)
    return p


def _seldon_args(args: argparse.Namespace) -> None:
    if args.protocol not in (None, "seldon"):
        raise SpecError(f"--protocol {args.protocol}: fastseldon's executor calls its units with the seldon protocol "
                        "only; use protocol: seldon in the SeldonDeployment")
    if args.server_type == "kafka":
        raise SpecError("--server_type kafka: fastseldon's executor serves rpc (REST and gRPC) only")
    if args.prometheus_path and args.metrics_port is None:
        args.metrics_port = 0  # the metrics are on the REST port


def _endpoint_remotes(predictor: Predictor, given: dict[str, str]) -> dict[str, str]:
    """With ENGINE_PREDICTOR (Seldon's operator or `fastseldon k8s`), a node with an endpoint runs there."""
    out = dict(given)
    for node in predictor.graph.walk():
        if node.endpoint is not None and node.name not in out:
            scheme = "grpc" if node.endpoint.type == "GRPC" else "http"
            out[node.name] = f"{scheme}://{node.endpoint.host}:{node.endpoint.port}"
    return out


def _with_executor_routes(build: Callable[[Any], Awaitable[Any]], prometheus_path: str | None,
                          remotes: dict[str, str]) -> Callable[[Any], Awaitable[Any]]:
    """Seldon's executor's routes on top of the graph's: GET ``prometheus_path`` answers the merged
    Prometheus metrics of every worker on the REST port, and ``/ready`` also needs every remote
    unit to accept connections (Seldon's executor checks its units' ports the same way)."""
    import asyncio
    from urllib.parse import urlsplit

    from fastseldon.http import TEXT, Request, Response

    def scrape() -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest

        from fastseldon.metrics import _Merged

        registry = CollectorRegistry()
        registry.register(_Merged(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
        return bytes(generate_latest(registry))

    async def reachable(url: str) -> bool:
        parts = urlsplit(url)
        try:
            _reader, writer = await asyncio.wait_for(asyncio.open_connection(parts.hostname, parts.port), 2.0)
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        return True

    async def built(loop: Any) -> Any:
        app = await build(loop)

        async def metrics(request: Request) -> Response:
            app.flush()  # this worker's pending observations first
            return Response(200, await loop.run_in_executor(app.pool, scrape), b"text/plain; version=0.0.4")

        async def ready(request: Request) -> Response:
            names = sorted(remotes)
            up = await asyncio.gather(*(reachable(remotes[n]) for n in names))
            down = [f"{n} ({remotes[n]})" for n, ok in zip(names, up) if not ok]
            if down:
                return Response(503, f"not ready: units not reachable: {', '.join(down)}".encode(), TEXT)
            return Response(200, b"ready", TEXT)

        if prometheus_path:
            app.router.add(("GET",), (prometheus_path,), metrics)
        if remotes:
            app.router.add(("GET",), ("/ready",), ready)
        return app

    return built


def _predictor(args: argparse.Namespace) -> tuple[Predictor, Path]:
    if args.interface_name:  # the SPEC positional
        spec = Path(args.interface_name)
        if not spec.is_file():
            raise SpecError(f"no such spec file: {spec}")
        return load_file(spec, args.predictor), Path(args.source or spec.parent)
    encoded = os.environ.get("ENGINE_PREDICTOR")
    if not encoded:
        raise SpecError("give a SeldonDeployment file, or set ENGINE_PREDICTOR (base64 JSON PredictorSpec)")
    name = args.sdep or os.environ.get("SELDON_DEPLOYMENT_ID", "")
    predictor = from_engine_predictor(encoded, name, args.transport or "rest")
    if args.predictor and args.predictor != predictor.name:
        raise SpecError(f"--predictor {args.predictor!r}, but ENGINE_PREDICTOR holds predictor {predictor.name!r}")
    return predictor, Path(args.source or os.getcwd())


def main(argv: list[str]) -> int:
    from fastseldon.graph.app import load_graph_app, parse_remotes
    from fastseldon.settings import from_args
    from fastseldon.workers import serve

    args, unknown = _parser().parse_known_args(argv)
    if unknown:
        print(f"fastseldon graph: error: unknown arguments {unknown}", file=sys.stderr)
        return 2
    if args.http_port is None:
        args.http_port = 8000  # the executor's ports, as Seldon's operator sets them
    if args.grpc_port is None:
        args.grpc_port = 5001
    from_engine = not args.interface_name  # ENGINE_PREDICTOR: as Seldon's executor
    try:
        _seldon_args(args)
        predictor, source = _predictor(args)
        remotes = parse_remotes(args.remote)
        if from_engine:
            remotes = _endpoint_remotes(predictor, remotes)
            args.interface_name = "graph"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTIVE_UNIT_")}
        server, _unit = from_args(args, env)
    except (SpecError, ValueError) as exc:
        print(f"fastseldon graph: error: {exc}", file=sys.stderr)
        return 2
    from fastseldon.logs import setup

    setup(server.log_level, server.log_format)  # --log-format json applies to graphs too
    build: Callable[[Any], Awaitable[Any]] = partial(load_graph_app, server, predictor, source.resolve(), remotes,
                                                     seed=args.seed)
    if from_engine or args.prometheus_path:
        build = _with_executor_routes(build, args.prometheus_path, remotes if from_engine else {})
    label = f"graph {predictor.deployment or '-'}/{predictor.name} ({len(predictor.graph.walk())} nodes)"
    return serve(server, lambda loop: build(loop), label)
