"""OnnxModel in-process: numpy reference agreement, input coercion, errors, metadata, fork."""
from __future__ import annotations

import multiprocessing
import os

import numpy as np
import onnxruntime as ort
import pytest

from fastseldon.errors import BadRequest
from fastseldon.runtimes.onnx import PLATFORM, OnnxModel
from support.onnx_models import Mlp, TwoInput, save_bool_not, save_string_identity

CUDA_BUILT = "CUDAExecutionProvider" in ort.get_available_providers()
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(scope="module")
def mlp() -> Mlp:
    return Mlp()


@pytest.fixture(scope="module")
def mlp_path(tmp_path_factory, mlp) -> str:
    return str(mlp.save(tmp_path_factory.mktemp("mlp") / "mlp.onnx"))


@pytest.fixture(scope="module")
def two_path(tmp_path_factory) -> str:
    return str(TwoInput().save(tmp_path_factory.mktemp("two") / "two.onnx"))


def loaded(path: str, **kwargs) -> OnnxModel:
    model = OnnxModel(model_uri=path, device=kwargs.pop("device", "cpu"), **kwargs)
    model.load()
    return model


# ----------------------------------------------------------------------------- MLP, one input
@pytest.mark.parametrize("rows", [1, 7, 64])
def test_mlp_matches_numpy_for_seldon_tensor_input(mlp, mlp_path, rows):
    model = loaded(mlp_path)
    x = np.random.default_rng(rows).normal(size=(rows, 4))  # float64, as Seldon's tensor decodes
    out = model.predict(x, [])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (rows, 3)
    np.testing.assert_allclose(out, mlp.reference(x), rtol=RTOL, atol=ATOL)


