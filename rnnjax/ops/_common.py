"""Machinery shared by every operator family: masks, chunk layout, reversal, argument checks.

Each family module (``linear_attn``, ``gla``, ``delta_rule``, ...) writes only its maths
(``step`` and the per-chunk products); everything about padding, resets, lengths and
reversal is here, so every family applies the same rule the same way.

Layouts
-------
Time-major (the public layout): ``q, k`` ``(T, *B, h, dk)``, ``v`` ``(T, *B, h, dv)``,
per-head scalars ``(T, *B, h)``, per-key-channel gates ``(T, *B, h, dk)``, masks
``(T, *B)``, state ``(*B, h, dk, dv)``. ``*B`` is any number of batch axes (also none).

Chunk layout (inside ``chunk``): time ``T`` padded to ``N * C`` and split into ``N`` chunks
of ``C`` rows, the row axis moved next to the features so that every per-chunk product is
a batched matrix product over the leading axes ``(N, *B, h)``::

    (T, *B, h, d)  --to_chunks(x, C, nb + 1)-->  (N, *B, h, C, d)
    (T, *B, h)     --to_chunks(x, C, nb + 1)-->  (N, *B, h, C)
    masks (T, *B)  --chunk_masks-------------->  (N, *B, 1, C)      (a unit head axis)

so a mask broadcasts against an array of the chunk layout with :func:`bcast` (trailing
unit axes). Inside a ``lax.scan`` over chunks (axis 0) the same holds without ``N``.

The mask rule (identical in ``recurrent`` and ``chunk``)
--------------------------------------------------------
- ``valid[t]`` false: step ``t`` changes nothing and ``o[t]`` is exactly 0. A reset on an
  invalid step is ignored (the step does nothing at all).
- ``resets[t]`` true: the state is put back to ``reset_state`` before step ``t`` reads it
  (step ``t``'s own transition then acts on ``reset_state``).

The recurrent form is :func:`scan` (a masked ``lax.scan`` of the family's ``step``).

The chunk form uses :class:`ChunkMasks` (from :func:`chunk_masks`), with, per chunk:

- ``valid`` ``(N, *B, 1, C)``: the family zeroes its inputs on invalid rows so that an
  invalid row is the identity transition with no write (log-decay 0, key 0, ...) and
  zeroes the outputs there (:func:`zero_invalid`);
- ``same`` ``(N, *B, 1, C, C)``: ``same[i, j]`` is ``j <= i`` and rows ``i, j`` in the same
  segment: the mask of every intra-chunk product (row ``i`` reads what row ``j`` wrote);
- ``first`` ``(N, *B, 1, C)``: row ``i`` lies in the chunk's first segment, so it reads the
  state entering the chunk; other rows read ``reset_state`` (:func:`by_source`);
- ``start`` ``(N, *B, 1, C)``: the row where row ``i``'s segment starts (0 in the first
  segment), used by :func:`decay_cumsum` for decays accumulated from the segment start;
- ``tail`` ``(N, *B, 1, C)``: row ``j`` lies in the chunk's last segment (its write
  reaches the state leaving the chunk);
- ``carries`` ``(N, *B, 1)``: the chunk's last segment is its first, so the state leaving
  the chunk is built on the entering state (else on ``reset_state``: :func:`end_source`).

Without ``resets`` the fields ``first``, ``start``, ``tail`` and ``carries`` are ``None``
(every row reads the entering state) and the helpers skip the ``reset_state`` products.
Invalid rows never reset, so the state leaving the last chunk is the state after the last
valid step: the final state.

Decays: for log-decays ``g`` (zero on invalid rows), :func:`decay_cumsum` returns ``cs``,
the inclusive cumulative sum from the chunk's first row, and ``seg``, the inclusive sum
from the row's segment start. The decay from row ``j``'s write to row ``i`` (same segment,
``j <= i``) is ``exp(cs[i] - cs[j])`` (:func:`pair_decay`); the decay applied to a row's
source state is ``exp(seg[i])``; the state leaving the chunk decays by ``exp(seg[C-1])``
and row ``j``'s write by ``exp(cs[C-1] - cs[j])`` when ``tail[j]``. Every exponent is a
sum of log-decays, so never positive for decays in (0, 1]: no overflow.

The public wrappers
-------------------
:func:`run_public` is the body of every public operator (``rnnjax.ops.<name>``): it checks
the arrays against their roles (shape symbols such as ``("h", "dk")``), ``length``,
``resets``, ``reverse``, ``method``, ``chunk``, ``scale`` and ``initial_state``; turns
``length`` into ``valid`` and ``reverse`` into a padding-aware reordering
(:func:`reorder`, undone on the outputs by :func:`restore_order`); and calls the family's
``chunk`` or ``recurrent``.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks

__all__ = [
    "bcast",
    "bcast_lead",
    "scan",
    "to_chunks",
    "from_chunks",
    "ChunkMasks",
    "chunk_masks",
    "zero_invalid",
    "decay_cumsum",
    "pair_decay",
    "by_source",
    "end_source",
    "scan_chunks",
    "reorder",
    "restore_order",
    "state_dtype",
    "run_public",
]


def bcast(mask, x):
    """``mask`` reshaped with trailing unit axes to broadcast against ``x`` (its leading
    axes are ``mask``'s)."""
    return mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim))


