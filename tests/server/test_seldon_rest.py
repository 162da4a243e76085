"""Seldon v1 REST against the real server: routes, payload kinds, meta merging, errors."""
from __future__ import annotations

import base64
import json
import re
import socket
import threading

import numpy as np
import pytest
import requests

from support.seldon_envs import seldon_core_env
from support.serving import running

PARAMS = json.dumps([
    {"name": "offset", "value": "0.5", "type": "FLOAT"},
    {"name": "label", "value": "hello", "type": "STRING"},
    {"name": "flag", "value": "true", "type": "BOOL"},
    {"name": "count", "value": "7", "type": "INT"},
])


@pytest.fixture(scope="module", params=[1, 2], ids=["1worker", "2workers"])
def doubler(request):
    with running(["Doubler", "--workers", str(request.param)]) as server:
        yield server


@pytest.fixture(scope="module")
def rich():
    with running(["Rich", "--parameters", PARAMS, "--service-type", "MODEL"]) as server:
        yield server


def post(server, path, payload, **kw):
    return requests.post(server.url + path, json=payload, timeout=10, **kw)


# --------------------------------------------------------------------------- payload kinds (Seldon's observed replies)

@pytest.mark.parametrize("path", ["/api/v1.0/predictions", "/predict", "/api/v0.1/predictions"])
def test_ndarray_ints_stay_ints(doubler, path):
    r = post(doubler, path, {"data": {"ndarray": [[1, 2]]}})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json"
    assert r.json() == {"data": {"names": ["t:0", "t:1"], "ndarray": [[2, 4]]}, "meta": {}}
    assert b"[[2,4]]" in r.content


def test_request_names_not_echoed_and_routing_dropped(doubler):
    body = {"data": {"names": ["f1", "f2"], "ndarray": [[1.5, 2]]},
            "meta": {"puid": "abc", "tags": {"k": 1}, "routing": {"x": 1}}}
    assert post(doubler, "/predict", body).json() == {
        "data": {"names": ["t:0", "t:1"], "ndarray": [[3.0, 4.0]]}, "meta": {"puid": "abc", "tags": {"k": 1}}}


def test_one_dimensional_has_no_names(doubler):
    assert post(doubler, "/predict", {"data": {"ndarray": [1, 2, 3]}}).json() == {
        "data": {"names": [], "ndarray": [2, 4, 6]}, "meta": {}}


def test_tensor_mirrors_tensor(doubler):
    r = post(doubler, "/predict", {"data": {"tensor": {"shape": [2, 2], "values": [1, 2, 3, 4.5]}}})
    assert r.json() == {"data": {"names": ["t:0", "t:1"], "tensor": {"shape": [2, 2], "values": [2.0, 4.0, 6.0, 9.0]}}, "meta": {}}


def test_strings_ndarray(doubler):
    assert post(doubler, "/predict", {"data": {"ndarray": [["a", "b"]]}}).json() == {
        "data": {"names": ["t:0", "t:1"], "ndarray": [["a", "b"]]}, "meta": {}}


def test_json_str_bin_data(doubler):
    assert post(doubler, "/predict", {"jsonData": {"a": [1, {"b": None}]}}).json() == {"jsonData": {"a": [1, {"b": None}]}, "meta": {}}
    assert post(doubler, "/predict", {"strData": "hello"}).json() == {"meta": {}, "strData": "hello"}
    payload = base64.b64encode(b"\x00\xffbinary").decode()
    assert post(doubler, "/predict", {"binData": payload}).json() == {"binData": payload, "meta": {}}


def test_empty_data(doubler):
    assert post(doubler, "/predict", {"data": {}}).json() == {"data": {"names": [], "ndarray": []}, "meta": {}}


