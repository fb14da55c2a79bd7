"""Architectures and training configs as JSON: record a frozen dataclass, rebuild it.

Cells, layers, models and :class:`rnnjax.ScanConfig` are frozen dataclasses of
hyperparameters, so a model is fully described by its class and its fields. :func:`to_spec`
turns one into JSON-clean data (``{"class": "rnnjax.cells.lstm.LSTM", "fields": {...}}``),
:func:`from_spec` rebuilds an equal object. This is what a checkpoint directory stores so
that a run can be restored from the directory alone (:func:`rnnjax.checkpoint.load_run`).

What can be recorded:

- ``None``, bools, ints, strings, floats (NaN and infinities as ``{"float": "nan"}``);
  lists, tuples (``{"tuple": [...]}``) and dicts with string keys;
- dtypes (``{"dtype": "bfloat16"}``);
- frozen dataclasses of ``rnnjax`` (looked up by module and name, only inside
  ``rnnjax``) and of classes a user adds with :func:`register`;
- module-level functions of ``rnnjax`` and ``optax`` (``{"function": "optax:l2_loss"}``).

Anything else (a lambda, a closure, a user's function, an optax transformation object) is
refused with a ``TypeError`` naming the field: record it instead as a spec, e.g.
:func:`rnnjax.train.schedule` / :func:`rnnjax.train.optimizer`.

Example:
  >>> import json, rnnjax as rj
  >>> from rnnjax.spec import from_spec, to_spec
  >>> model = rj.SequenceModel(rj.Stacked([rj.LSTM(4, 8), rj.GRU(8, 8)]), output_size=3)
  >>> text = json.dumps(to_spec(model))
  >>> from_spec(json.loads(text)) == model
  True
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from typing import Any

import jax.numpy as jnp
import numpy as np

__all__ = ["to_spec", "from_spec", "register"]

_USER: dict = {}
_FUNCTION_MODULES = ("rnnjax", "optax")


def _qualified(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls):
    """Allow a user's frozen dataclass in recorded architectures (usable as a decorator).

    Its fields must themselves be recordable. Rebuilding needs the class registered in
    the restoring process too (import the module that registers it).

    Example:
      >>> import dataclasses
      >>> from rnnjax.spec import from_spec, register, to_spec
      >>> @register
      ... @dataclasses.dataclass(frozen=True)
      ... class Window:
      ...     size: int = 3
      >>> to_spec(Window(5))["fields"], from_spec(to_spec(Window(5))) == Window(5)
      ({'size': 5}, True)
    """
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"cls must be a dataclass type; got {cls!r}")
    _USER[_qualified(cls)] = cls
    return cls


def _is_dtype(obj) -> bool:
    """A NumPy dtype or a scalar type (``jnp.float32``, ``np.int32``, ``jnp.bfloat16``)."""
    if isinstance(obj, np.dtype):
        return True
    if not isinstance(obj, type):
        return False
    try:
        return jnp.dtype(obj).kind in "biufcV" and jnp.dtype(obj) != np.dtype(object)
    except TypeError:
        return False


def _function_name(fn):
    mod, qual = getattr(fn, "__module__", None) or "", getattr(fn, "__qualname__", "")
    if mod.split(".")[0] not in _FUNCTION_MODULES or "<" in qual:
        return None
    for public in (mod.split(".")[0], mod):  # prefer the public name (optax:l2_loss)
        try:
            obj = importlib.import_module(public)
            for part in qual.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError):
            continue
        if obj is fn:
            return f"{public}:{qual}"
    return None


def _describe(obj) -> str:
    qual = getattr(obj, "__qualname__", None)
    if qual is not None:
        return f"{type(obj).__name__} {getattr(obj, '__module__', '?')}.{qual}"
    return f"an object of type {type(obj).__module__}.{type(obj).__qualname__}"


def to_spec(obj: Any, path: str = "value") -> Any:
    """JSON-clean data describing ``obj`` (see the module docstring).

    Args:
      obj: a cell, layer, model, config or any recordable value.
      path: the name used in errors (``"model.layer.cell"``).

    Returns:
      Nested dicts, lists, strings and numbers.

    Raises:
      TypeError: ``obj`` (or a field inside it, named by its path) cannot be recorded.

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.spec import to_spec
      >>> spec = to_spec(rj.GRU(2, 4))
      >>> spec["class"], spec["fields"]["hidden_size"], spec["fields"]["param_dtype"]
      ('rnnjax.cells.gru.GRU', 4, {'dtype': 'float32'})
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else {"float": repr(v)}
    if _is_dtype(obj):
        return {"dtype": jnp.dtype(obj).name}
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return {"tuple": [to_spec(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [to_spec(v, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict) and all(isinstance(k, str) for k in obj):
        return {"dict": {k: to_spec(v, f"{path}.{k}") for k, v in obj.items()}}
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        name = _qualified(type(obj))
        if not (name.startswith("rnnjax.") or name in _USER):
            raise TypeError(
                f"{path} cannot be recorded: {type(obj).__name__} is not an rnnjax class; "
                "register it with rnnjax.spec.register"
            )
        fields = {}
        for f in dataclasses.fields(obj):
            if f.init:
                fields[f.name] = to_spec(getattr(obj, f.name), f"{path}.{f.name}")
        return {"class": name, "fields": fields}
    if callable(obj):
        name = _function_name(obj)
        if name is not None:
            return {"function": name}
    raise TypeError(
        f"{path} cannot be recorded in a JSON config: got {_describe(obj)}. Use a name, a number, an rnnjax class, a module-level rnnjax "
        "or optax function, or a recorded spec (rnnjax.train.schedule, rnnjax.train.optimizer)"
    )


def _class(name: str, path: str):
    if name in _USER:
        return _USER[name]
    if not name.startswith("rnnjax."):
        raise ValueError(f"{path}: class {name!r} is neither an rnnjax class nor registered")
    module, _, qual = name.rpartition(".")
    while module:
        try:
            obj = importlib.import_module(module)
            break
        except ImportError:  # a nested class: move the last module part into the name
            module, _, head = module.rpartition(".")
            qual = f"{head}.{qual}"
    else:
        raise ValueError(f"{path}: class {name!r} cannot be found")
    try:
        for part in qual.split("."):
            obj = getattr(obj, part)
    except AttributeError as err:
        raise ValueError(f"{path}: class {name!r} cannot be found in this rnnjax") from err
    if not (isinstance(obj, type) and dataclasses.is_dataclass(obj)):
        raise ValueError(f"{path}: {name!r} is not a dataclass")
    return obj


def from_spec(spec: Any, path: str = "value") -> Any:
    """Rebuild the object described by :func:`to_spec`'s output.

    Args:
      spec: what :func:`to_spec` returned (after a JSON round trip, if you like).
      path: the name used in errors.

    Returns:
      The rebuilt object, equal to the one recorded.

    Raises:
      ValueError: a class or function cannot be found (named with its path).

    Example:
      >>> import json
      >>> import rnnjax as rj
      >>> from rnnjax.spec import from_spec, to_spec
      >>> cell = rj.GRU(2, 4)
      >>> from_spec(json.loads(json.dumps(to_spec(cell)))) == cell
      True
    """
    if spec is None or isinstance(spec, (bool, int, float, str)):
        return spec
    if isinstance(spec, list):
        return [from_spec(v, f"{path}[{i}]") for i, v in enumerate(spec)]
    if not isinstance(spec, dict) or len(spec) not in (1, 2):
        raise ValueError(f"{path}: not a recorded value: {spec!r}")
    if "class" in spec:
        cls = _class(spec["class"], path)
        fields = {k: from_spec(v, f"{path}.{k}") for k, v in spec.get("fields", {}).items()}
        return cls(**fields)
    ((kind, value),) = spec.items()
    if kind == "float":
        return float(value)
    if kind == "dtype":
        return getattr(jnp, value, None) or jnp.dtype(value)
    if kind == "tuple":
        return tuple(from_spec(v, f"{path}[{i}]") for i, v in enumerate(value))
    if kind == "dict":
        return {k: from_spec(v, f"{path}.{k}") for k, v in value.items()}
    if kind == "function":
        module, _, qual = value.partition(":")
        if module.split(".")[0] not in _FUNCTION_MODULES:
            raise ValueError(
                f"{path}: functions are rebuilt only from rnnjax or optax; got {value!r}"
            )
        obj = importlib.import_module(module)
        try:
            for part in qual.split("."):
                obj = getattr(obj, part)
        except AttributeError as err:
            raise ValueError(f"{path}: function {value!r} cannot be found") from err
        return obj
    raise ValueError(f"{path}: unknown recorded kind {kind!r}")
