"""Import the user's class once and find out, once, which hooks it has.

Seldon's wrapper asks ``hasattr`` on every request and retries hooks without ``meta=`` on
any TypeError; we inspect signatures at load so the hot path does neither.
"""
from __future__ import annotations

import importlib
import inspect
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

# A hook's first calls run on the thread pool whatever they cost (they are often slow for cold reasons).
WARMUP_CALLS = 3

PARAMETER_TYPES: dict[str, Callable[[str], Any]] = {
    "INT": int,
    "FLOAT": float,
    "DOUBLE": float,
    "STRING": str,
    "BOOL": lambda v: _strtobool(str(v)),
}


class ModelLoadError(Exception):
    """The interface name, parameters or constructor failed: the server must not start."""


def _strtobool(value: str) -> bool:
    v = value.lower()
    if v in ("y", "yes", "t", "true", "on", "1"):
        return True
    if v in ("n", "no", "f", "false", "off", "0"):
        return False
    raise ValueError(f"invalid truth value {value!r}")


def parse_parameters(text: str) -> dict[str, Any]:
    """Seldon's ``--parameters`` JSON list of {name, value, type} -> constructor kwargs."""
    try:
        items = json.loads(text) if text else []
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"--parameters is not valid JSON: {exc}") from None
    if not isinstance(items, list):
        raise ModelLoadError("--parameters must be a JSON list of {name, value, type} objects")
    params: dict[str, Any] = {}
    for item in items:
        if not isinstance(item, dict) or "name" not in item or "value" not in item:
            raise ModelLoadError(f"Bad model parameter {item!r}: needs name, value and type")
        # no default type: Seldon fails a parameter without one ("Bad model parameter type")
        kind = str(item.get("type")).upper() if item.get("type") is not None else "None"
        convert = PARAMETER_TYPES.get(kind)
        if convert is None:
            raise ModelLoadError(f"Bad model parameter type: {kind} valid are INT, FLOAT, DOUBLE, STRING, BOOL")
        try:
            params[item["name"]] = convert(item["value"])
        except (TypeError, ValueError):
            raise ModelLoadError(
                f"Bad model parameter: {item['name']} with value {item['value']} can't be parsed as a {kind}"
            ) from None
    return params


