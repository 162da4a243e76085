"""The model registry behind ``--repository`` and a graph's per-node V2 routes: how a repository
folder is read, what load/unload/get answer, and how a V2 gRPC request's model name is found."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from fastseldon import registry as registry_mod
from fastseldon import v2_protocol as v2
from fastseldon.errors import BadRequest, NotFound, NotSupported, Unavailable
from fastseldon.proto import grpc_service_pb2 as pb
from fastseldon.registry import Entry, ModelRegistry, Repository, SharedState
from fastseldon.settings import ONNX_CLASS, UnitSettings

BASE = UnitSettings(interface_name="repository", model_name="repository", max_batch_size=8, max_batch_time_ms=2.0)

# --------------------------------------------------------------------------- the model name of a gRPC request


def infer_request(name: str) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name=name, model_version="1", id="req-7")
    req.parameters["priority"].int64_param = 3
    tensor = req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    tensor.parameters["binary_data_size"].int64_param = 16
    req.raw_input_contents.append(b"\x00" * 16)
    return req


@pytest.mark.parametrize("name", ["doubler", "", "ünïcode-模型", "x" * 300])
def test_the_model_name_is_read_as_protobuf_reads_it(name):
    body = infer_request(name).SerializeToString()
    assert v2.grpc_model_name(body) == pb.ModelInferRequest.FromString(body).model_name == name


def test_the_name_is_found_wherever_it_is_and_the_last_one_counts():
    tail = pb.ModelInferRequest(model_name="late").SerializeToString()
    head = pb.ModelInferRequest(model_name="early").SerializeToString()
    body = head + infer_request("").SerializeToString() + tail  # concatenated messages merge: the last name wins
    assert pb.ModelInferRequest.FromString(body).model_name == "late" == v2.grpc_model_name(body)


@pytest.mark.parametrize("message", [pb.ModelReadyRequest(name="m", version="2"), pb.ModelMetadataRequest(name="m"),
                                     pb.ModelStatisticsRequest(name="m", version="1")])
def test_the_other_model_requests_have_their_name_in_field_one(message):
    assert v2.grpc_model_name(message.SerializeToString()) == "m"


@pytest.mark.parametrize(("body", "needle"), [
    (infer_request("m").SerializeToString()[:-3], "past the end"),
    (b"\x0a", "truncated varint"),
    (b"\x0b", "wire type 3"),
    (b"\x0a\x02\xff\xfe", "not UTF-8"),
])
def test_a_malformed_request_is_a_bad_request(body, needle):
    with pytest.raises(BadRequest, match=needle):
        v2.grpc_model_name(body)


# --------------------------------------------------------------------------- reading a repository folder


def model_folder(root: Path, name: str, files: dict[str, str], env: str | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    for file, text in files.items():
        (folder / file).write_text(text)
    if env is not None:
        (folder / ".s2i").mkdir()
        (folder / ".s2i" / "environment").write_text(env)
    return folder


def test_a_python_model_takes_its_class_parameters_and_settings_from_its_s2i_environment(tmp_path):
    params = json.dumps([{"name": "k", "value": "3", "type": "INT"}])
    model_folder(tmp_path, "scorer", {"Scorer.py": "class Scorer: pass\n"},
                 f"MODEL_NAME=Scorer\nSERVICE_TYPE=transformer\nPREDICTIVE_UNIT_PARAMETERS={params}\nMAX_BATCH_SIZE=32\n")
    model_folder(tmp_path, "plain", {"MyModel.py": "class MyModel: pass\n"})
    entries = {e.name: e for e in Repository(tmp_path, BASE).scan()}
    scorer, plain = entries["scorer"].unit, entries["plain"].unit
    assert scorer is not None and plain is not None
    assert (scorer.interface_name, scorer.model_name, scorer.service_type) == ("Scorer", "scorer", "TRANSFORMER")
    assert json.loads(scorer.parameters) == json.loads(params) and scorer.max_batch_size == 32
    assert scorer.max_batch_time_ms == 5.0  # the s2i default once batching is on, as in graphs
    assert (plain.interface_name, plain.service_type, plain.max_batch_size) == ("MyModel", "MODEL", 8)  # server-wide flags
    assert plain.predictive_unit_id == "plain" and entries["plain"].source == tmp_path / "plain"


def test_onnx_models_are_folders_with_an_onnx_file_or_bare_files(tmp_path):
    model_folder(tmp_path, "iris", {"model.onnx": ""}, "DEVICE=cpu\n")
    model_folder(tmp_path, "named", {"weights.onnx": "", "other.onnx": ""}, "ONNX_MODEL=weights.onnx\n")
    (tmp_path / "bare.onnx").write_text("")
    (tmp_path / "notes.txt").write_text("not a model")
    model_folder(tmp_path, ".hidden", {"MyModel.py": ""})
    model_folder(tmp_path, "__pycache__", {})
    entries = {e.name: e.unit for e in Repository(tmp_path, BASE, device="cuda").scan()}
    assert sorted(entries) == ["bare", "iris", "named"]
    params = {name: {p["name"]: p["value"] for p in json.loads(unit.parameters)} for name, unit in entries.items() if unit}
    assert all(unit is not None and unit.interface_name == ONNX_CLASS for unit in entries.values())
    assert params["iris"] == {"model_uri": str((tmp_path / "iris").resolve()), "device": "cpu"}  # its own DEVICE wins
    assert params["named"]["model_uri"] == str((tmp_path / "named" / "weights.onnx").resolve())
    assert params["bare"] == {"model_uri": str((tmp_path / "bare.onnx").resolve()), "device": "cuda"}


@pytest.mark.parametrize(("files", "env", "needle"), [
    ({}, None, "model 'm': m/ has no MyModel.py"),
    ({"Model.py": ""}, "MODEL_NAME=Other\n", "has no Other.py"),
    ({"MyModel.py": ""}, "SERVICE_TYPE=WIZARD\n", "unknown SERVICE_TYPE 'WIZARD'"),
    ({"MyModel.py": ""}, "MAX_BATCH_SIZE=lots\n", "MAX_BATCH_SIZE has a bad value 'lots'"),
    ({"MyModel.py": ""}, 'PREDICTIVE_UNIT_PARAMETERS=[{"name":"a","value":"1"}]\n', "Bad model parameter type"),
])
def test_a_folder_that_cannot_be_served_is_named(tmp_path, files, env, needle):
    model_folder(tmp_path, "m", files, env)
    with pytest.raises(ValueError, match="model 'm'") as err:
        Repository(tmp_path, BASE).scan()
    assert needle in str(err.value)


def test_find_describes_a_model_from_disk_and_only_inside_the_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    model_folder(tmp_path, "outside", {"MyModel.py": ""})
    repository = Repository(repo, BASE)
    assert repository.find("late") is None
    model_folder(repo, "late", {"MyModel.py": ""})
    found = repository.find("late")
    assert found is not None and found.unit is not None and found.unit.model_name == "late"
    for name in ("../outside", ".", "..", "", "_x"):
        assert repository.find(name) is None


# --------------------------------------------------------------------------- the registry


class FakeApp:
    def __init__(self, label: str):
        self.label = label
        self.released = False

    def release(self) -> None:
        self.released = True


def registry_with(loads: list[str], fail: set[str] | None = None, shared: SharedState | None = None) -> ModelRegistry:
    """A registry over models 'a' and 'b' whose loader makes FakeApps (or fails for names in ``fail``)."""
    counter = iter(range(100))

    async def loader(entry: Entry) -> FakeApp:
        loads.append(entry.name)
        if fail and entry.name in fail:
            raise RuntimeError(f"{entry.name} is broken")
        return FakeApp(f"{entry.name}{next(counter)}")

    def find(name: str) -> Entry | None:
        return Entry(name, BASE) if name in ("a", "b", "c") else None

    return ModelRegistry([Entry("a", BASE, app=FakeApp("a-start")), Entry("b", BASE, app=FakeApp("b-start"))],
                         loader=loader, find=find, shared=shared)


def test_get_answers_the_loaded_app_and_404_otherwise():
    registry = registry_with([])
    assert registry.get("a").label == "a-start"
    with pytest.raises(NotFound, match=r"'zz' is not served here; models: \['a', 'b'\]"):
        registry.get("zz")


def test_unload_then_load_replaces_the_app_and_the_index_follows():
    loads: list[str] = []
    registry = registry_with(loads)
    first = registry.get("a")
    asyncio.run(registry.unload("a"))
    assert first.released and not registry.is_loaded("a") and registry.known("a")
    with pytest.raises(NotFound, match="'a' is not loaded \\(unloaded\\)"):
        registry.get("a")
    assert registry.index() == [{"name": "a", "state": "UNAVAILABLE", "reason": "unloaded"}, {"name": "b", "state": "READY"}]
    assert registry.index(ready_only=True) == [{"name": "b", "state": "READY"}]
    asyncio.run(registry.unload("a"))  # again: nothing to do, no error
    asyncio.run(registry.load("a"))
    assert loads == ["a"] and registry.get("a").label == "a0"
    old_b = registry.get("b")
    asyncio.run(registry.load("b"))  # loading a loaded model loads it again and retires the old one
    assert registry.get("b").label == "b1" and old_b.released
    asyncio.run(registry.load("c"))  # on disk, not known at start
    assert registry.get("c").label == "c2"


def test_a_failed_load_keeps_the_old_app_serving_or_records_why():
    registry = registry_with([], fail={"a", "c"})
    with pytest.raises(BadRequest, match="Failed to load model 'a': a is broken"):
        asyncio.run(registry.load("a"))
    assert registry.get("a").label == "a-start" and not registry.get("a").released
    with pytest.raises(BadRequest, match="c is broken"):
        asyncio.run(registry.load("c"))
    assert registry.index()[-1] == {"name": "c", "state": "UNAVAILABLE", "reason": "load failed: c is broken"}


def test_unknown_names_are_404():
    registry = registry_with([])
    for action in (registry.load, registry.unload):
        with pytest.raises(NotFound, match="no such model"):
            asyncio.run(action("zz"))
    assert registry.get("a").label == "a-start"


# --------------------------------------------------------------------------- every worker follows (--workers N)


def two_workers(tmp_path: Path, fail_in_b: set[str] | None = None) -> tuple[ModelRegistry, ModelRegistry, list[str]]:
    """Two registries sharing one state folder, as two workers of a server (this process and its
    parent stand in for their process ids: both are alive)."""
    loads_b: list[str] = []
    a = registry_with([], shared=SharedState(tmp_path, worker=os.getpid()))
    b = registry_with(loads_b, fail=fail_in_b, shared=SharedState(tmp_path, worker=os.getppid()))
    for worker in (a, b):
        assert worker.shared is not None
        worker.applied = 0
        worker.shared.ack(0, {})
    return a, b, loads_b


async def following(worker: ModelRegistry, action: Any) -> None:
    """Run ``action`` while ``worker`` syncs as a worker's flush does (here every 10 ms)."""
    async def follow() -> None:
        while True:
            await worker.sync()
            await asyncio.sleep(0.01)

    task = asyncio.ensure_future(follow())
    try:
        await action
    finally:
        task.cancel()


