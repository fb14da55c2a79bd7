r"""The minimal GRU (Feng et al. 2024): a gated linear recurrence, parallel in time."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax.cells.base import Cell

__all__ = ["MinGRU", "MinGRUState", "g"]


class MinGRUState(NamedTuple):
    """State of :class:`MinGRU`: the hidden vector ``h`` of shape ``(H,)``.

    Example:
      >>> import rnnjax as rj
      >>> rj.MinGRU(2, 3).initial_state().h.shape
      (3,)
    """

    h: jax.Array


def g(x):
    r""":math:`g(x) = x + 1/2` for :math:`x \ge 0`, :math:`\sigma(x)` below: the positive,
    continuous activation of the log-space minGRU and minLSTM.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.cells.mingru import g
      >>> [round(float(v), 4) for v in g(jnp.array([-2.0, 0.0, 1.0]))]
      [0.1192, 0.5, 1.5]
    """
    return jnp.where(x >= 0, x + 0.5, jax.nn.sigmoid(x))


@dataclasses.dataclass(frozen=True)
class MinGRU(Cell):
    r"""Minimal GRU (Feng et al. 2024, "Were RNNs all we needed?"), log-space form.

    The gate and the candidate read only the input, so the recurrence is linear in
    ``h`` with coefficients known for all steps at once:

    .. math::

        \begin{aligned}
        z_t &= \sigma(k_t), \quad k_t = W_{z}^\top x_t + b_z, \qquad
        \tilde h_t = g(W_{h}^\top x_t + b_h) \\
        h_t &= (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t
             = a_t \odot h_{t-1} + b_t, \qquad y_t = h_t
        \end{aligned}

    with :math:`g(x) = x + 1/2` for :math:`x \ge 0`, :math:`\sigma(x)` below (the paper's
    positive activation of the log-space version).

    Log space. The paper's log-space form has three parts: the positive activation
    :math:`g`; the coefficients as exponentials of log-sigmoids,
    :math:`a_t = \exp(-\mathrm{softplus}(k_t))`,
    :math:`b_t = \exp(-\mathrm{softplus}(-k_t) + \log g)`; and a scan in log space
    (cumulative sums of :math:`\log a_t` and a log-cumulative-sum-exp). This cell keeps
    the first; it forms the same coefficients as :math:`a_t = \sigma(-k_t)`,
    :math:`b_t = \sigma(k_t)\, g` (equal to float32 rounding, 5e-7 measured, neither
    saturating nor cancelling: :math:`\sigma(-k)` rather than :math:`1 - \sigma(k)`,
    and five times cheaper in a training step on CPU than the log-sigmoid form); and
    replaces the log-space scan by multiply-add scans (:func:`rnnjax.parallel.linear_scan`)
    that never divide by a cumulative product and do not lose precision with ``T`` (the
    log-space scan's cumulative sums grow like ``T`` and, in float32, cost relative
    precision ``~ T * 1e-7`` in ``h``).

    Run it in parallel with ``rj.ScanConfig(method="parallel")`` (or ``"auto"``); step by
    step (``step``, the default sequential method) it gives the same numbers.

    Params: ``w_ih`` ``(I, 2H)`` with blocks ``[z | h]``, ``b`` ``(2H,)``. No recurrent
    weights (``recurrent_init`` is unused). State: :class:`MinGRUState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      kernel_init, param_dtype, dtype: as in :class:`~rnnjax.SimpleRNN`.

    References:
      Feng, Tung, Ahmed, Bengio & Hajimirsadeghi (2024). Were RNNs all we needed?

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.MinGRU(input_size=3, hidden_size=4)
      >>> p = cell.init(jax.random.key(0))
      >>> xs = jnp.ones((6, 3))
      >>> _, par = rj.unroll(cell, p, xs, config=rj.ScanConfig(method="parallel"))
      >>> _, seq = rj.unroll(cell, p, xs)
      >>> par.shape, bool(jnp.allclose(par, seq, atol=1e-6))
      ((6, 4), True)
    """

    gates = 2
    State = MinGRUState

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, 2H), "b": (2H,)}``.

        Example:
          >>> import jax, rnnjax as rj
          >>> sorted(rj.MinGRU(2, 3).init(jax.random.key(0)))
          ['b', 'w_ih']
        """
        p = self._init_weights(key)
        return self._cast({"w_ih": p["w_ih"], "b": p["b"]})

    def coefficients(self, params, xp):
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` from projected inputs ``(..., 2H)``."""
        H = self.hidden_size
        k, pre = xp[..., :H], xp[..., H:]
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(pre)

    def recur(self, params, state: MinGRUState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        a, b = self.coefficients(params, xp)
        h = a * state.h + b
        return MinGRUState(h=h), h

    def parallel_form(self):
        """The linear form (this cell): ``coefficients``, ``to_scan``, ``from_scan``."""
        return self

    @staticmethod
    def to_scan(h):
        return h

    @staticmethod
    def from_scan(h):
        return h
