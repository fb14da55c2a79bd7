r"""The preamble every reservoir driver shares: argument checks, casts, the initial
state, targets and teacher, the runtime cell (:func:`setup`), and the call of a jitted
kernel with the readout's precision switched on (:func:`call`).

Every kernel takes ``(cell, params, us, state, teacher, key, ...)``, so a new driver adds
its own arguments and nothing else.

Shapes: ``T`` time, ``B`` batch, ``I`` input size, ``N`` reservoir size, ``O`` outputs,
``F`` feedback size.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

import rnnjax.reservoir.readouts as ro
from rnnjax import checks
from rnnjax.reservoir.cell import EchoState, EchoStateState, runtime

__all__: list = []  # internal


# --------------------------------------------------------------------------- checks


def check_precision(precision: str) -> str:
    return checks.choice("precision", precision, ro.PRECISIONS)


def check_series(name: str, x, size: int, what: str, T=None):
    """A ``(T, size)`` floating array (``T`` steps when given): :func:`rnnjax.checks.series`."""
    return checks.series(name, x, size, what, T)


def check_cell(cell) -> None:
    if not isinstance(cell, EchoState):
        raise TypeError(f"cell must be an rnnjax.reservoir.EchoState; got {type(cell).__name__}")


def check_reservoir_params(cell, params) -> None:
    if not isinstance(params, dict):
        raise TypeError(
            f"params must be the dict made by EchoState.init; got {type(params).__name__}"
        )
    expected = jax.eval_shape(cell.init, jax.random.key(0))
    checks.params("params", expected, params, owner=repr(cell))


def check_inputs(cell, us, name, batch):
    """``(T, I)``, or ``(B, T, I)`` with ``batch``."""
    if batch and getattr(us, "ndim", 0) == 3:
        us = checks.floating_array(name, us)
        if us.shape[-1] != cell.input_size:
            raise ValueError(
                f"{name} must have shape (B, T, {cell.input_size}) or (T, "
                f"{cell.input_size}); got {checks.describe(us)}"
            )
        return us
    return check_series(name, us, cell.input_size, "I = cell.input_size")


def check_state(cell, state, lead, dtype):
    """The initial state, broadcast to the batch shape ``lead`` (zeros when ``None``)."""
    want = cell.initial_state(dtype)
    if state is None:
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, lead + a.shape), want)
    if not isinstance(state, EchoStateState):
        raise ValueError(
            f"state must be an EchoStateState with h {want.h.shape} and y "
            f"{want.y.shape}; got {type(state).__name__}"
        )
    sb = tuple(jnp.shape(state.h))[:-1]
    if sb not in ((), lead):
        raise ValueError(f"state must have batch shape () or {lead}; got h {jnp.shape(state.h)}")
    state = checks.state("state", want, state, sb, dtype=dtype)
    return jax.tree_util.tree_map(lambda a, w: jnp.broadcast_to(a, lead + w.shape), state, want)


def check_targets(ys, T):
    return check_series(
        "ys", ys, ys.shape[1] if getattr(ys, "ndim", 0) == 2 else -1, "O outputs", T
    )


def check_washout(washout, T):
    checks.integer("washout", washout, 0)
    if washout >= T:
        raise ValueError(f"washout must be smaller than T = {T} (no samples left); got {washout}")
    return washout


def check_teacher(cell, teacher, lead_T, dtype):
    """``teacher`` of shape ``lead_T + (F,)`` in ``dtype``, or ``None`` without feedback."""
    if not cell.feedback_size or teacher is None:
        return None
    teacher = checks.floating_array("teacher", teacher)
    if teacher.shape != lead_T + (cell.feedback_size,):
        raise ValueError(
            f"teacher must have shape {lead_T + (cell.feedback_size,)} (as the inputs, F = "
            f"cell.feedback_size); got {checks.describe(teacher)}"
        )
    return jnp.asarray(teacher, dtype)


# --------------------------------------------------------------------------- preamble


class Setup(NamedTuple):
    """What every driver hands its jitted kernel: checked, cast, broadcast."""

    cell: Any  # the runtime cell (init-only fields reset: one compilation per shape)
    params: dict
    us: jax.Array  # (T, I) or (B, T, I), parameter dtype
    state: EchoStateState
    teacher: Optional[jax.Array]  # (T, F) or None
    key: Optional[jax.Array]
    ys: Optional[jax.Array]  # (T, O) or None


def setup(
    cell,
    params,
    us,
    state=None,
    *,
    key=None,
    ys=None,
    teacher=None,
    washout=None,
    precision=None,
    chunk_size=None,
    include_input=None,
    name="us",
    batch=False,
) -> Setup:
    """The preamble of every driver: checks of every argument given, the inputs and state
    cast to the parameter dtype, the targets and the fed-back teacher (defaulting to the
    targets with feedback), the runtime cell."""
    if precision is not None:
        check_precision(precision)
    if chunk_size is not None:
        checks.integer("chunk_size", chunk_size, 1)
    if include_input is not None:
        checks.boolean("include_input", include_input)
    check_cell(cell)
    check_reservoir_params(cell, params)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    us = check_inputs(cell, us, name, batch)
    state = check_state(cell, state, us.shape[:-2], dtype)
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax PRNG key (jax.random.key); got {type(key).__name__}")
    us = jnp.asarray(us, dtype)
    if ys is not None:
        ys = jnp.asarray(check_targets(ys, us.shape[0]), dtype)
        check_washout(washout, us.shape[0])
        if teacher is None and cell.feedback_size:
            teacher = ys
    teacher = check_teacher(cell, teacher, us.shape[:-1], dtype)
    return Setup(runtime(cell), params, us, state, teacher, key, ys)


def call(fn, s: Setup, *args, x64: str = "float32", **static):
    """``fn(cell, params, us, state, teacher, key, *args, **static)`` with the readout's
    precision ``x64`` (``"float64"`` or ``"float32"``) switched on around it; a kernel
    that takes a ``precision`` gets it in ``static``, explicitly."""
    with ro.x64(x64):
        return fn(s.cell, s.params, s.us, s.state, s.teacher, s.key, *args, **static)
