"""Serve an ONNX model with ONNX Runtime: a prepackaged Seldon model class, no user code.

``OnnxModel`` is an ordinary Seldon user class, so it works wherever an interface name
does (``fastseldon serve fastseldon.runtimes.onnx.OnnxModel --parameters ...``, s2i,
graphs); ``fastseldon serve --onnx model.onnx`` is the short form.

Inputs: a single-input model takes the Seldon ``ndarray``/``tensor`` array; a model with
several inputs takes a dict ``{input_name: value}`` (Seldon ``jsonData``, or V2 named
inputs as ``{name: np.ndarray}``). Values are cast to the model's element type when that
loses nothing but precision (ints to floats, integral floats to ints, 0/1 to bool), and
checked against the declared rank and static dimensions; anything else is a 400.

Outputs follow the form of the input. An array in gives the array of the single output,
or a JSON-ready ``{output_name: nested list}`` when there are several (Seldon ``jsonData``).
A dict in gives a dict out: of arrays when the input values were all arrays (V2), of
nested lists otherwise (``jsonData``). ``infer`` is the arrays-only core.

Sessions are built in ``load()``, which the server calls in each worker after the fork:
an ONNX Runtime session must never be used (or destroyed) in a process other than the one
that built it, because its thread pool does not survive ``fork``.
"""
from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastseldon.errors import BadRequest

__all__ = ["OnnxModel", "TensorSpec", "coerce_input", "PLATFORM"]

log = logging.getLogger(__name__)

PLATFORM = "onnx_onnxv1"

# ONNX Runtime's element type strings -> (numpy dtype, Open Inference Protocol datatype).
# Strings go to ORT as object arrays of str. bfloat16 has no numpy dtype: reported, not fed.
_ELEMENT_TYPES: dict[str, tuple[np.dtype | None, str]] = {
    "tensor(float)": (np.dtype(np.float32), "FP32"),
    "tensor(double)": (np.dtype(np.float64), "FP64"),
    "tensor(float16)": (np.dtype(np.float16), "FP16"),
    "tensor(bfloat16)": (None, "BF16"),
    "tensor(int8)": (np.dtype(np.int8), "INT8"),
    "tensor(int16)": (np.dtype(np.int16), "INT16"),
    "tensor(int32)": (np.dtype(np.int32), "INT32"),
    "tensor(int64)": (np.dtype(np.int64), "INT64"),
    "tensor(uint8)": (np.dtype(np.uint8), "UINT8"),
    "tensor(uint16)": (np.dtype(np.uint16), "UINT16"),
    "tensor(uint32)": (np.dtype(np.uint32), "UINT32"),
    "tensor(uint64)": (np.dtype(np.uint64), "UINT64"),
    "tensor(bool)": (np.dtype(np.bool_), "BOOL"),
    "tensor(string)": (np.dtype(object), "BYTES"),
}

_DEVICES = ("auto", "cpu", "cuda")
_OPTIMIZATION_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}
_IO_BINDING = ("auto", "on", "off")
_CUDA = "CUDAExecutionProvider"
_CPU = "CPUExecutionProvider"


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """One model input or output as ONNX Runtime declares it.

    ``shape`` is ``None`` when the rank is unknown; a dimension is an int when static and
    a str (symbolic name, "" when anonymous) when dynamic.
    """

    name: str
    onnx_type: str
    dtype: np.dtype | None
    datatype: str
    shape: tuple[int | str, ...] | None

    @property
    def is_tensor(self) -> bool:
        return self.onnx_type.startswith("tensor(")

    @property
    def wire_shape(self) -> list[int]:
        """The shape with every dynamic dimension as -1 (Seldon/V2 metadata convention)."""
        if self.shape is None:
            return [-1]
        return [d if isinstance(d, int) else -1 for d in self.shape]

    def metadata(self) -> dict[str, Any]:
        """KFServing/V2 tensor metadata; non-tensor values (sequences, maps) as jsonData."""
        if not self.is_tensor:
            return {"messagetype": "jsonData", "name": self.name, "schema": {"onnx_type": self.onnx_type}}
        return {"name": self.name, "datatype": self.datatype, "shape": self.wire_shape}

    @classmethod
    def from_node_arg(cls, arg: Any) -> TensorSpec:
        dtype, datatype = _ELEMENT_TYPES.get(arg.type, (None, ""))
        # ORT reports both "rank unknown" and "scalar" as []; treat it as unknown and let ORT
        # itself reject a rank it declared (InvalidArgument -> BadRequest).
        shape = tuple(_dimension(d) for d in arg.shape) if arg.shape else None
        return cls(name=arg.name, onnx_type=arg.type, dtype=dtype, datatype=datatype, shape=shape)


