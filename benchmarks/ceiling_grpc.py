"""Ceilings: the fastest grpcio can answer a unary call here, threaded and asyncio flavours.

A generic handler takes every method and returns the request bytes unchanged: no protobuf
parsing, no model. Whatever it reaches bounds what any grpcio-based server here can do.

    python -m benchmarks.ceiling_grpc --port 5000 --flavour threaded|aio [--workers N] [--threads T]
"""
from __future__ import annotations

import argparse
import asyncio
import signal
import threading
from concurrent import futures

import grpc

from benchmarks.ceiling_http import run_workers

_OPTIONS = [
    ("grpc.so_reuseport", 1),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]


def _identity(data: bytes) -> bytes:
    return data


def _echo(request: bytes, context) -> bytes:
    return request


async def _echo_async(request: bytes, context) -> bytes:
    return request


class _Echo(grpc.GenericRpcHandler):
    def __init__(self, behaviour) -> None:
        self._handler = grpc.unary_unary_rpc_method_handler(
            behaviour, request_deserializer=_identity, response_serializer=_identity
        )

    def service(self, handler_call_details):
        return self._handler


def _serve_threaded(port: int, threads: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=threads), options=_OPTIONS)
    server.add_generic_rpc_handlers((_Echo(_echo),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stop.wait()
    server.stop(1).wait()


async def _serve_aio(port: int) -> None:
    server = grpc.aio.server(options=_OPTIONS)
    server.add_generic_rpc_handlers((_Echo(_echo_async),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await stop.wait()
    await server.stop(1)


def _serve(flavour: str, port: int, threads: int) -> None:
    if flavour == "threaded":
        _serve_threaded(port, threads)
    else:
        asyncio.run(_serve_aio(port))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--flavour", choices=("threaded", "aio"), required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=10)
    args = parser.parse_args(argv)
    # gRPC must not exist before a fork: each worker builds its own server on a shared port.
    run_workers(args.workers, lambda: _serve(args.flavour, args.port, args.threads))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
