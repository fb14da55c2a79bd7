"""The sequence driver: run a cell over a sequence with exact variable-length semantics.

:func:`unroll` is the JAX equivalent of PyTorch's packed sequences. With ``length``:

- ``ys[t]`` is exactly zero for ``t >= length``;
- the returned state is the state after step ``length - 1`` (the initial state when
  ``length == 0``);
- with ``reverse=True`` the steps ``xs[length-1], ..., xs[0]`` are processed and ``ys``
  stays aligned with the input positions (``ys[t]`` belongs to ``xs[t]``);
- what stands in the padding never changes any output, state or gradient: padded inputs
  are replaced by zeros before the cell sees them.

The loop is one ``jax.lax.scan``, so compile time does not grow with ``T``.

Shapes: ``T`` time, ``B`` batch, ``I`` input size.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["unroll", "unroll_batch"]


# --------------------------------------------------------------------------- checks


def _describe(x) -> str:
    return f"shape {tuple(jnp.shape(x))} and dtype {jnp.result_type(x)}"


def check_xs(xs, input_size: int, name: str = "xs") -> None:
    """Check that ``xs`` is a floating ``(T, input_size)`` array; raise naming ``name``."""
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        raise TypeError(f"{name} must be an array of shape (T, {input_size}); got {type(xs).__name__}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype; got {_describe(xs)}")
    if xs.ndim != 2:
        raise ValueError(
            f"{name} must have shape (T, {input_size}) for one sequence (batch it with "
            f"jax.vmap or rnnjax.unroll_batch); got {_describe(xs)}"
        )
    if xs.shape[1] != input_size:
        raise ValueError(
            f"{name} must have feature size {input_size} (the cell's input_size); "
            f"got {_describe(xs)}"
        )


def check_length(length, T: int):
    """Validate a scalar ``length`` for a sequence of ``T`` steps.

    A concrete ``length`` outside ``[0, T]`` is a ``ValueError``; a traced one (inside
    ``jit`` / ``vmap``) cannot be checked and is clipped to ``[0, T]``.

    Returns:
      ``length`` as an int32 scalar array.
    """
    dtype = jnp.result_type(length)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"length must be an integer scalar; got {_describe(length)}")
    if jnp.ndim(length) != 0:
        raise ValueError(
            f"length must be a scalar for one sequence (batch lengths go through vmap or "
            f"unroll_batch); got {_describe(length)}"
        )
    if isinstance(length, jax.core.Tracer):
        return jnp.clip(length, 0, T).astype(jnp.int32)
    value = int(np.asarray(length))
    if not 0 <= value <= T:
        raise ValueError(f"length must be in [0, T] = [0, {T}]; got {value}")
    return jnp.asarray(value, jnp.int32)


def check_state(expected, state, name: str = "state") -> None:
    """Check that ``state`` has the structure, shapes and a floating dtype of ``expected``."""
    exp_def = jax.tree_util.tree_structure(expected)
    got_def = jax.tree_util.tree_structure(state)
    if exp_def != got_def:
        raise ValueError(f"{name} must have the structure {exp_def}; got {got_def}")
    for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(state)):
        if jnp.shape(e) != jnp.shape(g):
            shapes = jax.tree_util.tree_map(jnp.shape, expected)
            got = jax.tree_util.tree_map(jnp.shape, state)
            raise ValueError(f"{name} must have the shapes {shapes}; got {got}")
        if not jnp.issubdtype(jnp.result_type(g), jnp.floating):
            raise TypeError(f"{name} must hold floating arrays; got {_describe(g)}")


@functools.lru_cache(maxsize=256)
def _param_shapes(cell):
    return jax.eval_shape(cell.init, jax.random.key(0))


def check_params(cell, params, name: str = "params") -> None:
    """Check ``params`` against the structure and shapes that ``cell.init`` makes."""
    expected = _param_shapes(cell)
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(params):
        raise ValueError(
            f"{name} must have the keys of {type(cell).__name__}.init: "
            f"{jax.tree_util.tree_map(lambda a: a.shape, expected)}; got "
            f"{jax.tree_util.tree_map(jnp.shape, params)}"
        )
    for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(params)):
        if e.shape != jnp.shape(g):
            raise ValueError(
                f"{name} must have the shapes {jax.tree_util.tree_map(lambda a: a.shape, expected)} "
                f"for {cell}; got {jax.tree_util.tree_map(jnp.shape, params)}"
            )


def state_dtype(xs, params):
    """The dtype of the recurrent state: the promotion of the input and parameter dtypes."""
    return jnp.result_type(xs, *jax.tree_util.tree_leaves(params))


# --------------------------------------------------------------------------- driver


def hoist_projection() -> bool:
    """Whether the driver computes the input projection for all steps before the scan.

    On XLA:CPU keeping the projection inside the loop was measured faster (DESIGN.md,
    section 4); on accelerators one large matrix product before the scan is the classic
    win.
    """
    return jax.default_backend() != "cpu"


def prepare(xs, length, reverse: bool):
    """Reorder and mask a sequence for a padding-aware scan.

    Returns ``(xs, valid, order)``: ``xs`` in processing order with padding zeroed,
    ``valid[s]`` whether step ``s`` is real, and ``order`` the permutation (its own
    inverse) that maps processing order back to input positions, or ``None``.
    """
    T = xs.shape[0]
    if length is None:
        return (xs[::-1] if reverse else xs), None, None
    length = check_length(length, T)
    t = jnp.arange(T)
    valid = t < length
    order = None
    if reverse:
        order = jnp.where(valid, length - 1 - t, t)
        xs = xs[order]
    xs = jnp.where(valid[:, None], xs, jnp.zeros((), xs.dtype))
    return xs, valid, order


def restore_order(ys, length, reverse: bool, order):
    """Undo :func:`prepare`'s reordering on per-step outputs (a pytree of ``(T, ...)``)."""
    if not reverse:
        return ys
    if length is None:
        return jax.tree_util.tree_map(lambda y: y[::-1], ys)
    return jax.tree_util.tree_map(lambda y: y[order], ys)


