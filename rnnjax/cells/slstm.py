r"""The sLSTM of xLSTM (Beck et al. 2024): exponential gating with a stabiliser state."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Tuple, Union

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax.cells.base import GatedCell, check_heads, state_dtype

__all__ = ["SLSTM", "SLSTMState", "forget_bias_range"]

FORGETS = ("sigmoid", "exp")


class SLSTMState(NamedTuple):
    """State of :class:`SLSTM`: ``h``, ``c``, ``n`` (normaliser), ``m`` (stabiliser), each
    of shape ``(H,)``.

    Example:
      >>> import rnnjax as rj
      >>> rj.SLSTM(2, 4, num_heads=2).initial_state()._fields
      ('h', 'c', 'n', 'm')
    """

    h: jax.Array
    c: jax.Array
    n: jax.Array
    m: jax.Array


def forget_bias_range(spec, size: int, dtype=jnp.float32) -> jax.Array:
    """The forget-gate bias of the xLSTM cells: a number (every unit) or a pair
    ``(lo, hi)`` spread evenly over the ``size`` units (xLSTM's default ``(3, 6)``: forget
    gates near 1, a range of memory lengths).

    Args:
      spec: a number or a pair ``(lo, hi)``.
      size: number of forget gates.
      dtype: the dtype of the result.

    Returns:
      ``(size,)``.

    Example:
      >>> from rnnjax.cells.slstm import forget_bias_range
      >>> forget_bias_range((3.0, 6.0), 4).tolist()
      [3.0, 4.0, 5.0, 6.0]
    """
    if isinstance(spec, tuple):
        return jnp.linspace(spec[0], spec[1], size, dtype=dtype)
    return jnp.full((size,), spec, dtype)


def check_forget_bias(value):
    """``value`` if it is a number or a pair of numbers, else a ``TypeError``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(value, tuple) and len(value) == 2:
        ok = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok:
        raise TypeError(f"forget_bias must be a number or a pair (lo, hi); got {value!r}")
    for v in value if isinstance(value, tuple) else (value,):
        checks.number("forget_bias", v)  # finite: a NaN or infinite bias runs to NaN
    return value


