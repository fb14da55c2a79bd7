r"""The echo state reservoir cell, and the private cell the drivers hand to the engine.

:class:`EchoState` is a cell like the others (``init``, ``initial_state``, ``project``,
``recur``, ``step``), so :func:`rnnjax.unroll` and the layers run it unchanged.

The drivers (:mod:`rnnjax.reservoir.drivers`, :mod:`rnnjax.reservoir.sweeps`) run the
reservoir through :func:`rnnjax.engine.run` with :class:`Drive`: everything that does not
recur (the input product, the bias, the teacher-forced feedback of the previous step, the
state noise) is summed into one *drive* ``(T, N)`` outside the loop, and the loop only does
``h <- (1 - a) h + a f(drive_t + s W h)``. For sweeps the per-model spectral-radius factor
``s`` and leak rate ``a`` ride along as two extra input columns, so models that share ``W``
run as one batched product ``W [h_1 ... h_M]`` per step.

Shapes: ``T`` time, ``I`` input size, ``N`` reservoir size, ``F`` feedback size.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp

import rnnjax.reservoir.matrices as matrices
from rnnjax import checks

__all__ = ["EchoState", "EchoStateState"]  # Drive, DriveState, runtime: the drivers' own


class EchoStateState(NamedTuple):
    """State of :class:`EchoState`.

    Attributes:
      h: reservoir state ``(N,)``.
      y: the output fed back through ``w_fb`` at the next step, ``(F,)`` (``(0,)``
        without feedback). :func:`rnnjax.unroll` keeps it constant; the ESN drivers set
        it to the teacher signal (fitting) or to the readout output (prediction, free run).

    Example:
      >>> from rnnjax import reservoir
      >>> state = reservoir.EchoState(input_size=1, hidden_size=20).initial_state()
      >>> state.h.shape, state.y.shape                      # (N,), (F,)
      ((20,), (0,))
    """

    h: jax.Array
    y: jax.Array


def check_reservoir(cell) -> None:
    """The checks of the fields every reservoir cell has (sizes, spectral radius, input and
    bias scaling, density, parameter dtype): :class:`EchoState` and its variants."""
    checks.integer("input_size", cell.input_size, 1)
    checks.integer("hidden_size", cell.hidden_size, 1)
    if cell.spectral_radius is not None:
        checks.number("spectral_radius", cell.spectral_radius, 0.0)
    checks.number("input_scaling", cell.input_scaling, 0.0)
    checks.number("bias_scaling", cell.bias_scaling, 0.0)
    checks.number("density", cell.density, 0.0, 1.0, min_open=True)
    checks.floating_dtype("param_dtype", cell.param_dtype)


@dataclasses.dataclass(frozen=True)
class EchoState:
    r"""Leaky-integrator echo state reservoir (Jaeger 2001; Jaeger et al. 2007).

    .. math::

        x_t = (1 - a)\, x_{t-1} + a\, f\big(W_{in}^\top u_t + W x_{t-1}
              + W_{fb}^\top y_{t-1} + b + \sigma \xi_t\big), \qquad \text{output} = x_t

    with leak rate :math:`a`, :math:`f` = ``tanh`` (or the identity for a linear
    reservoir), optional output feedback :math:`y_{t-1}` and optional state noise
    :math:`\sigma \xi_t`, :math:`\xi_t \sim \mathcal{N}(0, I)`.

    Params (all frozen, see :func:`rnnjax.reservoir.frozen_labels`): ``w_in`` ``(I, N)``
    entries ``U(-1, 1) * input_scaling``, a fraction ``input_density`` of them non-zero;
    ``w``: the recurrent matrix of ``topology`` (:mod:`rnnjax.reservoir.matrices`): dense
    ``(N, N)`` in the math orientation (``W @ x``) for ``"normal"``, ``"uniform"``,
    ``"orthogonal"``, ``"small_world"``, ``"cluster"``, ``"bernoulli"``,
    ``"fast_spectral"``; edge weights ``(N,)`` (and ``w_jump`` ``(N,)``) for the structured
    ``"cycle"``, ``"jumps"``, ``"delay"``, whose product is ``O(N)``; ``b`` ``(N,)``
    ``U(-1, 1) * bias_scaling``; ``w_fb`` ``(F, N)`` ``U(-1, 1) * feedback_scaling``.

    Spectral radius: random dense ``w`` is scaled to ``spectral_radius`` exactly, by its
    eigenvalues computed with LAPACK in float64 on the host (see
    :func:`rnnjax.diagnostics.spectral_radius`): one ``O(N^3)`` solve in ``init`` (1-2 s
    at ``N = 2000``). Orthogonal and cycle reservoirs have it by construction;
    ``"fast_spectral"`` has it in expectation (no solve).
    ``spectral_radius=None`` leaves ``w`` unscaled.

    Precision: weights are drawn in ``param_dtype`` (float32 or float64; bfloat16 and
    float16 are drawn in float32 and cast). ``param_dtype=float64`` needs
    ``jax_enable_x64`` (an error otherwise, never a silent float32).

    Noise: ``noise`` is the standard deviation :math:`\sigma` of the pre-activation noise.
    A cell step is pure, so :meth:`step` and :func:`rnnjax.unroll` run noise-free; the
    drivers (:func:`rnnjax.reservoir.harvest`, ``fit_ridge``, ...) add it given a ``key``.

    Args:
      input_size: ``I``.
      hidden_size: ``N``, the reservoir size.
      spectral_radius: target spectral radius of ``w`` (default 0.95), or ``None``.
      leak_rate: :math:`a \in (0, 1]` (default 1: no leak).
      input_scaling: scale of ``w_in``.
      bias_scaling: scale of ``b`` (default 0: no bias, as ReservoirPy).
      density: fraction of non-zero entries of a ``"normal"``/``"uniform"`` ``w``.
      input_density: fraction of non-zero entries of ``w_in``.
      feedback_size: ``F``, size of the fed-back output (default 0: no feedback).
      feedback_scaling: scale of ``w_fb``.
      noise: standard deviation of the state noise (default 0).
      activation: ``"tanh"`` (default) or ``"identity"`` (linear reservoir).
      param_dtype: dtype of the parameters (default float32).
      topology: ``"normal"`` (default), ``"uniform"``, ``"orthogonal"``,
        ``"small_world"``, ``"cluster"``, ``"bernoulli"``, ``"fast_spectral"``, ``"cycle"``,
        ``"jumps"`` or ``"delay"`` (:mod:`rnnjax.reservoir.matrices`).
      jump_size: jump length ``l`` of ``"jumps"`` (default 4).
      jump_weight: jump weight relative to the cycle weight of ``"jumps"`` (default 0.5).
      neighbours: lattice neighbours per unit of ``"small_world"`` (even, default 2).
      rewire: rewiring probability of ``"small_world"`` (default 0.1).
      clusters: number of blocks of ``"cluster"`` (default 3; ``hidden_size`` a multiple);
        ``density`` is the density inside the blocks.
      inter_density: density between the blocks of ``"cluster"`` (default 0.01).
      bernoulli_p: probability of a ``+1`` entry of ``"bernoulli"`` (default 0.5).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.reservoir import EchoState
      >>> cell = EchoState(input_size=1, hidden_size=50, spectral_radius=0.9, leak_rate=0.3)
      >>> params = cell.init(jax.random.key(0))
      >>> state, xs = rj.unroll(cell, params, jnp.ones((10, 1)))
      >>> xs.shape
      (10, 50)
    """

    input_size: int
    hidden_size: int
    spectral_radius: Optional[float] = 0.95
    leak_rate: float = 1.0
    input_scaling: float = 1.0
    bias_scaling: float = 0.0
    density: float = 0.1
    input_density: float = 1.0
    feedback_size: int = 0
    feedback_scaling: float = 1.0
    noise: float = 0.0
    activation: str = "tanh"
    param_dtype: Any = jnp.float32
    topology: str = "normal"
    jump_size: int = 4
    jump_weight: float = 0.5
    neighbours: int = 2
    rewire: float = 0.1
    clusters: int = 3
    inter_density: float = 0.01
    bernoulli_p: float = 0.5

    def __post_init__(self):
        check_reservoir(self)
        checks.integer("feedback_size", self.feedback_size, 0)
        checks.number("leak_rate", self.leak_rate, 0.0, 1.0, min_open=True)
        checks.number("feedback_scaling", self.feedback_scaling, 0.0)
        checks.number("input_density", self.input_density, 0.0, 1.0, min_open=True)
        checks.number("noise", self.noise, 0.0)
        checks.choice("activation", self.activation, ("tanh", "identity"))
        checks.choice("topology", self.topology, matrices.TOPOLOGIES)
        if self.topology == "jumps":
            checks.integer("jump_size", self.jump_size, 1, self.hidden_size - 1)
        checks.number("jump_weight", self.jump_weight, 0.0)
        if self.topology == "small_world":
            checks.integer("neighbours", self.neighbours, 0, self.hidden_size - 1)
            if self.neighbours % 2:
                raise ValueError(f"neighbours must be even; got {self.neighbours}")
        checks.number("rewire", self.rewire, 0.0, 1.0)
        checks.integer("clusters", self.clusters, 1)
        if self.topology == "cluster" and self.hidden_size % self.clusters:
            raise ValueError(
                f"hidden_size must be a multiple of clusters; got {self.hidden_size}, "
                f"{self.clusters}"
            )
        checks.number("inter_density", self.inter_density, 0.0, 1.0)
        checks.number("bernoulli_p", self.bernoulli_p, 0.0, 1.0)

    @property
    def output_size(self) -> int:
        """``N``: a step outputs the reservoir state."""
        return self.hidden_size

    @property
    def state_size(self) -> int:
        """``N``."""
        return self.hidden_size

    def init(self, key, w=None) -> dict:
        """Parameters ``{"w_in": (I, N), "w": ..., "b": (N,), "w_fb": (F, N)}`` (plus
        ``"w_jump": (N,)`` for ``topology="jumps"``).

        Args:
          key: PRNG key.
          w: optional user-supplied recurrent matrix ``(N, N)`` (dense topologies only),
            used instead of a drawn one and scaled to ``spectral_radius`` unless that is
            ``None``.
        """
        dt = checks.floating_dtype("param_dtype", self.param_dtype)
        sr = self.spectral_radius
        k_w, k_rest = jax.random.split(key)
        if w is not None:
            if self.topology not in matrices.DENSE:
                raise ValueError(
                    f"w can be supplied for the dense topologies {matrices.DENSE}; "
                    f"got topology={self.topology!r}"
                )
            w = checks.floating_array(
                "w", w, 2, f" (N, N) = ({self.hidden_size}, {self.hidden_size})"
            )
            if w.shape != (self.hidden_size, self.hidden_size):
                raise ValueError(
                    f"w must have shape (N, N) = ({self.hidden_size}, "
                    f"{self.hidden_size}); got {checks.describe(w)}"
                )
            rec = {
                "w": _scale_given(
                    jnp.asarray(w, dt), 1.0 if sr is None else sr, scale=sr is not None
                )
            }
        else:
            rec = matrices.draw(
                k_w,
                self.topology,
                self.hidden_size,
                spectral_radius=sr,
                density=self.density,
                jump_size=self.jump_size,
                jump_weight=self.jump_weight,
                neighbours=self.neighbours,
                rewire=self.rewire,
                clusters=self.clusters,
                inter_density=self.inter_density,
                bernoulli_p=self.bernoulli_p,
                dtype=dt,
            )
        rest = _init_rest(
            k_rest,
            self.input_density,
            self.input_scaling,
            self.bias_scaling,
            self.feedback_scaling,
            N=self.hidden_size,
            I=self.input_size,
            F=self.feedback_size,
            dtype=dt,
        )
        return {"w_in": rest["w_in"], **rec, "b": rest["b"], "w_fb": rest["w_fb"]}

    def initial_state(self, dtype=jnp.float32) -> EchoStateState:
        """The zero state (and zero feedback)."""
        return EchoStateState(
            h=jnp.zeros((self.hidden_size,), dtype), y=jnp.zeros((self.feedback_size,), dtype)
        )

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_in + b``, ``(N,)`` (or ``(..., N)``)."""
        return x @ params["w_in"] + matrices._lead(params["b"], x.ndim)

    def recurrent_product(self, params: dict, h: jax.Array) -> jax.Array:
        """``W @ h`` for ``h`` ``(..., N)``: a product for dense ``w``, a roll and a scale
        for the structured topologies."""
        return matrices.recurrent_product(self.topology, params, h, self.jump_size)

    def recur(self, params: dict, state: EchoStateState, xp, leak=None, noise=None, scale=None):
        """The recurrent part of a step, given ``xp = project(params, x)``.

        ``leak`` (default ``leak_rate``) and ``scale`` (a factor on ``w``, default 1) may
        be traced scalars; ``noise`` is an optional ``(N,)`` pre-activation term.
        """
        a = self.leak_rate if leak is None else leak
        wh = self.recurrent_product(params, state.h)
        pre = xp + (wh if scale is None else scale * wh)
        if self.feedback_size:
            pre = pre + state.y @ params["w_fb"]
        if noise is not None:
            pre = pre + noise
        act = jnp.tanh(pre) if self.activation == "tanh" else pre
        h = (1 - a) * state.h + a * act
        return EchoStateState(h=h, y=state.y), h

    def step(self, params: dict, state: EchoStateState, x: jax.Array):
        """One noise-free step: ``(state, x (I,)) -> (state', h (N,))``."""
        return self.recur(params, state, self.project(params, x))