def bcast_lead(x, ndim: int):
    """``x`` with leading unit axes up to ``ndim`` axes (explicit rank promotion)."""
    return x.reshape((1,) * (ndim - x.ndim) + x.shape)


def _where(mask, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(bcast(mask, x), x, y), a, b)


def scan(step, xs, *, state, reset_state=None, valid=None, resets=None):
    """The recurrent form: ``lax.scan`` of ``step(state, *x_t) -> (state, o_t)`` over the
    time-major arrays ``xs`` (a tuple, each ``(T, *B, ...)``), with the masks ``valid`` and
    ``resets`` (bool ``(T, *B)`` or ``None``). ``reset_state`` defaults to ``state``.
    The carry keeps ``state``'s dtype. Returns ``(o, final_state)``."""
    reset_state = state if reset_state is None else reset_state

    def body(s, inp):
        x_t, v_t, r_t = inp
        s_in = s if r_t is None else _where(r_t, reset_state, s)
        new, o = step(s_in, *x_t)
        new = jax.tree_util.tree_map(lambda n, c: n.astype(c.dtype), new, s)
        if v_t is not None:
            new = _where(v_t, new, s)
            o = jnp.where(bcast(v_t, o), o, jnp.zeros((), o.dtype))
        return new, o

    final, o = jax.lax.scan(body, state, (tuple(xs), valid, resets))
    return o, final


def to_chunks(x, chunk: int, lead: int):
    """Time-major ``x`` ``(T, *rest)`` padded with zeros (``False``) to ``N * chunk`` steps
    and reshaped to ``(N, *rest[:lead], chunk, *rest[lead:])``: the row axis after the
    first ``lead`` axes of ``rest`` (``nb + 1`` for per-head arrays, ``nb`` for masks)."""
    T = x.shape[0]
    n = -(-T // chunk)
    pad = n * chunk - T
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)], axis=0)
    return jnp.moveaxis(x.reshape((n, chunk) + x.shape[1:]), 1, 1 + lead)


def from_chunks(y, T: int, lead: int):
    """The inverse of :func:`to_chunks`: ``(N, *rest[:lead], C, *rest[lead:])`` back to
    ``(T, *rest)`` (padding dropped)."""
    y = jnp.moveaxis(y, 1 + lead, 1)
    return y.reshape((-1,) + y.shape[2:])[:T]


class ChunkMasks(NamedTuple):
    """The masks of the chunk form (module docstring); ``None`` fields without resets."""

    valid: jax.Array
    same: jax.Array
    first: Optional[jax.Array] = None
    start: Optional[jax.Array] = None
    tail: Optional[jax.Array] = None
    carries: Optional[jax.Array] = None


def chunk_masks(valid, resets, T: int, batch, chunk: int) -> ChunkMasks:
    """:class:`ChunkMasks` (chunk layout, a unit head axis) from time-major ``valid`` and
    ``resets`` (bool ``(T, *B)`` or ``None``); padded rows are invalid."""
    batch = tuple(batch)
    nb = len(batch)
    valid = jnp.ones((T,) + batch, bool) if valid is None else valid
    vc = jnp.expand_dims(to_chunks(valid, chunk, nb), nb + 1)  # (N, *B, 1, C)
    idx = jnp.arange(chunk)
    causal = idx[:, None] >= idx[None, :]
    if resets is None:
        return ChunkMasks(valid=vc, same=jnp.broadcast_to(causal, vc.shape + (chunk,)))
    rc = jnp.expand_dims(to_chunks(resets & valid, chunk, nb), nb + 1)
    seg = jnp.cumsum(rc.astype(jnp.int32), axis=-1)
    same = bcast_lead(causal, rc.ndim + 1) & (seg[..., :, None] == seg[..., None, :])
    start = jax.lax.cummax(jnp.where(rc, bcast_lead(idx, rc.ndim), 0), axis=rc.ndim - 1)
    return ChunkMasks(
        valid=vc,
        same=same,
        first=seg == 0,
        start=start,
        tail=seg == seg[..., -1:],
        carries=seg[..., -1] == 0,
    )


