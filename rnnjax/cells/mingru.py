r"""The minimal GRU (Feng et al. 2024): a gated linear recurrence, parallel in time."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import initializers as inits
from rnnjax.cells.base import DiagonalLinearCell

__all__ = ["MinGRU", "MinGRUState", "InputGatedLinearCell", "g"]


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
class InputGatedLinearCell(DiagonalLinearCell):
    """A diagonal linear cell whose gates read only the input: ``w_ih`` ``(I, G H)`` and
    ``b`` ``(G H,)`` in ``G`` gate blocks, no recurrent weights (:class:`MinGRU`,
    :class:`~rnnjax.MinLSTM`).

    Args:
      input_size, hidden_size, param_dtype, dtype: as in :class:`rnnjax.cells.base.Cell`.
      kernel_init: initialiser of ``w_ih`` (per gate block; default Glorot uniform).

    Example:
      >>> import jax, rnnjax as rj
      >>> from rnnjax.cells.mingru import InputGatedLinearCell
      >>> cell = rj.MinLSTM(2, 3)
      >>> isinstance(cell, InputGatedLinearCell), cell.gates
      (True, 3)
      >>> {k: v.shape for k, v in cell.init(jax.random.key(0)).items()}
      {'w_ih': (2, 9), 'b': (9,)}
    """

    kernel_init: inits.InitSpec = "glorot_uniform"

    gates = 1  # number of gate blocks; a class attribute, not a field

    def __post_init__(self):
        super().__post_init__()
        inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, G H), "b": (G H,)}``.

        Example:
          >>> import jax, rnnjax as rj
          >>> sorted(rj.MinGRU(2, 3).init(jax.random.key(0)))
          ['b', 'w_ih']
        """
        return self._cast(self._input_weights(key, self.gates))

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_ih + b``, shape ``(..., G * H)``."""
        return self._affine(params, x)


@dataclasses.dataclass(frozen=True)
class MinGRU(InputGatedLinearCell):
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
    weights. State: :class:`MinGRUState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      kernel_init: initialiser of ``w_ih`` (per gate block; default Glorot uniform).
      param_dtype, dtype: as in :class:`~rnnjax.SimpleRNN`.

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

    def coefficients(self, params, xp):
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` from projected inputs ``(..., 2H)``."""
        H = self.hidden_size
        k, pre = xp[..., :H], xp[..., H:]
        return jax.nn.sigmoid(-k), jax.nn.sigmoid(k) * g(pre)
