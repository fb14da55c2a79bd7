"""Short reprs for the frozen dataclasses of cells, layers and models.

A dataclass's default repr lists every field, nested: a two-layer bidirectional LSTM ported
from PyTorch printed about 1,500 characters. :func:`short_repr` prints sizes as
``I->H`` and only the fields that differ from their defaults, and folds repeats::

    Stacked(2 x Bidirectional(LSTM(64->128)))

Every field that differs from its default is shown, so two objects with the same short
repr have the same hyperparameters (up to identical repeated layers).
"""

from __future__ import annotations

import dataclasses

import numpy as np

_SIZE_FIELDS = ("input_size", "hidden_size")


def _value(v) -> str:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return short_repr(v)
    if isinstance(v, (tuple, list)):
        inner = ", ".join(_value(x) for x in v)
        return (
            f"({inner},)"
            if isinstance(v, tuple) and len(v) == 1
            else (f"({inner})" if isinstance(v, tuple) else f"[{inner}]")
        )
    if isinstance(v, type) or (hasattr(v, "dtype") and not hasattr(v, "shape")):
        try:
            return np.dtype(v).name
        except TypeError:
            pass
    if callable(v) and hasattr(v, "__name__"):
        return v.__name__
    return repr(v)


def _differs(value, default) -> bool:
    try:
        return bool(value != default)
    except Exception:  # arrays or foreign objects: show them
        return True


def _non_default(obj, skip=()) -> list:
    out = []
    for f in dataclasses.fields(obj):
        if not f.repr or f.name in skip:
            continue
        v = getattr(obj, f.name)
        if f.default is not dataclasses.MISSING:
            if not _differs(v, f.default):
                continue
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            if not _differs(v, f.default_factory()):  # type: ignore[misc]
                continue
        out.append(f"{f.name}={_value(v)}")
    return out


def _fields(obj) -> set:
    return {f.name for f in dataclasses.fields(obj)} if dataclasses.is_dataclass(obj) else set()


# the layers are recognised by their fields, so that this module imports none of rnnjax
def _is_recurrent(obj) -> bool:
    return {"cell", "reverse"} <= _fields(obj)


def _is_bidirectional(obj) -> bool:
    return {"forward", "backward", "merge"} <= _fields(obj)


def _is_stacked(obj) -> bool:
    return {"layers", "dropout"} <= _fields(obj) and isinstance(obj.layers, tuple)


def _inner(layer) -> str:
    """A layer inside another: a plain forward ``Recurrent`` prints as its cell."""
    if _is_recurrent(layer) and not _non_default(layer, skip=("cell",)):
        return short_repr(layer.cell)
    return _value(layer)


def short_repr(obj) -> str:
    """The compact repr of a cell, layer or model dataclass (see the module docstring).

    Example:
      >>> import rnnjax as rj
      >>> rj.Stacked([rj.Bidirectional(rj.LSTM(4, 8)), rj.Bidirectional(rj.LSTM(16, 8))])
      Stacked(Bidirectional(LSTM(4->8)), Bidirectional(LSTM(16->8)))
      >>> rj.Recurrent(rj.GRU(3, 5, reset_after=False), zoneout=0.1)
      Recurrent(GRU(3->5, reset_after=False), zoneout=0.1)
    """
    name = type(obj).__name__
    if _is_stacked(obj):
        items = [_inner(layer) for layer in obj.layers]
        body = (
            f"{len(items)} x {items[0]}"
            if len(items) > 1 and len(set(items)) == 1
            else ", ".join(items)
        )
        return f"{name}({', '.join([body] + _non_default(obj, skip=('layers',)))})"
    if _is_bidirectional(obj):
        parts = [_inner(obj.forward)]
        mirror = _is_recurrent(obj.forward) and obj.backward == dataclasses.replace(
            obj.forward, reverse=True
        )
        if not mirror:
            parts.append(f"backward={_value(obj.backward)}")
        if obj.merge != "concat":
            parts.append(f"merge={_value(obj.merge)}")
        return f"{name}({', '.join(parts)})"
    if _is_recurrent(obj):
        return f"{name}({', '.join([_value(obj.cell)] + _non_default(obj, skip=('cell',)))})"
    names = {f.name for f in dataclasses.fields(obj)}
    parts = []
    skip = ()
    if all(n in names for n in _SIZE_FIELDS):
        parts.append(f"{obj.input_size}->{obj.hidden_size}")
        skip = _SIZE_FIELDS
    return f"{name}({', '.join(parts + _non_default(obj, skip=skip))})"
