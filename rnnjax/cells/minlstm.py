r"""The minimal LSTM (Feng et al. 2024): a gated linear recurrence, parallel in time."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax

from rnnjax import checks
from rnnjax.cells.mingru import InputGatedLinearCell, g

__all__ = ["MinLSTM", "MinLSTMState"]


class MinLSTMState(NamedTuple):
    """State of :class:`MinLSTM`: the hidden vector ``h`` of shape ``(H,)``.

    Example:
      >>> import rnnjax as rj
      >>> rj.MinLSTM(2, 3).initial_state().h.shape
      (3,)
    """

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class MinLSTM(InputGatedLinearCell):
    r"""Minimal LSTM (Feng et al. 2024, "Were RNNs all we needed?"), log-space form.

    Forget and input gates read only the input and are normalised to sum to one, so the
    recurrence is linear in ``h``:

    .. math::

        \begin{aligned}
        f_t &= \sigma(W_f^\top x_t + b_f), \quad i_t = \sigma(W_i^\top x_t + b_i), \quad
        \tilde h_t = g(W_h^\top x_t + b_h) \\
        f'_t &= \frac{f_t}{f_t + i_t}, \quad i'_t = \frac{i_t}{f_t + i_t} \\
        h_t &= f'_t \odot h_{t-1} + i'_t \odot \tilde h_t = a_t \odot h_{t-1} + b_t,
        \qquad y_t = h_t
        \end{aligned}

    The normalised gates come from the log-space difference
    :math:`d_t = \mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i) = \log i_t - \log f_t`:
    :math:`f'_t = \sigma(-d_t)`, :math:`i'_t = \sigma(d_t)` (the paper's
    :math:`\exp(-\mathrm{softplus}(\pm d_t))`), exact even where both gates underflow;
    :math:`g` and the scans as in :class:`MinGRU`.

    Params: ``w_ih`` ``(I, 3H)`` with blocks ``[f | i | h]``, ``b`` ``(3H,)`` (the ``f``
    block starts at ``forget_bias``). State: :class:`MinLSTMState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      forget_bias: initial forget-gate bias (default 1.0).
      kernel_init: initialiser of ``w_ih`` (per gate block; default Glorot uniform).
      param_dtype, dtype: as in :class:`~rnnjax.SimpleRNN`.

    References:
      Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024). Were RNNs all we needed?

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.MinLSTM(input_size=3, hidden_size=4)
      >>> p = cell.init(jax.random.key(0))
      >>> _, ys = rj.unroll(cell, p, jnp.ones((6, 3)), config=rj.ScanConfig(method="parallel"))
      >>> ys.shape
      (6, 4)
    """

    forget_bias: float = 1.0

    gates = 3
    State = MinLSTMState

    def __post_init__(self):
        super().__post_init__()
        checks.number("forget_bias", self.forget_bias)

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, 3H), "b": (3H,)}``.

        Example:
          >>> import jax, rnnjax as rj
          >>> rj.MinLSTM(2, 3).init(jax.random.key(0))["b"].tolist()[:4]
          [1.0, 1.0, 1.0, 0.0]
        """
        p = self._input_weights(key, self.gates)
        b = p["b"].at[: self.hidden_size].set(self.forget_bias)
        return self._cast({"w_ih": p["w_ih"], "b": b})

    def coefficients(self, params, xp):
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` from projected inputs ``(..., 3H)``."""
        H = self.hidden_size
        kf, ki, pre = xp[..., :H], xp[..., H : 2 * H], xp[..., 2 * H :]
        d = jax.nn.softplus(-kf) - jax.nn.softplus(-ki)
        return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * g(pre)
