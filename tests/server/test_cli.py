"""The command line: start-up errors are one line and non-zero; flags and env vars mean what Seldon's do."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import requests

from fastseldon.settings import build_parser, from_args
from fastseldon.user_model import ModelLoadError, parse_parameters
from support.serving import MODELS, free_port, running


def run_cli(*args, cwd=MODELS, env=None, timeout=60):
    return subprocess.run([sys.executable, "-m", "fastseldon", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def _ports():
    return ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]


@pytest.mark.parametrize("args, message", [
    (["serve", "NoSuchModel"], "no module named 'NoSuchModel'"),
    (["serve", "Doubler.Missing"], "module 'Doubler' has no class 'Missing'"),
    (["serve", "nopkg.Doubler"], "no module named 'nopkg'"),
    (["serve", "Doubler", "--parameters", "[{bad json"], "--parameters is not valid JSON"),
    (["serve", "Doubler", "--parameters", '[{"name":"a","value":"x","type":"INT"}]'], "can't be parsed as a INT"),
    (["serve", "Doubler", "--parameters", '[{"name":"a","value":"x","type":"COMPLEX"}]'], "Bad model parameter type: COMPLEX"),
    (["serve", "Doubler", "REST"], "unknown arguments ['REST']"),
    (["serve", "Broken"], "cannot open weights.bin"),
])
def test_startup_errors_are_one_line(args, message):
    result = run_cli(*args, *_ports())
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if "fastseldon: error" in line]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_missing_class_in_existing_module(tmp_path):
    (tmp_path / "Other.py").write_text("class Something:\n    pass\n")
    result = run_cli("serve", "Other", *_ports(), cwd=tmp_path)
    assert result.returncode != 0 and "has no class 'Other'" in result.stderr and "Traceback" not in result.stderr


def test_info_and_version():
    info = run_cli("info")
    assert info.returncode == 0 and "codec:" in info.stdout and "fastseldon" in info.stdout
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.startswith("fastseldon ")


def test_microservice_entry_and_dotted_interface_with_env_ports():
    http_port = free_port()
    env = {"PREDICTIVE_UNIT_HTTP_SERVICE_PORT": str(http_port), "PREDICTIVE_UNIT_GRPC_SERVICE_PORT": str(free_port()),
           "PREDICTIVE_UNIT_METRICS_SERVICE_PORT": str(free_port()),
           "PREDICTIVE_UNIT_PARAMETERS": json.dumps([{"name": "label", "value": "from-env", "type": "STRING"}])}
    proc = subprocess.Popen([sys.executable, "-c", "from fastseldon.cli import microservice_main; raise SystemExit(microservice_main())",
                             "Rich.Rich", "--service-type", "MODEL", "--persistence", "0"],
                            cwd=MODELS, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import time
        deadline = time.monotonic() + 30
        while True:
            try:
                r = requests.post(f"http://127.0.0.1:{http_port}/predict", json={"data": {"ndarray": [[1]]}}, timeout=1)
                if r.status_code != 503:  # 503 while the model loads: the port opens first
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.05)
        assert r.json()["meta"]["tags"]["label"] == "from-env"
    finally:
        proc.terminate()
        assert proc.wait(30) == 0


def test_typed_parameters_reach_the_constructor():
    params = [{"name": "offset", "value": "2", "type": "DOUBLE"}, {"name": "count", "value": "3", "type": "INT"},
              {"name": "flag", "value": "1", "type": "BOOL"}, {"name": "label", "value": "x", "type": "STRING"}]
    with running(["Rich", "--parameters", json.dumps(params), "--model-name", "iris", "--log-level", "DEBUG"]) as server:
        out = requests.post(server.url + "/predict", json={"data": {"ndarray": [[1]]}}, timeout=5).json()
        assert out["data"]["ndarray"] == [[3.0]]
        assert out["meta"]["tags"] == {"label": "x", "flag": True, "count": 3}
        assert 'model="iris"' in server.scrape('model="iris"')


def test_parse_parameters_types():
    assert parse_parameters('[{"name":"a","value":"1","type":"INT"},{"name":"b","value":"false","type":"BOOL"}]') == {"a": 1, "b": False}
    with pytest.raises(ModelLoadError):
        parse_parameters('{"name":"a"}')
    # no type is Seldon's "Bad model parameter type", not a silent STRING
    with pytest.raises(ModelLoadError, match="Bad model parameter type: None"):
        parse_parameters('[{"name":"a","value":"1"}]')


def test_a_parameter_without_type_stops_the_server(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastseldon", "serve", "Doubler", "--parameters", '[{"name":"x","value":"1"}]'],
                          cwd=MODELS, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Bad model parameter type" in done.stderr


def test_api_type_from_the_environment_is_ignored_the_flag_is_not():
    """Seldon 1.19 ignores API_TYPE (its s2i examples set API_TYPE=REST and still serve gRPC)."""
    parser = build_parser()
    for value in ("REST", "GRPC", "FBS"):
        s, _ = from_args(parser.parse_args(["M"]), {"API_TYPE": value})
        assert (s.api_type, s.http_enabled, s.grpc_enabled) == ("BOTH", True, True)
    s, _ = from_args(parser.parse_args(["M", "--api-type", "rest"]), {"API_TYPE": "GRPC"})
    assert (s.api_type, s.http_enabled, s.grpc_enabled) == ("REST", True, False)


def test_onnx_model_is_named_after_its_file():
    parser = build_parser()
    _, unit = from_args(parser.parse_args(["--onnx", "models/iris.onnx"]), {})
    assert unit.model_name == "iris"
    _, unit = from_args(parser.parse_args(["--onnx", "models/iris.onnx", "--model-name", "flowers"]), {})
    assert unit.model_name == "flowers"


def test_settings_flags_beat_env_and_seldon_names():
    parser = build_parser()
    env = {"PREDICTIVE_UNIT_HTTP_SERVICE_PORT": "1234", "GUNICORN_WORKERS": "3", "GRPC_WORKERS": "0",
           "SELDON_LOG_LEVEL": "warning", "MAX_BATCH_SIZE": "8", "API_TYPE": "FBS"}
    s, u = from_args(parser.parse_args(["pkg.mod.Cls", "--http-port", "9999"]), env)
    assert (s.http_port, s.workers, s.grpc_enabled, s.log_level, u.model_name) == (9999, 3, False, "WARNING", "Cls")
    assert u.max_batch_size == 8 and u.max_batch_time_ms == 5.0 and s.api_type == "BOTH"
    s, u = from_args(parser.parse_args(["M", "--workers", "2", "--service-type", "router"]), env)
    assert (s.http_port, s.workers, u.service_type) == (1234, 2, "ROUTER")
    _, onnx = from_args(parser.parse_args(["--onnx", "m.onnx", "--device", "cpu"]), {})
    assert onnx.interface_name == "fastseldon.runtimes.onnx.OnnxModel"
    assert {p["name"]: p["value"] for p in json.loads(onnx.parameters)}["device"] == "cpu"
