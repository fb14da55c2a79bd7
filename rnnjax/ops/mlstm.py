r"""The stabilised mLSTM of xLSTM (Beck et al. 2024) as an operator on arrays: one step,
the recurrent form (a scan of the step) and the chunkwise form.

Per head, with the key scaled as the memory stores it (:math:`\tilde k_t = s\, k_t`,
``scale`` :math:`s`, default :math:`d_k^{-1/2}`) and the gates' pre-activations ``i``
(input, exponential) and ``f`` (forget, :math:`\log f_t = \log\sigma(f_t)`):

.. math::

    \begin{aligned}
    m_t &= \max(\log f_t + m_{t-1},\ i_t), \quad
    f'_t = e^{\log f_t + m_{t-1} - m_t}, \quad i'_t = e^{i_t - m_t} \\
    S_t &= f'_t S_{t-1} + i'_t\, \tilde k_t v_t^\top, \qquad
    n_t = f'_t n_{t-1} + i'_t \tilde k_t \\
    o_t &= \frac{S_t^\top q_t}{\max(|n_t^\top q_t|,\ e^{-m_t})}
    \end{aligned}

The state is :class:`State` ``(S, n, m)``: the memory ``S`` ``(*B, h, dk, dv)`` in the
``k v^T`` orientation shared by the operators of :mod:`rnnjax.ops`, the normaliser ``n``
``(*B, h, dk)`` and the stabiliser ``m`` ``(*B, h)``. The stabiliser keeps the
exponentials finite and changes no output: with :math:`\bar S_t = e^{m_t} S_t` (and
:math:`\bar n_t` alike) the unstabilised memory gives the same
:math:`o_t = \bar S_t^\top q_t / \max(|\bar n_t^\top q_t|, 1)`.

The chunkwise form computes, within a chunk of ``L`` steps, every output as a stabilised
masked product (source ``j`` weighs :math:`e^{\sum_{s=j+1}^{t}\log f_s + i_j - m_t}`, the
chunk's entering state weighs :math:`e^{\sum_{s \le t}\log f_s + m_0 - m_t}`) and carries
the state across chunks with a ``lax.scan``; its stabiliser is the recurrent one, so the
two forms agree to rounding, derivatives of every order included.

Everything is computed in the state's dtype (float32, or float64 under x64): the
exponential gates are too sensitive for reduced precision.

Masks, bool ``(T, *B)``: ``valid[t]`` false leaves the state unchanged and gives
``o[t] = 0``; ``resets[t]`` puts the state back to ``reset_state`` (default ``state``)
before step ``t`` reads it (a reset on an invalid step does nothing), and no derivative
crosses it.

Shapes: ``T`` time, ``B`` batch axes (any number), ``h`` heads, ``dk`` key size, ``dv``
value size.

References:
  Beck, Poeppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter & Hochreiter
  (2024). xLSTM: Extended long short-term memory.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks

__all__ = ["State", "step", "recurrent", "chunk"]


class State(NamedTuple):
    """The mLSTM operator's state: memory ``S`` ``(*B, h, dk, dv)``, normaliser ``n``
    ``(*B, h, dk)``, stabiliser ``m`` ``(*B, h)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import mlstm
      >>> s = mlstm.State(S=jnp.zeros((2, 3, 4)), n=jnp.zeros((2, 3)), m=jnp.zeros(2))
      >>> s._fields
      ('S', 'n', 'm')
    """

    S: jax.Array
    n: jax.Array
    m: jax.Array


def _gates(q, k, v, i, f, scale, dtype):
    """The inputs in ``dtype``, the key scaled and the forget gate as ``log f``."""
    scale = k.shape[-1] ** -0.5 if scale is None else scale
    q, k, v, i, f = (jnp.asarray(a).astype(dtype) for a in (q, k, v, i, f))
    return q, k * scale, v, i, jax.nn.log_sigmoid(f)


def step(state: State, q, k, v, i, f, *, scale: Optional[float] = None):
    """One step, no masks.

    Args:
      state: :class:`State`, leaves ``(*B, h, ...)``.
      q, k: ``(*B, h, dk)``; v: ``(*B, h, dv)``.
      i, f: ``(*B, h)``, the input and forget gates' pre-activations.
      scale: the key's scale (default ``dk ** -0.5``).

    Returns:
      ``(state, o)`` with ``o`` ``(*B, h, dv)`` in the state's dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import mlstm
      >>> s = mlstm.State(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)), jnp.zeros(1))
      >>> s, o = mlstm.step(s, jnp.ones((1, 2)), jnp.ones((1, 2)), jnp.ones((1, 2)),
      ...                   jnp.zeros(1), jnp.zeros(1), scale=1.0)
      >>> o.tolist()                 # S = k v^T, n = k: o = S^T q / |n^T q| = v
      [[1.0, 1.0]]
    """
    q, k, v, i, log_f = _gates(q, k, v, i, f, scale, state.S.dtype)
    m = jnp.maximum(log_f + state.m, i)
    f_g = jnp.exp(log_f + state.m - m)[..., None]
    i_g = jnp.exp(i - m)[..., None]
    S = f_g[..., None] * state.S + i_g[..., None] * (k[..., :, None] * v[..., None, :])
    n = f_g * state.n + i_g * k
    num = jnp.einsum("...kv,...k->...v", S, q)
    den = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), jnp.exp(-m))[..., None]
    return State(S, n, m), num / den


def _where(mask, a, b):
    """``a`` where ``mask`` ``(*B)``, else ``b``, leaf by leaf (trailing axes broadcast)."""
    return jax.tree_util.tree_map(
        lambda x, y: jnp.where(mask.reshape(mask.shape + (1,) * (x.ndim - mask.ndim)), x, y),
        a,
        b,
    )


def recurrent(
    q,
    k,
    v,
    i,
    f,
    *,
    state: State,
    reset_state: Optional[State] = None,
    valid=None,
    resets=None,
    scale: Optional[float] = None,
):
    """A ``lax.scan`` of :func:`step` with the masks of the module docstring.

    Args:
      q, k: ``(T, *B, h, dk)``; v: ``(T, *B, h, dv)``; i, f: ``(T, *B, h)``.
      state: the initial :class:`State`.
      reset_state: what a reset puts back (default ``state``).
      valid, resets: ``(T, *B)`` bool or ``None``.
      scale: the key's scale (default ``dk ** -0.5``).

    Returns:
      ``(o, final_state)``: ``o`` ``(T, *B, h, dv)``, zero where not valid; the state
      after the last valid step.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.ops import mlstm
      >>> q, k, v = (jax.random.normal(jax.random.key(j), (5, 2, 3)) for j in range(3))
      >>> i, f = jnp.zeros((5, 2)), jnp.ones((5, 2))
      >>> s0 = mlstm.State(jnp.zeros((2, 3, 3)), jnp.zeros((2, 3)), jnp.zeros(2))
      >>> o, st = mlstm.recurrent(q, k, v, i, f, state=s0)
      >>> o2, st2 = mlstm.chunk(q, k, v, i, f, state=s0, chunk=2)
      >>> o.shape, bool(jnp.allclose(o, o2, atol=1e-5))
      ((5, 2, 3), True)
    """
    reset_state = state if reset_state is None else reset_state

    def body(carry, inp):
        x, r, ok = inp
        s = carry if r is None else _where(r, reset_state, carry)
        new, o = step(s, *x, scale=scale)
        if ok is None:
            return new, o
        return _where(ok, new, carry), jnp.where(ok[..., None, None], o, jnp.zeros((), o.dtype))

    return _swap(jax.lax.scan(body, state, ((q, k, v, i, f), resets, valid)))


def _swap(pair):
    state, o = pair
    return o, state


def chunk(
    q,
    k,
    v,
    i,
    f,
    *,
    state: State,
    reset_state: Optional[State] = None,
    valid=None,
    resets=None,
    chunk: int = 64,
    scale: Optional[float] = None,
):
    """The chunkwise form: within chunks of ``chunk`` steps a stabilised masked product,
    across chunks a ``lax.scan`` of the chunk states. Any ``T`` (the last chunk is padded
    with invalid steps; a chunk longer than ``T`` is cut to ``T``).

    Args:
      q, k, v, i, f, state, reset_state, valid, resets, scale: as in :func:`recurrent`.
      chunk: the chunk length, an int >= 1. Memory ``O(T chunk)`` per head.

    Returns:
      ``(o, final_state)`` as :func:`recurrent`, equal to it to rounding.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.ops import mlstm
      >>> q = k = v = jnp.ones((7, 1, 2))
      >>> s0 = mlstm.State(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)), jnp.zeros(1))
      >>> o, st = mlstm.chunk(q, k, v, jnp.zeros((7, 1)), jnp.zeros((7, 1)), state=s0, chunk=3)
      >>> o.shape, st.S.shape
      ((7, 1, 2), (1, 2, 2))
    """
    L = checks.integer("chunk", chunk, 1)
    reset_state = state if reset_state is None else reset_state
    T, batch = q.shape[0], q.shape[1:-2]
    N = math.prod(batch)
    if T == 0:
        return jnp.zeros(v.shape, state.S.dtype), state
    flat = lambda a, lead: a.reshape((lead,) + (N,) + a.shape[1 + len(batch) :])  # noqa: E731
    q, k, v, i, f = (flat(a, T) for a in (q, k, v, i, f))
    s0, r0 = (jax.tree_util.tree_map(lambda a: a.reshape((N,) + a.shape[len(batch) :]), s)
              for s in (state, reset_state))  # fmt: skip
    valid = jnp.ones((T, N), bool) if valid is None else jnp.asarray(valid).reshape(T, N)
    resets = None if resets is None else jnp.asarray(resets).reshape(T, N)
    L = min(L, T)
    n = -(-T // L)
    pad = n * L - T
    if pad:
        extend = lambda a: jnp.concatenate([a, jnp.zeros((pad,) + a.shape[1:], a.dtype)])  # noqa: E731
        q, k, v, i, f, valid = (extend(a) for a in (q, k, v, i, f, valid))
        resets = None if resets is None else extend(resets)
    q, k, v, i, log_f = _gates(q, k, v, i, f, scale, s0.S.dtype)
    split = lambda a: None if a is None else a.reshape((n, L) + a.shape[1:])  # noqa: E731

    def body(carry, inp):
        return _block(carry, r0, *inp)

    inputs = (q, k, v, i, log_f, valid, resets)
    if n == 1:
        st, o = _block(s0, r0, *inputs)
    else:
        st, o = jax.lax.scan(body, s0, tuple(split(a) for a in inputs))
        o = o.reshape((n * L,) + o.shape[2:])
    o = o[:T].reshape((T,) + batch + o.shape[2:])
    st = jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), st)
    return o, st


def _segments(log_f, valid, resets):
    """Per row of a chunk: the cumulative log forget gate ``F`` ``(L, N, h)``, the segment
    id ``seg`` ``(L, N)`` (0 while the entering segment runs) and ``F`` before the row's
    segment start."""
    L = log_f.shape[0]
    F = jnp.cumsum(log_f, axis=0)
    if resets is None:
        return F, jnp.zeros(valid.shape, jnp.int32), jnp.zeros_like(F)
    start = resets & valid
    t_idx = jnp.arange(L)[:, None]
    last_start = jax.lax.cummax(jnp.where(start, t_idx, 0), axis=0)
    F_before = jnp.take_along_axis(F - log_f, last_start[..., None], axis=0)
    return F, jnp.cumsum(start, axis=0), F_before


def _block(carry: State, s0: State, q, k, v, i, log_f, valid, resets):
    """``L`` steps at once: inputs ``(L, N, h, .)``, gates ``(L, N, h)``, masks ``(L, N)``;
    ``carry`` enters the chunk, ``s0`` is what a reset puts back."""
    L = q.shape[0]
    log_f = jnp.where(valid[..., None], log_f, 0.0)
    F, seg, F_before = _segments(log_f, valid, resets)
    first = (seg == 0)[..., None]  # (L, N, 1): rows whose source is the entering state
    D0 = F - jnp.where(first, 0.0, F_before) + jnp.where(first, carry.m[None], s0.m[None])
    # log D[n, h, t, j] = F_t - F_j + i_j for j <= t in the same segment, j valid
    Ft, it, D0t = (jnp.moveaxis(a, 0, -1) for a in (F, i, D0))  # (N, h, L)
    logD = Ft[..., :, None] - Ft[..., None, :] + it[..., None, :]
    t_idx = jnp.arange(L)
    segt = seg.T  # (N, L)
    mask = (
        (t_idx[:, None] >= t_idx[None, :])[None]
        & (segt[:, :, None] == segt[:, None, :])
        & valid.T[:, None, :]
    )[:, None]  # (N, 1, L, L)
    m = jnp.maximum(D0t, jnp.max(jnp.where(mask, logD, -jnp.inf), axis=-1))  # (N, h, L)
    W = jnp.where(mask, jnp.exp(jnp.where(mask, logD - m[..., None], 0.0)), 0.0)
    w0 = jnp.exp(D0t - m)
    qt, kt, vt = (jnp.moveaxis(a, 0, 2) for a in (q, k, v))  # (N, h, L, d)
    A = jnp.einsum("nhtd,nhjd->nhtj", qt, kt) * W
    firstt = jnp.moveaxis(first, 0, -1)  # (N, 1, L)
    Sq = jnp.where(
        firstt[..., None],
        jnp.einsum("nhkv,nhtk->nhtv", carry.S, qt),
        jnp.einsum("nhkv,nhtk->nhtv", s0.S, qt),
    )
    nq = jnp.where(
        firstt, jnp.einsum("nhk,nhtk->nht", carry.n, qt), jnp.einsum("nhk,nhtk->nht", s0.n, qt)
    )
    num = jnp.einsum("nhtj,nhjv->nhtv", A, vt) + w0[..., None] * Sq
    den = jnp.maximum(jnp.abs(jnp.sum(A, axis=-1) + w0 * nq), jnp.exp(-m))
    o = jnp.moveaxis(num / den[..., None], 2, 0)  # (L, N, h, dv)
    o = jnp.where(valid[..., None, None], o, jnp.zeros((), o.dtype))
    # the state after the chunk: that of row L-1 (invalid rows change nothing)
    wl, w0l = W[..., -1, :], w0[..., -1]  # (N, h, L), (N, h)
    src = _where(first[-1, :, 0], carry, s0)
    S = jnp.einsum("nhj,nhjk,nhjv->nhkv", wl, kt, vt) + w0l[..., None, None] * src.S
    nn = jnp.einsum("nhj,nhjk->nhk", wl, kt) + w0l[..., None] * src.n
    return State(S, nn, m[..., -1]), o
