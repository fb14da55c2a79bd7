r"""Reservoir variants beside :class:`~rnnjax.reservoir.EchoState`: the edge-of-stability
ESN (:class:`ES2N`), the intrinsic-plasticity reservoir (:class:`IPReservoir`) and the
reservoir with local plasticity of its recurrent weights
(:class:`LocalPlasticityReservoir`).

Both are cells like the others (``init``, ``initial_state``, ``project``, ``recur``,
``step``), so :func:`rnnjax.unroll` runs them through the engine; their states feed any
readout (:func:`rnnjax.reservoir.fit_states`). Intrinsic plasticity adapts each unit's
gain and shift, local plasticity each recurrent weight, as the reservoir runs: they are
fields of the state, so one :func:`rnnjax.unroll` over the training series *is* the
plastic fit, and the final state carries the adapted values (set the rate to 0 to run
with them frozen).

Shapes: ``T`` time, ``I`` input size, ``N`` reservoir size.

References:
  Ceni & Gallicchio (2024). Edge of stability echo state network. IEEE TNNLS.
  Schrauwen, Wardermann, Verstraeten, Steil & Stroobandt (2008). Improving reservoirs
  using intrinsic plasticity. Neurocomputing 71(7-9).
  Triesch (2005). A gradient rule for the plasticity of a neuron's intrinsic excitability.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

import rnnjax.reservoir.matrices as matrices
from rnnjax import checks
from rnnjax.reservoir.cell import EchoState, check_reservoir

__all__ = [
    "ES2N",
    "ES2NState",
    "IPReservoir",
    "IPState",
    "LocalPlasticityReservoir",
    "LocalPlasticityState",
    "LOCAL_RULES",
]

LOCAL_RULES = ("oja", "anti-oja", "hebbian", "anti-hebbian", "bcm")


def _base_params(cell, key, w=None) -> dict:
    """``w_in``, ``w`` (dense, math orientation) and ``b``, drawn as :class:`EchoState`
    draws them."""
    esn = EchoState(
        cell.input_size,
        cell.hidden_size,
        spectral_radius=cell.spectral_radius,
        input_scaling=cell.input_scaling,
        bias_scaling=cell.bias_scaling,
        density=cell.density,
        param_dtype=cell.param_dtype,
    )
    p = esn.init(key, w)
    return {"w_in": p["w_in"], "w": p["w"], "b": p["b"]}


class ES2NState(NamedTuple):
    """State of :class:`ES2N`: the reservoir state ``h`` ``(N,)``.

    Example:
      >>> from rnnjax import reservoir
      >>> reservoir.variants.ES2N(input_size=1, hidden_size=5).initial_state().h.shape
      (5,)
    """

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class ES2N:
    r"""Edge-of-stability echo state network (Ceni & Gallicchio 2024; ReservoirPy ``ES2N``).

    .. math::

        h_t = (1 - \beta)\, O h_{t-1} + \beta\, f(W h_{t-1} + W_{in}^\top u_t + b)

    with proximity :math:`\beta \in (0, 1]` and a random orthogonal :math:`O`: for small
    :math:`\beta` the linearisation's eigenvalues lie near the unit circle (the edge of
    stability) and the memory is long.

    Params: ``w_in`` ``(I, N)``, ``w`` ``(N, N)``, ``b`` ``(N,)`` drawn as
    :class:`~rnnjax.reservoir.EchoState` draws them; ``o`` ``(N, N)`` Haar-orthogonal.
    Both matrices are in the math orientation (``W @ h``).

    Args:
      input_size: ``I``.
      hidden_size: ``N``.
      proximity: :math:`\beta` (default 1: a plain ESN without leak).
      spectral_radius: target spectral radius of ``w`` (default 0.95), or ``None``.
      input_scaling, bias_scaling, density, param_dtype: as :class:`EchoState`.
      activation: ``"tanh"`` (default) or ``"identity"``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import reservoir
      >>> cell = reservoir.variants.ES2N(input_size=1, hidden_size=30, proximity=0.1)
      >>> params = cell.init(jax.random.key(0))
      >>> _, hs = rj.unroll(cell, params, jnp.ones((10, 1)))
      >>> hs.shape
      (10, 30)
    """

    input_size: int
    hidden_size: int
    proximity: float = 1.0
    spectral_radius: Optional[float] = 0.95
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    density: float = 0.1
    activation: str = "tanh"
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_reservoir(self)
        checks.number("proximity", self.proximity, 0.0, 1.0, min_open=True)
        checks.choice("activation", self.activation, ("tanh", "identity"))

    @property
    def output_size(self) -> int:
        """``N``."""
        return self.hidden_size

    def init(self, key, w=None) -> dict:
        """``{"w_in": (I, N), "w": (N, N), "b": (N,), "o": (N, N)}``; ``w`` as in
        :meth:`EchoState.init`."""
        k_w, k_o = jax.random.split(key)
        p = _base_params(self, k_w, w)
        o = matrices.draw(k_o, "orthogonal", self.hidden_size, spectral_radius=1.0,
                          dtype=checks.floating_dtype("param_dtype", self.param_dtype))  # fmt: skip
        return {**p, "o": o["w"]}

    def initial_state(self, dtype=jnp.float32) -> ES2NState:
        """The zero state."""
        return ES2NState(h=jnp.zeros((self.hidden_size,), dtype))

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``x @ w_in + b``."""
        return x @ params["w_in"] + params["b"]

    def recur(self, params: dict, state: ES2NState, xp: jax.Array):
        """One step given ``xp = project(params, x)``."""
        h = state.h
        pre = xp + h @ params["w"].T
        act = jnp.tanh(pre) if self.activation == "tanh" else pre
        beta = self.proximity
        h = (1 - beta) * (h @ params["o"].T) + beta * act
        return ES2NState(h=h), h

    def step(self, params: dict, state: ES2NState, x: jax.Array):
        """``(state, x (I,)) -> (state', h (N,))``."""
        return self.recur(params, state, self.project(params, x))