@dataclasses.dataclass(frozen=True)
class SLSTM(GatedCell):
    r"""sLSTM (Beck et al. 2024, "xLSTM"): an LSTM with exponential input (and optionally
    forget) gates, a normaliser state and block-diagonal recurrent weights (heads).

    .. math::

        \begin{aligned}
        \tilde g_t &= W^\top x_t + R\, h_{t-1} + b, \qquad
            \tilde g = [\,\tilde\imath \mid \tilde f \mid \tilde z \mid \tilde o\,] \\
        \log f_t &= \log\sigma(\tilde f_t) \ \ (\text{or } \tilde f_t
            \text{ with } \texttt{forget="exp"}), \qquad
        m_t = \max(\log f_t + m_{t-1},\ \tilde\imath_t) \\
        i'_t &= \exp(\tilde\imath_t - m_t), \qquad f'_t = \exp(\log f_t + m_{t-1} - m_t) \\
        c_t &= f'_t \odot c_{t-1} + i'_t \odot \tanh(\tilde z_t), \qquad
        n_t = f'_t \odot n_{t-1} + i'_t \\
        h_t &= \sigma(\tilde o_t) \odot c_t / n_t, \qquad y_t = h_t
        \end{aligned}

    The stabiliser ``m`` changes nothing mathematically: with :math:`c_t = e^{-m_t}\bar c_t`,
    :math:`n_t = e^{-m_t}\bar n_t`, where :math:`\bar c, \bar n` follow the unstabilised
    equations (:math:`\bar c_t = f_t \bar c_{t-1} + e^{\tilde\imath_t} z_t`), the ratio
    ``c / n`` is the same; it keeps the exponentials finite over any length. ``R`` is
    block-diagonal: ``num_heads`` heads of ``H / num_heads`` units, each with its own
    ``(H / heads, 4 H / heads)`` block. The initial state is zero (``n = 0`` is only read
    after the first step has made it positive).

    Params: ``w_ih`` ``(I, 4H)`` with gate blocks ``[i | f | z | o]``, ``r_hh``
    ``(heads, H / heads, 4 H / heads)`` (per head, gate blocks ``[i | f | z | o]``),
    ``b`` ``(4H,)`` (forget block from ``forget_bias``, others zero).
    State: :class:`SLSTMState` ``(h, c, n, m)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``, divisible by ``num_heads``.
      num_heads: number of heads (diagonal blocks of ``R``).
      forget: ``"sigmoid"`` (default, :math:`f = \sigma(\tilde f)`) or ``"exp"``
        (:math:`f = \exp(\tilde f)`).
      forget_bias: the forget block of ``b``: a number or ``(lo, hi)`` spread over the
        units (default ``(3.0, 6.0)``, as xLSTM).
      kernel_init, recurrent_init, param_dtype, dtype: as in :class:`~rnnjax.LSTM`
        (``recurrent_init`` per head and gate block).

    References:
      Beck, Poeppel, Spanring, Auer, Prudnikova, Kopp, Klambauer, Brandstetter &
      Hochreiter (2024). xLSTM: Extended long short-term memory.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.SLSTM(input_size=3, hidden_size=4, num_heads=2)
      >>> p = cell.init(jax.random.key(0))
      >>> state, ys = rj.unroll(cell, p, jnp.ones((6, 3)))
      >>> ys.shape, state._fields
      ((6, 4), ('h', 'c', 'n', 'm'))
    """

    num_heads: int = 1
    forget: str = "sigmoid"
    forget_bias: Union[float, Tuple[float, float]] = (3.0, 6.0)

    gates = 4
    State = SLSTMState

    def __post_init__(self):
        super().__post_init__()
        check_heads(self.hidden_size, self.num_heads)
        checks.choice("forget", self.forget, FORGETS)
        check_forget_bias(self.forget_bias)

    @property
    def head_size(self) -> int:
        """``H / num_heads``."""
        return self.hidden_size // self.num_heads

    def _state_sizes(self) -> dict:
        H = self.hidden_size
        return {"h": H, "c": H, "n": H, "m": H}

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, 4H), "r_hh": (heads, H/heads, 4H/heads), "b": (4H,)}``.

        Example:
          >>> import jax, rnnjax as rj
          >>> p = rj.SLSTM(3, 4, num_heads=2).init(jax.random.key(0))
          >>> {k: v.shape for k, v in sorted(p.items())}
          {'b': (16,), 'r_hh': (2, 2, 8), 'w_ih': (3, 16)}
        """
        k_ih, k_hh = jax.random.split(key)
        kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        recurrent = inits.resolve(
            self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init"
        )
        H, NH, d, dt = self.hidden_size, self.num_heads, self.head_size, self._init_dtype()
        w_ih = inits.per_gate(kernel, k_ih, self.input_size, H, 4, dt)
        r_hh = jnp.stack(
            [inits.per_gate(recurrent, k, d, d, 4, dt) for k in jax.random.split(k_hh, NH)]
        )
        b = jnp.zeros((4 * H,), dt).at[H : 2 * H].set(forget_bias_range(self.forget_bias, H, dt))
        return self._cast({"w_ih": w_ih, "r_hh": r_hh, "b": b})

    def _recurrent(self, params, h):
        """``R h`` for block-diagonal ``R``: ``(..., H) -> (..., 4H)`` in gate-block order."""
        NH, d = self.num_heads, self.head_size
        hh = h.reshape(h.shape[:-1] + (NH, d))
        w = params["r_hh"]
        cd = jnp.dtype(self.dtype) if self.dtype is not None else w.dtype
        out = jnp.promote_types(jnp.float32, jnp.promote_types(cd, h.dtype))
        r = jnp.einsum(
            "...nd,nde->...ne", hh.astype(cd), w.astype(cd), preferred_element_type=out
        )  # (..., NH, 4d): per head [i|f|z|o]
        r = r.reshape(r.shape[:-1] + (4, d))
        r = jnp.swapaxes(r, -2, -3)  # (..., 4, NH, d)
        return r.reshape(r.shape[:-3] + (4 * self.hidden_size,))

    def recur(self, params, state: SLSTMState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        H = self.hidden_size
        sd = state_dtype(state.c)
        g = (xp + self._recurrent(params, state.h)).astype(sd)
        i_t, f_t, z_t, o_t = (g[..., k * H : (k + 1) * H] for k in range(4))
        log_f = jax.nn.log_sigmoid(f_t) if self.forget == "sigmoid" else f_t
        m = jnp.maximum(log_f + state.m, i_t)
        i_g = jnp.exp(i_t - m)
        f_g = jnp.exp(log_f + state.m - m)
        c = f_g * state.c + i_g * jnp.tanh(z_t)
        n = f_g * state.n + i_g
        h = jax.nn.sigmoid(o_t) * c / n
        return SLSTMState(h=h, c=c, n=n, m=m), h
