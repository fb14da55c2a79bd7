r"""The LSTM cell (``torch.nn.LSTM``, optional projection) and its fused-path kernel."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax.cells.base import GatedCell, lead, matmul_t

__all__ = ["LSTM", "LSTMState"]


class LSTMState(NamedTuple):
    """State of :class:`LSTM`: output ``h`` of shape ``(P or H,)``, cell ``c`` of shape ``(H,)``.

    Example:
      >>> import rnnjax as rj
      >>> state = rj.LSTM(3, 4, proj_size=2).initial_state()
      >>> state.h.shape, state.c.shape                      # (P,), (H,)
      ((2,), (4,))
    """

    h: jax.Array
    c: jax.Array


@dataclasses.dataclass(frozen=True)
class LSTM(GatedCell):
    r"""Long short-term memory cell (``torch.nn.LSTM``), gate order (i, f, g, o).

    .. math::

        \begin{aligned}
        i_t &= \sigma(W_{ii}^\top x_t + W_{hi}^\top h_{t-1} + b_i) \\
        f_t &= \sigma(W_{if}^\top x_t + W_{hf}^\top h_{t-1} + b_f) \\
        g_t &= \tanh(W_{ig}^\top x_t + W_{hg}^\top h_{t-1} + b_g) \\
        o_t &= \sigma(W_{io}^\top x_t + W_{ho}^\top h_{t-1} + b_o) \\
        c_t &= f_t \odot c_{t-1} + i_t \odot g_t \\
        h_t &= o_t \odot \tanh(c_t) \quad (\text{or } W_{hr}^\top (o_t \odot \tanh(c_t))
              \text{ with a projection}), \qquad y_t = h_t
        \end{aligned}

    Params: ``w_ih`` ``(I, 4H)``, ``w_hh`` ``(P or H, 4H)``, ``b`` ``(4H,)`` (PyTorch's
    ``bias_ih + bias_hh``), and with ``proj_size = P > 0`` also ``w_hr`` ``(H, P)``.
    Gate blocks are ``[i | f | g | o]``, each ``H`` columns. State: :class:`LSTMState`
    ``(h, c)`` with ``h`` of size ``P`` (or ``H``) and ``c`` of size ``H``; the cell state
    ``c`` stays float32 under reduced-precision parameters.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      proj_size: ``P``; 0 (default) for no projection, else ``0 < P < H`` as in PyTorch.
      forget_bias: initial forget-gate bias (default 1.0, Jozefowicz et al. 2015).
      chrono_t_max: if set, chrono initialisation (Tallec & Ollivier 2018) replaces
        ``forget_bias``: ``b_f ~ log U(1, t_max - 1)`` and ``b_i = -b_f``.
      kernel_init, recurrent_init, param_dtype, dtype: as in :class:`~rnnjax.SimpleRNN`.

    Example:
      >>> import jax, rnnjax as rj
      >>> cell = rj.LSTM(input_size=3, hidden_size=4)
      >>> params = cell.init(jax.random.key(0))
      >>> state, y = cell.step(params, cell.initial_state(), jax.numpy.ones(3))
      >>> state.c.shape
      (4,)
    """

    proj_size: int = 0
    forget_bias: float = 1.0
    chrono_t_max: Optional[float] = None

    gates = 4
    State = LSTMState

    def __post_init__(self):
        super().__post_init__()
        checks.integer("proj_size", self.proj_size, 0)
        if self.proj_size >= self.hidden_size:
            raise ValueError(
                f"proj_size must be smaller than hidden_size={self.hidden_size}; "
                f"got {self.proj_size}"
            )
        checks.number("forget_bias", self.forget_bias)
        if self.chrono_t_max is not None:
            checks.number("chrono_t_max", self.chrono_t_max, 2.0, min_open=True)

    @property
    def output_size(self) -> int:
        return self.proj_size or self.hidden_size

    @property
    def state_size(self) -> int:
        return self.proj_size or self.hidden_size

    def _state_sizes(self) -> dict:
        return {"h": self.state_size, "c": self.hidden_size}

    def init(self, key) -> dict:
        """Parameters ``{"w_ih", "w_hh", "b"}`` (and ``"w_hr"`` with a projection).

        Example:
          >>> import jax, rnnjax as rj
          >>> p = rj.LSTM(2, 3, proj_size=2).init(jax.random.key(0))
          >>> p["w_hh"].shape, p["w_hr"].shape
          ((2, 12), (3, 2))
        """
        k_w, k_b, k_r = jax.random.split(key, 3)
        params = self._init_weights(k_w)
        H, dt = self.hidden_size, self._init_dtype()
        if self.chrono_t_max is not None:
            b_f = inits.chrono_bias(k_b, H, self.chrono_t_max, dt)
            b = params["b"].at[H : 2 * H].set(b_f).at[:H].set(-b_f)
        else:
            b = params["b"].at[H : 2 * H].set(self.forget_bias)
        params["b"] = b
        if self.proj_size:
            kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
            params["w_hr"] = kernel(k_r, (H, self.proj_size), dt)
        return self._cast(params)

    def _gates(self, params, state, xp):
        """Pre-activations ``z`` ``(..., 4H)`` and activations ``[i, f, g, o]`` in one
        elementwise op (``tanh(z) = 2 sigmoid(2 z) - 1`` in the g block), so XLA emits one
        kernel for all gates instead of one per gate plus a concatenation."""
        z = xp + self.mm(state.h, params["w_hh"])
        H = self.hidden_size
        blk = jnp.repeat(jnp.arange(4), H)
        s = lead(jnp.where(blk == 2, 2.0, 1.0).astype(z.dtype), z.ndim)
        return s * jax.nn.sigmoid(s * z) - (s - 1.0)

    def _cell_update(self, params, state, acts):
        H = self.hidden_size
        i, f, g, o = (acts[..., k * H : (k + 1) * H] for k in range(4))
        c = f * state.c + i * g
        tc = jnp.tanh(c)
        m = o * tc
        h = self.mm(m, params["w_hr"]) if self.proj_size else m
        return LSTMState(h=h, c=c), tc

    def recur(self, params, state: LSTMState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        new, _ = self._cell_update(params, state, self._gates(params, state, xp))
        return new, new.h

    def kernel(self):
        """The fused-path kernel (see :class:`rnnjax.cells.base.Kernel`)."""
        return _LSTMKernel(self)


@dataclasses.dataclass(frozen=True)
class _LSTMKernel:
    """Residuals: the four activations and ``tanh(c_t)``. Local linear map:
    ``dz = dxp + U + dh_in W_hh``, ``p = F dz`` with ``F = act'(z) * [g, c_in, i, tanh c]``,
    ``dc = p_i + p_f + p_g + f dc_in``, ``dm = p_o + o (1 - tanh^2 c) dc``,
    ``dh = dm`` (or ``dm W_hr + m dW_hr``)."""

    cell: LSTM

    def forward(self, params, state, xp):
        acts = self.cell._gates(params, state, xp)
        new, tc = self.cell._cell_update(params, state, acts)
        return new, (acts, tc)

    def factors(self, params, state_in, res):
        acts, tc = res
        H = self.cell.hidden_size
        i, f, g, o = (acts[..., k * H : (k + 1) * H] for k in range(4))
        blk = lead(jnp.repeat(jnp.arange(4), H), acts.ndim)
        deriv = jnp.where(blk == 2, 1.0 - acts * acts, acts * (1.0 - acts))
        other = jnp.concatenate([g, state_in.c, i, tc], axis=-1)
        return deriv * other, f, o * (1.0 - tc * tc)

    def constants(self, params):
        w_hr = params.get("w_hr")
        return params["w_hh"].T, (None if w_hr is None else w_hr.T)

    def inject(self, params, dparams, state_in, res):
        u = self.cell.mm(state_in.h, dparams["w_hh"])
        if not self.cell.proj_size:
            return u, None
        acts, tc = res
        H = self.cell.hidden_size
        return u, self.cell.mm(acts[..., 3 * H :] * tc, dparams["w_hr"])

    def tangent(self, consts, factors, ds, dxp, u):
        w_hh_t, w_hr_t = consts
        F, f, ko = factors
        u_z, u_p = u
        dt = self.cell.dtype
        dz = dxp + u_z + matmul_t(ds.h, w_hh_t, dt)
        p = F * dz
        H = self.cell.hidden_size
        dc = p[..., :H] + p[..., H : 2 * H] + p[..., 2 * H : 3 * H] + f * ds.c
        dm = p[..., 3 * H :] + ko * dc
        dh = dm if w_hr_t is None else matmul_t(dm, w_hr_t, dt) + u_p
        return LSTMState(h=dh, c=dc)