def _dimension(dim: Any) -> int | str:
    """ORT reports a static dim as int, a named one as str, an anonymous one as None."""
    if isinstance(dim, int) and dim >= 0:
        return dim
    return dim if isinstance(dim, str) else ""


def _describe_shape(shape: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _expects(spec: TensorSpec) -> str:
    return f"input '{spec.name}' expects {spec.datatype or spec.onnx_type} with shape {_describe_shape(spec.wire_shape)}"


def _cast(spec: TensorSpec, arr: np.ndarray) -> np.ndarray:
    """Cast to the input's dtype when no value changes beyond float rounding; else BadRequest."""
    target = spec.dtype
    if target is None:
        raise BadRequest(f"input '{spec.name}' has element type {spec.onnx_type}, which this server cannot feed")
    src = arr.dtype
    if src == target:
        return arr
    kind = src.kind
    if target.kind == "O":  # ONNX string tensor
        if kind == "U":
            return arr.astype(object)
        if kind == "S":
            return np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])(arr) if arr.size else arr.astype(object)
        if kind == "O" and all(isinstance(v, str) for v in arr.flat):
            return arr
        raise BadRequest(f"{_expects(spec)}; got {_kind_name(arr)} values")
    if kind not in "biuf":
        raise BadRequest(f"{_expects(spec)}; got {_kind_name(arr)} values")
    if target.kind == "f":
        return arr.astype(target)
    if target.kind == "b":
        if kind != "b" and arr.size and not np.all((arr == 0) | (arr == 1)):
            raise BadRequest(f"{_expects(spec)}; got values other than 0 and 1")
        return arr.astype(target)
    # Integer target: values must be integral and in range.
    if arr.size:
        if kind == "f":
            if not np.all(np.isfinite(arr)) or not np.all(np.floor(arr) == arr):
                raise BadRequest(f"{_expects(spec)}; got non-integer values")
        info = np.iinfo(target)
        lo, hi = arr.min(), arr.max()
        if lo < info.min or hi > info.max:
            raise BadRequest(f"{_expects(spec)}; values out of range [{info.min}, {info.max}]")
    return arr.astype(target)


def _kind_name(arr: np.ndarray) -> str:
    return {"U": "string", "S": "bytes", "O": "object", "c": "complex", "M": "datetime", "m": "timedelta", "V": "raw"}.get(
        arr.dtype.kind, str(arr.dtype)
    )


def coerce_input(spec: TensorSpec, value: Any) -> np.ndarray:
    """Turn one request value into the array ONNX Runtime wants for ``spec``, or raise BadRequest."""
    if isinstance(value, (str, bytes, bytearray, dict)) or value is None:
        raise BadRequest(f"{_expects(spec)}; got {type(value).__name__}")
    if isinstance(value, np.ndarray):
        arr = value
    else:
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):
            raise BadRequest(f"{_expects(spec)}; got a ragged or mixed nested list") from None
        if arr.dtype.kind == "O" and spec.dtype is not None and spec.dtype.kind != "O":
            raise BadRequest(f"{_expects(spec)}; got a ragged or mixed nested list")
    if spec.shape is not None:
        ok = arr.ndim == len(spec.shape) and all(
            not isinstance(want, int) or want == got for want, got in zip(spec.shape, arr.shape)
        )
        if not ok:
            raise BadRequest(f"{_expects(spec)}; got shape {_describe_shape(arr.shape)}")
    arr = _cast(spec, arr)
    if not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr)
    return arr