def test_a_change_is_answered_once_every_worker_applied_it(tmp_path):
    a, b, loads_b = two_workers(tmp_path)
    asyncio.run(following(b, a.unload("a")))
    with pytest.raises(NotFound, match="not loaded"):
        b.get("a")
    asyncio.run(following(b, a.load("a")))
    assert loads_b == ["a"] and b.get("a").label.startswith("a")
    asyncio.run(following(a, b.load("c")))  # either worker may take the request
    assert a.get("c") and b.get("c") and a.applied == b.applied == 3


def test_a_worker_that_cannot_follow_a_load_is_reported(tmp_path):
    a, b, _ = two_workers(tmp_path, fail_in_b={"c"})
    with pytest.raises(BadRequest, match=f"in every worker: worker {os.getppid()}: Failed to load model 'c': c is broken"):
        asyncio.run(following(b, a.load("c")))


def test_a_worker_that_does_not_answer_makes_the_change_time_out(tmp_path, monkeypatch):
    monkeypatch.setattr(registry_mod, "SYNC_TIMEOUT", 0.3)
    a, b, _ = two_workers(tmp_path)
    with pytest.raises(Unavailable, match="did not follow within 0.3s"):
        asyncio.run(a.unload("b"))  # b never syncs
    assert not a.is_loaded("b") and b.is_loaded("b")


def test_a_dead_workers_acknowledgement_is_not_waited_for(tmp_path):
    a, _, _ = two_workers(tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    SharedState(tmp_path, worker=dead.pid).ack(-1, {})
    (tmp_path / f"ack-{os.getppid()}.json").unlink()
    asyncio.run(a.unload("a"))
    assert not (tmp_path / f"ack-{dead.pid}.json").exists()


def test_a_fixed_registry_refuses_loads_and_unloads():
    registry = ModelRegistry([Entry("node", app=FakeApp("n"))], fixed="a graph's units are fixed")
    with pytest.raises(NotSupported, match="Cannot unload model 'node': a graph's units are fixed"):
        asyncio.run(registry.unload("node"))
    with pytest.raises(NotFound):
        asyncio.run(registry.load("other"))
    assert registry.get("node").label == "n"
