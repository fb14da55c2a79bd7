"""Run a cell over sequences with exact variable-length semantics: :func:`unroll`,
:func:`unroll_batch`.

:func:`unroll` is the JAX equivalent of PyTorch's packed sequences. With ``length``:

- ``ys[t]`` is exactly zero for ``t >= length``;
- the returned state is the state after step ``length - 1`` (the initial state when
  ``length == 0``);
- with ``reverse=True`` the steps ``xs[length-1], ..., xs[0]`` are processed and ``ys``
  stays aligned with the input positions (``ys[t]`` belongs to ``xs[t]``);
- what stands in the padding never changes any output, state or gradient: padded inputs
  are replaced by zeros before the cell sees them.

With ``resets`` (bool, one flag per step), ``resets[t]`` starts a new segment at step
``t``: the state is put back to the initial state before ``xs[t]`` is read, so one row
can hold many sequences back to back (packing, :func:`pack`) or an RL rollout many
episodes. Each segment gives exactly what running it alone gives; the returned state is
that of the last segment processed; with ``reverse=True`` each segment runs from its own
end to its own start; no derivative crosses a segment start; ``resets`` composes with
``length`` (flags in the padding are ignored).

Everything runs in :func:`rnnjax.engine.run` (one ``lax.scan``, so compile time does not
grow with ``T``), configured by an explicit :class:`rnnjax.ScanConfig`.

Shapes: ``T`` time, ``B`` batch axes (any number), ``I`` input size, ``H`` hidden size.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks, engine
from rnnjax import parallel as par
from rnnjax.cells.base import param_shapes, state_dtype

__all__ = ["unroll", "unroll_batch", "parallel_solve", "pack", "unpack"]


def _bcast(mask, leaf):
    return mask.reshape(mask.shape + (1,) * (leaf.ndim - mask.ndim))


def prepare(xs, length, resets, reverse: bool):
    """Reorder and mask time-major inputs ``(T, *B, I)`` for the engine.

    Returns ``(xs, valid, resets, order)``: ``xs`` in processing order with padding
    zeroed, ``valid`` ``(T, *B)`` (or ``None``), the segment starts in processing order
    (or ``None``), and ``order`` (``(T, *B)`` indices, ``"flip"`` or ``None``), the
    permutation (its own inverse) from processing order back to input positions.
    """
    T = xs.shape[0]
    batch = xs.shape[1:-1]
    t = jnp.arange(T).reshape((T,) + (1,) * len(batch))
    valid = None if length is None else t < length[None]
    if resets is not None and reverse:
        # a segment [a, b) is processed from b - 1 down to a: it starts where the next
        # segment starts, one position later in the input
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
    order = None
    if reverse:
        if length is None:
            order = "flip"
            xs = xs[::-1]
            resets = None if resets is None else resets[::-1]
        else:
            order = jnp.where(valid, length[None] - 1 - t, t)
            xs = jnp.take_along_axis(xs, order[..., None], axis=0)
            resets = None if resets is None else jnp.take_along_axis(resets, order, axis=0)
    if valid is not None:
        xs = jnp.where(_bcast(valid, xs), xs, jnp.zeros((), xs.dtype))
    return xs, valid, resets, order


def restore_order(ys, order):
    """Undo :func:`prepare`'s reordering on outputs ``(T, *B, ...)``."""
    if order is None:
        return ys
    if isinstance(order, str):
        return jax.tree_util.tree_map(lambda y: y[::-1], ys)
    return jax.tree_util.tree_map(lambda y: jnp.take_along_axis(y, _bcast(order, y), axis=0), ys)


def batch_first(ys, nb: int):
    """Time-major outputs ``(T, *B, ...)`` (an array or any pytree) as ``(*B, T, ...)``."""
    if not nb:
        return ys
    return jax.tree_util.tree_map(lambda y: jnp.moveaxis(y, 0, nb), ys)