def test_tftensor_round_trip(doubler):
    tf = {"dtype": "DT_FLOAT", "tensorShape": {"dim": [{"size": "1"}, {"size": "3"}]}, "floatVal": [1, 2, 3.5]}
    r = post(doubler, "/predict", {"data": {"tftensor": tf}})
    assert r.status_code == 200, r.text
    out = r.json()["data"]
    assert out["names"] == ["t:0", "t:1", "t:2"]
    assert out["tftensor"]["dtype"] == "DT_FLOAT"
    assert [int(d["size"]) for d in out["tftensor"]["tensorShape"]["dim"]] == [1, 3]
    values = np.frombuffer(base64.b64decode(out["tftensor"]["tensorContent"]), dtype="<f4")
    assert values.tolist() == [2.0, 4.0, 7.0]


def test_form_encoded_query_and_multipart(doubler):
    r = requests.post(doubler.url + "/predict", data={"json": json.dumps({"data": {"ndarray": [[1, 2]]}})}, timeout=10)
    assert r.json()["data"]["ndarray"] == [[2, 4]]
    r = requests.get(doubler.url + "/predict", params={"json": json.dumps({"data": {"ndarray": [[3]]}})}, timeout=10)
    assert r.json() == {"data": {"names": ["t:0"], "ndarray": [[6]]}, "meta": {}}
    files = {"data": (None, '{"ndarray": [[1, 2]]}'), "meta": (None, '{"puid": "p"}')}
    r = requests.post(doubler.url + "/predict", files=files, timeout=10)
    assert r.json() == {"data": {"names": ["t:0", "t:1"], "ndarray": [[2, 4]]}, "meta": {"puid": "p"}}
    r = requests.post(doubler.url + "/predict", files={"binData": ("x.bin", b"\x01\x02")}, timeout=10)
    assert base64.b64decode(r.json()["binData"]) == b"\x01\x02"


def test_identity_transform_and_feedback_defaults(doubler):
    body = {"data": {"ndarray": [[1, 2]]}}
    for path in ("/transform-input", "/transform-output"):
        assert post(doubler, path, body).json() == {"data": {"names": ["t:0", "t:1"], "ndarray": [[1, 2]]}, "meta": {}}
    fb = {"request": body, "response": {"data": {"ndarray": [[1]]}}, "reward": 1.0}
    assert post(doubler, "/api/v1.0/feedback", fb).json() == {"data": {"ndarray": []}, "meta": {}}


def test_health_and_metadata_defaults(doubler):
    r = requests.get(doubler.url + "/health/ping", timeout=5)
    assert (r.status_code, r.text) == (200, "pong")
    assert requests.get(doubler.url + "/health/status", timeout=5).json() == {"meta": {}, "strData": "healthy"}
    assert requests.get(doubler.url + "/metadata", timeout=5).json() == {
        "name": "Doubler", "versions": [""], "platform": "", "inputs": [], "outputs": [], "custom": {}}


# --------------------------------------------------------------------------- every hook, tags, metrics, class_names

def test_rich_predict_merges_tags_and_metrics(rich):
    body = {"data": {"ndarray": [[1, 2]]}, "meta": {"puid": "id1", "tags": {"req": "r"},
                                                   "metrics": [{"key": "client", "type": "GAUGE", "value": 1}]}}
    out = post(rich, "/api/v1.0/predictions", body).json()
    assert out["data"] == {"names": ["a", "b"], "ndarray": [[1.5, 2.5]]}
    assert out["meta"]["puid"] == "id1"
    assert out["meta"]["tags"] == {"req": "r", "label": "hello", "flag": True, "count": 7}
    assert [m["key"] for m in out["meta"]["metrics"]] == ["client", "rich_calls", "rich_gauge", "rich_timer"]
    # Seldon's metrics update writes the method into a metric's own tags, and the reply shows it
    assert out["meta"]["metrics"][2] == {"key": "rich_gauge", "type": "GAUGE", "value": 42.0, "tags": {"kind": "g", "method": "predict"}}


def test_rich_meta_reaches_predict(rich):
    out = post(rich, "/predict", {"strData": "meta", "meta": {"puid": "zz", "tags": {"t": 1}}}).json()
    assert out["jsonData"]["meta_seen"] == {"puid": "zz", "tags": {"t": 1}}