def _check_symbolic_dims(specs: list[TensorSpec], feeds: Mapping[str, np.ndarray]) -> None:
    """Inputs that share a named dimension (e.g. "batch") must agree on its size."""
    seen: dict[str, tuple[str, int]] = {}
    for spec in specs:
        if spec.shape is None:
            continue
        for dim, size in zip(spec.shape, feeds[spec.name].shape):
            if not isinstance(dim, str) or not dim:
                continue
            if dim in seen and seen[dim][1] != size:
                other, other_size = seen[dim]
                raise BadRequest(
                    f"dimension '{dim}' is {other_size} in input '{other}' but {size} in input '{spec.name}'"
                )
            seen.setdefault(dim, (spec.name, size))


def _resolve_model_path(model_uri: str) -> str:
    """A .onnx file, or a directory holding model.onnx or exactly one *.onnx file."""
    path = model_uri[len("file://"):] if model_uri.startswith("file://") else model_uri
    if re.match(r"^[a-z][a-z0-9+.-]*://", path):
        raise ValueError(f"model_uri {model_uri!r}: only local paths are supported (download the model first)")
    if os.path.isdir(path):
        candidates = sorted(f for f in os.listdir(path) if f.endswith(".onnx"))
        if "model.onnx" in candidates:
            return os.path.join(path, "model.onnx")
        if len(candidates) == 1:
            return os.path.join(path, candidates[0])
        if not candidates:
            raise FileNotFoundError(f"model_uri {model_uri!r}: directory holds no .onnx file")
        raise ValueError(f"model_uri {model_uri!r}: directory holds several .onnx files {candidates}; name one")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model_uri {model_uri!r}: no such ONNX model file")
    return path


def _parse_device(device: str) -> tuple[str, int]:
    """'auto' | 'cpu' | 'cuda' | 'cuda:N' -> (kind, device id)."""
    kind, _, index = str(device).strip().lower().partition(":")
    if kind not in _DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ValueError(f"device {device!r}: expected auto, cpu, cuda or cuda:N")
    return kind, int(index or 0)