def check_call(cell, params, xs, length, state, resets, *, batch_ndim, time_major, name="xs"):
    """The checks of a sequence call. Returns time-major ``xs`` ``(T, *B, I)``, the batch
    shape, checked ``length``, the state (given or initial, cast to the state dtype) and
    time-major ``resets``."""
    if not (hasattr(cell, "step") and hasattr(cell, "init") and hasattr(cell, "input_size")):
        lacks = [a for a in ("step", "init", "initial_state", "input_size") if not hasattr(cell, a)]
        raise TypeError(
            f"cell must be an rnnjax cell (init, initial_state, step, input_size); got "
            f"{checks.describe(cell)}, which lacks {lacks}"
        )
    xs, batch, T = checks.sequence_inputs(
        name, xs, cell.input_size, batch_ndim=batch_ndim, time_major=time_major
    )
    checks.params("params", param_shapes(cell), params, type(cell).__name__)
    length = checks.lengths("length", length, T, batch)
    res_shape = (T,) + batch if (time_major or not batch) else batch + (T,)
    resets = checks.resets("resets", resets, res_shape)
    if batch and not time_major:
        nb = len(batch)
        xs = jnp.moveaxis(xs, nb, 0)
        resets = None if resets is None else jnp.moveaxis(resets, nb, 0)
    sd = state_dtype(xs, params)
    init = cell.initial_state(sd)
    if state is None:
        state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch + a.shape), init)
    else:
        state = checks.state("state", init, state, batch, dtype=sd)
    return xs, batch, length, state, resets


def run(cell, params, xs, length, state, reverse, resets, config, **masks):
    """Prepared time-major inputs through the engine, outputs back in input order."""
    xs, valid, resets, order = prepare(xs, length, resets, reverse)
    state, ys = engine.run(
        cell, params, state, xs, valid=valid, resets=resets, config=config, **masks
    )
    return state, restore_order(ys, order)


def _config(config, unroll) -> engine.ScanConfig:
    if config is None:
        config = engine.ScanConfig()
    elif not isinstance(config, engine.ScanConfig):
        raise TypeError(f"config must be an rnnjax.ScanConfig; got {checks.describe(config)}")
    unroll = deprecated_unroll(unroll, "the unroll argument of unroll/unroll_batch")
    return config if unroll is None else dataclasses.replace(config, unroll=unroll)


def deprecated_unroll(unroll, what: str) -> Optional[int]:
    """A deprecated ``unroll`` argument, checked; warns when it is given (``None``: not
    given), naming :class:`rnnjax.ScanConfig`'s ``unroll`` field, the one place it is set."""
    if unroll is None:
        return None
    unroll = checks.integer("unroll", unroll, 1)
    warnings.warn(
        f"{what} is deprecated and goes in the next release: use "
        f"config=rnnjax.ScanConfig(unroll={unroll})",
        DeprecationWarning,
        stacklevel=4,
    )
    return unroll


def unroll(
    cell,
    params: dict,
    xs: jax.Array,
    length=None,
    state=None,
    reverse: bool = False,
    unroll: Optional[int] = None,
    *,
    resets=None,
    config: Optional[engine.ScanConfig] = None,
):
    """Run ``cell`` over one sequence.

    Args:
      cell: any rnnjax cell.
      params: the cell's parameters (``cell.init(key)``).
      xs: inputs, shape ``(T, I)``. Batch with :func:`unroll_batch` (or :func:`jax.vmap`).
      length: optional integer scalar, the true length; steps ``t >= length`` are padding.
        A concrete value outside ``[0, T]`` raises; a traced one is clipped to ``[0, T]``.
      state: optional initial state (default ``cell.initial_state()``); a floating dtype
        other than the state dtype is cast.
      reverse: process the sequence backwards (padding-aware; ``ys`` stays aligned).
      unroll: deprecated: use ``config=ScanConfig(unroll=...)`` (steps per ``lax.scan``
        iteration); given, it warns and overrides ``config.unroll``.
      resets: optional bool ``(T,)``: ``resets[t]`` puts the state back to the initial
        state before step ``t`` (see the module docstring).
      config: a :class:`rnnjax.ScanConfig` (default ``ScanConfig()``).

    Returns:
      ``(state, ys)``: the state after the last real step, and outputs ``(T, output_size)``,
      exactly zero at padded steps. A cell whose output is a pytree (a tuple, list or
      dict of arrays) gives that pytree with a leading ``T`` on every leaf, each leaf
      zeroed, reversed and reset as an array output would be.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.GRU(input_size=2, hidden_size=3)
      >>> params = cell.init(jax.random.key(0))
      >>> state, ys = rj.unroll(cell, params, jnp.ones((5, 2)), length=3)
      >>> bool((ys[3:] == 0).all())
      True
      >>> resets = jnp.array([False, False, True, False, False])  # segments [0, 2), [2, 5)
      >>> _, packed = rj.unroll(cell, params, jnp.ones((5, 2)), resets=resets)
      >>> _, alone = rj.unroll(cell, params, jnp.ones((3, 2)))
      >>> bool(jnp.allclose(packed[2:], alone))
      True
    """
    checks.boolean("reverse", reverse)
    config = _config(config, unroll)
    xs, _, length, state, resets = check_call(
        cell, params, xs, length, state, resets, batch_ndim=0, time_major=True
    )
    return run(cell, params, xs, length, state, reverse, resets, config)


