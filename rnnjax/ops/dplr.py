r"""The generalised delta rule with a diagonal-plus-low-rank transition (RWKV-7; fla's
``generalized_delta_rule/dplr``),

.. math::

    S_t = \left(\operatorname{diag}(e^{g^k_t}) + b_t a_t^\top\right) S_{t-1} + k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t ,

in the orientation of fla's ``dplr_recurrence`` (its ``alpha`` is ``a``, its ``beta`` is
``b``). RWKV-7 ("Goose", Peng et al. 2025) takes ``a = -kappa`` and ``b = kappa * a_rwkv``
with ``kappa`` the normalised removal key and ``gk = -exp(w)``. ``a`` and ``b`` are free (no
range is checked).

Layout (time-major): ``q, k, a, b, gk`` ``(T, *B, h, dk)`` (``gk``: log-decays, normally
``<= 0``), ``v`` ``(T, *B, h, dv)``, state ``S`` ``(*B, h, dk, dv)``, masks bool
``(T, *B)``; ``scale`` defaults to ``dk ** -0.5``. :func:`transition_chunk` is the chunk
form of every delta-rule family (the WY / UT representation). Public entry point:
:func:`rnnjax.ops.dplr_delta_rule`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> dplr = OPERATORS["dplr_delta_rule"]                # the module
  >>> q, k, v, kap = jax.random.normal(jax.random.key(0), (4, 5, 2, 3))   # (T, h, d)
  >>> kap = kap / jnp.linalg.norm(kap, axis=-1, keepdims=True)
  >>> args = (q, k, v, -kap, 0.5 * kap, jnp.full((5, 2, 3), -0.3))
  >>> kw = dict(state=jnp.zeros((2, 3, 3)), resets=jnp.arange(5) == 3)
  >>> o, S = dplr.chunk(*args, **kw, chunk=2)
  >>> o2, S2 = dplr.recurrent(*args, **kw)
  >>> bool(jnp.allclose(o, o2, atol=1e-5)), bool(jnp.allclose(S, S2, atol=1e-5))
  (True, True)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax.ops._common as cm
from rnnjax import checks

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, a, b, gk, *, scale=None):
    """One step: ``S = diag(exp gk) S + b (a^T S) + k v^T``, ``o = scale S^T q``
    (``q, k, a, b, gk`` ``(*B, h, dk)``, ``v`` ``(*B, h, dv)``). Returns ``(state, o)``: the
    state's dtype, and ``o`` ``(*B, h, dv)`` in the inputs'.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x = jnp.ones((2, 3))  # (h, d)
      >>> S, o = OPERATORS["dplr_delta_rule"].step(jnp.zeros((2, 3, 3)), x, x, x, -0.5 * x, 0.5 * x, -0.1 * x)
      >>> o.shape
      (2, 3)
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dt, out = state.dtype, jnp.result_type(q, k, v)
    read = jnp.einsum("...i,...iv->...v", a.astype(dt), state)
    state = jnp.exp(gk.astype(dt))[..., None] * state + b.astype(dt)[..., None] * read[..., None, :]
    state = state + k.astype(dt)[..., None] * v.astype(dt)[..., None, :]
    o = scale * jnp.einsum("...i,...iv->...v", q.astype(dt), state)
    return state, o.astype(out)


