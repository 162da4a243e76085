#!/usr/bin/env python
"""ONNX scenario: the served model's throughput against its ceiling, InferenceSession.run in-process.

    python benchmarks/onnx_bench.py [--devices cpu[,cuda]] [--rows 1,32] [--hidden 256 --layers 3]

For each device and batch size it
  1. builds an MLP with onnx.helper (weights from a seeded generator; nothing downloaded),
  2. times InferenceSession.run on the request's rows in a loop, in this process, before and
     after the server runs: the higher rate is the ceiling,
  3. starts `fastseldon serve fastseldon.runtimes.onnx.OnnxModel` (one worker), checks one
     REST and one gRPC reply against the in-process output, then loads it with wrk (Seldon
     REST, ndarray JSON) and h2load (Seldon gRPC, tensor protobuf),
and prints requests/s for each and the ratio served / in-process, measured in the same run.

The server and the in-process loop are pinned to core 0 and the load generators to the
other cores (taskset), so on a 2-core box the server gets one core, as in DESIGN.md.
wrk and h2load come from `bash benchmarks/setup.sh tools`; onnx and onnxruntime from pip.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np


# ----------------------------------------------------------------------------- model
def build_mlp(path: Path, n_in: int, hidden: int, layers: int, n_out: int, seed: int = 0) -> Path:
    """A float32 MLP with a dynamic batch dimension: (MatMul, Add, Relu) x layers, MatMul, Softmax."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, prev, width = [], [], "x", n_in
    for i in range(layers):
        inits += [
            numpy_helper.from_array((rng.normal(size=(width, hidden)) / np.sqrt(width)).astype(np.float32), f"w{i}"),
            numpy_helper.from_array(rng.normal(size=(hidden,)).astype(np.float32) * 0.1, f"b{i}"),
        ]
        nodes += [
            helper.make_node("MatMul", [prev, f"w{i}"], [f"m{i}"]),
            helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]),
            helper.make_node("Relu", [f"a{i}"], [f"h{i}"]),
        ]
        prev, width = f"h{i}", hidden
    inits.append(numpy_helper.from_array((rng.normal(size=(width, n_out)) / np.sqrt(width)).astype(np.float32), "wo"))
    nodes += [helper.make_node("MatMul", [prev, "wo"], ["logits"]), helper.make_node("Softmax", ["logits"], ["probs"], axis=1)]
    graph = helper.make_graph(
        nodes,
        "bench_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n_in])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", n_out])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="fastseldon-bench")
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def in_process_rate(model_path: Path, x: np.ndarray, device: str, threads: int, seconds: float) -> tuple[float, np.ndarray]:
    """Calls/s of InferenceSession.run on x (the ceiling), with the server's provider and threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(model_path), sess_options=options, providers=providers)
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit("in-process session could not use CUDA")
    feed = {"x": x.astype(np.float32)}
    out = session.run(None, feed)[0]
    for _ in range(20):  # warm-up: allocator arenas, CUDA kernels
        session.run(None, feed)
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            session.run(None, feed)
        calls += 50
        now = time.perf_counter()
        if now >= deadline:
            return calls / (now - start), out


# ----------------------------------------------------------------------------- server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pinned(cmd: list[str], cores: str | None) -> list[str]:
    return ["taskset", "-c", cores, *cmd] if cores and shutil.which("taskset") else cmd


@contextmanager
def server(model_path: Path, device: str, threads: int, core: str | None, log: Path):
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    params = [
        {"name": "model_uri", "value": str(model_path), "type": "STRING"},
        {"name": "device", "value": device, "type": "STRING"},
        {"name": "intra_op_threads", "value": str(threads), "type": "INT"},
    ]
    cmd = [
        sys.executable, "-m", "fastseldon", "serve", "fastseldon.runtimes.onnx.OnnxModel",
        "--parameters", json.dumps(params), "--workers", "1", "--log-level", "WARNING",
        "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
    ]
    with open(log, "wb") as sink:
        proc = subprocess.Popen(pinned(cmd, core), stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/health/ping", timeout=1) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"server not ready after 60 s:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        yield http_port, grpc_port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def check_replies(http_port: int, grpc_port: int, x: np.ndarray, expected: np.ndarray) -> None:
    """One REST and one gRPC call must agree with the in-process output before timing anything."""
    import grpc

    from fastseldon.proto import prediction_pb2_grpc as pb_grpc

    body = json.dumps({"data": {"ndarray": x.tolist()}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/api/v1.0/predictions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as r:
        rest = np.array(json.loads(r.read())["data"]["ndarray"])
    np.testing.assert_allclose(rest, expected, rtol=1e-4, atol=1e-5)
    with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        reply = pb_grpc.SeldonStub(channel).Predict(grpc_message(x), timeout=30)
    got = np.array(reply.data.tensor.values).reshape(tuple(reply.data.tensor.shape))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


def grpc_message(x: np.ndarray):
    from fastseldon.proto import prediction_pb2 as pb

    return pb.SeldonMessage(data=pb.DefaultData(tensor=pb.Tensor(shape=list(x.shape), values=x.ravel().tolist())))


# ----------------------------------------------------------------------------- load generators
def wrk_rate(port: int, body: bytes, seconds: int, connections: int, core: str | None, workdir: Path) -> float:
    script = workdir / "post.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(body.decode())}\n"
    )
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script),
           f"http://127.0.0.1:{port}/api/v1.0/predictions"]
    out = subprocess.run(pinned(cmd, core), capture_output=True, text=True, check=True).stdout
    bad = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    if bad and int(bad.group(1)):
        raise SystemExit(f"wrk saw {bad.group(1)} error replies:\n{out}")
    return float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))


def h2load_rate(port: int, message: bytes, seconds: int, connections: int, streams: int, core: str | None, workdir: Path) -> float:
    frame = workdir / "grpc.bin"
    frame.write_bytes(b"\x00" + struct.pack(">I", len(message)) + message)  # gRPC length-prefixed message
    cmd = ["h2load", "-c", str(connections), "-m", str(streams), "-D", str(seconds), "--warm-up-time", "1",
           "-d", str(frame), "-H", "content-type: application/grpc", "-H", "te: trailers",
           f"http://127.0.0.1:{port}/seldon.protos.Seldon/Predict"]
    out = subprocess.run(pinned(cmd, core), capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored", out)
    if not done or int(done.group(3)) or int(done.group(4)):
        raise SystemExit(f"h2load saw failures:\n{out}")
    return float(re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out).group(1))


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", default="cpu", help="comma list of cpu, cuda (default cpu)")
    parser.add_argument("--rows", default="1,32", help="rows per request, comma list (default 1,32)")
    parser.add_argument("--n-in", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--n-out", type=int, default=10)
    parser.add_argument("--seconds", type=int, default=8, help="per measurement (default 8)")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads, both sides (default 1)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin server and load generator to cores")
    args = parser.parse_args(argv)

    for tool in ("wrk", "h2load"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: run `bash benchmarks/setup.sh tools`", file=sys.stderr)
            return 2
    ncpu = os.cpu_count() or 1
    server_core = None if args.no_pin or ncpu < 2 else "0"
    client_cores = None if args.no_pin or ncpu < 2 else f"1-{ncpu - 1}"
    if server_core is not None:
        os.sched_setaffinity(0, {0})  # the in-process ceiling runs on the server's core

    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    batches = [int(r) for r in args.rows.split(",") if r.strip()]
    print(f"MLP {args.n_in}->{args.hidden}x{args.layers}->{args.n_out} float32, intra-op threads {args.threads}, "
          f"{args.connections} connections, {args.seconds}s each, server core {server_core or 'any'}")
    header = f"{'device':6} {'rows':>5} {'in-process/s':>13} {'REST/s':>9} {'REST ratio':>10} {'gRPC/s':>9} {'gRPC ratio':>10}"
    print(header)
    print("-" * len(header))
    with tempfile.TemporaryDirectory(prefix="onnx-bench-") as tmp:
        work = Path(tmp)
        model_path = build_mlp(work / "mlp.onnx", args.n_in, args.hidden, args.layers, args.n_out)
        rng = np.random.default_rng(1)
        for device in devices:
            for rows in batches:
                x = rng.normal(size=(rows, args.n_in)).astype(np.float32)
                ceiling, expected = in_process_rate(model_path, x, device, args.threads, args.seconds)
                with server(model_path, device, args.threads, server_core, work / "server.log") as (http_port, grpc_port):
                    check_replies(http_port, grpc_port, x, expected)
                    body = json.dumps({"data": {"ndarray": x.tolist()}}).encode()
                    rest = wrk_rate(http_port, body, args.seconds, args.connections, client_cores, work)
                    message = grpc_message(x).SerializeToString()
                    grpc_rate = h2load_rate(grpc_port, message, args.seconds, args.connections, 1, client_cores, work)
                # Measured again after the server runs; the higher figure is the ceiling, so a
                # burst of noise during one in-process window can't flatter the ratio.
                ceiling = max(ceiling, in_process_rate(model_path, x, device, args.threads, args.seconds)[0])
                print(f"{device:6} {rows:>5} {ceiling:>13.0f} {rest:>9.0f} {rest / ceiling:>10.3f} "
                      f"{grpc_rate:>9.0f} {grpc_rate / ceiling:>10.3f}", flush=True)
    print("ratio = served requests/s / in-process InferenceSession.run calls/s on the same rows (1.0 = no overhead)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