def unroll_batch(
    cell,
    params: dict,
    xs: jax.Array,
    length=None,
    state=None,
    reverse: bool = False,
    unroll: Optional[int] = None,
    time_major: bool = False,
    *,
    resets=None,
    config: Optional[engine.ScanConfig] = None,
):
    """:func:`unroll` over any number of leading batch axes, natively batched: one scan
    over ``(T, *B, .)`` arrays (every step one ``(B, .) @ (., G * H)`` product).

    Args:
      xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
      length: optional integers of shape ``B`` (a list is fine; checked to lie in
        ``[0, T]`` when concrete, clipped when traced).
      state: optional initial state whose leaves have leading axes ``B``.
      resets: optional bool, laid out like ``xs`` without the feature axis: ``(*B, T)``,
        or ``(T, *B)`` with ``time_major=True``.
      reverse, unroll, config: as in :func:`unroll`.

    Returns:
      ``(state, ys)`` with ``ys`` laid out like ``xs`` (``(*B, T, H)`` or ``(T, *B, H)``;
      every leaf so for a pytree output).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.LSTM(2, 3)
      >>> p = cell.init(jax.random.key(0))
      >>> st, ys = rj.unroll_batch(cell, p, jnp.ones((4, 6, 2)), length=[6, 3, 1, 0])
      >>> ys.shape, st.c.shape
      ((4, 6, 3), (4, 3))
    """
    checks.boolean("reverse", reverse)
    checks.boolean("time_major", time_major)
    config = _config(config, unroll)
    xs, batch, length, state, resets = check_call(
        cell, params, xs, length, state, resets, batch_ndim=None, time_major=time_major
    )
    state, ys = run(cell, params, xs, length, state, reverse, resets, config)
    if not time_major:
        ys = batch_first(ys, len(batch))
    return state, ys


# --------------------------------------------------------------------------- packing


def pack(sequences, row_length: int):
    """Pack variable-length sequences into rows without padding between them (first fit).

    Each sequence goes into the first row with room for it (rows in the order they were
    opened); a new row opens when none has room. Use the result with ``resets=`` so that
    every sequence runs from the initial state, as if alone.

    Args:
      sequences: a list of arrays ``(T_i, ...)`` with ``1 <= T_i <= row_length``.
      row_length: ``T`` of a row.

    Returns:
      ``(xs, resets, length, index)``: ``xs`` ``(R, T, ...)`` (zeros after each row's last
      sequence), ``resets`` ``(R, T)`` bool (true where a sequence starts), ``length``
      ``(R,)`` (the filled steps of each row), and ``index``: for each sequence,
      ``(row, start, T_i)``, what :func:`unpack` needs.

    Example:
      >>> import numpy as np, rnnjax as rj
      >>> seqs = [np.ones((3, 2)), np.ones((4, 2)), np.ones((2, 2))]
      >>> xs, resets, length, index = rj.pack(seqs, row_length=5)
      >>> xs.shape, length.tolist(), index
      ((2, 5, 2), [5, 4], [(0, 0, 3), (1, 0, 4), (0, 3, 2)])
    """
    row_length = checks.integer("row_length", row_length, 1)
    if not isinstance(sequences, (list, tuple)) or not sequences:
        raise TypeError(
            f"sequences must be a non-empty list of arrays; got {checks.describe(sequences)}"
        )
    arrays = [np.asarray(s) for s in sequences]
    tail = arrays[0].shape[1:]
    fill, index = [], []
    for i, a in enumerate(arrays):
        if a.ndim < 1 or a.shape[1:] != tail:
            raise ValueError(f"sequences[{i}] must have shape (T_i,) + {tail}; got shape {a.shape}")
        if not 1 <= a.shape[0] <= row_length:
            raise ValueError(
                f"sequences[{i}] must have 1 <= T_i <= row_length={row_length}; got T_i={a.shape[0]}"
            )
        row = next((r for r, used in enumerate(fill) if used + a.shape[0] <= row_length), None)
        if row is None:
            row = len(fill)
            fill.append(0)
        index.append((row, fill[row], a.shape[0]))
        fill[row] += a.shape[0]
    dtype = np.result_type(*arrays)
    xs = np.zeros((len(fill), row_length) + tail, dtype)
    resets = np.zeros((len(fill), row_length), bool)
    for a, (row, start, n) in zip(arrays, index):
        xs[row, start : start + n] = a
        resets[row, start] = True
    return jnp.asarray(xs), jnp.asarray(resets), jnp.asarray(fill, jnp.int32), index