class IPState(NamedTuple):
    """State of :class:`IPReservoir`.

    Attributes:
      v: the leaky pre-activation ``(N,)``.
      h: the output ``f(gain * v + shift)`` ``(N,)``.
      gain: the adapted gains ``(N,)`` (ones at the start).
      shift: the adapted shifts ``(N,)`` (zeros at the start).

    Example:
      >>> from rnnjax import reservoir
      >>> st = reservoir.variants.IPReservoir(input_size=1, hidden_size=4).initial_state()
      >>> st.gain.tolist(), st.shift.tolist()
      ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    """

    v: jax.Array
    h: jax.Array
    gain: jax.Array
    shift: jax.Array


@dataclasses.dataclass(frozen=True)
class IPReservoir:
    r"""Reservoir with intrinsic plasticity (Triesch 2005; Schrauwen et al. 2008;
    ReservoirPy ``IPReservoir``).

    .. math::

        v_t = (1 - a)\, v_{t-1} + a\,(W h_{t-1} + W_{in}^\top u_t + b), \qquad
        h_t = f(g \odot v_t + s)

    and, after each step, the gains :math:`g` and shifts :math:`s` take one gradient step
    (rate :math:`\eta`) towards a target output distribution: for ``tanh`` a Gaussian
    :math:`\mathcal{N}(\mu, \sigma^2)`,
    :math:`\Delta s = \mu/\sigma^2 - h(2\sigma^2 + 1 - h^2 + \mu h)/\sigma^2`; for
    ``sigmoid`` an exponential of mean :math:`\mu`,
    :math:`\Delta s = 1 - (2 + 1/\mu) h + h^2/\mu`; in both
    :math:`\Delta g = 1/g + \Delta s\, v`.

    Args:
      input_size: ``I``.
      hidden_size: ``N``.
      leak_rate: :math:`a \in (0, 1]` (default 1).
      mu: target mean :math:`\mu` (default 0; ``> 0`` for ``sigmoid``).
      sigma: target standard deviation :math:`\sigma` of ``tanh`` units (default 1).
      learning_rate: :math:`\eta` (default ``5e-4``; ``0`` freezes gains and shifts).
      spectral_radius, input_scaling, bias_scaling, density, param_dtype: as
        :class:`EchoState`.
      activation: ``"tanh"`` (default) or ``"sigmoid"``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import reservoir
      >>> cell = reservoir.variants.IPReservoir(input_size=1, hidden_size=20, learning_rate=1e-3)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(200.0) / 4)[:, None]
      >>> state, hs = rj.unroll(cell, params, u)                 # the plastic fit
      >>> bool(jnp.any(state.gain != 1.0)), hs.shape
      (True, (200, 20))
    """

    input_size: int
    hidden_size: int
    leak_rate: float = 1.0
    mu: float = 0.0
    sigma: float = 1.0
    learning_rate: float = 5e-4
    spectral_radius: Optional[float] = 0.95
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    density: float = 0.1
    activation: str = "tanh"
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_reservoir(self)
        checks.number("leak_rate", self.leak_rate, 0.0, 1.0, min_open=True)
        checks.number("sigma", self.sigma, 0.0, min_open=True)
        checks.number("learning_rate", self.learning_rate, 0.0)
        checks.choice("activation", self.activation, ("tanh", "sigmoid"))
        if self.activation == "sigmoid":
            checks.number("mu", self.mu, 0.0, min_open=True)
        else:
            checks.number("mu", self.mu)

    @property
    def output_size(self) -> int:
        """``N``."""
        return self.hidden_size

    def init(self, key, w=None) -> dict:
        """``{"w_in": (I, N), "w": (N, N), "b": (N,)}``; ``w`` as in
        :meth:`EchoState.init`."""
        return _base_params(self, key, w)

    def initial_state(self, dtype=jnp.float32) -> IPState:
        """Zero activity, unit gains, zero shifts."""
        z = jnp.zeros((self.hidden_size,), dtype)
        return IPState(v=z, h=z, gain=jnp.ones_like(z), shift=z)

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``x @ w_in + b``."""
        return x @ params["w_in"] + params["b"]

    def recur(self, params: dict, state: IPState, xp: jax.Array):
        """One step (and one plasticity update) given ``xp = project(params, x)``."""
        a = self.leak_rate
        v = (1 - a) * state.v + a * (state.h @ params["w"].T + xp)
        z = state.gain * v + state.shift
        h = jnp.tanh(z) if self.activation == "tanh" else jax.nn.sigmoid(z)
        gain, shift = state.gain, state.shift
        if self.learning_rate:
            mu = self.mu
            if self.activation == "tanh":
                s2 = self.sigma**2
                ds = mu / s2 - (h / s2) * (2 * s2 + 1 - h**2 + mu * h)
            else:
                ds = 1 - (2 + 1 / mu) * h + h**2 / mu
            dg = 1 / gain + ds * v
            gain = gain + self.learning_rate * dg
            shift = shift + self.learning_rate * ds
        return IPState(v=v, h=h, gain=gain, shift=shift), h

    def step(self, params: dict, state: IPState, x: jax.Array):
        """``(state, x (I,)) -> (state', h (N,))``."""
        return self.recur(params, state, self.project(params, x))


class LocalPlasticityState(NamedTuple):
    """State of :class:`LocalPlasticityReservoir`.

    Attributes:
      v: the pre-activation ``(N,)``.
      h: the output ``f(v)`` ``(N,)``.
      dw: what the rule has added to ``params["w"]`` so far ``(N, N)``: the reservoir
        runs with ``W = params["w"] + dw`` (math orientation, ``W @ h``).

    Example:
      >>> from rnnjax import reservoir
      >>> reservoir.variants.LocalPlasticityReservoir(input_size=1, hidden_size=4).initial_state().dw.shape
      (4, 4)
    """

    v: jax.Array
    h: jax.Array
    dw: jax.Array


@dataclasses.dataclass(frozen=True)
class LocalPlasticityReservoir:
    r"""Reservoir whose recurrent weights learn by a local rule as it runs (ReservoirPy
    ``LocalPlasticityReservoir``).

    .. math::

        v_t = (1 - a)\, h_{t-1} + a\,(W h_{t-1} + W_{in}^\top u_t + b), \qquad
        h_t = f(v_t)

    (ReservoirPy's form: the leak mixes the previous *output* into the pre-activation),
    then every non-zero :math:`W_{ij}` moves by the rule, with pre-synaptic
    :math:`x = v_{t-1, j}` and post-synaptic :math:`y = v_{t, i}`: ``"oja"``
    :math:`\eta y (x - y W_{ij})`, ``"anti-oja"`` its negative, ``"hebbian"``
    :math:`\eta x y`, ``"anti-hebbian"`` its negative, ``"bcm"``
    :math:`\eta x y (y - \theta)`; with ``synapse_normalization`` each row of ``W`` is
    then scaled to unit L2 norm. The learnt change ``dw`` lives in the state (zeros
    at the start), so one :func:`rnnjax.unroll` is the plastic fit; run with ``eta=0``
    from its final state to use the learnt ``W`` (``params["w"] + state.dw``).

    Note: ReservoirPy 0.4.2's ``fit`` never advances the reservoir's state while it
    learns (it calls ``_step`` without storing the result), so its pre-synaptic values
    are the initial state throughout; rnnjax runs the reservoir, and the tests check it
    against ReservoirPy's own rule and step functions threaded step by step.

    Args:
      input_size: ``I``.
      hidden_size: ``N``.
      local_rule: one of :data:`LOCAL_RULES` (default ``"oja"``).
      eta: the learning rate (default ``1e-3``; 0 freezes ``W``).
      bcm_theta: the BCM threshold :math:`\theta`.
      synapse_normalization: rescale each row of ``W`` to unit norm after each update.
      leak_rate: :math:`a \in (0, 1]`.
      spectral_radius, input_scaling, bias_scaling, density, param_dtype: as
        :class:`EchoState`.
      activation: ``"tanh"`` (default) or ``"sigmoid"``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import reservoir
      >>> cell = reservoir.variants.LocalPlasticityReservoir(input_size=1, hidden_size=20, local_rule="oja")
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(100.0) / 4)[:, None]
      >>> state, hs = rj.unroll(cell, params, u)                  # the plastic fit
      >>> bool(jnp.any(state.dw != 0)), hs.shape
      (True, (100, 20))
    """

    input_size: int
    hidden_size: int
    local_rule: str = "oja"
    eta: float = 1e-3
    bcm_theta: float = 0.0
    synapse_normalization: bool = False
    leak_rate: float = 1.0
    spectral_radius: Optional[float] = 0.95
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    density: float = 0.1
    activation: str = "tanh"
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        check_reservoir(self)
        checks.choice("local_rule", self.local_rule, LOCAL_RULES)
        checks.number("eta", self.eta, 0.0)
        checks.number("bcm_theta", self.bcm_theta)
        checks.boolean("synapse_normalization", self.synapse_normalization)
        checks.number("leak_rate", self.leak_rate, 0.0, 1.0, min_open=True)
        checks.choice("activation", self.activation, ("tanh", "sigmoid"))

    @property
    def output_size(self) -> int:
        """``N``."""
        return self.hidden_size

    def init(self, key, w=None) -> dict:
        """``{"w_in": (I, N), "w": (N, N), "b": (N,)}``; ``w`` (the initial recurrent
        matrix, whose non-zero pattern the rule keeps) as in :meth:`EchoState.init`."""
        return _base_params(self, key, w)

    def initial_state(self, dtype=jnp.float32) -> LocalPlasticityState:
        """Zero activity, nothing learnt yet."""
        N = self.hidden_size
        z = jnp.zeros((N,), dtype)
        return LocalPlasticityState(v=z, h=z, dw=jnp.zeros((N, N), dtype))

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """``x @ w_in + b``."""
        return x @ params["w_in"] + params["b"]

    def recur(self, params: dict, state: LocalPlasticityState, xp: jax.Array):
        """One step with the state's ``W``, then one update of ``W``."""
        a, w0 = self.leak_rate, params["w"]
        w = w0 + state.dw.astype(w0.dtype)
        v = (1 - a) * state.h + a * (state.h @ w.T + xp)
        h = jnp.tanh(v) if self.activation == "tanh" else jax.nn.sigmoid(v)
        if self.eta:
            x, y = state.v[None, :], v[:, None]  # pre-synaptic j, post-synaptic i
            rule = self.local_rule
            if rule in ("oja", "anti-oja"):
                dw = y * (x - y * w)
            elif rule in ("hebbian", "anti-hebbian"):
                dw = y * x
            else:
                dw = y * (y - self.bcm_theta) * x
            sign = -1.0 if rule.startswith("anti") else 1.0
            w = w + jnp.where(w0 != 0, sign * self.eta * dw, 0.0).astype(w.dtype)
            if self.synapse_normalization:
                norm = jnp.sqrt(jnp.sum(w**2, axis=1, keepdims=True))
                w = w / jnp.where(norm > 0, norm, 1.0)
        return LocalPlasticityState(v=v, h=h, dw=(w - w0).astype(state.dw.dtype)), h

    def step(self, params: dict, state: LocalPlasticityState, x: jax.Array):
        """``(state, x (I,)) -> (state', h (N,))``."""
        return self.recur(params, state, self.project(params, x))
