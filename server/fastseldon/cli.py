"""Command line: ``fastseldon serve|info|build`` and the seldon-core-microservice drop-in."""
from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Any

from fastseldon import __version__

USAGE = """usage: fastseldon <command> [options]

commands:
  serve INTERFACE_NAME [options]   serve a Seldon user model class (see `fastseldon serve --help`)
  graph [SPEC] [options]           serve a SeldonDeployment's inference graph (see `fastseldon graph --help`)
  k8s SDEP.yaml [options]          Kubernetes manifests for a SeldonDeployment, no operator (see `fastseldon k8s --help`)
  build SRC IMAGE [--gpu|--cpu]    build a serving image with the CPU or GPU s2i builder
  info                             version and which codec implementation is active
"""


def _fail(message: str) -> int:
    print(f"fastseldon: error: {message}", file=sys.stderr)
    return 2


def _check_interface(name: str) -> str | None:
    """Cheap pre-flight in the supervisor: is the module findable? (Importing happens in workers.)"""
    if name.endswith(".py"):
        stem = os.path.basename(name)[:-3]
        return (f"{name!r} is a file name; the interface name is the class: {stem!r} (class {stem} in {stem}.py, "
                "run from the folder that holds it) or package.module.Class")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    module = name.rsplit(".", 1)[0] if "." in name else name
    try:
        found = importlib.util.find_spec(module)
    except (ImportError, ValueError) as exc:
        return f"cannot import interface {name!r}: {exc}"
    if found is None:
        return f"cannot import interface {name!r}: no module named {module!r} (looked in {os.getcwd()} and sys.path)"
    return None


def _parameters_source(message: str, from_env: bool) -> str:
    """A bad parameters list is named after where it came from: the flag or PREDICTIVE_UNIT_PARAMETERS."""
    if not from_env or not os.environ.get("PREDICTIVE_UNIT_PARAMETERS"):
        return message
    if "--parameters" in message:
        return message.replace("--parameters", "PREDICTIVE_UNIT_PARAMETERS")
    return f"PREDICTIVE_UNIT_PARAMETERS: {message}"


def serve(argv: list[str], prog: str = "fastseldon serve") -> int:
    from fastseldon import settings as settings_mod
    from fastseldon.user_model import ModelLoadError, parse_parameters

    parser = settings_mod.build_parser(prog)
    args, unknown = parser.parse_known_args(argv)
    flags = [arg for arg in unknown if arg.startswith("-")]
    if flags:
        return _fail(f"unknown flag{'s' if len(flags) > 1 else ''} {', '.join(flags)} (see {prog} --help)")
    if unknown:
        return _fail(f"unknown arguments {unknown} (note: like seldon-core-microservice since 1.5.0, "
                     "the API type is not a positional argument; use --api-type)")
    if args.repository:
        return _serve_repository(args, prog)
    try:
        server, unit = settings_mod.from_args(args)
        parse_parameters(unit.parameters)
    except ModelLoadError as exc:
        return _fail(_parameters_source(str(exc), args.parameters is None))
    except ValueError as exc:
        return _fail(str(exc))
    problem = _check_interface(unit.interface_name)
    if problem:
        return _fail(problem)
    from fastseldon.logs import setup

    setup(server.log_level, server.log_format)
    if unit.persistence:
        logging.getLogger("fastseldon").warning("--persistence is deprecated in Seldon and ignored")
    from functools import partial

    from fastseldon.app import load_unit_app
    from fastseldon.workers import serve as run

    return run(server, partial(load_unit_app, server, unit), f"{unit.model_name} ({unit.service_type})")


def _serve_repository(args: Any, prog: str) -> int:
    """``--repository DIR``: every model in DIR, side by side, by name (registry.py)."""
    from dataclasses import replace
    from functools import partial
    from pathlib import Path

    from fastseldon import settings as settings_mod
    from fastseldon.registry import Repository, load_repository_app

    if args.interface_name or args.onnx or args.model_name:
        return _fail("--repository serves the models in its folder, each named after its folder: give no interface "
                     "name, --onnx or --model-name with it")
    args.interface_name = "repository"  # the server-wide unit settings every model starts from
    try:
        server, base = settings_mod.from_args(args)
        repository = Repository(Path(args.repository).resolve(), replace(base, parameters="[]"),
                                args.device or os.environ.get("DEVICE", "auto"))
        names = [entry.name for entry in repository.scan()]
    except ValueError as exc:
        return _fail(str(exc))
    from fastseldon.logs import setup
    from fastseldon.workers import serve as run

    setup(server.log_level, server.log_format)
    return run(server, partial(load_repository_app, server, repository), f"repository {args.repository} ({', '.join(names)})")


def info() -> int:
    from fastseldon import codec

    print(f"fastseldon {__version__}")
    print(f"codec: {codec.IMPLEMENTATION}")
    print(f"python: {sys.version.split()[0]}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command in ("--version", "-V"):
        from fastseldon import codec

        print(f"fastseldon {__version__} (codec: {codec.IMPLEMENTATION})")
        return 0
    if command == "serve":
        return serve(rest)
    if command == "graph":
        from fastseldon.graph.cli import main as graph_main

        return graph_main(rest)
    if command == "k8s":
        from fastseldon.graph.k8s import main as k8s_main

        return k8s_main(rest)
    if command == "info":
        return info()
    if command == "build":
        try:
            from fastseldon.builder import main as build_main
        except ImportError:
            return _fail("the image builder is not available in this installation")
        return build_main(rest)
    return _fail(f"unknown command {command!r}\n{USAGE}")


def microservice_main(argv: list[str] | None = None) -> int:
    """``fastseldon-microservice MyModel --service-type MODEL ...``: seldon-core-microservice's CLI."""
    argv = sys.argv[1:] if argv is None else argv
    return serve(argv, prog="fastseldon-microservice")


if __name__ == "__main__":
    sys.exit(main())
