r"""The linear recurrent unit (Orvieto et al. 2023): a complex diagonal linear recurrence."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax.cells.base import DiagonalLinearCell, lead

__all__ = ["LRU", "LRUState"]


class LRUState(NamedTuple):
    """State of :class:`LRU`: ``h`` of shape ``(2N,)``, the real parts of the ``N``
    complex units followed by their imaginary parts.

    Example:
      >>> import rnnjax as rj
      >>> rj.LRU(2, 3).initial_state().h.shape      # (2N,) with N = 3 complex units
      (6,)
    """

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class LRU(DiagonalLinearCell):
    r"""Linear recurrent unit (Orvieto et al. 2023): a diagonal complex linear recurrence
    with exponential parametrisation and normalisation.

    .. math::

        \begin{aligned}
        \lambda &= \exp(-\exp(\nu) + i \exp(\theta)), \qquad
        \gamma = \exp(\gamma_{\log}) \quad (\text{initially } \sqrt{1 - |\lambda|^2}) \\
        h_t &= \lambda \odot h_{t-1} + \gamma \odot (B_{re}^\top x_t + i\, B_{im}^\top x_t),
        \qquad y_t = [\,\mathrm{Re}\, h_t,\ \mathrm{Im}\, h_t\,]
        \end{aligned}

    Output: this cell returns the real and imaginary parts of its ``N`` complex units
    concatenated (``output_size = 2N``) rather than the paper's ``Re(C h_t) + D x_t``:
    the read-out ``C`` (and the skip ``D``) is then the next layer's input weights, and
    the state is real, so every layer feature (zoneout, packing, checkpoints) applies.
    Under ``method="parallel"`` the recurrence runs on complex numbers; recurrent
    dropout and sampled zoneout (which would act on real and imaginary parts apart) need
    ``method="sequential"``.

    Initialisation (the paper's): ``|lambda|`` uniform on the ring
    ``[r_min, r_max]``, phase uniform in ``[0, max_phase]``, ``B`` Gaussian with variance
    ``1 / (2 I)`` for each of its real and imaginary parts.

    Params: ``nu_log`` ``(N,)``, ``theta_log`` ``(N,)``, ``gamma_log`` ``(N,)``,
    ``w_ih`` ``(I, 2N)`` with blocks ``[B_re | B_im]``. State: :class:`LRUState` ``(h,)``
    with ``h`` ``(2N,)``.

    Args:
      input_size: ``I``.
      hidden_size: ``N``, the number of complex units.
      r_min, r_max: the ring of initial eigenvalue magnitudes, ``0 <= r_min < r_max < 1``.
      max_phase: largest initial phase (default ``2 pi``).
      param_dtype, dtype: as in :class:`~rnnjax.SimpleRNN`.

    References:
      Orvieto, Smith, Gu, Fernando, Gulcehre, Pascanu & De (2023). Resurrecting recurrent
      neural networks for long sequences.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.LRU(input_size=3, hidden_size=4)
      >>> p = cell.init(jax.random.key(0))
      >>> _, ys = rj.unroll(cell, p, jnp.ones((6, 3)), config=rj.ScanConfig(method="parallel"))
      >>> ys.shape
      (6, 8)
    """

    r_min: float = 0.9
    r_max: float = 0.999
    max_phase: float = 2 * math.pi

    State = LRUState

    def __post_init__(self):
        super().__post_init__()
        checks.number("r_min", self.r_min, 0.0)
        checks.number("r_max", self.r_max, 0.0, 1.0, max_open=True)
        if not self.r_min < self.r_max:
            raise ValueError(
                f"r_min must be smaller than r_max; got r_min={self.r_min}, r_max={self.r_max}"
            )
        checks.number("max_phase", self.max_phase, 0.0, min_open=True)

    @property
    def output_size(self) -> int:
        """``2N``: real and imaginary parts."""
        return 2 * self.hidden_size

    @property
    def state_size(self) -> int:
        return 2 * self.hidden_size

    def _state_sizes(self) -> dict:
        return {"h": 2 * self.hidden_size}

    def init(self, key) -> dict:
        """Parameters ``{"nu_log", "theta_log", "gamma_log": (N,), "w_ih": (I, 2N)}``.

        Example:
          >>> import jax, jax.numpy as jnp, rnnjax as rj
          >>> p = rj.LRU(2, 3).init(jax.random.key(0))
          >>> lam = jnp.exp(-jnp.exp(p["nu_log"]))
          >>> bool(((lam >= 0.9) & (lam <= 0.999)).all())
          True
        """
        N, dt = self.hidden_size, self._init_dtype()
        k1, k2, k3 = jax.random.split(key, 3)
        u1 = jax.random.uniform(k1, (N,), dt)
        u2 = jax.random.uniform(k2, (N,), dt)
        nu_log = jnp.log(-0.5 * jnp.log(u1 * (self.r_max**2 - self.r_min**2) + self.r_min**2))
        theta_log = jnp.log(self.max_phase * u2)
        mod = jnp.exp(-jnp.exp(nu_log))
        gamma_log = jnp.log(jnp.sqrt(1.0 - mod**2))
        w = jax.random.normal(k3, (self.input_size, 2 * N), dt) / math.sqrt(2 * self.input_size)
        return self._cast(
            {"nu_log": nu_log, "theta_log": theta_log, "gamma_log": gamma_log, "w_ih": w}
        )

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ [B_re | B_im]``, shape ``(..., 2N)``."""
        return self.mm(x, params["w_ih"])

    def _lambda(self, params):
        f = lambda k: params[k].astype(jnp.promote_types(jnp.float32, params[k].dtype))  # noqa: E731
        lam = jnp.exp(jax.lax.complex(-jnp.exp(f("nu_log")), jnp.exp(f("theta_log"))))
        return lam, jnp.exp(f("gamma_log"))

    def coefficients(self, params, xp):
        """Complex ``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` from projected inputs."""
        N = self.hidden_size
        lam, gamma = self._lambda(params)
        dt = jnp.promote_types(xp.dtype, gamma.dtype)
        xp = xp.astype(dt)
        gamma = lead(gamma.astype(dt), xp.ndim)
        b = jax.lax.complex(gamma * xp[..., :N], gamma * xp[..., N:])
        a = jnp.broadcast_to(lead(lam.astype(b.dtype), b.ndim), b.shape)
        return a, b

    def to_scan(self, h):
        """``(..., 2N)`` real -> ``(..., N)`` complex."""
        N = self.hidden_size
        return jax.lax.complex(h[..., :N], h[..., N:])

    @staticmethod
    def from_scan(h):
        """``(..., N)`` complex -> ``(..., 2N)`` real."""
        return jnp.concatenate([jnp.real(h), jnp.imag(h)], axis=-1)