def recurrent(q, k, v, a, b, gk, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """``lax.scan`` of :func:`step` with the masks. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> x, s0 = jnp.ones((5, 2, 3)), jnp.zeros((2, 3, 3))  # (T, h, d), (h, dk, dv)
      >>> rj.ops.OPERATORS["dplr_delta_rule"].recurrent(x, x, x, -0.5 * x, 0.5 * x, -0.1 * x, state=s0)[0].shape
      (5, 2, 3)
    """
    f = functools.partial(step, scale=scale)
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return cm.scan(f, (q, k, v, a, b, gk), state=state, **masks)


def chunk(
    q, k, v, a, b, gk, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None
):
    """The chunkwise form (:func:`transition_chunk`), equal to :func:`recurrent`. Returns
    ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> op, x = rj.ops.OPERATORS["dplr_delta_rule"], jnp.ones((5, 2, 3))  # (T, h, d)
      >>> args = (x, x, x, -0.5 * x, 0.5 * x, -0.1 * x)
      >>> o, S = op.chunk(*args, state=jnp.zeros((2, 3, 3)), chunk=2)
      >>> bool(jnp.allclose(o, op.recurrent(*args, state=jnp.zeros((2, 3, 3)))[0], atol=1e-5))
      True
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return transition_chunk(q, k, v, a, b, gk, state=state, **masks, chunk=chunk, scale=scale)


def check_beta(name, beta, top):
    """A concrete ``beta`` must lie in ``[0, top]`` (a traced one cannot be checked)."""
    if beta is not None and checks.is_concrete(beta):
        x = np.asarray(beta, dtype=np.float64)
        if x.size and not (np.all(x >= 0) and np.all(x <= top)):
            raise ValueError(
                f"{name} must lie in [0, {top:g}]; got values in [{x.min():g}, {x.max():g}]"
            )


def transition_chunk(q, k, v, a, b, g, *, state, reset_state, valid, resets, chunk, scale):
    r"""The chunkwise form of ``S_t = (diag(exp g_t) + b_t a_t^T) S_{t-1} + k_t v_t^T``,
    ``o_t = scale S_t^T q_t``: the engine of every delta-rule family.

    ``g``: ``None`` (no decay), ``(T, *B, h)`` (one log-decay per head) or
    ``(T, *B, h, dk)`` (per key channel). ``b=None`` means ``b = k`` (the delta rules:
    ``k v^T + k u^T = k (v + u)^T``), which saves two products.

    Per chunk, with ``seg`` the log-decays summed from each row's segment start and
    ``x = seg - g`` (the sum up to the previous row), the pseudo-values
    ``u_t = a_t^T S_{t-1}`` of the rows solve the unit lower-triangular system

    .. math::

        u_t - \sum_{s < t} (a_t \odot e^{x_t - seg_s})^\top b_s\, u_s
        = (a_t \odot e^{x_t})^\top S_{\text{src}(t)}
          + \sum_{s < t} (a_t \odot e^{x_t - seg_s})^\top k_s\, v_s

    (sums over the row's segment; ``S_src`` the state entering the chunk or
    ``reset_state``), written ``U = U_0 + W S_in`` so that the scan across chunks is
    ``S_out = A_c S_in + H_c`` with ``A_c`` ``(dk, dk)``; the outputs are then
    ``o_t = scale ((q_t \odot e^{seg_t})^\top S_src + \sum_{s \le t}
    (q_t \odot e^{seg_t - seg_s})^\top (k_s v_s^T + b_s u_s^T))``, matrix products over
    all chunks at once. Every decay exponent is a sum of log-decays over a span of one
    segment (never positive for decays in (0, 1]); per-key-channel decays form their
    ``(C, C, dk)`` pairwise decays one chunk at a time (``lax.map``) to bound memory.
    """
    C = checks.integer("chunk", chunk, minimum=1)
    T, nb = q.shape[0], q.ndim - 3
    sd = state.dtype
    R = state if reset_state is None else reset_state.astype(sd)
    m = cm.chunk_masks(valid, resets, T, q.shape[1 : 1 + nb], C)

    def split(x, zero=True):
        x = cm.to_chunks(x.astype(sd), C, nb + 1)
        return cm.zero_invalid(m, x) if zero else x

    qc = split(q, zero=False) * scale
    kc, vc, ac = split(k), split(v), split(a)
    bc = None if b is None else split(b)
    seg = gx = None
    if g is not None:
        gc = split(g if g.ndim == q.ndim else g[..., None])
        seg = cm.decay_cumsum(m, gc)[1]
        gx = seg - gc
    xs = (m, qc, kc, vc, ac, bc, seg, gx)
    if g is None or g.ndim < q.ndim:
        Wt, U0, A_qk, A_qb, A_c, H_c = _intra(*xs, R)
    else:
        Wt, U0, A_qk, A_qb, A_c, H_c = jax.lax.map(jax.checkpoint(lambda x: _intra(*x, R)), xs)

    def body(S, x):
        A, H = x
        return A @ S + H, S

    enter, final = cm.scan_chunks(body, (A_c, H_c), state=state)
    Q = qc if seg is None else qc * jnp.exp(seg)

    def read(S):
        return Q @ (S if S.ndim == Q.ndim else S[None])

    o = cm.by_source(m, read, enter, R) + A_qb @ (Wt @ enter + U0) + A_qk @ vc
    o = cm.zero_invalid(m, o)
    return cm.from_chunks(o, T, nb + 1).astype(jnp.result_type(q, k, v)), final


def _pair(x, gx, y, gy, mask):
    """``P[t, s] = sum_i x[t, i] y[s, i] exp(gx[t, i] - gy[s, i])`` where ``mask``, else
    exactly 0 (the exponent is masked before ``exp``). ``gx``, ``gy``: ``None`` (no decay),
    ``(..., C, 1)`` (per head) or ``(..., C, dk)`` (per key channel)."""
    if gx is None:
        p = x @ jnp.swapaxes(y, -1, -2)
        return jnp.where(mask, p, 0.0)
    diff = gx[..., :, None, :] - gy[..., None, :, :]
    mask = mask[..., None]
    decay = jnp.where(mask, jnp.exp(jnp.where(mask, diff, 0.0)), 0.0)
    if gx.shape[-1] == 1:
        return (x @ jnp.swapaxes(y, -1, -2)) * decay[..., 0]
    return jnp.einsum("...ti,...si,...tsi->...ts", x, y, decay)


def _intra(m, q, k, v, a, b, seg, gx, R):
    """Everything of one chunk (or all at once) that does not need the entering state:
    ``u = U0 + Wt S_in``, the output products ``A_qk``, ``A_qb`` and the chunk's state map
    ``S_out = A_c S_in + H_c``. Arrays ``(..., h, C, d)``, masks from ``m``."""
    C, dk = q.shape[-2:]

    def eye(n, dtype, like):  # an identity with ``like``'s rank
        return jnp.eye(n, dtype=dtype).reshape((1,) * (like.ndim - 2) + (n, n))

    same = m.same  # (..., 1, C, C): j <= i, same segment
    strict = same & ~eye(C, bool, same)
    Rb = R if R.ndim == q.ndim else R[None]
    bb = k if b is None else b
    w = a if gx is None else a * jnp.exp(gx)
    A_ab = _pair(a, gx, bb, seg, strict)
    A_ak = A_ab if b is None else _pair(a, gx, k, seg, strict)
    A_qk = _pair(q, seg, k, seg, same)
    A_qb = A_qk if b is None else _pair(q, seg, b, seg, same)
    first = None if m.first is None else cm.bcast(m.first, w)
    rhs = A_ak @ v
    if first is not None:
        rhs = rhs + jnp.where(first, 0.0, w) @ Rb
        w = jnp.where(first, w, 0.0)
    lower = eye(C, q.dtype, A_ab) - A_ab
    sol = jax.lax.linalg.triangular_solve(
        lower, jnp.concatenate([w, rhs], axis=-1), left_side=True, lower=True, unit_diagonal=True
    )
    Wt, U0 = sol[..., :dk], sol[..., dk:]
    # the state leaving the chunk: its last segment's source, decayed, plus that segment's writes
    kt, bt = k, bb
    if seg is not None:
        tail_decay = jnp.exp(seg[..., -1:, :] - seg)
        kt, bt = k * tail_decay, bb * tail_decay
    if m.tail is not None:
        tail = cm.bcast(m.tail, kt)
        kt, bt = jnp.where(tail, kt, 0.0), jnp.where(tail, bt, 0.0)
    end = jnp.ones((), q.dtype) if seg is None else jnp.exp(seg[..., -1, :])[..., None]
    A_c = jnp.swapaxes(bt, -1, -2) @ Wt
    if b is None:
        H_c = jnp.swapaxes(kt, -1, -2) @ (v + U0)
    else:
        H_c = jnp.swapaxes(kt, -1, -2) @ v + jnp.swapaxes(bt, -1, -2) @ U0
    if m.carries is None:
        A_c = A_c + end * eye(dk, q.dtype, A_c)
    else:
        carries = cm.bcast(m.carries, A_c)
        A_c = A_c + jnp.where(carries, end, 0.0) * eye(dk, q.dtype, A_c)
        H_c = H_c + jnp.where(carries, 0.0, end) * Rb
    return Wt, U0, A_qk, A_qb, A_c, H_c
