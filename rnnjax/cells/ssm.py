r"""The selective state-space recurrence of Mamba (Gu & Dao 2023, S6)."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax.cells.base import DiagonalLinearCell, lead

__all__ = ["S6", "S6State"]

DISCRETISATIONS = ("zoh", "euler")


class S6State(NamedTuple):
    """State of :class:`S6`: ``h`` ``(H * N,)``, the ``N`` states of each of the ``H``
    channels (channel-major).

    Example:
      >>> import rnnjax as rj
      >>> rj.S6(4, 4, state_dim=3).initial_state().h.shape
      (12,)
    """

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class S6(DiagonalLinearCell):
    r"""Selective state-space cell (Gu & Dao 2023, Mamba's S6): per channel ``d`` a
    diagonal state of size ``N`` whose step size, input and read-out depend on the input.

    .. math::

        \begin{aligned}
        \Delta_t &= \mathrm{softplus}(W_\Delta^\top (W_r^\top x_t) + b_\Delta)
            \in \mathbb R^H, \qquad B_t = W_B^\top x_t,\quad C_t = W_C^\top x_t
            \in \mathbb R^N \\
        \bar A_{t,dn} &= \exp(\Delta_{t,d} A_{dn}), \qquad
        \bar B_{t,dn} = \frac{\exp(\Delta_{t,d} A_{dn}) - 1}{A_{dn}}\, B_{t,n}
            \quad (\text{zero-order hold}) \\
        h_{t,dn} &= \bar A_{t,dn}\, h_{t-1,dn} + \bar B_{t,dn}\, x_{t,d}, \qquad
        y_{t,d} = \textstyle\sum_n C_{t,n}\, h_{t,dn} + D_d\, x_{t,d}
        \end{aligned}

    with :math:`A = -\exp(A_{\log})` (negative: every channel decays). The recurrence is
    diagonal and linear in ``h`` with coefficients from the input alone, so
    ``rj.ScanConfig(method="parallel")`` (or ``"auto"``) runs it as the engine's parallel
    scan of :class:`~rnnjax.cells.base.DiagonalLinearCell` over the ``H N`` states, then
    :meth:`read_out`; step by step it gives the same numbers. ``discretisation="euler"`` uses
    :math:`\bar B = \Delta B` (the simplification of Mamba's reference kernel).

    As in Mamba the selective scan acts on the channels of its input, so
    ``input_size`` equals ``hidden_size`` (Mamba's block puts a projection, a short
    convolution and SiLU in front). The output is ``y`` (``H``), not the state.

    Initialisation (Mamba's): ``A`` S4D-real (:math:`A_{dn} = -(n + 1)`), ``Delta`` log-
    uniform in ``[dt_min, dt_max]`` through ``b_Delta`` (inverse softplus),
    ``W_Delta`` uniform with scale ``dt_rank ** -0.5``, ``D = 1``.

    Params: ``w_x`` ``(H, R + 2N)`` with blocks ``[W_r | W_B | W_C]``, ``w_dt`` ``(R, H)``,
    ``b_dt`` ``(H,)``, ``a_log`` ``(H, N)``, ``d`` ``(H,)``. State: :class:`S6State`.

    Args:
      input_size: ``I`` (equal to ``hidden_size``).
      hidden_size: ``H``, the channels.
      state_dim: ``N``, the states per channel (16 in Mamba).
      dt_rank: ``R``, the rank of the step-size projection (default ``ceil(H / 16)``).
      dt_min, dt_max: range of the initial step sizes.
      discretisation: ``"zoh"`` (default) or ``"euler"``.
      param_dtype, dtype: as in :class:`~rnnjax.LSTM`.

    References:
      Gu & Dao (2023). Mamba: Linear-time sequence modeling with selective state spaces.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.S6(input_size=4, hidden_size=4, state_dim=3)
      >>> p = cell.init(jax.random.key(0))
      >>> xs = jax.random.normal(jax.random.key(1), (6, 4))
      >>> _, seq = rj.unroll(cell, p, xs)
      >>> _, par = rj.unroll(cell, p, xs, config=rj.ScanConfig(method="parallel"))
      >>> seq.shape, bool(jnp.allclose(seq, par, atol=1e-5))
      ((6, 4), True)
    """

    state_dim: int = 16
    dt_rank: Optional[int] = None
    dt_min: float = 0.001
    dt_max: float = 0.1
    discretisation: str = "zoh"

    State = S6State

    def __post_init__(self):
        super().__post_init__()
        self._check_square("runs its recurrence on its input's channels")
        checks.integer("state_dim", self.state_dim, 1)
        if self.dt_rank is not None:
            checks.integer("dt_rank", self.dt_rank, 1)
        checks.number("dt_min", self.dt_min, 0.0, min_open=True)
        checks.number("dt_max", self.dt_max, 0.0, min_open=True)
        if not self.dt_min <= self.dt_max:
            raise ValueError(
                f"dt_min must not exceed dt_max; got dt_min={self.dt_min}, dt_max={self.dt_max}"
            )
        checks.choice("discretisation", self.discretisation, DISCRETISATIONS)

    @property
    def rank(self) -> int:
        """``R``: ``dt_rank`` or ``ceil(H / 16)``."""
        return self.dt_rank if self.dt_rank is not None else math.ceil(self.hidden_size / 16)

    @property
    def state_size(self) -> int:
        """``H * N``."""
        return self.hidden_size * self.state_dim

    def _state_sizes(self) -> dict:
        return {"h": self.hidden_size * self.state_dim}

    def init(self, key) -> dict:
        """Parameters ``{"w_x": (H, R + 2N), "w_dt": (R, H), "b_dt": (H,),
        "a_log": (H, N), "d": (H,)}``.

        Example:
          >>> import jax, jax.numpy as jnp, rnnjax as rj
          >>> p = rj.S6(4, 4, state_dim=3).init(jax.random.key(0))
          >>> (-jnp.exp(p["a_log"][0])).tolist()                  # S4D-real A
          [-1.0, -2.0, -3.0]
        """
        H, N, R, dt = self.hidden_size, self.state_dim, self.rank, self._init_dtype()
        k1, k2, k3 = jax.random.split(key, 3)
        w_x = inits.glorot_uniform(k1, (H, R + 2 * N), dt)
        w_dt = jax.random.uniform(k2, (R, H), dt, -(R**-0.5), R**-0.5)
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        step = jnp.exp(jax.random.uniform(k3, (H,), dt, lo, hi))
        b_dt = step + jnp.log(-jnp.expm1(-step))  # inverse softplus
        a_log = jnp.log(jnp.broadcast_to(jnp.arange(1, N + 1, dtype=dt), (H, N)))
        return self._cast(
            {"w_x": w_x, "w_dt": w_dt, "b_dt": b_dt, "a_log": a_log, "d": jnp.ones((H,), dt)}
        )

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``[x | W_Delta (W_r x) + b_Delta | B | C]``,
        ``(..., 2H + 2N)``."""
        R = self.rank
        z = self.mm(x, params["w_x"])
        dt_pre = self.mm(z[..., :R], params["w_dt"])
        dt_pre = dt_pre + lead(params["b_dt"], dt_pre.ndim).astype(dt_pre.dtype)
        return jnp.concatenate([x.astype(z.dtype), dt_pre, z[..., R:]], axis=-1)

    def coefficients(self, params, xp):
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` over the ``H N`` states
        (channel-major, ``(..., H N)``): :math:`\bar A` and :math:`\bar B x`."""
        H, N = self.hidden_size, self.state_dim
        a_log = params["a_log"]
        dt = jnp.promote_types(xp.dtype, jnp.promote_types(jnp.float32, a_log.dtype))
        xp = xp.astype(dt)
        x, dt_pre, Bm = xp[..., :H], xp[..., H : 2 * H], xp[..., 2 * H : 2 * H + N]
        A = -jnp.exp(a_log.astype(dt))  # (H, N)
        delta = jax.nn.softplus(dt_pre)[..., None]  # (..., H, 1)
        dA = delta * lead(A, delta.ndim)
        if self.discretisation == "zoh":
            bbar = jnp.expm1(dA) / lead(A, dA.ndim) * Bm[..., None, :]
        else:
            bbar = delta * Bm[..., None, :]
        flat = lambda v: v.reshape(v.shape[:-2] + (H * N,))  # noqa: E731
        return flat(jnp.exp(dA)), flat(bbar * x[..., None])

    def read_out(self, params, xp, h):
        """``y = C^T h + D x`` per channel from the states ``h`` ``(..., H N)``."""
        H, N = self.hidden_size, self.state_dim
        xp = xp.astype(h.dtype)
        x, Cm = xp[..., :H], xp[..., 2 * H + N :]
        hh = h.reshape(h.shape[:-1] + (H, N))
        d = params["d"].astype(h.dtype)
        return jnp.sum(hh * Cm[..., None, :], axis=-1) + lead(d, x.ndim) * x