def import_class(interface_name: str, source_dir: str | None = None) -> type:
    """``MyModel`` (MyModel.py in the working directory, or in ``source_dir``) or ``package.module.Class``.

    With ``source_dir`` (a graph node's own folder) the module is imported from there even
    when another node already imported a module of the same name from its folder.
    """
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    if "." in interface_name:
        module_name, class_name = interface_name.rsplit(".", 1)
    else:
        module_name = class_name = interface_name
    if source_dir is not None:
        _prefer_folder(os.path.abspath(source_dir), module_name.split(".")[0])
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise ModelLoadError(
                f"cannot import interface {interface_name!r}: no module named {module_name!r} "
                f"(looked in {os.getcwd()} and sys.path)"
            ) from None
        raise ModelLoadError(f"cannot import interface {interface_name!r}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - user code at import time
        raise ModelLoadError(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ModelLoadError(f"module {module_name!r} has no class {class_name!r}")
    return cls


def _prefer_folder(folder: str, top: str) -> None:
    """Put ``folder`` first on sys.path and forget a same-named module loaded from elsewhere.

    Only for modules the folder itself holds: ``fastseldon.components.X`` stays what it is.
    """
    if not (os.path.isfile(os.path.join(folder, top + ".py")) or os.path.isdir(os.path.join(folder, top))):
        return
    if sys.path[:1] != [folder]:
        sys.path.insert(0, folder)
    loaded = sys.modules.get(top)
    origin = getattr(loaded, "__file__", None) or ""
    if loaded is not None and not os.path.abspath(origin).startswith(folder + os.sep):
        for name in [m for m in sys.modules if m == top or m.startswith(top + ".")]:
            del sys.modules[name]


def is_not_implemented(exc: BaseException) -> bool:
    """Seldon's SeldonNotImplementedError means "fall through to the next hook"."""
    return type(exc).__name__ == "SeldonNotImplementedError"


def is_seldon_response(out: Any) -> bool:
    """Seldon's ``SeldonResponse(data, tags, metrics)``, recognised by duck typing (no seldon_core import)."""
    return type(out).__name__ == "SeldonResponse" and hasattr(out, "data")


@dataclass(slots=True)
class Hook:
    """One user method, with what we learned about it at load time."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    accepts_meta: bool
    raw: bool = False
    # Running cost estimate (seconds) deciding whether a sync hook may run on the event loop.
    cost: float = 0.0
    calls: int = 0
    last: float = 0.0  # the latest call's seconds
    off_loop: bool = False  # it once took longer than the inline budget on the event loop: never there again

    def record(self, seconds: float) -> None:
        """Moving average, except that a call slower than the average takes over at once:
        one slow call must be enough to move a hook off the event loop."""
        self.calls += 1
        self.last = seconds
        self.cost = seconds if self.calls == 1 or seconds > self.cost else self.cost * 0.9 + seconds * 0.1

    def timed_call(self, *args: Any, **kwargs: Any) -> Any:
        """Call a sync hook and update its cost estimate."""
        start = time.perf_counter()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.record(time.perf_counter() - start)


def _accepts_meta(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "meta" or p.kind is p.VAR_KEYWORD for p in params)


def _owner(obj: Any, name: str) -> type | None:
    """The class in ``obj``'s MRO that defines ``name`` (None for an instance attribute)."""
    if name in getattr(obj, "__dict__", {}):
        return None
    return next((klass for klass in type(obj).__mro__ if name in vars(klass)), None)


def inherited_from_seldon(obj: Any, name: str) -> bool:
    """``name`` is seldon_core's ``SeldonComponent`` base method, not overridden: a hook the user
    did not write (the base raises SeldonNotImplementedError, which Seldon reads as "absent")."""
    owner = _owner(obj, name)
    return owner is not None and owner.__name__ == "SeldonComponent" and owner.__module__.startswith("seldon_core")


def _hook(obj: Any, name: str, raw: bool = False) -> Hook | None:
    fn = getattr(obj, name, None)
    if not callable(fn) or inherited_from_seldon(obj, name):
        return None
    return Hook(name, fn, inspect.iscoroutinefunction(fn), _accepts_meta(fn), raw)


# Seldon <= 1.x low-level hooks, still honoured by 1.19: each gets the request as the wire gave it
# (REST: the parsed JSON; gRPC: the proto) and its reply goes out as is.
LEGACY_HOOKS = tuple(f"{base}_{wire}" for base in ("predict", "transform_input", "transform_output", "route",
                                                    "aggregate", "send_feedback") for wire in ("rest", "grpc"))


def _chain(obj: Any, base: str) -> tuple[Hook, ...]:
    """The hooks for one endpoint in Seldon's precedence order: ``<base>_raw`` then ``<base>``."""
    hooks = (_hook(obj, f"{base}_raw", raw=True), _hook(obj, base))
    return tuple(h for h in hooks if h is not None)


_SELDON_BASE_HOOKS = ("route", "aggregate", "health_status")  # where Seldon answers differently for a base method


@dataclass(slots=True)
class UserModel:
    """The loaded user object and its hooks, resolved once."""

    obj: Any
    class_name: str
    predict: tuple[Hook, ...] = ()
    transform_input: tuple[Hook, ...] = ()
    transform_output: tuple[Hook, ...] = ()
    route: tuple[Hook, ...] = ()
    aggregate: tuple[Hook, ...] = ()
    send_feedback: tuple[Hook, ...] = ()
    health_status: tuple[Hook, ...] = ()
    tags: Hook | None = None
    metrics: Hook | None = None
    class_names_fn: Hook | None = None
    class_names_attr: list[str] | None = None
    feature_names: Hook | None = None
    init_metadata: Hook | None = None
    legacy: dict[str, Hook] = field(default_factory=dict)  # "predict_rest" ... "send_feedback_grpc"
    inherited: frozenset[str] = frozenset()  # SeldonComponent base methods left as they are

    @classmethod
    def from_object(cls, obj: Any) -> UserModel:
        names = getattr(obj, "class_names", None)
        return cls(
            obj=obj,
            class_name=type(obj).__name__,
            predict=_chain(obj, "predict"),
            transform_input=_chain(obj, "transform_input"),
            transform_output=_chain(obj, "transform_output"),
            route=_chain(obj, "route"),
            aggregate=_chain(obj, "aggregate"),
            send_feedback=_chain(obj, "send_feedback"),
            health_status=_chain(obj, "health_status"),
            tags=_hook(obj, "tags"),
            metrics=_hook(obj, "metrics"),
            class_names_fn=_hook(obj, "class_names"),
            class_names_attr=list(names) if isinstance(names, (list, tuple)) else None,
            feature_names=_hook(obj, "feature_names"),
            init_metadata=_hook(obj, "init_metadata"),
            legacy={name: hook for name in LEGACY_HOOKS if (hook := _hook(obj, name, raw=True)) is not None},
            inherited=frozenset(name for name in _SELDON_BASE_HOOKS if inherited_from_seldon(obj, name)),
        )

    def class_names(self) -> list[str] | None:
        """The user's output column names, or None for Seldon's default ``t:<i>``."""
        if self.class_names_fn is not None and not self.class_names_fn.is_async:
            try:
                return list(self.class_names_fn.fn())
            except Exception as exc:  # noqa: BLE001
                if is_not_implemented(exc):
                    return None
                raise
        return self.class_names_attr


def construct(interface_name: str, parameters: dict[str, Any], source_dir: str | None = None) -> Any:
    """Import and instantiate the user's class; raise ModelLoadError with a one-line reason."""
    cls = import_class(interface_name, source_dir)
    try:
        return cls(**parameters)
    except Exception as exc:  # noqa: BLE001 - user constructor
        raise ModelLoadError(f"{cls.__name__}(**{parameters!r}) failed: {type(exc).__name__}: {exc}") from None


async def call_load(obj: Any, run_sync: Callable[[Callable[[], Any]], Any] | None = None) -> None:
    """Run the user's optional ``load()`` (sync or async); Seldon ignores a missing one.

    ``run_sync`` runs a sync ``load`` (e.g. on a thread, awaitable); without it, it is called here.
    """
    load = getattr(obj, "load", None)
    if not callable(load):
        return
    try:
        if run_sync is not None and not inspect.iscoroutinefunction(load):
            result = await run_sync(load)
        else:
            result = load()
        if inspect.isawaitable(result):
            await result
    except NotImplementedError:
        return
    except Exception as exc:  # noqa: BLE001
        if is_not_implemented(exc):
            return
        raise ModelLoadError(f"{type(obj).__name__}.load() failed: {type(exc).__name__}: {exc}") from None