def scan_masked(fn: Callable, state, inputs, valid, unroll: int = 1):
    """``lax.scan`` of ``fn(state, inp) -> (state, y)`` that freezes the state and zeroes
    ``y`` at steps where ``valid`` is False (``valid=None``: every step is real)."""
    if valid is None:
        return jax.lax.scan(fn, state, inputs, unroll=unroll)

    def body(carry, inp):
        real, inp = inp
        new, y = fn(carry, inp)
        new = jax.tree_util.tree_map(lambda n, o: jnp.where(real, n, o), new, carry)
        y = jax.tree_util.tree_map(lambda v: jnp.where(real, v, jnp.zeros((), v.dtype)), y)
        return new, y

    return jax.lax.scan(body, state, (valid, inputs), unroll=unroll)


def run_cell(cell, params, state, xs, valid, unroll: int = 1):
    """Scan ``cell`` over prepared inputs (see :func:`prepare`): the one inner loop that
    :func:`unroll` and every layer share, and the place where backend-specific fast
    paths are chosen.

    Args:
      xs: ``(T, I)`` in processing order, padding already zeroed.
      valid: ``(T,)`` bool, or ``None`` when every step is real.

    With ``unroll == 1``, :func:`rnnjax.fused.run` takes over where
    :func:`rnnjax.fused.applies`: rematerialisation (``rnnjax.fused.options(remat=...)``,
    any cell) or the hand-written backward pass of the built-in LSTM, GRU and SimpleRNN
    (default on GPU/TPU; opt-in on CPU, where it measured slower). Otherwise the
    reference path below: ``lax.scan`` of the cell's step, differentiated by autodiff.

    Returns:
      ``(state, ys)`` in processing order.
    """
    from rnnjax import fused  # imported here: fused builds on this module

    opts = fused.current_options()
    if unroll == 1 and xs.shape[0] > 0 and fused.applies(cell, opts):
        return fused.run(cell, params, state, xs, valid, opts)
    if hoist_projection():
        fn = functools.partial(cell.recur, params)
        inputs = cell.project(params, xs)
    else:
        fn = functools.partial(cell.step, params)
        inputs = xs
    return scan_masked(fn, state, inputs, valid, unroll)


