"""Check a scenario's answer with a real client before loading it.

wrk only sees HTTP status codes and h2load cannot see `grpc-status` at all (it is a trailer),
so a server that answers 200 with an error, or gRPC status INTERNAL, would look fast. Every
scenario is first sent once through `requests` or a grpcio stub and its answer decoded.
"""
from __future__ import annotations

import time

import grpc
import requests

from benchmarks import graphs
from benchmarks.payloads import array_for, check_grpc_answer, check_http_answer, grpc_request, http_request, v2_grpc_modules
from benchmarks.scenarios import SELDON_GRPC, Scenario
from benchmarks.servers import RunningServer

_MAX_MESSAGE = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


def verify(server: RunningServer, scenario: Scenario, timeout_s: float = 5.0) -> str | None:
    """Send the scenario once; None when the answer is right, else what went wrong."""
    try:
        if scenario.transport == "http":
            return _verify_http(server, scenario, timeout_s)
        return _verify_grpc(server, scenario, timeout_s)
    except (requests.RequestException, grpc.RpcError) as exc:
        return f"{type(exc).__name__}: {_short(exc)}"


def verify_until_ready(server: RunningServer, scenario: Scenario, timeout_s: float = 60.0,
                       settle_s: float = 5.0) -> str | None:
    """Retry `verify` while the server is still coming up.

    Refused connections, HTTP 503 and gRPC UNAVAILABLE are retried until `timeout_s`; any other
    wrong answer only for `settle_s` (a model may load after the port opens), so a route that
    does not exist fails fast.
    """
    start = time.monotonic()
    problem = verify(server, scenario)
    while problem is not None and server.alive():
        waited = time.monotonic() - start
        transient = any(m in problem for m in ("ConnectionError", "HTTP 503", "UNAVAILABLE"))
        if waited > (timeout_s if transient else settle_s):
            break
        time.sleep(0.5)
        problem = verify(server, scenario)
    return problem


def _verify_http(server: RunningServer, scenario: Scenario, timeout_s: float) -> str | None:
    req = http_request(scenario)
    url = f"http://127.0.0.1:{server.http_port}{req.path}"
    resp = requests.post(url, data=req.body, headers=dict(req.headers), timeout=timeout_s)
    if server.spec.echo:
        if resp.status_code != 200 or resp.content != req.body:
            return f"echo server answered HTTP {resp.status_code} with {len(resp.content)} bytes, not the request"
        return None
    if server.spec.graph:  # a graph server answers the chain's values (or the lone model's), not the input
        return graphs.check_answer(server.spec.graph, array_for(scenario), resp.status_code, resp.content,
                                   scenario.chain or 3)
    headers = {k.lower(): v for k, v in resp.headers.items()}
    return check_http_answer(scenario, resp.status_code, headers, resp.content)


def _verify_grpc(server: RunningServer, scenario: Scenario, timeout_s: float) -> str | None:
    req = grpc_request(scenario)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}", options=_MAX_MESSAGE) as channel:
        if server.spec.echo:
            call = channel.unary_unary(req.method, request_serializer=None, response_deserializer=None)
            answer = call(req.message, timeout=timeout_s)
            return None if answer == req.message else "echo server did not return the request bytes"
        if server.spec.graph:  # the executor's Seldon/Predict; the chain's values (or the lone model's)
            call = channel.unary_unary(req.method, request_serializer=None, response_deserializer=None)
            return graphs.check_grpc_answer(server.spec.graph, array_for(scenario), call(req.message, timeout=timeout_s),
                                            scenario.chain or 3)
        if scenario.api == SELDON_GRPC:
            from fastseldon.proto import prediction_pb2, prediction_pb2_grpc

            stub = prediction_pb2_grpc.ModelStub(channel)
            reply = stub.Predict(prediction_pb2.SeldonMessage.FromString(req.message), timeout=timeout_s)
        else:
            pb2, pb2_grpc = v2_grpc_modules()
            stub = pb2_grpc.GRPCInferenceServiceStub(channel)
            reply = stub.ModelInfer(pb2.ModelInferRequest.FromString(req.message), timeout=timeout_s)
        return check_grpc_answer(scenario, reply.SerializeToString())


def _short(exc: Exception) -> str:
    if isinstance(exc, grpc.RpcError) and hasattr(exc, "code"):
        return f"{exc.code().name}: {exc.details()}"
    return str(exc)[:300]