def zero_invalid(m: ChunkMasks, x):
    """``x`` (chunk layout, rows on the axis after ``m.valid``'s head axis) with invalid
    rows set to exactly 0."""
    return jnp.where(bcast(m.valid, x), x, jnp.zeros((), x.dtype))


def decay_cumsum(m: ChunkMasks, g):
    """``(cs, seg)`` of log-decays ``g`` (chunk layout ``(..., h, C, *F)``, zero on invalid
    rows): ``cs`` summed from the chunk's first row, ``seg`` from each row's segment start
    (both inclusive; ``seg is cs`` without resets)."""
    ax = m.valid.ndim - 1
    cs = jnp.cumsum(g, axis=ax)
    if m.start is None:
        return cs, cs
    idx = jnp.broadcast_to(bcast(m.start, g), g.shape)
    return cs, cs - jnp.take_along_axis(cs - g, idx, axis=ax)


def pair_decay(m: ChunkMasks, cs):
    """``D[..., i, j, *F] = exp(cs[i] - cs[j])`` where ``m.same[i, j]``, else exactly 0:
    the decay of row ``j``'s write when row ``i`` reads it. ``cs`` ``(..., h, C, *F)``
    from :func:`decay_cumsum`; returns ``(..., h, C, C, *F)``."""
    ax = m.valid.ndim - 1
    diff = jnp.expand_dims(cs, ax + 1) - jnp.expand_dims(cs, ax)
    same = bcast(m.same, diff)
    return jnp.where(same, jnp.exp(jnp.where(same, diff, 0.0)), 0.0)


def by_source(m: ChunkMasks, f: Callable, enter, reset_state):
    """Per-row outputs ``f(S)`` (rows on the row axis, e.g. ``(..., h, C, dv)``) with each
    row's source state: ``f(enter)`` on rows of the chunk's first segment, else
    ``f(reset_state)`` (not computed without resets)."""
    out = f(enter)
    if m.first is None:
        return out
    return jnp.where(bcast(m.first, out), out, f(reset_state))


def end_source(carries, enter, reset_state):
    """The state a chunk's last segment is built on: ``enter`` where ``carries`` (that
    segment is the chunk's first; ``m.carries`` of one chunk inside a scan over chunks, or
    ``None`` without resets), else ``reset_state``."""
    if carries is None:
        return enter
    return _where(carries, enter, reset_state)


def scan_chunks(body, xs, *, state, remat: bool = True):
    """``lax.scan`` of ``body(S, x) -> (S, o)`` over chunk-layout arrays ``xs`` (axis 0),
    ``jax.checkpoint``-ed so reverse mode keeps one chunk's intermediates, not all.
    Returns ``(o, final_state)``."""

    def cast_body(s, x):
        new, o = body(s, x)
        return new.astype(s.dtype), o

    final, o = jax.lax.scan(jax.checkpoint(cast_body) if remat else cast_body, state, xs)
    return o, final


def reorder(arrays, length, resets, reverse: bool, T: int, batch):
    """Public ``length``/``reverse`` as processing order. ``arrays``: time-major arrays
    ``(T, *B, ...)``. Returns ``(arrays, valid, resets, order)``: the arrays and resets in
    processing order (each row's steps ``length - 1 ... 0`` when ``reverse``; a segment
    ``[a, b)`` then runs from ``b - 1`` to ``a``), ``valid = t < length`` (or ``None``) and
    ``order`` for :func:`restore_order` (``None``, ``"flip"`` or ``(T, *B)`` indices, a
    permutation that is its own inverse)."""
    batch = tuple(batch)
    t = jnp.arange(T).reshape((T,) + (1,) * len(batch))
    valid = None if length is None else t < length[None]
    if not reverse:
        return tuple(arrays), valid, resets, None
    if resets is not None:  # a segment [a, b) starts, reversed, where the next one starts
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])], axis=0)
    if length is None:
        flip = tuple(a[::-1] for a in arrays)
        return flip, valid, None if resets is None else resets[::-1], "flip"
    order = jnp.where(valid, length[None] - 1 - t, t)
    arrays = tuple(jnp.take_along_axis(a, bcast(order, a), axis=0) for a in arrays)
    resets = None if resets is None else jnp.take_along_axis(resets, order, axis=0)
    return arrays, valid, resets, order


def restore_order(y, order):
    """Outputs ``(T, *B, ...)`` from processing order back to input positions."""
    if order is None:
        return y
    if isinstance(order, str):
        return y[::-1]
    return jnp.take_along_axis(y, bcast(order, y), axis=0)