def _check_unroll(unroll) -> None:
    if isinstance(unroll, bool) or not isinstance(unroll, int) or unroll < 1:
        raise ValueError(f"unroll must be an int >= 1; got {unroll!r}")


def unroll(
    cell,
    params: dict,
    xs: jax.Array,
    length=None,
    state=None,
    reverse: bool = False,
    unroll: int = 1,
):
    """Run ``cell`` over one sequence.

    Args:
      cell: any rnnjax cell (``init``, ``initial_state``, ``project``, ``recur``, ``step``).
      params: the cell's parameters (``cell.init(key)``).
      xs: inputs, shape ``(T, I)``. Batch with :func:`jax.vmap` or :func:`unroll_batch`.
      length: optional integer scalar, the true length; steps ``t >= length`` are padding.
        A concrete value outside ``[0, T]`` raises; a traced one is clipped to ``[0, T]``.
      state: optional initial state (default ``cell.initial_state()``).
      reverse: process the sequence backwards (padding-aware; ``ys`` stays aligned).
      unroll: passed to ``jax.lax.scan``.

    Returns:
      ``(state, ys)``: the state after the last real step, and outputs ``(T, output_size)``,
      exactly zero at padded steps.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.GRU(input_size=2, hidden_size=3)
      >>> params = cell.init(jax.random.key(0))
      >>> state, ys = rj.unroll(cell, params, jnp.ones((5, 2)), length=3)
      >>> bool((ys[3:] == 0).all())
      True
    """
    check_xs(xs, cell.input_size)
    check_params(cell, params)
    _check_unroll(unroll)
    dtype = state_dtype(xs, params)
    if state is None:
        state = cell.initial_state(dtype)
    else:
        check_state(cell.initial_state(dtype), state)
    xs, valid, order = prepare(xs, length, reverse)
    state, ys = run_cell(cell, params, state, xs, valid, unroll)
    return state, restore_order(ys, length, reverse, order)


_unroll_one = unroll  # unroll_batch's `unroll` argument shadows the function's name


def unroll_batch(
    cell,
    params: dict,
    xs: jax.Array,
    length=None,
    state=None,
    reverse: bool = False,
    unroll: int = 1,
    time_major: bool = False,
):
    """:func:`unroll` over any number of leading batch axes (a thin ``vmap``).

    Args:
      xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
      length: optional integer array of shape ``B`` (checked to lie in ``[0, T]`` when
        concrete).
      state: optional initial state whose leaves have leading axes ``B``.

    Returns:
      ``(state, ys)`` with ``ys`` laid out like ``xs`` (``(*B, T, H)`` or ``(T, *B, H)``).
    """
    from rnnjax import fused  # imported here: fused builds on this module

    if unroll == 1 and fused.batch_applies(cell):
        return run_batch(cell, params, xs, length, state, reverse, time_major)
    return apply_batch(
        lambda x, n, s, k: _unroll_one(cell, params, x, n, s, reverse, unroll),
        xs,
        length,
        state,
        time_major,
    )


def _check_batch(xs, length, state, time_major: bool):
    """The checks of :func:`apply_batch`. Returns ``(batch shape, T)``."""
    if not hasattr(xs, "ndim") or xs.ndim < 3:
        raise ValueError(
            f"xs must have at least one batch axis: (*B, T, I) or, time-major, (T, *B, I); "
            f"got {_describe(xs) if hasattr(xs, 'shape') else type(xs).__name__}"
        )
    batch = xs.shape[1:-1] if time_major else xs.shape[:-2]
    T = xs.shape[0] if time_major else xs.shape[-2]
    if length is not None:
        if jnp.shape(length) != batch:
            raise ValueError(f"length must have the batch shape {batch}; got {_describe(length)}")
        if not jnp.issubdtype(jnp.result_type(length), jnp.integer):
            raise TypeError(f"length must be integers; got {_describe(length)}")
        if not isinstance(length, jax.core.Tracer):
            lv = np.asarray(length)
            if lv.size and (lv.min() < 0 or lv.max() > T):
                raise ValueError(
                    f"length must lie in [0, T] = [0, {T}]; got values in [{lv.min()}, {lv.max()}]"
                )
    if state is not None:
        for leaf in jax.tree_util.tree_leaves(state):
            if jnp.shape(leaf)[: len(batch)] != batch:
                raise ValueError(
                    f"state leaves must have leading batch axes {batch}; got {_describe(leaf)}"
                )
    return batch, T