def unpack(ys, index):
    """The per-sequence outputs of packed rows: ``[ys[row, start:start + T_i]]``.

    Args:
      ys: ``(R, T, ...)`` outputs of the packed rows.
      index: :func:`pack`'s ``index``: ``(row, start, T_i)`` triples with ``row < R`` and
        ``start + T_i <= T``; anything else (out of bounds, negative, not a triple) is a
        ``ValueError``/``TypeError`` naming ``index``, never clamped or cut short.

    Returns:
      A list of arrays ``(T_i, ...)``, in the order the sequences were given to :func:`pack`.

    Example:
      >>> import numpy as np, rnnjax as rj
      >>> xs, resets, length, index = rj.pack([np.ones((3, 1)), np.ones((2, 1))], 5)
      >>> [y.shape for y in rj.unpack(xs, index)]
      [(3, 1), (2, 1)]
    """
    if isinstance(ys, (list, tuple)):
        try:
            ys = np.asarray(ys)
        except ValueError as e:
            raise TypeError(f"ys must be an array (R, T, ...); got a ragged list ({e})") from None
    if not hasattr(ys, "shape") or len(ys.shape) < 2:
        raise TypeError(
            f"ys must be an array (R, T, ...) of packed rows; got {checks.describe(ys)}"
        )
    index = checks.pack_index("index", index, rows=ys.shape[0], T=ys.shape[1])
    return [ys[row, start : start + n] for row, start, n in index]


# --------------------------------------------------------------------------- solve


def parallel_solve(
    cell,
    params,
    xs,
    length=None,
    state=None,
    reverse=False,
    *,
    resets=None,
    options: Optional[par.ParallelOptions] = None,
    time_major: bool = False,
):
    """:func:`rnnjax.unroll_batch` with ``method="parallel"``, returning the diagnostics.

    The same semantics (lengths, reverse, resets, any number of batch axes, also none:
    ``xs`` ``(T, I)``) and the same results as ``unroll_batch(...,
    config=ScanConfig(method="parallel", parallel=options))``, plus what the Newton solve
    did. One solve serves the whole batch: the iterations stop when every sequence meets
    the tolerance.

    Args:
      cell, params, xs, length, state, reverse, resets, time_major: as in
        :func:`rnnjax.unroll_batch`.
      options: a :class:`rnnjax.parallel.ParallelOptions` (default ``ParallelOptions()``).

    Returns:
      ``(state, ys, info)``: ``info`` a :class:`rnnjax.parallel.NewtonInfo` for cells without a linear
      form, ``None`` for cells with one (a parallel scan is exact: nothing to report).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.GRU(2, 3)
      >>> p = cell.init(jax.random.key(0))
      >>> st, ys, info = rj.parallel_solve(cell, p, jnp.ones((8, 2)))
      >>> bool(info.converged), bool(info.fell_back), ys.shape
      (True, False, (8, 3))
    """
    checks.boolean("reverse", reverse)
    checks.boolean("time_major", time_major)
    if options is not None and not isinstance(options, par.ParallelOptions):
        raise TypeError(
            f"options must be an rnnjax.parallel.ParallelOptions; got {checks.describe(options)}"
        )
    if isinstance(xs, (list, tuple)):  # nested lists, as unroll takes them
        xs = checks.floating_array("xs", xs)
    xs = jnp.asarray(xs) if isinstance(xs, np.ndarray) else xs
    one = getattr(xs, "ndim", 0) == 2
    if one:  # one sequence (T, I)
        xs = xs[:, None]
        resets = None if resets is None else jnp.asarray(resets)[:, None]
        if length is not None and np.shape(length) != ():
            raise ValueError(
                "length must be a scalar for one sequence xs (T, I) (batch lengths go with "
                f"xs (*B, T, I)); got {checks.describe(length)}"
            )
        length = None if length is None else jnp.reshape(jnp.asarray(length), (1,))
        state = None if state is None else jax.tree_util.tree_map(lambda a: a[None], state)
        time_major = True
    xs, batch, length, state, resets = check_call(
        cell, params, xs, length, state, resets, batch_ndim=None, time_major=time_major
    )
    xs, valid, resets, order = prepare(xs, length, resets, reverse)
    config = engine.ScanConfig(method="parallel", parallel=options)
    state, ys, info = engine.run(
        cell, params, state, xs, valid=valid, resets=resets, config=config, return_info=True
    )
    ys = restore_order(ys, order)
    if one:
        ys = jax.tree_util.tree_map(lambda y: y[:, 0], ys)
        return jax.tree_util.tree_map(lambda a: a[0], state), ys, info
    if not time_major:
        ys = batch_first(ys, len(batch))
    return state, ys, info