class OnnxModel:
    """Seldon user model that runs an ONNX file with ONNX Runtime on CPU or CUDA.

    Parameters (Seldon ``--parameters`` names): ``model_uri`` (file, or folder with one
    .onnx), ``device`` (auto | cpu | cuda | cuda:N), ``intra_op_threads`` and
    ``inter_op_threads`` (0 = ONNX Runtime's default), ``graph_optimization_level``
    (disable | basic | extended | all), ``outputs`` (comma-separated output names to
    return; default all), ``io_binding`` (auto = on for CUDA | on | off).
    """

    def __init__(
        self,
        model_uri: str,
        device: str = "auto",
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        graph_optimization_level: str = "all",
        outputs: str = "",
        io_binding: str = "auto",
    ):
        self.model_uri = str(model_uri)
        self.device = str(device)
        self._device_kind, self._device_id = _parse_device(device)
        self.intra_op_threads = _non_negative_int("intra_op_threads", intra_op_threads)
        self.inter_op_threads = _non_negative_int("inter_op_threads", inter_op_threads)
        level = str(graph_optimization_level).strip().lower()
        if level not in _OPTIMIZATION_LEVELS:
            raise ValueError(
                f"graph_optimization_level {graph_optimization_level!r}: expected one of {', '.join(_OPTIMIZATION_LEVELS)}"
            )
        self.graph_optimization_level = level
        self._requested_outputs = [n.strip() for n in str(outputs or "").split(",") if n.strip()]
        io_binding = str(io_binding).strip().lower()
        if io_binding not in _IO_BINDING:
            raise ValueError(f"io_binding {io_binding!r}: expected auto, on or off")
        self._io_binding_mode = io_binding
        # Filled by load(); the session belongs to the process that built it.
        self._session: Any = None
        self._session_pid: int | None = None
        self._inherited: list[Any] = []
        self._inputs: list[TensorSpec] = []
        self._input_names: set[str] = set()
        self._shared_dims = False
        self._outputs: list[TensorSpec] = []
        self._output_names: list[str] = []
        self._provider = ""
        self._use_io_binding = False
        self._model_meta: dict[str, str] = {}

    # ----------------------------------------------------------------- Seldon hooks
    def load(self) -> None:
        """Open the model and build a session on the chosen device; raise on any problem."""
        import onnxruntime as ort

        path = _resolve_model_path(self.model_uri)
        providers = self._providers(ort)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        if self.inter_op_threads > 1:
            # Inter-op threads only run anything in parallel execution mode.
            options.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, _OPTIMIZATION_LEVELS[self.graph_optimization_level]
        )
        try:
            session = ort.InferenceSession(path, sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises several unrelated types for a bad file
            raise ValueError(f"cannot load ONNX model {path!r}: {_first_line(exc)}") from None

        active = session.get_providers()
        if self._device_kind == "cuda" and _CUDA not in active:
            raise RuntimeError(
                f"device 'cuda' requested but ONNX Runtime could not start CUDAExecutionProvider for {path!r} "
                f"(active providers: {active}); check the CUDA/cuDNN libraries and the visible GPUs"
            )
        self._provider = active[0]
        if self._device_kind == "auto" and _CUDA in str(providers) and self._provider != _CUDA:
            log.warning("ONNX Runtime could not start CUDAExecutionProvider; running on %s (device=auto)", self._provider)
        log.info("ONNX model %s on %s (device=%s)", path, self._provider, self.device)

        inputs = [TensorSpec.from_node_arg(a) for a in session.get_inputs()]
        outputs = [TensorSpec.from_node_arg(a) for a in session.get_outputs()]
        by_name = {o.name: o for o in outputs}
        unknown = [n for n in self._requested_outputs if n not in by_name]
        if unknown:
            raise ValueError(f"outputs {unknown} are not outputs of {path!r}; it has {list(by_name)}")
        selected = [by_name[n] for n in self._requested_outputs] if self._requested_outputs else outputs

        meta = session.get_modelmeta()
        model_meta = {
            "onnx_producer": meta.producer_name or "",
            "onnx_graph": meta.graph_name or "",
            "onnx_domain": meta.domain or "",
            "onnx_model_version": str(meta.version),
            "execution_provider": self._provider,
        }
        for key, value in (meta.custom_metadata_map or {}).items():
            model_meta.setdefault(str(key), str(value))

        if self._session is not None and self._session_pid != os.getpid():
            # Inherited across fork: its threads are gone, so destroying it could hang.
            self._inherited.append(self._session)
        self._session = session
        self._session_pid = os.getpid()
        self._inputs, self._outputs = inputs, selected
        self._input_names = {i.name for i in inputs}
        named = [d for i in inputs if i.shape for d in i.shape if isinstance(d, str) and d]
        self._shared_dims = len(named) != len(set(named))
        self._output_names = [o.name for o in selected]
        self._model_meta = model_meta
        want_binding = self._io_binding_mode == "on" or (self._io_binding_mode == "auto" and self._provider == _CUDA)
        # Non-tensor outputs (sequences, maps) cannot be bound; run() handles them.
        self._use_io_binding = want_binding and all(o.is_tensor for o in selected)

    def predict(self, X: Any, feature_names: Any = None, meta: Any = None) -> Any:
        """Seldon predict: array for one input, dict {input_name: value} for several."""
        if isinstance(X, Mapping):
            result = self.infer(X)
            if all(isinstance(v, np.ndarray) for v in X.values()):
                return result
            return {k: _json_ready(v) for k, v in result.items()}
        session_inputs = self._ready()._inputs
        if len(session_inputs) != 1:
            names = ", ".join(s.name for s in session_inputs)
            raise BadRequest(
                f"the model has {len(session_inputs)} inputs ({names}); send them by name, "
                'e.g. Seldon {"jsonData": {"<input>": [[...]], ...}} or V2 named inputs'
            )
        result = self.infer({session_inputs[0].name: X})
        if len(result) == 1:
            return next(iter(result.values()))
        return {k: _json_ready(v) for k, v in result.items()}

    def init_metadata(self) -> dict[str, Any]:
        """Seldon model metadata: platform onnx_onnxv1, V2-style inputs/outputs, ORT details."""
        self._ready()
        return {
            "platform": PLATFORM,
            "inputs": [s.metadata() for s in self._inputs],
            "outputs": [s.metadata() for s in self._outputs],
            "custom": dict(self._model_meta),
        }

    # ----------------------------------------------------------------- arrays in, arrays out
    def infer(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Run the model on named inputs; returns {output_name: np.ndarray (or ORT object)}."""
        self._ready()
        specs = self._inputs
        if inputs.keys() != self._input_names:
            missing = [s.name for s in specs if s.name not in inputs]
            extra = [k for k in inputs if k not in self._input_names]
            parts = []
            if missing:
                parts.append(f"missing input(s) {missing}")
            if extra:
                parts.append(f"unknown input(s) {extra}")
            raise BadRequest(f"{'; '.join(parts)}; the model's inputs are {[s.name for s in specs]}")
        feeds = {s.name: coerce_input(s, inputs[s.name]) for s in specs}
        if self._shared_dims:
            _check_symbolic_dims(specs, feeds)
        try:
            if self._use_io_binding:
                values = self._run_bound(feeds)
            else:
                values = self._session.run(self._output_names, feeds)
        except Exception as exc:  # noqa: BLE001
            if type(exc).__name__ == "InvalidArgument":
                raise BadRequest(f"ONNX Runtime rejected the input: {_first_line(exc)}") from None
            raise
        return dict(zip(self._output_names, values))

    @property
    def inputs(self) -> list[TensorSpec]:
        return list(self._ready()._inputs)

    @property
    def outputs(self) -> list[TensorSpec]:
        return list(self._ready()._outputs)

    @property
    def provider(self) -> str:
        """The execution provider the session runs on (e.g. CPUExecutionProvider)."""
        return self._ready()._provider

    @property
    def batchable(self) -> bool:
        """True when every input's first dimension is dynamic, so requests can be stacked."""
        return all(s.shape is not None and len(s.shape) > 0 and not isinstance(s.shape[0], int) for s in self._ready()._inputs)

    # ----------------------------------------------------------------- internals
    def _ready(self) -> OnnxModel:
        # load() runs per worker; a call in a process without its own session (never
        # loaded, or forked after loading) builds one here rather than touch a dead one.
        if self._session is None or self._session_pid != os.getpid():
            self.load()
        return self

    def _providers(self, ort: Any) -> list[Any]:
        available = ort.get_available_providers()
        cuda_built = _CUDA in available
        if self._device_kind == "cpu":
            return [_CPU]
        if self._device_kind == "cuda" and not cuda_built:
            raise RuntimeError(
                f"device {self.device!r} requested but this onnxruntime ({ort.__version__}) has no "
                f"CUDAExecutionProvider (available: {available}); install onnxruntime-gpu or use --device cpu"
            )
        if not cuda_built:
            log.info("ONNX Runtime: CUDAExecutionProvider not available, using CPU (device=auto)")
            return [_CPU]
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:  # CUDA/cuDNN from the nvidia-* wheels, when that is how they were installed
                preload()
            except Exception as exc:  # noqa: BLE001
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
        return [(_CUDA, {"device_id": self._device_id}), _CPU]

    def _run_bound(self, feeds: dict[str, np.ndarray]) -> list[Any]:
        """Run with IO binding: inputs copied to the device once, outputs read back once."""
        binding = self._session.io_binding()
        for name, arr in feeds.items():
            binding.bind_cpu_input(name, arr)
        if self._provider == _CUDA:
            for name in self._output_names:
                binding.bind_output(name, "cuda", self._device_id)
        else:
            for name in self._output_names:
                binding.bind_output(name)
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()


def _json_ready(value: Any) -> Any:
    return value.tolist() if isinstance(value, np.ndarray) else value


def _non_negative_int(name: str, value: Any) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r}: expected a non-negative integer") from None
    if number < 0 or (isinstance(value, float) and number != value):
        raise ValueError(f"{name} {value!r}: expected a non-negative integer")
    return number


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