def test_mlp_accepts_int_ndarray_and_nested_list(mlp, mlp_path):
    model = loaded(mlp_path)
    x = np.array([[1, 2, 3, 4], [0, -1, 5, 2]])  # int64, as Seldon's ndarray of ints decodes
    np.testing.assert_allclose(model.predict(x, ["a", "b", "c", "d"]), mlp.reference(x), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(model.predict(x.tolist(), []), mlp.reference(x), rtol=RTOL, atol=ATOL)


def test_mlp_accepts_non_contiguous_input(mlp, mlp_path):
    model = loaded(mlp_path)
    x = np.random.default_rng(3).normal(size=(4, 5)).astype(np.float32).T[:4]  # Fortran-ordered view
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(model.predict(x, []), mlp.reference(x), rtol=RTOL, atol=ATOL)


def test_io_binding_path_gives_the_same_result(mlp, mlp_path):
    x = np.random.default_rng(5).normal(size=(9, 4))
    plain = loaded(mlp_path, io_binding="off")
    bound = loaded(mlp_path, io_binding="on")
    assert bound._use_io_binding and not plain._use_io_binding
    np.testing.assert_allclose(bound.predict(x, []), mlp.reference(x), rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(bound.predict(x, []), plain.predict(x, []))


@pytest.mark.parametrize("level", ["disable", "basic", "extended", "all"])
def test_optimisation_levels_and_threads_agree(mlp, mlp_path, level):
    model = loaded(mlp_path, graph_optimization_level=level, intra_op_threads=1, inter_op_threads=2)
    x = np.random.default_rng(11).normal(size=(5, 4))
    np.testing.assert_allclose(model.predict(x, []), mlp.reference(x), rtol=RTOL, atol=ATOL)


def test_parameters_arrive_as_strings(mlp_path):
    model = OnnxModel(model_uri=mlp_path, device="cpu", intra_op_threads="2", inter_op_threads="1")
    assert (model.intra_op_threads, model.inter_op_threads) == (2, 1)


@pytest.mark.parametrize(
    ("x", "needle"),
    [
        (np.zeros((2, 5)), "got shape [2, 5]"),
        (np.zeros(4), "got shape [4]"),
        (np.zeros((1, 2, 4)), "got shape [1, 2, 4]"),
        (np.array([["a", "b", "c", "d"]]), "got string values"),
        ([[1, 2, 3, 4], [1, 2]], "ragged"),
        (np.array([[1 + 2j, 0, 0, 0]]), "got complex values"),
        ("1,2,3,4", "got str"),
    ],
)
def test_mlp_rejects_bad_input_with_a_clear_400(mlp_path, x, needle):
    model = loaded(mlp_path)
    with pytest.raises(BadRequest) as info:
        model.predict(x, [])
    assert info.value.http_status == 400
    assert "input 'x' expects FP32 with shape [-1, 4]" in str(info.value)
    assert needle in str(info.value)


def test_static_batch_dimension_is_enforced(tmp_path, mlp):
    path = str(Mlp(batch=2).save(tmp_path / "static.onnx"))
    model = loaded(path)
    assert model.predict(np.ones((2, 4)), []).shape == (2, 3)
    with pytest.raises(BadRequest, match=r"expects FP32 with shape \[2, 4\]; got shape \[3, 4\]"):
        model.predict(np.ones((3, 4)), [])
    assert model.batchable is False
    assert loaded(str(Mlp().save(tmp_path / "dyn.onnx"))).batchable is True


# ----------------------------------------------------------------------------- two inputs, two outputs
def test_two_inputs_from_seldon_json_data(two_path):
    model = loaded(two_path)
    a = [[0.5, 1.5, -2.0], [1.0, 2.0, 3.0]]
    b = [[1, 2, 3], [4, 5, 6]]
    out = model.predict({"a": a, "b": b}, [])
    assert set(out) == {"y", "total"}
    assert isinstance(out["y"], list) and isinstance(out["total"], list)  # JSON-ready for jsonData
    ref = TwoInput.reference(a, b)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=RTOL)
    np.testing.assert_allclose(out["total"], ref["total"], rtol=RTOL)


def test_two_inputs_as_named_arrays_give_named_arrays(two_path):
    model = loaded(two_path)
    rng = np.random.default_rng(2)
    a = rng.normal(size=(6, 3)).astype(np.float32)
    b = rng.integers(-5, 5, size=(6, 3))
    out = model.predict({"a": a, "b": b}, [])
    assert out["y"].dtype == np.float32 and out["y"].shape == (6, 3)
    assert out["total"].dtype == np.float32 and out["total"].shape == (6,)
    ref = TwoInput.reference(a, b)
    np.testing.assert_allclose(out["y"], ref["y"], rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(out["total"], ref["total"], rtol=RTOL, atol=1e-5)
    assert model.infer({"a": a, "b": b}).keys() == {"y", "total"}


def test_integral_floats_are_accepted_for_an_int64_input(two_path):
    model = loaded(two_path)
    out = model.predict({"a": [[1.0, 1.0, 1.0]], "b": [[2.0, 3.0, -4.0]]}, [])
    assert out["total"] == [1.0]


@pytest.mark.parametrize(
    ("inputs", "needle"),
    [
        ({"a": [[1.0, 2.0, 3.0]]}, "missing input(s) ['b']"),
        ({"a": [[1.0, 2.0, 3.0]], "b": [[1, 2, 3]], "c": [1]}, "unknown input(s) ['c']"),
        ({"a": [[1.0, 2.0, 3.0]], "b": [[1.5, 2, 3]]}, "input 'b' expects INT64 with shape [-1, 3]; got non-integer values"),
        ({"a": [[1.0, 2.0, 3.0]], "b": [[1e30, 2, 3]]}, "values out of range"),
        ({"a": [[1.0, 2.0]], "b": [[1, 2, 3]]}, "input 'a' expects FP32 with shape [-1, 3]; got shape [1, 2]"),
        ({"a": [[1.0, 2.0, 3.0]], "b": [[1, 2, 3], [4, 5, 6]]}, "dimension 'batch' is 1 in input 'a' but 2 in input 'b'"),
        ({"a": "oops", "b": [[1, 2, 3]]}, "input 'a' expects FP32"),
        ({"a": {"nested": 1}, "b": [[1, 2, 3]]}, "got dict"),
    ],
)
def test_two_input_errors(two_path, inputs, needle):
    model = loaded(two_path)
    with pytest.raises(BadRequest) as info:
        model.predict(inputs, [])
    assert needle in str(info.value)


def test_array_sent_to_a_two_input_model_says_how_to_name_inputs(two_path):
    model = loaded(two_path)
    with pytest.raises(BadRequest, match=r"the model has 2 inputs \(a, b\); send them by name"):
        model.predict(np.ones((1, 3)), [])


def test_outputs_parameter_selects_outputs(two_path):
    model = loaded(two_path, outputs="total")
    out = model.predict({"a": [[1.0, 2.0, 3.0]], "b": [[1, 1, 1]]}, [])
    assert out == {"total": [6.0]}
    assert [o["name"] for o in model.init_metadata()["outputs"]] == ["total"]
    with pytest.raises(ValueError, match=r"outputs \['nope'\] are not outputs"):
        loaded(two_path, outputs="total,nope")


def test_single_input_multi_output_array_request_gives_json_dict(tmp_path):
    # An array in with several outputs: Seldon replies jsonData, so lists, not arrays.
    from onnx import TensorProto, helper

    from support.onnx_models import _save

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["neg"]), helper.make_node("Abs", ["x"], ["abs"])],
        "split",
        [helper.make_tensor_value_info("x", TensorProto.DOUBLE, ["n", 2])],
        [helper.make_tensor_value_info("neg", TensorProto.DOUBLE, ["n", 2]),
         helper.make_tensor_value_info("abs", TensorProto.DOUBLE, ["n", 2])],
    )
    model = loaded(str(_save(graph, tmp_path / "split.onnx")))
    assert model.predict(np.array([[1.0, -2.0]]), []) == {"neg": [[-1.0, 2.0]], "abs": [[1.0, 2.0]]}