@functools.partial(jax.jit, static_argnames=("scale",))
def _scale_given(w, sr, *, scale):
    if not scale:
        return w
    from rnnjax import diagnostics

    rho = diagnostics.spectral_radius(w).astype(w.dtype)
    return w * jnp.where(rho > 0, sr / jnp.where(rho > 0, rho, 1.0), 0.0).astype(w.dtype)


@functools.partial(jax.jit, static_argnames=("N", "I", "F", "dtype"))
def _init_rest(
    key, input_density, input_scaling, bias_scaling, feedback_scaling, *, N, I, F, dtype
):  # noqa: E741
    """The input, bias and feedback weights, drawn in the parameter dtype (never below
    float32), compiled once per shape: the scalings and densities are traced."""
    dd = matrices._draw_dtype(dtype)
    k_in, k_inm, k_b, k_fb = jax.random.split(key, 4)
    w_in = jax.random.uniform(k_in, (I, N), dd, -1.0, 1.0) * input_scaling
    w_in = jnp.where(jax.random.bernoulli(k_inm, input_density, (I, N)), w_in, 0.0)
    b = jax.random.uniform(k_b, (N,), dd, -1.0, 1.0) * bias_scaling
    w_fb = jax.random.uniform(k_fb, (F, N), dd, -1.0, 1.0) * feedback_scaling
    return {"w_in": w_in.astype(dtype), "b": b.astype(dtype), "w_fb": w_fb.astype(dtype)}


