r"""The Real-Gated Linear Recurrent Unit of Griffin and RecurrentGemma (De et al. 2024)."""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax.cells.base import DiagonalLinearCell, check_heads, lead

__all__ = ["RGLRU", "RGLRUState"]


class RGLRUState(NamedTuple):
    """State of :class:`RGLRU`: ``h`` ``(H,)`` and ``fresh`` ``(1,)``: 1 in the initial
    state (the next step starts a segment), 0 after a step.

    Example:
      >>> import rnnjax as rj
      >>> s = rj.RGLRU(4, 4).initial_state()
      >>> s.h.shape, s.fresh.tolist()
      ((4,), [1.0])
    """

    h: jax.Array
    fresh: jax.Array


@dataclasses.dataclass(frozen=True)
class RGLRU(DiagonalLinearCell):
    r"""Real-Gated Linear Recurrent Unit (De et al. 2024, Griffin; RecurrentGemma's
    recurrent layer): a diagonal linear recurrence with input-dependent decay.

    .. math::

        \begin{aligned}
        r_t &= \sigma(W_a^\top x_t + b_a), \qquad i_t = \sigma(W_x^\top x_t + b_x) \\
        \log a_t &= -c\, r_t \odot \mathrm{softplus}(-\Lambda)
            \qquad (a_t = \sigma(\Lambda)^{c\, r_t}) \\
        h_t &= a_t \odot h_{t-1} + \sqrt{1 - a_t^2} \odot (i_t \odot x_t),
            \qquad y_t = h_t
        \end{aligned}

    with :math:`c = 8`. At a segment start (the first step from the initial state, and
    after every reset) RecurrentGemma drops the previous state and does not normalise:
    :math:`h_t = i_t \odot x_t`. The state carries a flag ``fresh`` (1 in the initial
    state, 0 after any step; no derivative flows through it) so that the step, the parallel scan,
    resets and packed sequences all do this; a state handed over from a previous call (``fresh = 0``)
    continues the recurrence. ``unnormalised_start=False`` normalises every step and
    reads ``h_0`` (the plain recurrence).

    ``W_a`` and ``W_x`` are block-diagonal (``num_heads`` blocks), as in RecurrentGemma.
    The recurrence gates its own input, so ``input_size`` must equal ``hidden_size``.
    Run it in parallel with ``rj.ScanConfig(method="parallel")`` (or ``"auto"``): the
    engine's parallel scan of :class:`~rnnjax.cells.base.DiagonalLinearCell`, with the
    segment start from :meth:`entry_coefficients`; step by step it gives the same numbers.

    Initialisation (RecurrentGemma's): :math:`\sigma(\Lambda)^c` uniform in radius on the
    ring ``[r_min, r_max]`` (``|a|^2`` uniform), gate weights Glorot-uniform per block,
    biases zero.

    Params: ``w_a``, ``w_x`` ``(heads, H/heads, H/heads)``, ``b_a``, ``b_x``, ``a_param``
    (:math:`\Lambda`) ``(H,)``. State: :class:`RGLRUState` ``(h, fresh)``.

    Args:
      input_size: ``I`` (equal to ``hidden_size``).
      hidden_size: ``H``, divisible by ``num_heads``.
      num_heads: blocks of the gate weights.
      c: the exponent's scale (8 in the paper).
      r_min, r_max: the ring of initial decay rates at ``r_t = 1``, ``0 < r_min < r_max < 1``.
      unnormalised_start: RecurrentGemma's segment start (default ``True``).
      param_dtype, dtype: as in :class:`~rnnjax.LSTM`.

    References:
      De, Smith, Fernando, Botev, Cristian-Muraru, Gu, Haroun, Berrada, Chen, Srinivasan,
      Desjardins, Doucet, Budden, Teh, Pascanu, De Freitas & Gulcehre (2024). Griffin:
      Mixing gated linear recurrences with local attention for efficient language models.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> cell = rj.RGLRU(input_size=4, hidden_size=4, num_heads=2)
      >>> p = cell.init(jax.random.key(0))
      >>> xs = jax.random.normal(jax.random.key(1), (6, 4))
      >>> _, seq = rj.unroll(cell, p, xs)
      >>> _, par = rj.unroll(cell, p, xs, config=rj.ScanConfig(method="parallel"))
      >>> bool(jnp.allclose(seq[0], jax.nn.sigmoid(cell.project(p, xs[0])[4:8]) * xs[0]))
      True
      >>> bool(jnp.allclose(seq, par, atol=1e-6))
      True
    """

    num_heads: int = 1
    c: float = 8.0
    r_min: float = 0.9
    r_max: float = 0.999
    unnormalised_start: bool = True

    State = RGLRUState

    def __post_init__(self):
        super().__post_init__()
        self._check_square("gates its own input")
        check_heads(self.hidden_size, self.num_heads)
        checks.number("c", self.c, 0.0, min_open=True)
        checks.number("r_min", self.r_min, 0.0, 1.0, min_open=True, max_open=True)
        checks.number("r_max", self.r_max, 0.0, 1.0, min_open=True, max_open=True)
        if not self.r_min < self.r_max:
            raise ValueError(
                f"r_min must be smaller than r_max; got r_min={self.r_min}, r_max={self.r_max}"
            )
        checks.boolean("unnormalised_start", self.unnormalised_start)

    def _state_sizes(self) -> dict:
        return {"h": self.hidden_size, "fresh": 1}

    def initial_state(self, dtype=None):
        """The zero state with ``fresh = 1`` (float32 unless ``dtype`` says otherwise)."""
        s = super().initial_state(dtype)
        return s._replace(fresh=jnp.ones_like(s.fresh))

    def init(self, key) -> dict:
        """Parameters ``{"w_a", "w_x": (heads, d, d), "b_a", "b_x", "a_param": (H,)}``.

        Example:
          >>> import jax, jax.numpy as jnp, rnnjax as rj
          >>> cell = rj.RGLRU(4, 4)
          >>> p = cell.init(jax.random.key(0))
          >>> a_c = jax.nn.sigmoid(p["a_param"]) ** cell.c      # the decay at r_t = 1
          >>> bool(((a_c >= 0.9) & (a_c <= 0.999)).all())
          True
        """
        H, NH, dt = self.hidden_size, self.num_heads, self._init_dtype()
        d = H // NH
        k1, k2, k3 = jax.random.split(key, 3)
        glorot = inits.glorot_uniform
        w_a = jnp.stack([glorot(k, (d, d), dt) for k in jax.random.split(k1, NH)])
        w_x = jnp.stack([glorot(k, (d, d), dt) for k in jax.random.split(k2, NH)])
        u = jax.random.uniform(k3, (H,), dt, self.r_min**2, self.r_max**2)
        # sigma(L)^c = sqrt(u): softplus(-L) = -log(sqrt(u)) / c
        a_param = -jnp.log(jnp.expm1(-0.5 * jnp.log(u) / self.c))
        z = jnp.zeros((H,), dt)
        return self._cast({"w_a": w_a, "w_x": w_x, "b_a": z, "b_x": z, "a_param": a_param})

    def _blockdiag(self, x, w):
        NH = self.num_heads
        xh = x.reshape(x.shape[:-1] + (NH, x.shape[-1] // NH))
        cd = jnp.dtype(self.dtype) if self.dtype is not None else w.dtype
        out = jnp.promote_types(jnp.float32, jnp.promote_types(cd, x.dtype))
        y = jnp.einsum("...nd,nde->...ne", xh.astype(cd), w.astype(cd), preferred_element_type=out)
        return y.reshape(x.shape[:-1] + (self.hidden_size,))

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``[W_a x + b_a | W_x x + b_x | x]``, ``(..., 3H)``."""
        ga = self._blockdiag(x, params["w_a"])
        ga = ga + lead(params["b_a"], ga.ndim).astype(ga.dtype)
        gx = self._blockdiag(x, params["w_x"])
        gx = gx + lead(params["b_x"], gx.ndim).astype(gx.dtype)
        return jnp.concatenate([ga, gx, x.astype(ga.dtype)], axis=-1)

    def _parts(self, params, xp):
        """``(a, sqrt(1 - a^2), i x)`` for projected inputs ``(..., 3H)``."""
        H = self.hidden_size
        lam = params["a_param"]
        lam = lam.astype(jnp.promote_types(jnp.float32, lam.dtype))
        dt = jnp.promote_types(xp.dtype, lam.dtype)
        xp = xp.astype(dt)
        log_a = -self.c * jax.nn.sigmoid(xp[..., :H]) * lead(jax.nn.softplus(-lam), xp.ndim)
        a = jnp.exp(log_a)
        mult = jnp.sqrt(-jnp.expm1(2.0 * log_a))
        return a, mult, jax.nn.sigmoid(xp[..., H : 2 * H]) * xp[..., 2 * H :]

    def coefficients(self, params, xp):
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` inside a segment (normalised input)."""
        a, mult, ix = self._parts(params, xp)
        return a, mult * ix

    def entry_coefficients(self, params, state: RGLRUState, xp):
        """``(a, b)`` of a step that reads ``state`` as given: RecurrentGemma's segment
        start ``a = 0, b = i x`` where ``state.fresh`` is 1 (and ``unnormalised_start``),
        the normalised step where it is 0. No derivative flows through the flag."""
        a, mult, ix = self._parts(params, xp)
        if self.unnormalised_start:
            fr = jax.lax.stop_gradient(state.fresh).astype(a.dtype)
            a = (1.0 - fr) * a
            mult = fr + (1.0 - fr) * mult
        return a, mult * ix

    def with_h(self, state: RGLRUState, h) -> RGLRUState:
        """The state after a step: ``h``, and ``fresh = 0``."""
        return RGLRUState(h=h, fresh=jnp.zeros_like(state.fresh))