def test_rich_transform_route_aggregate(rich):
    body = {"data": {"tensor": {"shape": [1, 2], "values": [4, 5]}}}
    assert post(rich, "/transform-input", body).json()["data"]["tensor"] == {"shape": [1, 2], "values": [40.0, 50.0]}
    assert post(rich, "/transform-output", body).json()["data"]["tensor"] == {"shape": [1, 2], "values": [3.0, 4.0]}
    routed = post(rich, "/route", body).json()
    assert routed["data"] == {"names": ["a", "b"], "tensor": {"shape": [1, 1], "values": [1]}}
    routed = post(rich, "/route", {"data": {"ndarray": [[5]]}}).json()
    assert routed["data"]["ndarray"] == [[2]]
    agg = {"seldonMessages": [{"data": {"ndarray": [[1, 2]]}, "meta": {"tags": {"x": 1}}},
                              {"data": {"ndarray": [[3, 4]]}, "meta": {"tags": {"y": 2}}}]}
    out = post(rich, "/aggregate", agg).json()
    assert out["data"]["ndarray"] == [[4, 6]]
    assert out["meta"]["tags"]["x"] == 1 and out["meta"]["tags"]["y"] == 2
    assert post(rich, "/aggregate", agg["seldonMessages"]).json()["data"]["ndarray"] == [[4, 6]]


def test_rich_feedback_reward_and_routing(rich):
    fb = {"request": {"data": {"ndarray": [[1, 2]]}, "meta": {"puid": "f1"}},
          "response": {"meta": {"routing": {"0": 2}}, "data": {"ndarray": [[1]]}}, "reward": 0.5}
    out = post(rich, "/send-feedback", fb).json()
    reward, calls, routing = out["data"]["ndarray"][0]
    assert reward == 0.5 and calls >= 1 and routing == 2
    assert out["meta"]["puid"] == "f1"


def test_rich_health_and_metadata(rich):
    out = requests.get(rich.url + "/health/status", timeout=5).json()
    assert out["jsonData"]["loaded"] is True
    assert out["meta"]["tags"]["label"] == "hello"
    meta = requests.get(rich.url + "/api/v1.0/metadata", timeout=5).json()
    assert meta["name"] == "rich-model" and meta["versions"] == ["v7"] and meta["custom"] == {"author": "tests"}
    assert meta["outputs"] == [{"name": "out", "datatype": "FP64", "shape": [-1, 2]}]


def test_custom_metrics_on_metrics_port(rich):
    post(rich, "/predict", {"data": {"ndarray": [[1, 2]]}})
    text = rich.scrape("fastseldon_request_duration_seconds_count")
    assert 'rich_calls_total{' in text and 'method="predict"' in text
    assert 'rich_gauge{' in text and 'kind="g"' in text
    assert 'rich_timer_bucket{' in text and 'le="0.001"' in text
    assert 'fastseldon_requests_total{code="200",endpoint="/api/v1.0/predictions"' in text
    assert 'fastseldon_request_duration_seconds_count{endpoint="/api/v1.0/predictions"' in text


# --------------------------------------------------------------------------- errors, and serving on afterwards

def _status(r):
    body = r.json()
    assert set(body) == {"status"} and body["status"]["status"] == 1 and body["status"]["code"] == -1
    return r.status_code, body["status"]["reason"], body["status"]["info"]


