"""``fastseldon graph SPEC``: serve a SeldonDeployment predictor's whole graph from one server."""
from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

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
    return p


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
    return from_engine_predictor(encoded, name), Path(args.source or os.getcwd())


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
    try:
        predictor, source = _predictor(args)
        remotes = parse_remotes(args.remote)
        if not args.interface_name:
            args.interface_name = "graph"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREDICTIVE_UNIT_")}
        server, _unit = from_args(args, env)
    except (SpecError, ValueError) as exc:
        print(f"fastseldon graph: error: {exc}", file=sys.stderr)
        return 2
    from fastseldon.logs import setup

    setup(server.log_level, server.log_format)  # --log-format json applies to graphs too
    build = partial(load_graph_app, server, predictor, source.resolve(), remotes, seed=args.seed)
    label = f"graph {predictor.deployment or '-'}/{predictor.name} ({len(predictor.graph.walk())} nodes)"
    return serve(server, lambda loop: build(loop), label)