@pytest.mark.parametrize(("shape", "wire"), [(None, [-1]), ([None, 3], [-1, 3])], ids=["unknown-rank", "anonymous-dim"])
def test_undeclared_dimensions_are_dynamic(tmp_path, shape, wire):
    from onnx import TensorProto, helper

    from support.onnx_models import _save

    graph = helper.make_graph(
        [helper.make_node("Neg", ["x"], ["y"])],
        "neg",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
    )
    model = loaded(str(_save(graph, tmp_path / "neg.onnx", check=shape is not None)))
    assert model.init_metadata()["inputs"] == [{"name": "x", "datatype": "FP32", "shape": wire}]
    np.testing.assert_array_equal(model.predict(np.array([[1, -2, 3]]), []), [[-1, 2, -3]])
    if shape is None:  # any rank goes
        np.testing.assert_array_equal(model.predict(np.array([4.0]), []), [-4.0])
    else:
        with pytest.raises(BadRequest, match=r"shape \[-1, 3\]; got shape \[1, 2\]"):
            model.predict(np.array([[1, 2]]), [])


# ----------------------------------------------------------------------------- other element types
def test_bool_input_casts_only_zero_and_one(tmp_path):
    model = loaded(str(save_bool_not(tmp_path / "not.onnx")))
    np.testing.assert_array_equal(model.predict(np.array([1, 0, 1]), []), [False, True, False])
    np.testing.assert_array_equal(model.predict(np.array([True, False]), []), [False, True])
    with pytest.raises(BadRequest, match="expects BOOL with shape \\[-1\\]; got values other than 0 and 1"):
        model.predict(np.array([2, 0]), [])


def test_string_input(tmp_path):
    model = loaded(str(save_string_identity(tmp_path / "s.onnx")))
    assert model.predict(np.array(["héllo", "x"]), []).tolist() == ["héllo", "x"]
    assert model.predict(np.array([b"ab", b"c"]), []).tolist() == ["ab", "c"]
    with pytest.raises(BadRequest, match="expects BYTES with shape \\[-1\\]; got float64 values"):
        model.predict(np.array([1.0]), [])
    assert model.init_metadata()["inputs"] == [{"name": "s", "datatype": "BYTES", "shape": [-1]}]


# ----------------------------------------------------------------------------- metadata
def test_metadata_mlp(mlp_path):
    meta = loaded(mlp_path).init_metadata()
    assert meta["platform"] == PLATFORM == "onnx_onnxv1"
    assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}]
    assert meta["outputs"] == [{"name": "probs", "datatype": "FP32", "shape": [-1, 3]}]
    custom = meta["custom"]
    assert custom["execution_provider"] == "CPUExecutionProvider"
    assert custom["onnx_producer"] == "fastseldon-tests"
    assert custom["purpose"] == "test-mlp"  # the model's own metadata_props
    assert all(isinstance(v, str) for v in custom.values())  # Seldon's schema wants strings
    assert set(meta) <= {"name", "versions", "platform", "inputs", "outputs", "custom"}