def test_error_cases(rich):
    status, reason, info = _status(requests.post(rich.url + "/predict", data=b"{not json", headers={"content-type": "application/json"}))
    assert (status, reason) == (400, "MICROSERVICE_BAD_DATA") and "Can't find JSON in data" in info
    status, reason, info = _status(post(rich, "/predict", {"foo": 1}))
    assert status == 400 and info.startswith("Invalid request data type")
    status, _, info = _status(post(rich, "/predict", [1, 2]))
    assert status == 400 and "Invalid request data type" in info
    status, _, info = _status(post(rich, "/predict", {"data": {"ndarray": [[1, 2], [3]]}}))
    assert status == 400 and "ragged" in info
    status, _, info = _status(post(rich, "/predict", {"data": {"tensor": {"shape": [3], "values": [1, 2]}}}))
    assert status == 400 and "shape" in info
    status, reason, info = _status(post(rich, "/predict", {"jsonData": {"raise": "boom"}}))
    assert (status, reason, info) == (500, "MICROSERVICE_INTERNAL_ERROR", "boom")
    status, reason, info = _status(post(rich, "/predict", {"data": {"ndarray": [[666]]}}))
    assert (status, info) == (500, "the number of the beast")
    status, _, info = _status(requests.get(rich.url + "/nope", timeout=5))
    assert status == 404 and "/nope" in info
    status, _, _ = _status(requests.delete(rich.url + "/predict", timeout=5))
    assert status == 405
    # and the worker still answers
    assert post(rich, "/predict", {"data": {"ndarray": [[1, 2]]}}).status_code == 200


def test_route_without_hook_is_400(doubler):
    status, _, info = _status(post(doubler, "/route", {"data": {"ndarray": [[1]]}}))
    assert status == 400 and info == "Route not defined"
    status, _, info = _status(post(doubler, "/aggregate", {"seldonMessages": [{"data": {"ndarray": [[1]]}}]}))
    assert status == 400 and info == "Aggregate not defined"


def test_bad_feedback_is_400(doubler):
    status, _, info = _status(post(doubler, "/send-feedback", {"foo": 1}))
    assert status == 400 and info.startswith("Invalid JSON") and "foo" in info


def test_body_limit_413(tmp_path):
    with running(["Doubler", "--max-body-bytes", "1000"]) as server:
        big = {"data": {"ndarray": [list(range(500))]}}
        r = requests.post(server.url + "/predict", json=big, timeout=10)
        assert r.status_code == 413 and "limit" in r.json()["status"]["info"]
        assert post(server, "/predict", {"data": {"ndarray": [[1]]}}).status_code == 200


def test_bad_metrics_are_500(tmp_path):
    with running(["BadMetrics"]) as server:
        status, reason, _ = _status(post(server, "/predict", {"data": {"ndarray": [[1]]}}))
        assert (status, reason) == (500, "MICROSERVICE_BAD_METRIC")


# --------------------------------------------------------------------------- HTTP/1.1 behaviour

def test_keep_alive_many_requests_one_connection(doubler):
    with requests.Session() as s:
        ports = set()
        for i in range(300):
            r = s.post(doubler.url + "/predict", json={"data": {"ndarray": [[i]]}}, timeout=5)
            assert r.json()["data"]["ndarray"] == [[2 * i]]
            ports.add(r.raw._connection.sock.getsockname()[1] if r.raw._connection and r.raw._connection.sock else None)
    assert len(ports - {None}) <= 1


def _raw_exchange(server, payload: bytes, expect_responses: int) -> bytes:
    with socket.create_connection(("127.0.0.1", server.http_port), timeout=10) as sock:
        sock.sendall(payload)
        data = b""
        while data.count(b"HTTP/1.1 ") < expect_responses or not data.endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    return data


def test_pipelining_answers_in_order(doubler):
    reqs = b""
    for i in range(5):
        body = json.dumps({"data": {"ndarray": [[i]]}}).encode()
        reqs += b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    data = _raw_exchange(doubler, reqs, 5)
    bodies = [json.loads(part.split(b"\r\n\r\n", 1)[1]) for part in data.split(b"HTTP/1.1 ")[1:]]
    assert [b["data"]["ndarray"][0][0] for b in bodies] == [0, 2, 4, 6, 8]


def test_chunked_request_body(doubler):
    body = json.dumps({"data": {"ndarray": [[21]]}}).encode()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7)) + b"0\r\n\r\n"
    req = b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n" + chunks
    data = _raw_exchange(doubler, req, 1)
    assert data.startswith(b"HTTP/1.1 200")
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["data"]["ndarray"] == [[42]]