def run_batch(cell, params, xs, length=None, state=None, reverse: bool = False,
              time_major: bool = False):
    """:func:`unroll_batch` natively batched: one scan over ``(T, B, .)`` arrays.

    What :func:`unroll_batch` runs for the built-in LSTM (without projection), GRU and
    SimpleRNN when :func:`rnnjax.fused.batch_applies` (by default on every backend):
    the same results as ``vmap`` of :func:`unroll` (tests check values and gradients),
    computed by :func:`rnnjax.fused.run` on time-major arrays, so that every step is one
    ``(B, .) @ (., G * H)`` product and the weight gradients are single 2-D products over
    all steps and examples, with no relayout. Arguments and returns as
    :func:`unroll_batch`.
    """
    from rnnjax import fused

    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        raise TypeError(f"xs must be an array; got {type(xs).__name__}")
    batch, T = _check_batch(xs, length, state, time_major)
    n = math.prod(batch)
    if T == 0 or n == 0:  # nothing to scan: the generic path handles the empty cases
        return apply_batch(
            lambda x, l, s, k: _unroll_one(cell, params, x, l, s, reverse), xs, length, state,
            time_major,
        )
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(f"xs must have a floating dtype; got {_describe(xs)}")
    if xs.shape[-1] != cell.input_size:
        raise ValueError(
            f"xs must have feature size {cell.input_size} (the cell's input_size); "
            f"got {_describe(xs)}"
        )
    check_params(cell, params)
    dtype = state_dtype(xs, params)
    init = cell.initial_state(dtype)
    if state is None:
        state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n,) + a.shape), init)
    else:
        state = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[len(batch):]), state)
        check_state(init, jax.tree_util.tree_map(lambda a: a[0], state))
    # time-major (T, n, I): the layout of the scan
    xs = xs.reshape((T, n, xs.shape[-1])) if time_major else jnp.swapaxes(
        xs.reshape((n, T, xs.shape[-1])), 0, 1)
    valid = order = None
    if length is not None:
        length = jnp.reshape(length, (n,))
        xs, valid, order = jax.vmap(prepare, in_axes=(1, 0, None), out_axes=1)(xs, length, reverse)
        if not reverse:
            order = None
    elif reverse:
        xs = xs[::-1]
    state, ys = fused.run(cell, params, state, xs, valid)
    if reverse:
        ys = ys[::-1] if order is None else jnp.take_along_axis(ys, order[:, :, None], axis=0)
    ys = ys.reshape((T,) + batch + ys.shape[-1:]) if time_major else jnp.swapaxes(
        ys, 0, 1).reshape(batch + (T,) + ys.shape[-1:])
    state = jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), state)
    return state, ys


def apply_batch(fn: Callable, xs, length, state, time_major: bool, key=None):
    """Apply an unbatched ``fn(xs, length, state, key) -> (state, ys)`` over leading batch
    axes; each example gets its own key (split from ``key``) when one is given.

    Used by :func:`unroll_batch` and the layers' ``apply_batch``; see there for shapes.
    """
    batch, T = _check_batch(xs, length, state, time_major)
    if time_major:
        xs = jnp.moveaxis(xs, 0, -2)
    n = math.prod(batch)
    flat = xs.reshape((n,) + xs.shape[-2:])
    if length is not None:
        length = jnp.reshape(length, (n,))
    if state is not None:
        state = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[len(batch):]), state)
    keys = None if key is None else jax.random.split(key, n)
    in_axes = tuple(None if a is None else 0 for a in (flat, length, state, keys))
    out_state, ys = jax.vmap(fn, in_axes=in_axes)(flat, length, state, keys)
    out_state = jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), out_state)
    ys = jax.tree_util.tree_map(lambda y: y.reshape(batch + y.shape[1:]), ys)
    if time_major:
        ys = jax.tree_util.tree_map(lambda y: jnp.moveaxis(y, -2, 0), ys)
    return out_state, ys
