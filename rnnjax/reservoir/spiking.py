r"""A leaky integrate-and-fire spiking reservoir (ReservoirPy ``LIF``).

A cell like the others (:func:`rnnjax.unroll` runs it); its output is the spike vector,
which feeds any readout (:func:`rnnjax.reservoir.fit_states`).

Shapes: ``T`` time, ``I`` input size, ``N`` reservoir size.

References:
  Maass, Natschlager & Markram (2002). Real-time computing without stable states.
  Neural Computation 14(11).
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax.reservoir.cell import _scale_given

__all__ = ["LIF", "LIFState"]


class LIFState(NamedTuple):
    """State of :class:`LIF`.

    Attributes:
      v: membrane potentials ``(N,)``.
      spikes: the spikes of the last step ``(N,)`` (0 or 1).

    Example:
      >>> from rnnjax import reservoir
      >>> reservoir.spiking.LIF(input_size=1, hidden_size=3).initial_state().v.shape
      (3,)
    """

    v: jax.Array
    spikes: jax.Array


@dataclasses.dataclass(frozen=True)
class LIF:
    r"""Leaky integrate-and-fire reservoir.

    Each step, in ReservoirPy's order: leak :math:`v \leftarrow (1 - a) v`; fire
    :math:`s = [v > \theta]` and reset the units that fired to 0; integrate
    :math:`v \leftarrow v + W s + W_{in}^\top u_t`. The output is :math:`s`.

    Params: ``w_in`` ``(I, N)`` entries ``U(0, 1) * input_scaling`` (a fraction
    ``input_density`` non-zero); ``w`` ``(N, N)`` (math orientation) entries ``U(0, 1)``,
    a fraction ``density`` non-zero, scaled to ``spectral_radius``, then the first
    ``int(inhibitory * N)`` columns negated (inhibitory units).

    Args:
      input_size: ``I``.
      hidden_size: ``N``.
      threshold: the firing threshold :math:`\theta` (default 1).
      leak_rate: :math:`a \in [0, 1]` (default 0: no leak, as ReservoirPy).
      inhibitory: fraction of inhibitory units in ``[0, 1]``.
      spectral_radius: of ``w`` before the inhibitory sign flip (default 1), or ``None``.
      input_scaling, density, input_density, param_dtype: as :class:`EchoState`.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import reservoir
      >>> cell = reservoir.spiking.LIF(input_size=1, hidden_size=40, inhibitory=0.2, leak_rate=0.1)
      >>> params = cell.init(jax.random.key(0))
      >>> _, spikes = rj.unroll(cell, params, jnp.ones((30, 1)))
      >>> spikes.shape, bool(jnp.all((spikes == 0) | (spikes == 1)))
      ((30, 40), True)
    """

    input_size: int
    hidden_size: int
    threshold: float = 1.0
    leak_rate: float = 0.0
    inhibitory: float = 0.0
    spectral_radius: Optional[float] = 1.0
    input_scaling: float = 1.0
    density: float = 0.1
    input_density: float = 0.1
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        checks.integer("input_size", self.input_size, 1)
        checks.integer("hidden_size", self.hidden_size, 1)
        checks.number("threshold", self.threshold)
        checks.number("leak_rate", self.leak_rate, 0.0, 1.0)
        checks.number("inhibitory", self.inhibitory, 0.0, 1.0)
        if self.spectral_radius is not None:
            checks.number("spectral_radius", self.spectral_radius, 0.0)
        checks.number("input_scaling", self.input_scaling, 0.0)
        checks.number("density", self.density, 0.0, 1.0, min_open=True)
        checks.number("input_density", self.input_density, 0.0, 1.0, min_open=True)
        checks.floating_dtype("param_dtype", self.param_dtype)

    @property
    def output_size(self) -> int:
        """``N``."""
        return self.hidden_size

    def init(self, key) -> dict:
        """``{"w_in": (I, N), "w": (N, N)}``."""
        dt = checks.floating_dtype("param_dtype", self.param_dtype)
        N, I = self.hidden_size, self.input_size  # noqa: E741
        k1, k2, k3, k4 = jax.random.split(key, 4)
        w_in = jax.random.uniform(k1, (I, N), jnp.float32) * self.input_scaling
        w_in = jnp.where(jax.random.bernoulli(k2, self.input_density, (I, N)), w_in, 0.0)
        w = jax.random.uniform(k3, (N, N), jnp.float32)
        w = jnp.where(jax.random.bernoulli(k4, self.density, (N, N)), w, 0.0)
        sr = self.spectral_radius
        w = _scale_given(w, 1.0 if sr is None else sr, scale=sr is not None)
        n_inh = int(self.inhibitory * N)
        w = w.at[:, :n_inh].multiply(-1.0)
        return {"w_in": w_in.astype(dt), "w": w.astype(dt)}

    def initial_state(self, dtype=jnp.float32) -> LIFState:
        """Resting potentials, no spikes."""
        z = jnp.zeros((self.hidden_size,), dtype)
        return LIFState(v=z, spikes=z)

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``x @ w_in``."""
        return x @ params["w_in"]

    def recur(self, params: dict, state: LIFState, xp: jax.Array):
        """Leak, fire, reset, integrate; returns the spikes."""
        v = (1 - self.leak_rate) * state.v
        fire = v > self.threshold
        s = fire.astype(v.dtype)
        v = jnp.where(fire, 0.0, v) + s @ params["w"].T + xp
        return LIFState(v=v, spikes=s), s

    def step(self, params: dict, state: LIFState, x: jax.Array):
        """``(state, x (I,)) -> (state', spikes (N,))``."""
        return self.recur(params, state, self.project(params, x))
