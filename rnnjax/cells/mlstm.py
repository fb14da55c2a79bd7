r"""The mLSTM of xLSTM (Beck et al. 2024): a matrix memory with exponential gating, in its
recurrent form (one step) and its parallel form (a stabilised masked product, whole or
chunkwise)."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Tuple, Union

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax import parallel as par
from rnnjax.cells.base import Cell, state_dtype
from rnnjax.cells.slstm import check_forget_bias, forget_bias_range

__all__ = ["MLSTM", "MLSTMState"]


class MLSTMState(NamedTuple):
    """State of :class:`MLSTM`: ``h`` ``(H,)`` (the last output), ``c`` ``(heads * d * d,)``
    (the matrix memories of the heads, flattened, ``d = H / heads``), ``n`` ``(H,)``
    (normalisers), ``m`` ``(heads,)`` (stabilisers).

    Example:
      >>> import rnnjax as rj
      >>> s = rj.MLSTM(2, 4, num_heads=2).initial_state()
      >>> s._fields, s.c.shape, s.m.shape
      (('h', 'c', 'n', 'm'), (8,), (2,))
    """

    h: jax.Array
    c: jax.Array
    n: jax.Array
    m: jax.Array


@dataclasses.dataclass(frozen=True)
class MLSTM(Cell):
    r"""mLSTM (Beck et al. 2024, "xLSTM"): per head a matrix memory written with an
    exponential input gate and read with a query.

    .. math::

        \begin{aligned}
        q_t &= W_q^\top x_t + b_q, \quad k_t = (W_k^\top x_t + b_k)/\sqrt d, \quad
        v_t = W_v^\top x_t + b_v, \quad o_t = \sigma(W_o^\top x_t + b_o) \\
        \tilde\imath_t &= w_i^\top x_t + b_i, \quad \log f_t = \log\sigma(w_f^\top x_t + b_f)
            \qquad (\text{one pair per head}) \\
        m_t &= \max(\log f_t + m_{t-1},\ \tilde\imath_t), \quad
        i'_t = e^{\tilde\imath_t - m_t}, \quad f'_t = e^{\log f_t + m_{t-1} - m_t} \\
        C_t &= f'_t C_{t-1} + i'_t\, v_t k_t^\top, \qquad n_t = f'_t n_{t-1} + i'_t k_t \\
        h_t &= o_t \odot \frac{C_t q_t}{\max(|n_t^\top q_t|,\ e^{-m_t})}, \qquad y_t = h_t
        \end{aligned}

    With :math:`C_t = e^{-m_t} \bar C_t` (and :math:`n` alike) the unstabilised memory
    :math:`\bar C_t = f_t \bar C_{t-1} + e^{\tilde\imath_t} v_t k_t^\top` gives the same
    :math:`h_t = o_t \odot \bar C_t q_t / \max(|\bar n_t^\top q_t|, 1)`: the stabiliser
    only keeps the exponentials finite. Nothing in the recurrence reads ``h``, so the
    whole sequence can also be computed at once (the parallel form):

    .. math::

        \log D_{tj} = \textstyle\sum_{s=j+1}^{t} \log f_s + \tilde\imath_j \ (j \le t), \quad
        m_t = \max_j \log D_{tj}, \quad
        h_t = o_t \odot \frac{\sum_j e^{\log D_{tj} - m_t} (q_t^\top k_j)\, v_j}
              {\max(|\sum_j e^{\log D_{tj} - m_t}\, q_t^\top k_j|,\ e^{-m_t})}

    with the initial state as one more source (its weight :math:`\sum_{s \le t}\log f_s
    + m_0`), so both forms carry the same stabiliser and agree to rounding. Choose it
    with ``rj.ScanConfig(method="parallel")`` (or ``"auto"``): the whole sequence as one
    masked ``T x T`` product per head, or, with
    ``ParallelOptions(chunk=L)``, chunkwise (the product within chunks of ``L`` steps,
    the recurrent state carried between chunks: memory ``O(T L)``, for long sequences).
    Lengths, reverse and resets hold as everywhere (a reset is a source boundary in the
    mask); recurrent dropout and zoneout need ``method="sequential"``.

    Params: ``w_ih`` ``(I, 4H + 2 heads)`` with blocks ``[q | k | v | o | i | f]``, ``b``
    of the same width (forget block from ``forget_bias``, the rest zero). No recurrent
    weights. State: :class:`MLSTMState` ``(h, c, n, m)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``, divisible by ``num_heads``.
      num_heads: number of heads, each with a ``d x d`` memory (``d = H / heads``).
      forget_bias: the forget-gate bias: a number or ``(lo, hi)`` spread over the heads
        (default ``(3.0, 6.0)``, as xLSTM).
      kernel_init, param_dtype, dtype: as in :class:`~rnnjax.LSTM`.

    References:
      Beck, Poeppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter &
      Hochreiter (2024). xLSTM: Extended long short-term memory.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.MLSTM(input_size=3, hidden_size=4, num_heads=2)
      >>> p = cell.init(jax.random.key(0))
      >>> xs = jax.random.normal(jax.random.key(1), (6, 3))
      >>> _, seq = rj.unroll(cell, p, xs)
      >>> _, par = rj.unroll(cell, p, xs, config=rj.ScanConfig(method="parallel"))
      >>> seq.shape, bool(jnp.allclose(seq, par, atol=1e-5))
      ((6, 4), True)
    """

    num_heads: int = 1
    forget_bias: Union[float, Tuple[float, float]] = (3.0, 6.0)
    kernel_init: inits.InitSpec = "glorot_uniform"

    State = MLSTMState

    def __post_init__(self):
        super().__post_init__()
        inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        checks.integer("num_heads", self.num_heads, 1)
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be divisible by num_heads; got hidden_size="
                f"{self.hidden_size}, num_heads={self.num_heads}"
            )
        check_forget_bias(self.forget_bias)

    @property
    def head_size(self) -> int:
        """``d = H / num_heads``."""
        return self.hidden_size // self.num_heads

    @property
    def state_size(self) -> int:
        return self.hidden_size

    def _state_sizes(self) -> dict:
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        return {"h": H, "c": NH * d * d, "n": H, "m": NH}

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, 4H + 2 heads), "b": (4H + 2 heads,)}``.

        Example:
          >>> import jax, rnnjax as rj
          >>> p = rj.MLSTM(3, 4, num_heads=2).init(jax.random.key(0))
          >>> {k: v.shape for k, v in sorted(p.items())}
          {'b': (20,), 'w_ih': (3, 20)}
        """
        kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        H, NH, dt = self.hidden_size, self.num_heads, self._init_dtype()
        k1, k2 = jax.random.split(key)
        w = jnp.concatenate(
            [
                inits.per_gate(kernel, k1, self.input_size, H, 4, dt),
                kernel(k2, (self.input_size, 2 * NH), dt),
            ],
            axis=1,
        )
        b = jnp.zeros((4 * H + 2 * NH,), dt)
        b = b.at[4 * H + NH :].set(forget_bias_range(self.forget_bias, NH, dt))
        return self._cast({"w_ih": w, "b": b})

    # ------------------------------------------------------------------ recurrent form

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_ih + b``, shape ``(..., 4H + 2 heads)``."""
        return self._affine(params, x)

    def _split(self, xp):
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        heads = lambda a: a.reshape(a.shape[:-1] + (NH, d))  # noqa: E731
        q = heads(xp[..., :H])
        k = heads(xp[..., H : 2 * H]) / math.sqrt(d)
        v = heads(xp[..., 2 * H : 3 * H])
        o = jax.nn.sigmoid(xp[..., 3 * H : 4 * H])
        ip = xp[..., 4 * H : 4 * H + NH]
        log_f = jax.nn.log_sigmoid(xp[..., 4 * H + NH :])
        return q, k, v, o, ip, log_f

    def recur(self, params, state: MLSTMState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        sd = state_dtype(state.c)
        q, k, v, o, ip, log_f = self._split(xp.astype(sd))
        m = jnp.maximum(log_f + state.m, ip)
        f_g = jnp.exp(log_f + state.m - m)[..., None]
        i_g = jnp.exp(ip - m)[..., None]
        C = state.c.reshape(state.c.shape[:-1] + (NH, d, d))
        C = f_g[..., None] * C + i_g[..., None] * (v[..., :, None] * k[..., None, :])
        n = f_g * state.n.reshape(state.n.shape[:-1] + (NH, d)) + i_g * k
        num = jnp.einsum("...ij,...j->...i", C, q)
        den = jnp.maximum(jnp.abs(jnp.sum(n * q, axis=-1)), jnp.exp(-m))[..., None]
        h = o * (num / den).reshape(num.shape[:-2] + (H,))
        new = MLSTMState(
            h=h, c=C.reshape(C.shape[:-3] + (NH * d * d,)), n=n.reshape(n.shape[:-2] + (H,)), m=m
        )
        return new, h

    # ------------------------------------------------------------------ parallel form

    def parallel_run(self, params, state, xs, masks, options, rec_mask=None, zoneout=0.0):
        """The parallel form, run by the engine for ``ScanConfig(method="parallel")``.

        Args:
          params: ``init``'s dict.
          state: the initial state, leaves ``(*B, ...)`` (``B``: none or one axis).
          xs: ``(T, *B, I)`` in processing order.
          masks: ``{"valid": (T, *B), "reset": (T, *B)}`` (either may be absent).
          options: a :class:`rnnjax.parallel.ParallelOptions`: ``chunk=None`` for the
            whole sequence at once, ``chunk=L`` for chunks of ``L`` steps.
          rec_mask, zoneout: refused (recurrent dropout and zoneout act on a state the
            parallel form never forms step by step).

        Returns:
          ``(state, ys)`` as :func:`rnnjax.engine.run`.

        Example:
          >>> import jax, jax.numpy as jnp, rnnjax as rj
          >>> cell = rj.MLSTM(2, 4, num_heads=2)
          >>> p = cell.init(jax.random.key(0))
          >>> cfg = rj.ScanConfig(method="parallel", parallel=rj.parallel.ParallelOptions(chunk=4))
          >>> st, ys = rj.unroll(cell, p, jnp.ones((10, 2)), config=cfg)
          >>> ys.shape, st.c.shape
          ((10, 4), (8,))
        """
        if rec_mask is not None or masks.get("rec") is not None or masks.get("keep") is not None:
            raise ValueError(
                "MLSTM's parallel form takes no recurrent dropout or sampled zoneout; use "
                "ScanConfig(method='sequential') for them"
            )
        if zoneout:
            raise ValueError(
                f"MLSTM's parallel form takes no zoneout; got zoneout={zoneout} (use "
                "ScanConfig(method='sequential'))"
            )
        T = xs.shape[0]
        unbatched = xs.ndim == 2
        if unbatched:
            xs = xs[:, None]
            state = jax.tree_util.tree_map(lambda a: a[None], state)
        B = xs.shape[1]
        valid = masks.get("valid")
        valid = jnp.ones((T, B), bool) if valid is None else valid.reshape(T, B)
        reset = masks.get("reset")  # None: no segment starts (nothing to fold at compile)
        reset = None if reset is None else reset.reshape(T, B)
        L = T if options.chunk is None else min(int(options.chunk), T)
        n = -(-T // L)
        pad = n * L - T
        if pad:
            xs = jnp.concatenate([xs, jnp.zeros((pad,) + xs.shape[1:], xs.dtype)])
            valid = jnp.concatenate([valid, jnp.zeros((pad, B), bool)])
            if reset is not None:
                reset = jnp.concatenate([reset, jnp.zeros((pad, B), bool)])
        xp = par.project_rows(self, params, xs)
        split = lambda a: a.reshape((n, L) + a.shape[1:])  # noqa: E731

        def chunk(carry, inp):
            return self._block(carry, state, *inp)

        if n == 1:
            st, ys = self._block(state, state, xp, valid, reset)
        else:
            rs = None if reset is None else split(reset)
            st, ys = jax.lax.scan(chunk, state, (split(xp), split(valid), rs))
            ys = ys.reshape((n * L,) + ys.shape[2:])
        ys = ys[:T]
        if unbatched:
            ys = ys[:, 0]
            st = jax.tree_util.tree_map(lambda a: a[0], st)
        return st, ys

    def _block(self, carry, s0, xp, valid, reset):
        """``L`` steps at once: ``xp`` ``(L, B, F)``, masks ``(L, B)``; the state entering
        the block is ``carry``, the one a reset puts back is ``s0``."""
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        L, B = xp.shape[:2]
        sd = state_dtype(carry.c)
        q, k, v, o, ip, log_f = self._split(xp.astype(sd))  # (L, B, NH, d), (L, B, NH)
        vh = valid[..., None]
        log_f = jnp.where(vh, log_f, 0.0)
        F = jnp.cumsum(log_f, axis=0)  # (L, B, NH)
        t_idx = jnp.arange(L)
        if reset is None:
            seg = jnp.zeros((L, B), jnp.int32)
            F_before = jnp.zeros_like(F)
        else:
            start = reset & valid
            seg = jnp.cumsum(start, axis=0)  # (L, B): 0 while the entering segment runs
            last_start = jax.lax.cummax(jnp.where(start, t_idx[:, None], 0), axis=0)
            F_before = jnp.take_along_axis(F - log_f, last_start[..., None], axis=0)
        first = (seg == 0)[..., None]  # rows whose source is the entering state
        base = jnp.where(first, 0.0, F_before)
        m_src = jnp.where(first, carry.m[None], s0.m[None])  # (L, B, NH)
        D0 = F - base + m_src
        # log D[b, h, t, j] = F_t - F_j + i_j for j <= t in the same segment, j valid
        Ft = jnp.moveaxis(F, 0, -1)  # (B, NH, L)
        ipt = jnp.moveaxis(ip, 0, -1)
        logD = Ft[..., :, None] - Ft[..., None, :] + ipt[..., None, :]
        segt = seg.T  # (B, L)
        mask = (
            (t_idx[:, None] >= t_idx[None, :])[None]
            & (segt[:, :, None] == segt[:, None, :])
            & valid.T[:, None, :]
        )[:, None]  # (B, 1, L, L)
        m = jnp.maximum(
            jnp.moveaxis(D0, 0, -1), jnp.max(jnp.where(mask, logD, -jnp.inf), axis=-1)
        )  # (B, NH, L)
        W = jnp.where(mask, jnp.exp(jnp.where(mask, logD - m[..., None], 0.0)), 0.0)
        w0 = jnp.exp(jnp.moveaxis(D0, 0, -1) - m)  # (B, NH, L)
        qt, kt, vt = (jnp.moveaxis(a, 0, 2) for a in (q, k, v))  # (B, NH, L, d)
        S = jnp.einsum("bhtd,bhjd->bhtj", qt, kt) * W
        C_in = carry.c.reshape(B, NH, d, d)
        C_0 = s0.c.reshape(B, NH, d, d)
        n_in = carry.n.reshape(B, NH, d)
        n_0 = s0.n.reshape(B, NH, d)
        firstt = jnp.moveaxis(first, 0, -1)  # (B, 1, L)
        Cq = jnp.where(
            firstt[..., None],
            jnp.einsum("bhij,bhtj->bhti", C_in, qt),
            jnp.einsum("bhij,bhtj->bhti", C_0, qt),
        )
        nq = jnp.where(
            firstt, jnp.einsum("bhj,bhtj->bht", n_in, qt), jnp.einsum("bhj,bhtj->bht", n_0, qt)
        )
        num = jnp.einsum("bhtj,bhjd->bhtd", S, vt) + w0[..., None] * Cq
        den = jnp.maximum(jnp.abs(jnp.sum(S, axis=-1) + w0 * nq), jnp.exp(-m))
        hh = num / den[..., None]  # (B, NH, L, d)
        h = o * jnp.moveaxis(hh, 2, 0).reshape(L, B, H)
        ys = jnp.where(vh, h, 0.0)
        # the state after the block: row L-1 (padding rows change nothing)
        wl, w0l = W[..., -1, :], w0[..., -1]  # (B, NH, L), (B, NH)
        srcC = jnp.where(first[-1][..., None, None], C_in, C_0)
        srcn = jnp.where(first[-1][..., None], n_in, n_0)
        C = jnp.einsum("bhj,bhji,bhjk->bhik", wl, vt, kt) + w0l[..., None, None] * srcC
        nn = jnp.einsum("bhj,bhjk->bhk", wl, kt) + w0l[..., None] * srcn
        last = jnp.max(jnp.where(valid, t_idx[:, None], -1), axis=0)  # (B,)
        h_last = jnp.take_along_axis(h, jnp.maximum(last, 0)[None, :, None], axis=0)[0]
        h_state = jnp.where((last >= 0)[:, None], h_last, carry.h)
        st = MLSTMState(h=h_state, c=C.reshape(B, NH * d * d), n=nn.reshape(B, H), m=m[..., -1])
        return st, ys