def test_malformed_http_gets_400_and_server_survives(doubler):
    data = _raw_exchange(doubler, b"THIS IS NOT HTTP\r\n\r\n", 1)
    assert data.startswith(b"HTTP/1.1 400")
    assert post(doubler, "/predict", {"data": {"ndarray": [[1]]}}).status_code == 200


def test_concurrent_clients_get_their_own_answers(doubler):
    errors = []

    def client(k):
        with requests.Session() as s:
            for i in range(40):
                v = k * 1000 + i
                r = s.post(doubler.url + "/predict", json={"data": {"ndarray": [[v]]}}, timeout=10)
                if r.json()["data"]["ndarray"] != [[2 * v]]:
                    errors.append((v, r.text))

    threads = [threading.Thread(target=client, args=(k,)) for k in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_cors_like_flask_cors(doubler):
    r = requests.post(doubler.url + "/predict", json={"data": {"ndarray": [[1]]}}, timeout=5)
    assert r.headers["access-control-allow-origin"] == "*"
    r = requests.post(doubler.url + "/predict", json={"data": {"ndarray": [[1]]}}, headers={"Origin": "http://x"}, timeout=5)
    assert r.headers["access-control-allow-origin"] == "http://x"
    r = requests.options(doubler.url + "/api/v1.0/predictions", headers={"Origin": "http://x",
                         "Access-Control-Request-Headers": "content-type"}, timeout=5)
    assert r.status_code == 200 and r.headers["access-control-allow-headers"] == "content-type"


# --------------------------------------------------------------------------- models written against seldon_core
# (the real package in the seldon-core CI environments, tests/models/seldon_stub elsewhere)

@pytest.fixture(scope="module")
def subclass():
    with running(["SeldonSubclass"], env=seldon_core_env()) as server:
        yield server


def test_seldon_component_subclass_base_hooks_are_absent(subclass):
    out = post(subclass, "/predict", {"data": {"ndarray": [[1, 2]]}, "meta": {"puid": "p"}})
    assert out.status_code == 200, out.text  # no "tags is not implemented" from the base class
    assert out.json() == {"data": {"names": ["t:0", "t:1"], "ndarray": [[2.0, 4.0]]},
                          "meta": {"puid": "p", "tags": {"runtime": "tag"},
                                   "metrics": [{"key": "subclass_calls", "type": "COUNTER", "value": 1.0,
                                                "tags": {"kind": "runtime", "method": "predict"}}]}}
    # transform_input raises SeldonNotImplementedError at call time: identity
    assert post(subclass, "/transform-input", {"data": {"ndarray": [[5]]}}).json() == {
        "data": {"names": ["t:0"], "ndarray": [[5]]}, "meta": {}}
    assert post(subclass, "/transform-output", {"strData": "x"}).json() == {"meta": {"tags": {"out": "yes"}}, "strData": "x"}
    # health_status_raw is the base's: falls through to the user's health_status
    assert requests.get(subclass.url + "/health/status", timeout=5).json() == {"jsonData": {"healthy": True}, "meta": {}}
    # the base route/aggregate raise, and Seldon answers that: 400 with their message
    status, _, info = _status(post(subclass, "/route", {"data": {"ndarray": [[1]]}}))
    assert (status, info) == (400, "route is not implemented")
    status, _, info = _status(post(subclass, "/aggregate", [{"data": {"ndarray": [[1]]}}]))
    assert (status, info) == (400, "aggregate is not implemented")
    text = subclass.scrape("subclass_calls_total")
    assert 'subclass_calls_total{' in text and 'kind="runtime"' in text and 'method="predict"' in text


def test_user_exception_with_status_code_and_to_dict(subclass):
    """Seldon's documented model_error_handler pattern, without Flask: that status, to_dict() as the body."""
    r = post(subclass, "/predict", {"jsonData": {"fail": 1}})
    assert r.status_code == 402
    assert r.json() == {"status": {"status": 402, "message": "Test-Error-Msg", "app_code": 1402}}


def test_health_status_without_any_hook_is_healthy():
    with running(["LegacyHooks"]) as plain:
        assert requests.get(plain.url + "/health/status", timeout=5).json() == {"meta": {}, "strData": "healthy"}


def test_legacy_rest_hooks():
    with running(["LegacyHooks"]) as server:
        assert post(server, "/predict", {"data": {"ndarray": [[1, 2]]}}).json() == {
            "jsonData": {"via": "predict_rest", "got": {"data": {"ndarray": [[1, 2]]}}}}
        assert post(server, "/transform-input", {"data": {"ndarray": [[1], [2]]}}).json() == {
            "strData": "via transform_input_rest", "meta": {"tags": {"n": 2}}}
        assert post(server, "/route", {"data": {"ndarray": [[1]]}}).json() == {"data": {"ndarray": [[7]]}}
        assert post(server, "/aggregate", {"seldonMessages": [{"strData": "a"}, {"strData": "b"}]}).json() == {
            "strData": "via aggregate_rest: 2"}
        fb = {"request": {"data": {"ndarray": [[1]]}}, "reward": 0.5}
        assert post(server, "/api/v1.0/feedback", fb).json() == {"strData": "via send_feedback_rest: 0.5"}


def test_raw_dict_reply_metrics_recorded_and_dropped_when_asked():
    with running(["RawProto"], env={"INCLUDE_METRICS_IN_CLIENT_RESPONSE": "false"}) as server:
        assert post(server, "/predict", {"data": {"ndarray": [[1]]}}).json() == {"strData": "rest", "meta": {"tags": {"t": "rest"}}}
        assert 'raw_rest_total_calls_total{' in server.scrape("raw_rest_total_calls_total")


def test_feedback_counters_carry_seldon_labels():
    env = {"PREDICTIVE_UNIT_ID": "unit-a", "PREDICTIVE_UNIT_IMAGE": "repo/img:1.2", "SELDON_DEPLOYMENT_ID": "dep"}
    with running(["Rich"], env=env) as server:
        post(server, "/api/v1.0/feedback", {"request": {"data": {"ndarray": [[1]]}}, "reward": 2.0})
        text = server.scrape("seldon_api_model_feedback_reward_total")
    line = next(x for x in text.splitlines() if x.startswith("seldon_api_model_feedback_total{"))
    for label in ('method="feedback"', 'model_name="unit-a"', 'model_image="repo/img"', 'model_version="1.2"',
                  'deployment_name="dep"', 'predictor_name="NOT_IMPLEMENTED"', 'image_name="repo/img"'):
        assert label in line, line
    assert any(x.startswith("seldon_api_model_feedback_reward_total{") and x.endswith(" 2.0") for x in text.splitlines())


def test_model_metadata_is_yaml():
    meta = "name: from-yaml\nversions: [v1, v2,]\ncustom: {team: ml}\n"
    with running(["Doubler"], env={"MODEL_METADATA": meta}) as server:
        got = requests.get(server.url + "/metadata", timeout=5).json()
    assert (got["name"], got["versions"], got["custom"]) == ("from-yaml", ["v1", "v2"], {"team": "ml"})


def test_seldon_json_describes_the_api(doubler):
    r = requests.get(doubler.url + "/seldon.json", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    doc = r.json()
    assert doc["openapi"].startswith("3.") and {"/api/v1.0/predictions", "/predict", "/send-feedback", "/aggregate",
                                               "/health/status", "/metadata"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert set(schemas["SeldonMessage"]["properties"]) == {"status", "meta", "data", "binData", "strData", "jsonData", "customData"}
    refs = set(re.findall(r'"#/components/schemas/(\w+)"', r.text))
    assert refs <= set(schemas), refs - set(schemas)