def test_metadata_two_input(two_path):
    meta = loaded(two_path).init_metadata()
    assert meta["inputs"] == [
        {"name": "a", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "b", "datatype": "INT64", "shape": [-1, 3]},
    ]
    assert meta["outputs"] == [
        {"name": "y", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "total", "datatype": "FP32", "shape": [-1]},
    ]


def test_metadata_before_load_builds_the_session(mlp_path):
    model = OnnxModel(model_uri=mlp_path, device="cpu")
    assert model.init_metadata()["inputs"][0]["name"] == "x"


# ----------------------------------------------------------------------------- load failures
def test_missing_file_fails_at_load(tmp_path):
    model = OnnxModel(model_uri=str(tmp_path / "nope.onnx"))
    with pytest.raises(FileNotFoundError, match="nope.onnx.*no such ONNX model file"):
        model.load()


def test_invalid_model_fails_at_load(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"this is not a protobuf \x00\xff" * 10)
    with pytest.raises(ValueError, match="cannot load ONNX model .*bad.onnx"):
        OnnxModel(model_uri=str(bad)).load()


def test_model_uri_may_be_a_folder(tmp_path, mlp):
    folder = tmp_path / "models"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="holds no .onnx file"):
        OnnxModel(model_uri=str(folder)).load()
    mlp.save(folder / "a.onnx")
    assert loaded("file://" + str(folder)).inputs[0].name == "x"
    mlp.save(folder / "b.onnx")
    with pytest.raises(ValueError, match="several .onnx files"):
        OnnxModel(model_uri=str(folder)).load()
    mlp.save(folder / "model.onnx")
    assert loaded(str(folder)).inputs[0].name == "x"


def test_remote_uri_is_refused(mlp_path):
    with pytest.raises(ValueError, match="only local paths"):
        OnnxModel(model_uri="s3://bucket/model.onnx").load()


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"device": "tpu"}, "expected auto, cpu, cuda or cuda:N"),
        ({"device": "cpu:1"}, "expected auto, cpu, cuda or cuda:N"),
        ({"graph_optimization_level": "max"}, "expected one of disable, basic, extended, all"),
        ({"intra_op_threads": -1}, "non-negative integer"),
        ({"inter_op_threads": "many"}, "non-negative integer"),
        ({"io_binding": "maybe"}, "expected auto, on or off"),
    ],
)
def test_bad_parameters_fail_in_the_constructor(mlp_path, kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        OnnxModel(model_uri=mlp_path, **kwargs)


# ----------------------------------------------------------------------------- devices
def test_auto_device_picks_what_is_available(mlp_path):
    model = loaded(mlp_path, device="auto")
    expected = "CUDAExecutionProvider" if CUDA_BUILT else "CPUExecutionProvider"
    if CUDA_BUILT and model.provider != expected:
        pytest.skip("onnxruntime-gpu installed but no usable GPU; auto fell back to CPU")
    assert model.provider == expected


@pytest.mark.skipif(CUDA_BUILT, reason="this onnxruntime has CUDAExecutionProvider; see test_onnx_gpu.py")
def test_cuda_device_fails_fast_without_cuda(mlp_path):
    model = OnnxModel(model_uri=mlp_path, device="cuda")
    with pytest.raises(RuntimeError, match="no CUDAExecutionProvider.*install onnxruntime-gpu or use --device cpu"):
        model.load()


# ----------------------------------------------------------------------------- fork
def _predict_in_child(model: OnnxModel, x: np.ndarray, queue) -> None:
    try:
        queue.put(("ok", os.getpid() == model._session_pid, model.predict(x, []).tolist(), os.getpid() == model._session_pid))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        queue.put(("error", repr(exc)))


def test_a_forked_worker_builds_its_own_session(mlp, mlp_path):
    model = loaded(mlp_path, intra_op_threads=2)
    x = np.random.default_rng(8).normal(size=(3, 4))
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_predict_in_child, args=(model, x, queue))
    child.start()
    child.join(60)
    assert child.exitcode == 0, "child hung or died using a session inherited across fork"
    status, owned_before, result, owned_after = queue.get(timeout=5)
    assert status == "ok"
    assert owned_before is False and owned_after is True  # rebuilt in the child, not reused
    np.testing.assert_allclose(result, mlp.reference(x), rtol=RTOL, atol=ATOL)