def runtime(cell: EchoState) -> EchoState:
    """The cell with its init-only fields reset: the jitted runs key their cache on this,
    so cells that differ only in how their weights were drawn share one compilation."""
    return dataclasses.replace(
        cell,
        spectral_radius=None,
        input_scaling=1.0,
        bias_scaling=0.0,
        density=1.0,
        input_density=1.0,
        feedback_scaling=1.0,
        jump_weight=0.5,
    )


# --------------------------------------------------------------------------- engine cell


class DriveState(NamedTuple):
    """State of :class:`Drive`: the reservoir state ``h`` ``(N,)``."""

    h: jax.Array


@dataclasses.dataclass(frozen=True)
class Drive:
    r"""The recurrence of an :class:`EchoState` given its drive, as an engine cell.

    Input ``x_t`` = ``[d_t]`` ``(N,)`` or, with ``per_model=True``, ``[d_t, s, a]``
    ``(N + 2,)``; the step is :math:`h_t = (1 - a) h_{t-1} + a f(d_t + s W h_{t-1})`.
    ``project`` is the identity: the drive is formed outside the loop by the drivers.
    """

    cell: EchoState
    per_model: bool = False

    @property
    def input_size(self) -> int:
        return self.cell.hidden_size + (2 if self.per_model else 0)

    @property
    def output_size(self) -> int:
        return self.cell.hidden_size

    def initial_state(self, dtype=jnp.float32) -> DriveState:
        return DriveState(h=jnp.zeros((self.cell.hidden_size,), dtype))

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        return x

    def recur(self, params: dict, state: DriveState, x: jax.Array):
        N = self.cell.hidden_size
        wh = self.cell.recurrent_product(params, state.h)
        if self.per_model:
            d, s, a = x[..., :N], x[..., N : N + 1], x[..., N + 1 : N + 2]
            pre = d + s * wh
        else:
            d, a = x, self.cell.leak_rate
            pre = d + wh
        act = jnp.tanh(pre) if self.cell.activation == "tanh" else pre
        h = (1 - a) * state.h + a * act
        return DriveState(h=h), h

    def step(self, params: dict, state: DriveState, x: jax.Array):
        return self.recur(params, state, self.project(params, x))
