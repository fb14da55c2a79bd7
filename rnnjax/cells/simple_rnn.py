r"""The Elman cell (``torch.nn.RNN``) and its fused-path kernel."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax.cells.base import GatedCell, matmul_t

__all__ = ["SimpleRNN", "SimpleRNNState"]


class SimpleRNNState(NamedTuple):
    """State of :class:`SimpleRNN`: the hidden vector ``h`` of shape ``(H,)``.

    Example:
      >>> import rnnjax as rj
      >>> rj.SimpleRNN(3, 4).initial_state()._fields
      ('h',)
    """

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class SimpleRNN(GatedCell):
    r"""Elman recurrent cell (``torch.nn.RNN``).

    .. math::

        h_t = \phi(W_{ih}^\top x_t + W_{hh}^\top h_{t-1} + b), \qquad y_t = h_t

    with :math:`\phi` = ``tanh`` or ``relu``.

    Params: ``w_ih`` ``(I, H)``, ``w_hh`` ``(H, H)``, ``b`` ``(H,)`` (PyTorch's
    ``bias_ih + bias_hh``). State: :class:`SimpleRNNState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      nonlinearity: ``"tanh"`` (default) or ``"relu"``.
      kernel_init: input-weight initialiser, a name from
        :data:`rnnjax.initializers.KERNEL_INITIALIZERS` or a callable.
      recurrent_init: recurrent-weight initialiser (default orthogonal).
      param_dtype: dtype of the parameters (float32; bfloat16 and float16 work).
      dtype: compute dtype of the matrix products (default: the parameters').

    Example:
      >>> import jax, rnnjax as rj
      >>> cell = rj.SimpleRNN(input_size=3, hidden_size=4)
      >>> params = cell.init(jax.random.key(0))
      >>> state, y = cell.step(params, cell.initial_state(), jax.numpy.ones(3))
      >>> y.shape
      (4,)
    """

    nonlinearity: str = "tanh"

    State = SimpleRNNState

    def __post_init__(self):
        super().__post_init__()
        checks.choice("nonlinearity", self.nonlinearity, ("tanh", "relu"))

    def init(self, key) -> dict:
        """Parameters ``{"w_ih": (I, H), "w_hh": (H, H), "b": (H,)}``.

        Example:
          >>> import jax, rnnjax as rj
          >>> sorted(rj.SimpleRNN(2, 3).init(jax.random.key(0)))
          ['b', 'w_hh', 'w_ih']
        """
        return self._cast(self._init_weights(key))

    def _act(self, pre):
        return jnp.tanh(pre) if self.nonlinearity == "tanh" else jax.nn.relu(pre)

    def recur(self, params, state: SimpleRNNState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        h = self._act(xp + self.mm(state.h, params["w_hh"]))
        return SimpleRNNState(h=h), h

    def kernel(self):
        """The fused-path kernel (see :class:`rnnjax.cells.base.Kernel`)."""
        return _RNNKernel(self)


@dataclasses.dataclass(frozen=True)
class _RNNKernel:
    cell: SimpleRNN

    def forward(self, params, state, xp):
        new, _ = self.cell.recur(params, state, xp)
        return new, new.h

    def factors(self, params, state_in, h):
        if self.cell.nonlinearity == "tanh":
            return 1.0 - h * h
        return (h > 0).astype(h.dtype)

    def constants(self, params):
        return params["w_hh"].T

    def inject(self, params, dparams, state_in, res):
        return self.cell.mm(state_in.h, dparams["w_hh"])

    def tangent(self, w_t, a, ds, dxp, u):
        return SimpleRNNState(h=a * (dxp + u + matmul_t(ds.h, w_t, self.cell.dtype)))
