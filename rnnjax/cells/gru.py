r"""The GRU cell in both reset variants (cuDNN/PyTorch and Cho et al.) and its kernels."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax.cells.base import GatedCell, lead, matmul_t

__all__ = ["GRU", "GRUState"]


class GRUState(NamedTuple):
    """State of :class:`GRU`: the hidden vector ``h`` of shape ``(H,)``.

    Example:
      >>> import rnnjax as rj
      >>> rj.GRU(3, 4).initial_state().h.shape              # (H,)
      (4,)
    """

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class GRU(GatedCell):
    r"""Gated recurrent unit, gate order (r, z, n) as in ``torch.nn.GRU``.

    With ``reset_after=True`` (default; the cuDNN / PyTorch form):

    .. math::

        \begin{aligned}
        r_t &= \sigma(W_{ir}^\top x_t + W_{hr}^\top h_{t-1} + b_r) \\
        z_t &= \sigma(W_{iz}^\top x_t + W_{hz}^\top h_{t-1} + b_z) \\
        n_t &= \tanh(W_{in}^\top x_t + b_{in} + r_t \odot (W_{hn}^\top h_{t-1} + b_{hn})) \\
        h_t &= (1 - z_t) \odot n_t + z_t \odot h_{t-1}, \qquad y_t = h_t
        \end{aligned}

    With ``reset_after=False`` (Cho et al. 2014) the candidate is
    :math:`n_t = \tanh(W_{in}^\top x_t + W_{hn}^\top (r_t \odot h_{t-1}) + b_n)`.

    Params: ``w_ih`` ``(I, 3H)``, ``w_hh`` ``(H, 3H)``, ``b`` ``(3H,)`` with blocks
    ``[r | z | n]``, and with ``reset_after=True`` also ``b_hn`` ``(H,)``. ``b``'s ``r``
    and ``z`` blocks are PyTorch's ``bias_ih + bias_hh``; its ``n`` block is ``b_in``.
    State: :class:`GRUState` ``(h,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      reset_after: where the reset gate acts (see above).
      chrono_t_max: if set, chrono initialisation of the keep gate:
        ``b_z ~ log U(1, t_max - 1)``.
      kernel_init, recurrent_init, param_dtype, dtype: as in :class:`~rnnjax.SimpleRNN`.

    Example:
      >>> import jax, rnnjax as rj
      >>> cell = rj.GRU(input_size=3, hidden_size=4, reset_after=False)
      >>> params = cell.init(jax.random.key(0))
      >>> sorted(params)
      ['b', 'w_hh', 'w_ih']
    """

    reset_after: bool = True
    chrono_t_max: Optional[float] = None

    gates = 3
    State = GRUState

    def __post_init__(self):
        super().__post_init__()
        checks.boolean("reset_after", self.reset_after)
        if self.chrono_t_max is not None:
            checks.number("chrono_t_max", self.chrono_t_max, 2.0, min_open=True)

    def init(self, key) -> dict:
        """Parameters ``{"w_ih", "w_hh", "b"}`` (and ``"b_hn"`` when ``reset_after``).

        Example:
          >>> import jax, rnnjax as rj
          >>> rj.GRU(2, 3).init(jax.random.key(0))["b_hn"].shape
          (3,)
        """
        k_w, k_b = jax.random.split(key)
        params = self._init_weights(k_w)
        H = self.hidden_size
        if self.chrono_t_max is not None:
            b_z = inits.chrono_bias(k_b, H, self.chrono_t_max, self._init_dtype())
            params["b"] = params["b"].at[H : 2 * H].set(b_z)
        if self.reset_after:
            params["b_hn"] = jnp.zeros((H,), self._init_dtype())
        return self._cast(params)

    def _forward(self, params, h, xp):
        """One step; returns ``(h', residuals)``."""
        H = self.hidden_size
        if self.reset_after:
            hp = self.mm(h, params["w_hh"])
            rz = jax.nn.sigmoid(xp[..., : 2 * H] + hp[..., : 2 * H])
            r, z = rz[..., :H], rz[..., H:]
            hn = hp[..., 2 * H :] + lead(params["b_hn"], hp.ndim).astype(hp.dtype)
            n = jnp.tanh(xp[..., 2 * H :] + r * hn)
            res = (r, z, n, hn)
        else:
            w_hh = params["w_hh"]
            rz = jax.nn.sigmoid(xp[..., : 2 * H] + self.mm(h, w_hh[:, : 2 * H]))
            r, z = rz[..., :H], rz[..., H:]
            n = jnp.tanh(xp[..., 2 * H :] + self.mm(r * h, w_hh[:, 2 * H :]))
            res = (r, z, n)
        return (1.0 - z) * n + z * h, res

    def recur(self, params, state: GRUState, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``."""
        h, _ = self._forward(params, state.h, xp)
        return GRUState(h=h), h

    def kernel(self):
        """The fused-path kernel (see :class:`rnnjax.cells.base.Kernel`)."""
        return _GRUKernel(self)


@dataclasses.dataclass(frozen=True)
class _GRUKernel:
    """Local linear map, reset after: ``dhp = dh_in W_hh + U``,
    ``dr = r' (dxp_r + dhp_r)``, ``dn = n' (dxp_n + hn dr + r dhp_n)``,
    ``dh = (1 - z) dn + (h_in - n) z' (dxp_z + dhp_z) + z dh_in``. Reset before (Cho et
    al.): the candidate's recurrent operand is ``r h_in``, so ``d(r h) = dr h + r dh`` is
    a second product inside the loop."""

    cell: GRU

    def forward(self, params, state, xp):
        h, res = self.cell._forward(params, state.h, xp)
        return GRUState(h=h), res

    def factors(self, params, state_in, res):
        h = state_in.h
        r, z, n = res[:3]
        dr = r * (1.0 - r)
        az = z * (1.0 - z) * (h - n)
        an = (1.0 - z) * (1.0 - n * n)
        if self.cell.reset_after:
            return dr, az, an, z, r, res[3]
        return dr, az, an, z, r, h

    def constants(self, params):
        H = self.cell.hidden_size
        w_t = params["w_hh"].T
        return w_t if self.cell.reset_after else (w_t[: 2 * H], w_t[2 * H :])

    def inject(self, params, dparams, state_in, res):
        h = state_in.h
        mm = self.cell.mm
        if self.cell.reset_after:
            u = mm(h, dparams["w_hh"])
            H = self.cell.hidden_size
            zeros = jnp.zeros(u.shape[:-1] + (2 * H,), u.dtype)
            return u + jnp.concatenate(
                [zeros, jnp.broadcast_to(dparams["b_hn"].astype(u.dtype), u.shape[:-1] + (H,))],
                axis=-1,
            )
        H = self.cell.hidden_size
        dw = dparams["w_hh"]
        r = res[0]
        return jnp.concatenate([mm(h, dw[:, : 2 * H]), mm(r * h, dw[:, 2 * H :])], axis=-1)

    def tangent(self, consts, factors, ds, dxp, u):
        H = self.cell.hidden_size
        dt = self.cell.dtype
        dr_f, az, an, z, r, extra = factors
        dh = ds.h
        if self.cell.reset_after:
            dhp = u + matmul_t(dh, consts, dt)
            a = dxp + dhp
            dr = dr_f * a[..., :H]
            dn_in = dxp[..., 2 * H :] + extra * dr + r * dhp[..., 2 * H :]
            new = an * dn_in + az * a[..., H : 2 * H] + z * dh
        else:
            w_rz_t, w_n_t = consts
            a = dxp[..., : 2 * H] + u[..., : 2 * H] + matmul_t(dh, w_rz_t, dt)
            dr = dr_f * a[..., :H]
            drh = dr * extra + r * dh
            dn_in = dxp[..., 2 * H :] + u[..., 2 * H :] + matmul_t(drh, w_n_t, dt)
            new = an * dn_in + az * a[..., H:] + z * dh
        return GRUState(h=new)
