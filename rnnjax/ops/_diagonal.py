"""The core of the diagonal-decay operators (linear attention, simple GLA, retention, GLA,
SSD): one step, the masked scan and the chunkwise form of

.. math::

    S_t = \\operatorname{diag}(\\exp(g_t))\\, S_{t-1} + k_t v_t^\\top, \\qquad
    o_t = \\text{scale}\\; S_t^\\top q_t

with ``g`` either absent (no decay), one log-decay per head ``(T, *B, h)`` (broadcast over
the key channels) or one per key channel ``(T, *B, h, dk)``. The family modules are thin
layers over these three functions; the masks are :mod:`rnnjax.ops._common`'s.

Chunk form, per chunk of ``C`` rows with cumulative log-decays ``cs`` (from the chunk's
first row) and ``seg`` (from each row's segment start), source state ``S_src(i)`` (the
state entering the chunk, or ``reset_state`` after a reset in the chunk):

.. math::

    o_i = \\text{scale}\\Big(\\sum_{j \\le i,\\ \\text{same segment}}
          \\big(q_i \\odot e^{cs_i - cs_j}\\big)^\\top k_j\\, v_j
          + \\big(q_i \\odot e^{seg_i}\\big)^\\top S_{\\text{src}(i)}\\Big)

and the state leaving the chunk is ``exp(seg[C-1])`` times the source of its last segment
plus the writes of that segment, each decayed by ``exp(cs[C-1] - cs[j])``. The states
entering the chunks come from a ``lax.scan`` over chunks; the outputs of all chunks are
then matrix products at once (a per-key-channel decay forms its ``(C, C, dk)`` pairwise
decays one chunk at a time, ``lax.map``, to bound memory).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import rnnjax.ops._common as cm
from rnnjax import checks


def default_scale(scale, q):
    """``scale``, or ``dk ** -0.5`` when ``None``."""
    return q.shape[-1] ** -0.5 if scale is None else scale


def _out_dtype(q, k, v):
    return jnp.result_type(q, k, v)


def _decay_shape(g, k):
    """Log-decays as ``(..., h, 1)`` (per head) or ``(..., h, dk)`` (per key channel)."""
    return g[..., None] if g.ndim == k.ndim - 1 else g


def step(state, q, k, v, g, *, scale=None):
    """One step from ``state`` ``(*B, h, dk, dv)`` with ``q, k`` ``(*B, h, dk)``, ``v``
    ``(*B, h, dv)``, ``g`` ``None``, ``(*B, h)`` or ``(*B, h, dk)``; ``scale`` defaults to
    ``dk ** -0.5``. Returns ``(state, o)``, ``o`` ``(*B, h, dv)`` in the inputs' dtype."""
    scale = default_scale(scale, q)
    sd = state.dtype
    if g is not None:
        state = state * jnp.exp(_decay_shape(g, k).astype(sd))[..., None]
    state = state + (k[..., :, None] * v[..., None, :]).astype(sd)
    o = scale * jnp.einsum("...kv,...k->...v", state, q.astype(sd))
    return state, o.astype(_out_dtype(q, k, v))


def recurrent(q, k, v, g, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """:func:`step` under :func:`rnnjax.ops._common.scan` (``valid``, ``resets``: bool
    ``(T, *B)`` or ``None``; ``reset_state`` defaults to ``state``). Returns
    ``(o, final_state)``."""
    scale = default_scale(scale, q)
    xs = (q, k, v) if g is None else (q, k, v, g)

    def f(s, q_t, k_t, v_t, g_t=None):
        return step(s, q_t, k_t, v_t, g_t, scale=scale)

    return cm.scan(f, xs, state=state, reset_state=reset_state, valid=valid, resets=resets)


def _intra(m, q, k, v, cs):
    """Intra-chunk outputs (unscaled) of chunk-layout arrays: ``(..., h, C, dv)``."""
    a = jnp.einsum("...ik,...jk->...ij", q, k)
    if cs is None:
        a = jnp.where(cm.bcast(m.same, a), a, jnp.zeros((), a.dtype))
    elif cs.shape[-1] == 1:
        a = a * cm.pair_decay(m, cs)[..., 0]
    else:
        a = jnp.einsum("...ik,...jk,...ijk->...ij", q, k, cm.pair_decay(m, cs))
    return jnp.einsum("...ij,...jv->...iv", a, v)


def _intra_all(m, q, k, v, cs):
    """:func:`_intra` over all chunks: at once, or one chunk at a time for per-channel
    decays (their pairwise decays are ``(C, C, dk)`` per chunk)."""
    if cs is None or cs.shape[-1] == 1:
        return _intra(m, q, k, v, cs)
    one = jax.checkpoint(lambda x: _intra(*x))
    return jax.lax.map(one, (m, q, k, v, cs))


def chunk(q, k, v, g, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None):
    """The chunkwise form (module docstring) with the masks of :mod:`rnnjax.ops._common`,
    equal to :func:`recurrent`. Returns ``(o, final_state)``."""
    scale = default_scale(scale, q)
    C = checks.integer("chunk", chunk, minimum=1)
    T, nb = q.shape[0], q.ndim - 3
    sd = state.dtype
    reset_state = state if reset_state is None else reset_state
    m = cm.chunk_masks(valid, resets, T, q.shape[1 : 1 + nb], C)
    qc, kc, vc = (cm.to_chunks(a, C, nb + 1) for a in (q, k, v))
    kc = cm.zero_invalid(m, kc)
    if g is None:
        cs = seg = None
    else:
        gc = cm.zero_invalid(m, cm.to_chunks(_decay_shape(g, k).astype(sd), C, nb + 1))
        cs, seg = cm.decay_cumsum(m, gc)
    o = _intra_all(m, qc, kc, vc, cs)
    # each chunk's own writes to the state leaving it, and the decay of its source
    wk = kc if cs is None else kc * jnp.exp(cs[..., -1:, :] - cs)
    if m.tail is not None:
        wk = jnp.where(cm.bcast(m.tail, wk), wk, jnp.zeros((), wk.dtype))
    writes = jnp.einsum("...jk,...jv->...kv", wk, vc).astype(sd)
    decay = None if seg is None else jnp.exp(seg[..., -1, :])[..., None]

    def body(s, x):
        w, d, carries = x
        base = cm.end_source(carries, s, reset_state)
        return (base if d is None else base * d) + w, s

    final, enter = jax.lax.scan(body, state, (writes, decay, m.carries))
    qs = qc if seg is None else qc * jnp.exp(seg)

    def read(s):
        return jnp.einsum("...ck,...kv->...cv", qs, s if s.ndim == qs.ndim else s[None])

    o = scale * (o + cm.by_source(m, read, enter, reset_state))
    o = cm.zero_invalid(m, o)
    return cm.from_chunks(o, T, nb + 1).astype(_out_dtype(q, k, v)), final