def state_dtype(*arrays):
    """The state's dtype: the inputs' common floating dtype, at least float32 (bfloat16
    inputs keep a float32 state)."""
    return jnp.promote_types(jnp.result_type(*arrays), jnp.float32)


def _shape_str(dims):
    return "(" + ", ".join(dims) + ")"


def _check_arrays(arrays: dict, roles: dict):
    """Checks arrays against roles (``("h", "dk")``: per step, after ``(T, *B)``; a role
    starting with ``"const"`` has no time or batch axes). Returns ``(T, batch, sizes)``."""
    names = list(arrays)
    first = names[0]
    x0 = checks.floating_array(first, arrays[first])
    dims0 = roles[first]
    if x0.ndim < 1 + len(dims0):
        raise ValueError(
            f"{first} must have shape {_shape_str(('T', '*B') + dims0)}; got {checks.describe(x0)}"
        )
    T, batch = x0.shape[0], tuple(x0.shape[1 : x0.ndim - len(dims0)])
    sizes = {}
    for name in names:
        x = checks.floating_array(name, arrays[name])
        dims = roles[name]
        const = bool(dims) and dims[0] == "const"
        dims = dims[1:] if const else dims
        lead = () if const else (T,) + batch
        sym = dims if const else ("T", "*B") + dims
        expect = lead + tuple(sizes.get(d, -1) for d in dims)
        got = tuple(x.shape)
        ok = len(got) == len(expect) and all(e in (-1, g) for e, g in zip(expect, got))
        if not ok:
            want = tuple(str(e) if e != -1 else d for e, d in zip(expect, lead + dims))
            raise ValueError(
                f"{name} must have shape {_shape_str(sym)} = ({', '.join(want)}) to match "
                f"{first}; got {checks.describe(x)}"
            )
        sizes.update(zip(dims, got[len(lead) :]))
    return T, batch, sizes


def run_public(
    module,
    arrays: dict,
    roles: dict,
    *,
    initial_state,
    length,
    resets,
    reverse,
    method,
    chunk,
    scale,
    default_scale: Optional[Callable] = None,
    check: Optional[Callable] = None,
):
    """The body of a public operator ``rnnjax.ops.<name>``.

    Args:
      module: the family module (``step``, ``recurrent``, ``chunk``).
      arrays: the operator's arrays by argument name, in the module's order; the first
        fixes ``T`` and the batch axes.
      roles: each array's trailing shape symbols, e.g. ``{"q": ("h", "dk"), "v": ("h",
        "dv"), "g": ("h",)}``; ``("const", "h")`` for an array without time or batch axes.
        The state is ``(*B, h, dk, dv)``.
      initial_state, length, resets, reverse, method, chunk, scale: the public arguments.
      default_scale: ``sizes -> scale`` when ``scale`` is ``None`` (default ``dk ** -0.5``);
        the module gets ``scale`` as a keyword unless this returns ``None``.
      check: ``arrays -> None``, the family's own checks (e.g. a ``beta`` range), after
        the shape checks.

    Returns:
      ``(o, final_state)``: ``o`` ``(T, *B, h, dv)`` at input positions (zero past each
      row's length), ``final_state`` ``(*B, h, dk, dv)`` after each row's last valid step.
    """
    T, batch, sizes = _check_arrays(arrays, roles)
    arrays = {n: jnp.asarray(a) for n, a in arrays.items()}
    if check is not None:
        check(arrays)
    method = checks.choice("method", method, ("chunkwise", "recurrent"))
    chunk = checks.integer("chunk", chunk, minimum=1)
    reverse = checks.boolean("reverse", reverse)
    if scale is None:
        scale = sizes["dk"] ** -0.5 if default_scale is None else default_scale(sizes)
    else:
        scale = checks.number("scale", scale)
    length = checks.lengths("length", length, T, batch)
    resets = checks.resets("resets", resets, (T,) + batch)
    sd = state_dtype(*arrays.values())
    zero = jnp.zeros((sizes["h"], sizes["dk"], sizes["dv"]), sd)
    if initial_state is None:
        state = jnp.broadcast_to(zero, batch + zero.shape)
    else:
        state = checks.state("initial_state", zero, initial_state, batch, dtype=sd)
    timed = [n for n in arrays if roles[n][:1] != ("const",)]
    moved, valid, resets, order = reorder(
        [arrays[n] for n in timed], length, resets, reverse, T, batch
    )
    arrays.update(zip(timed, moved))
    kw = dict(state=state, reset_state=state, valid=valid, resets=resets)
    if scale is not None:
        kw["scale"] = scale
    if method == "chunkwise":
        o, final = module.chunk(**arrays, chunk=chunk, **kw)
    else:
        o, final = module.recurrent(**arrays, **kw)
    return restore_order(o, order), final
