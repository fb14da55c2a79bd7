r"""The mLSTM of xLSTM (Beck et al. 2024): a matrix memory with exponential gating, in its
recurrent form (one step) and its parallel form (a stabilised masked product, whole or
chunkwise)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Tuple, Union

import jax
import jax.numpy as jnp

from rnnjax import initializers as inits
from rnnjax.cells.base import check_heads
from rnnjax.cells.matrix import MatrixCell
from rnnjax.cells.slstm import check_forget_bias, forget_bias_range
from rnnjax.ops import mlstm as mlstm_op

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
class MLSTM(MatrixCell):
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
    + m_0`), so both forms carry the same stabiliser and agree to rounding. The step is
    the ``"mlstm"`` operator of :mod:`rnnjax.ops` (:mod:`rnnjax.ops.mlstm`), and
    ``rj.ScanConfig(method="chunkwise", chunk=L)`` (what ``"auto"`` picks, ``L = 64``) runs
    the parallel form within chunks of ``L`` steps and carries the state between chunks
    (memory ``O(T L)``); ``method="parallel"`` is one chunk of the whole sequence (one
    masked ``T x T`` product per head). Lengths, reverse and resets hold as everywhere,
    applied by the engine (a reset is a source boundary in the mask); recurrent dropout
    and zoneout need ``method="sequential"``.

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
      >>> cfg = rj.ScanConfig(method="chunkwise", chunk=4)
      >>> _, chunked = rj.unroll(cell, p, xs, config=cfg)
      >>> seq.shape, bool(jnp.allclose(seq, chunked, atol=1e-5))
      ((6, 4), True)
    """

    num_heads: int = 1
    forget_bias: Union[float, Tuple[float, float]] = (3.0, 6.0)
    kernel_init: inits.InitSpec = "glorot_uniform"

    State = MLSTMState
    matrix_op = "mlstm"

    def __post_init__(self):
        super().__post_init__()
        inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        check_heads(self.hidden_size, self.num_heads)
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

    # ------------------------------------------------------------------ step

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_ih + b``, shape ``(..., 4H + 2 heads)``."""
        return self._affine(params, x)

    def matrix_inputs(self, params: dict, xp) -> dict:
        """The operator's ``q, k, v`` ``(..., heads, d)`` and gate pre-activations ``i, f``
        ``(..., heads)`` from projected inputs ``(..., 4H + 2 heads)``."""
        H, NH, d = self.hidden_size, self.num_heads, self.head_size
        heads = lambda a: a.reshape(a.shape[:-1] + (NH, d))  # noqa: E731
        return {
            "q": heads(xp[..., :H]),
            "k": heads(xp[..., H : 2 * H]),
            "v": heads(xp[..., 2 * H : 3 * H]),
            "i": xp[..., 4 * H : 4 * H + NH],
            "f": xp[..., 4 * H + NH :],
        }

    def matrix_state(self, state: MLSTMState) -> mlstm_op.State:
        """The operator's state: ``S = C^T`` ``(..., heads, d, d)``, ``n``, ``m``."""
        NH, d = self.num_heads, self.head_size
        lead = state.m.shape[:-1]
        C = state.c.reshape(lead + (NH, d, d))
        return mlstm_op.State(
            S=jnp.swapaxes(C, -1, -2), n=state.n.reshape(lead + (NH, d)), m=state.m
        )

    def with_matrix_state(self, state: MLSTMState, op_state, h) -> MLSTMState:
        """The cell's state from the operator's and the last output ``h``."""
        lead = op_state.m.shape[:-1]
        C = jnp.swapaxes(op_state.S, -1, -2)
        return MLSTMState(
            h=h.astype(state.h.dtype),
            c=C.reshape(lead + (-1,)),
            n=op_state.n.reshape(lead + (-1,)),
            m=op_state.m,
        )

    def matrix_output(self, params: dict, xp, o):
        """``h = sigma(o-gate) * o`` with the heads' outputs ``o`` ``(..., heads, d)``."""
        H = self.hidden_size
        gate = jax.nn.sigmoid(xp[..., 3 * H : 4 * H].astype(o.dtype))
        return gate * o.reshape(o.shape[:-2] + (H,))
