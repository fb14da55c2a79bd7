r"""Echo state networks: a reservoir cell, its readouts, run modes and vmapped sweeps.

An echo state network (Jaeger 2001) is a fixed random recurrent network, the
*reservoir*, whose state is read out by a linear map fitted in closed form. Here:

- :class:`EchoState` is a cell like the others (``init``, ``initial_state``,
  ``project``, ``recur``, ``step``), so :func:`rnnjax.unroll` and the layers run it
  unchanged. Its weights are frozen: they live in the params dict (so orbax checkpoints
  them) and :func:`frozen_labels` / :func:`freeze_reservoir` keep optax from moving them.
- Readouts: :func:`fit_ridge` (closed-form ridge regression with bias and washout,
  ``X^T X`` accumulated chunk by chunk: :func:`ridge_stats` + :func:`solve_ridge`) and
  :func:`fit_rls` (recursive least squares, FORCE-style online learning).
- Modes: teacher-forced fitting, one-step prediction (:func:`predict`) and generative
  free run (:func:`generate`), each one ``jit``-compiled call.
- :func:`sweep`: many reservoirs (spectral radii x leak rates x ridges x seeds) fitted and
  scored in one ``vmap``-ed call.
- :func:`echo_state_property`: do two different initial states forget their difference
  under the same input?

Precision. The reservoir runs in the parameter dtype (float32). The readout (the
``X^T X`` accumulation, the solve and the readout product) runs in float64 by default
(``precision="float64"``): the normal equations at small ridges (1e-7) have condition
numbers near 1e12 and float32 ruins them (DESIGN.md, section 5). The public functions
then switch on ``jax.enable_x64`` around their own jitted computation only; the readout
dict they return holds float64 arrays. ``precision="float32"`` keeps everything float32
(faster, fine for ridges of about 1e-4 and above).

Shapes: ``T`` time, ``I`` input size, ``N`` reservoir size, ``O`` output size, ``F``
feedback size, ``M`` number of models in a sweep.

References:
  Jaeger (2001). The "echo state" approach to analysing and training recurrent neural
  networks. GMD Report 148.
  Jaeger, Lukosevicius, Popovici & Siewert (2007). Optimization and applications of echo
  state networks with leaky-integrator neurons. Neural Networks 20(3).
  Lukosevicius (2012). A practical guide to applying echo state networks. In: Neural
  Networks: Tricks of the Trade.
  Sussillo & Abbott (2009). Generating coherent patterns of activity from chaotic neural
  networks. Neuron 63(4). (FORCE learning)
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import math
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import checks
from rnnjax import diagnostics

__all__ = [
    "EchoState",
    "EchoStateState",
    "RidgeStats",
    "ESPResult",
    "harvest",
    "ridge_stats",
    "solve_ridge",
    "fit_ridge",
    "fit_rls",
    "readout_apply",
    "predict",
    "generate",
    "forecast",
    "sweep",
    "echo_state_property",
    "frozen_labels",
    "trainable_mask",
    "freeze_reservoir",
    "RESERVOIR_KEYS",
    "READOUT_KEYS",
]

RESERVOIR_KEYS = ("w_in", "w", "b", "w_fb")
READOUT_KEYS = ("w_out", "b_out")
_PRECISIONS = ("float32", "float64")


# --------------------------------------------------------------------------- checks


def _describe(x) -> str:
    if not hasattr(x, "shape"):
        return type(x).__name__
    return f"shape {tuple(x.shape)} and dtype {x.dtype}"


def _check_int(name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _check_range(name: str, value, lo: float, hi: float, lo_open=False) -> None:
    # finite (NaN/Inf refused) Python or NumPy real numbers, one check for every number
    checks.number(name, value, lo, None if math.isinf(hi) else hi, min_open=lo_open)


def _check_series(name: str, x, size: int, what: str, T: Optional[int] = None) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape (T, {size}); got {type(x).__name__}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype; got {_describe(x)}")
    if x.ndim != 2 or x.shape[1] != size:
        raise ValueError(f"{name} must have shape (T, {size}) ({what}); got {_describe(x)}")
    if T is not None and x.shape[0] != T:
        raise ValueError(f"{name} must have T = {T} steps (as the inputs); got {_describe(x)}")


def _check_precision(precision: str) -> None:
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}; got {precision!r}")


def _check_reservoir_params(cell, params) -> None:
    if not isinstance(params, dict):
        raise TypeError(f"params must be the dict made by EchoState.init; got {type(params).__name__}")
    expected = jax.eval_shape(cell.init, jax.random.key(0))
    got = {k: tuple(jnp.shape(v)) for k, v in params.items()}
    want = {k: tuple(v.shape) for k, v in expected.items()}
    if got != want:
        raise ValueError(f"params must have the keys and shapes {want} for {cell}; got {got}")


def _check_readout(readout, N: int) -> int:
    if not isinstance(readout, dict) or set(readout) != set(READOUT_KEYS):
        raise ValueError(
            f"readout must be a dict with keys {READOUT_KEYS} (from fit_ridge / fit_rls); "
            f"got {type(readout).__name__} {list(readout) if isinstance(readout, dict) else ''}"
        )
    w, b = readout["w_out"], readout["b_out"]
    if jnp.ndim(w) != 2 or jnp.shape(w)[0] != N or jnp.shape(b) != (jnp.shape(w)[1],):
        raise ValueError(
            f"readout must hold w_out of shape (N, O) = ({N}, O) and b_out of shape (O,); "
            f"got w_out {jnp.shape(w)}, b_out {jnp.shape(b)}"
        )
    return jnp.shape(w)[1]


def _x64(precision: str):
    """Enable x64 for the duration of a float64 readout computation only."""
    return jax.enable_x64(True) if precision == "float64" else contextlib.nullcontext()


# --------------------------------------------------------------------------- the cell


class EchoStateState(NamedTuple):
    """State of :class:`EchoState`.

    Attributes:
      h: reservoir state ``(N,)``.
      y: the output fed back through ``w_fb`` at the next step, ``(F,)`` (``(0,)``
        without feedback). :func:`rnnjax.unroll` keeps it constant; the ESN drivers set
        it to the teacher signal (fitting) or to the readout output (prediction, free run).

    Example:
      >>> from rnnjax import esn
      >>> state = esn.EchoState(input_size=1, hidden_size=20).initial_state()
      >>> state.h.shape                                     # (N,)
      (20,)
    """

    h: jax.Array
    y: jax.Array


@dataclasses.dataclass(frozen=True)
class EchoState:
    r"""Leaky-integrator echo state reservoir (Jaeger 2001; Jaeger et al. 2007).

    .. math::

        x_t = (1 - a)\, x_{t-1} + a\, f\big(W_{in}^\top u_t + W x_{t-1}
              + W_{fb}^\top y_{t-1} + b + \sigma \xi_t\big), \qquad \text{output} = x_t

    with leak rate :math:`a`, :math:`f` = ``tanh`` (or the identity for a linear
    reservoir), optional output feedback :math:`y_{t-1}` and optional state noise
    :math:`\sigma \xi_t`, :math:`\xi_t \sim \mathcal{N}(0, I)`.

    Params (all frozen, see :func:`frozen_labels`): ``w_in`` ``(I, N)`` entries
    ``U(-1, 1) * input_scaling``, a fraction ``input_density`` of them non-zero;
    ``w`` ``(N, N)`` in the math orientation (``W @ x``; stored dense, a fraction
    ``density`` non-zero, Gaussian before scaling); ``b`` ``(N,)``
    ``U(-1, 1) * bias_scaling``; ``w_fb`` ``(F, N)`` ``U(-1, 1) * feedback_scaling``.

    Spectral radius: ``w`` is scaled to ``spectral_radius`` exactly, by its eigenvalues
    computed with LAPACK in float64 on the host (see
    :func:`rnnjax.diagnostics.spectral_radius`), not by power iteration or ARPACK: the
    scaled float32 matrix has the target radius to about 1e-6 relative (tests check
    1e-4). ``init`` therefore costs one ``O(N^3)`` eigenvalue solve (1-2 s at N = 2000).
    ``spectral_radius=None`` leaves ``w`` unscaled.

    Noise: ``noise`` is the standard deviation :math:`\sigma` of the pre-activation noise.
    A cell step is pure, so :meth:`step` and :func:`rnnjax.unroll` run noise-free; the
    ESN drivers (:func:`harvest`, :func:`fit_ridge`, ...) add it when given a ``key``.

    Args:
      input_size: ``I``.
      hidden_size: ``N``, the reservoir size.
      spectral_radius: target spectral radius of ``w`` (default 0.95), or ``None``.
      leak_rate: :math:`a \in (0, 1]` (default 1: no leak).
      input_scaling: scale of ``w_in``.
      bias_scaling: scale of ``b`` (default 0: no bias, as ReservoirPy).
      density: fraction of non-zero entries of ``w``.
      input_density: fraction of non-zero entries of ``w_in``.
      feedback_size: ``F``, size of the fed-back output (default 0: no feedback).
      feedback_scaling: scale of ``w_fb``.
      noise: standard deviation of the state noise (default 0).
      activation: ``"tanh"`` (default) or ``"identity"`` (linear reservoir).
      param_dtype: dtype of the parameters (default float32).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.esn import EchoState
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

    def __post_init__(self):
        _check_int("input_size", self.input_size, 1)
        _check_int("hidden_size", self.hidden_size, 1)
        _check_int("feedback_size", self.feedback_size, 0)
        if self.spectral_radius is not None:
            _check_range("spectral_radius", self.spectral_radius, 0.0, math.inf)
        _check_range("leak_rate", self.leak_rate, 0.0, 1.0, lo_open=True)
        _check_range("input_scaling", self.input_scaling, 0.0, math.inf)
        _check_range("bias_scaling", self.bias_scaling, 0.0, math.inf)
        _check_range("feedback_scaling", self.feedback_scaling, 0.0, math.inf)
        _check_range("density", self.density, 0.0, 1.0, lo_open=True)
        _check_range("input_density", self.input_density, 0.0, 1.0, lo_open=True)
        _check_range("noise", self.noise, 0.0, math.inf)
        if self.activation not in ("tanh", "identity"):
            raise ValueError(f"activation must be 'tanh' or 'identity'; got {self.activation!r}")

    @property
    def output_size(self) -> int:
        """``N``: a step outputs the reservoir state."""
        return self.hidden_size

    @property
    def state_size(self) -> int:
        """``N``."""
        return self.hidden_size

    def init(self, key) -> dict:
        """Parameters ``{"w_in": (I, N), "w": (N, N), "b": (N,), "w_fb": (F, N)}``."""
        sr = self.spectral_radius
        return _init_jit(
            key, self.density, self.input_density, self.input_scaling, self.bias_scaling,
            self.feedback_scaling, 1.0 if sr is None else sr, N=self.hidden_size,
            I=self.input_size, F=self.feedback_size, scale=sr is not None,
            dtype=jnp.dtype(self.param_dtype),
        )

    def initial_state(self, dtype=jnp.float32) -> EchoStateState:
        """The zero state (and zero feedback)."""
        return EchoStateState(
            h=jnp.zeros((self.hidden_size,), dtype), y=jnp.zeros((self.feedback_size,), dtype)
        )

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_in + b``, ``(N,)`` (or ``(..., N)``)."""
        return x @ params["w_in"] + params["b"]

    def recur(self, params: dict, state: EchoStateState, xp, leak=None, noise=None, scale=None):
        """The recurrent part of a step, given ``xp = project(params, x)``.

        ``leak`` (default ``leak_rate``) and ``scale`` (a factor on ``w``, default 1) may
        be traced scalars (used by :func:`sweep`); ``noise`` is an optional ``(N,)``
        pre-activation term.
        """
        a = self.leak_rate if leak is None else leak
        w, h = params["w"], state.h
        # W @ h for one example: measured 35x faster on XLA:CPU at N = 2000 than h @ W.T
        # inside a scan (which materialised the transpose every step).
        wh = w @ h if h.ndim == 1 else h @ w.T
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


@functools.partial(jax.jit, static_argnames=("N", "I", "F", "scale", "dtype"))
def _init_jit(key, density, input_density, input_scaling, bias_scaling, feedback_scaling, sr,
              *, N, I, F, scale, dtype):
    """EchoState.init, compiled once per shape: the scalings and densities are traced."""
    k_w, k_wm, k_in, k_inm, k_b, k_fb = jax.random.split(key, 6)
    w = jax.random.normal(k_w, (N, N), jnp.float32)
    w = jnp.where(jax.random.bernoulli(k_wm, density, (N, N)), w, 0.0)
    if scale:
        rho = diagnostics.spectral_radius(w)
        w = w * jnp.where(rho > 0, sr / jnp.where(rho > 0, rho, 1.0), 0.0).astype(jnp.float32)
    w_in = jax.random.uniform(k_in, (I, N), jnp.float32, -1.0, 1.0) * input_scaling
    w_in = jnp.where(jax.random.bernoulli(k_inm, input_density, (I, N)), w_in, 0.0)
    b = jax.random.uniform(k_b, (N,), jnp.float32, -1.0, 1.0) * bias_scaling
    w_fb = jax.random.uniform(k_fb, (F, N), jnp.float32, -1.0, 1.0) * feedback_scaling
    return {"w_in": w_in.astype(dtype), "w": w.astype(dtype), "b": b.astype(dtype),
            "w_fb": w_fb.astype(dtype)}


def _runtime(cell: EchoState) -> EchoState:
    """The cell with its init-only fields reset: the jitted runs key their cache on this,
    so cells that differ only in how their weights were drawn share one compilation."""
    return dataclasses.replace(cell, spectral_radius=None, input_scaling=1.0, bias_scaling=0.0,
                               density=1.0, input_density=1.0, feedback_scaling=1.0)


# --------------------------------------------------------------------------- core scans


def _scan(cell, params, leak, state, us, teacher, t0, T_valid, key, scale=None):
    """Run the reservoir over ``us (C, I)`` from global step ``t0``.

    ``teacher (C, F)`` or None: the value fed back after each step. Steps with global
    index ``>= T_valid`` (chunk padding) leave the state unchanged. Returns
    ``(state, hs (C, N))``.
    """
    C, N = us.shape[0], cell.hidden_size
    ts = t0 + jnp.arange(C)
    use_noise = key is not None and cell.noise > 0

    def body(st, inp):
        t, u, yt = inp
        noise = None
        if use_noise:
            noise = cell.noise * jax.random.normal(jax.random.fold_in(key, t), (N,), st.h.dtype)
        new, h = cell.recur(params, st, cell.project(params, u), leak=leak, noise=noise,
                            scale=scale)
        if yt is not None:
            new = new._replace(y=yt)
        if T_valid is not None:
            new = jax.tree_util.tree_map(lambda n, o: jnp.where(t < T_valid, n, o), new, st)
        return new, h

    tf = teacher if (teacher is not None and cell.feedback_size) else None
    if tf is None:
        return jax.lax.scan(lambda s, i: body(s, (i[0], i[1], None)), state, (ts, us))
    return jax.lax.scan(body, state, (ts, us, tf))


class RidgeStats(NamedTuple):
    """Sufficient statistics of a ridge readout, summed over steps ``t >= washout``.

    The features are ``z_t = [h_t, 1]`` (the last entry is the bias feature), so
    ``xtx[-1, -1]`` is the number of samples. Stats of several sequences add up.

    Attributes:
      xtx: ``Z^T Z``, ``(N + 1, N + 1)``.
      xty: ``Z^T Y``, ``(N + 1, O)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=10)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(60.0) / 5)[:, None]
      >>> stats, state = esn.ridge_stats(cell, params, u[:-1], u[1:], washout=10)
      >>> stats.xtx.shape, stats.xty.shape                  # (N + 1, N + 1), (N + 1, O)
      ((11, 11), (11, 1))
    """

    xtx: jax.Array
    xty: jax.Array


def _stats(cell, params, leak, us, ys, teacher, state, washout, chunk, accum, key, scale=None):
    T, N = us.shape[0], cell.hidden_size
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T

    def padded(x):
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
        return x.reshape((n, C) + x.shape[1:])

    tf = padded(teacher) if (teacher is not None and cell.feedback_size) else None
    O = ys.shape[1]

    def body(carry, inp):
        st, G, Z = carry
        c, u_c, y_c, tf_c = inp
        t0 = c * C
        st, H = _scan(cell, params, leak, st, u_c, tf_c, t0, T if pad else None, key, scale)
        t = t0 + jnp.arange(C)
        m = ((t >= washout) & (t < T)).astype(accum)
        X = jnp.concatenate([H.astype(accum), jnp.ones((C, 1), accum)], axis=1) * m[:, None]
        G = G + X.T @ X
        Z = Z + X.T @ y_c.astype(accum)
        return (st, G, Z), None

    init = (state, jnp.zeros((N + 1, N + 1), accum), jnp.zeros((N + 1, O), accum))
    xs = (jnp.arange(n), padded(us), padded(ys), tf)
    if tf is None:
        (st, G, Z), _ = jax.lax.scan(lambda c, i: body(c, (*i, None)), init, xs[:3])
    else:
        (st, G, Z), _ = jax.lax.scan(body, init, xs)
    return RidgeStats(G, Z), st


def _solve(stats: RidgeStats, ridge):
    G, Z = stats
    N1 = G.shape[0]
    penalty = jnp.where(jnp.arange(N1) < N1 - 1, ridge, 0.0).astype(G.dtype)
    A = G + jnp.diag(penalty)
    if G.dtype == jnp.float64:
        W = jax.scipy.linalg.cho_solve(jax.scipy.linalg.cho_factor(A, lower=True), Z)
    else:  # float32: A is often not numerically positive definite; LU stays finite
        W = jnp.linalg.solve(A, Z)
    return {"w_out": W[:-1], "b_out": W[-1]}


def _readout(readout, h):
    w = readout["w_out"]
    out = h.astype(w.dtype) @ w
    return out + jnp.broadcast_to(readout["b_out"], out.shape)


def _teacher_default(cell, ys, teacher):
    if teacher is not None or not cell.feedback_size:
        return teacher
    return ys


def _accum_dtype(precision: str):
    return jnp.float64 if precision == "float64" else jnp.float32


# --------------------------------------------------------------------------- jitted kernels

_STATIC = ("cell", "chunk", "precision")


@functools.partial(jax.jit, static_argnames=("cell",))
def _harvest_jit(cell, params, us, state, teacher, key):
    return _scan(cell, params, cell.leak_rate, state, us, teacher, 0, None, key)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _stats_jit(cell, params, us, ys, teacher, state, washout, key, *, chunk, precision):
    return _stats(cell, params, cell.leak_rate, us, ys, teacher, state, washout, chunk,
                  _accum_dtype(precision), key)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _fit_jit(cell, params, us, ys, teacher, state, washout, ridge, key, *, chunk, precision):
    stats, state = _stats(cell, params, cell.leak_rate, us, ys, teacher, state, washout,
                          chunk, _accum_dtype(precision), key)
    return _solve(stats, ridge), state


@jax.jit
def _solve_jit(stats, ridge):
    return _solve(stats, ridge)


@functools.partial(jax.jit, static_argnames=("cell",))
def _predict_jit(cell, params, readout, us, state, teacher, key):
    N = cell.hidden_size
    ts = jnp.arange(us.shape[0])
    use_noise = key is not None and cell.noise > 0
    dt = state.h.dtype

    def body(st, inp):
        t, u, yt = inp
        noise = None
        if use_noise:
            noise = cell.noise * jax.random.normal(jax.random.fold_in(key, t), (N,), dt)
        new, h = cell.recur(params, st, cell.project(params, u), noise=noise)
        y = _readout(readout, h).astype(dt)
        if cell.feedback_size:
            new = new._replace(y=(y if yt is None else yt).astype(dt))
        return new, y

    if teacher is None:
        return jax.lax.scan(lambda s, i: body(s, (*i, None)), state, (ts, us))
    return jax.lax.scan(body, state, (ts, us, teacher))


@functools.partial(jax.jit, static_argnames=("cell", "n"))
def _generate_jit(cell, params, readout, state, inputs, *, n):
    dt = state.h.dtype

    def body(st, u_ext):
        y = _readout(readout, st.h).astype(dt)
        u = y if u_ext is None else u_ext
        if cell.feedback_size:
            st = st._replace(y=y)
        st, _ = cell.recur(params, st, cell.project(params, u))
        return st, y

    if inputs is None:
        return jax.lax.scan(lambda s, _: body(s, None), state, None, length=n)
    return jax.lax.scan(body, state, inputs)


# --------------------------------------------------------------------------- public API


def _prepare(cell, params, us, state, key, name="us"):
    if not isinstance(cell, EchoState):
        raise TypeError(f"cell must be an rnnjax.esn.EchoState; got {type(cell).__name__}")
    _check_reservoir_params(cell, params)
    _check_series(name, us, cell.input_size, "I = cell.input_size")
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    if state is None:
        state = cell.initial_state(dtype)
    else:
        want = cell.initial_state(dtype)
        if not isinstance(state, EchoStateState) or any(
            jnp.shape(a) != jnp.shape(b) for a, b in zip(state, want)
        ):
            raise ValueError(
                f"state must be an EchoStateState with h {want.h.shape} and y {want.y.shape}; "
                f"got {state!r:.200}"
            )
        state = EchoStateState(*(jnp.asarray(s, dtype) for s in state))
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax PRNG key (jax.random.key); got {type(key).__name__}")
    return jnp.asarray(us, dtype), state


def _prepare_targets(cell, us, ys, teacher, washout, dtype):
    T = us.shape[0]
    _check_series("ys", ys, ys.shape[1] if getattr(ys, "ndim", 0) == 2 else -1, "O outputs", T)
    _check_int("washout", washout, 0)
    if washout >= T:
        raise ValueError(f"washout must be smaller than T = {T} (no samples left); got {washout}")
    teacher = _teacher_default(cell, ys, teacher)
    if cell.feedback_size:
        _check_series("teacher", teacher, cell.feedback_size, "F = cell.feedback_size", T)
        teacher = jnp.asarray(teacher, dtype)
    else:
        teacher = None
    return teacher


def _check_ridge(ridge) -> None:
    _check_range("ridge", ridge, 0.0, math.inf)


def harvest(cell, params, us, state=None, *, teacher=None, key=None):
    """Run the reservoir over ``us`` and return every state (teacher-forced feedback).

    Args:
      cell: an :class:`EchoState`.
      params: ``cell.init(key)``.
      us: inputs ``(T, I)``.
      state: initial :class:`EchoStateState` (default zeros).
      teacher: ``(T, F)`` values fed back after each step (with ``feedback_size > 0``).
      key: PRNG key for the state noise (none without a key or with ``cell.noise == 0``).

    Returns:
      ``(state, hs)`` with ``hs`` of shape ``(T, N)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20)
      >>> params = cell.init(jax.random.key(0))
      >>> out = esn.harvest(cell, params, jnp.ones((30, 1)))
      >>> out[1].shape                                      # (T, N)
      (30, 20)
    """
    us, state = _prepare(cell, params, us, state, key)
    if cell.feedback_size and teacher is not None:
        _check_series("teacher", teacher, cell.feedback_size, "F = cell.feedback_size", us.shape[0])
        teacher = jnp.asarray(teacher, us.dtype)
    return _harvest_jit(_runtime(cell), params, us, state, teacher, key)


def ridge_stats(cell, params, us, ys, state=None, *, washout: int = 0, teacher=None,
                key=None, chunk_size: int = 1024, precision: str = "float64"):
    """Accumulate ``Z^T Z`` and ``Z^T Y`` chunk by chunk while running the reservoir.

    Only ``chunk_size`` states exist at a time, so memory is ``O(chunk_size * N + N^2)``
    whatever ``T``. Stats of several series add up (sum the fields), then
    :func:`solve_ridge`.

    Args:
      cell, params, us, state, key: as in :func:`harvest`.
      ys: targets ``(T, O)``; ``ys[t]`` is what the readout of ``h_t`` should output.
      washout: number of initial steps left out (the reservoir still runs through them).
      teacher: ``(T, F)`` fed-back values; defaults to ``ys`` when the cell has feedback.
      chunk_size: steps per chunk.
      precision: ``"float64"`` (default) or ``"float32"`` accumulation (see module doc).

    Returns:
      ``(RidgeStats, state)``: the stats and the reservoir state after the last step.

    Example:
      Accumulate ``Z^T Z`` chunk by chunk, then solve:

      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=10)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(100.0) / 5)[:, None]
      >>> stats, state = esn.ridge_stats(cell, params, u[:-1], u[1:], washout=10, chunk_size=32)
      >>> readout = esn.solve_ridge(stats, 1e-6)
      >>> readout["w_out"].shape, readout["b_out"].shape    # (N, O), (O,)
      ((10, 1), (1,))
    """
    _check_precision(precision)
    _check_int("chunk_size", chunk_size, 1)
    us, state = _prepare(cell, params, us, state, key)
    teacher = _prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with _x64(precision):
        return _stats_jit(_runtime(cell), params, us, ys, teacher, state, washout, key,
                          chunk=chunk_size, precision=precision)


def solve_ridge(stats: RidgeStats, ridge: float):
    r"""Solve the ridge normal equations with an unpenalised bias.

    .. math::

        [W; b] = \big(Z^\top Z + \lambda\, \mathrm{diag}(1, \dots, 1, 0)\big)^{-1} Z^\top Y

    which is ridge regression on centred states (the bias is not shrunk), as in
    ReservoirPy's ``Ridge``. The matrix is symmetric positive definite for ``ridge > 0``
    and at least one sample, so in float64 (the default :func:`ridge_stats`) it is
    solved by Cholesky (``jax.scipy.linalg.cho_factor``/``cho_solve``): half the work of
    LU and it uses the symmetry; with ``ridge = 0`` and rank-deficient states the result
    is NaN. Float32 stats at small ridges are often not numerically positive definite
    (condition number ~1e12), so they are solved by LU (``jnp.linalg.solve``), which
    stays finite but is only as accurate as float32 allows.

    Args:
      stats: :class:`RidgeStats`.
      ridge: :math:`\lambda \ge 0`.

    Returns:
      Readout ``{"w_out": (N, O), "b_out": (O,)}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=10)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(100.0) / 5)[:, None]
      >>> stats, _ = esn.ridge_stats(cell, params, u[:-1], u[1:], washout=10)
      >>> readouts = [esn.solve_ridge(stats, r) for r in (1e-8, 1e-2)]   # one pass, many ridges
      >>> [r["w_out"].shape for r in readouts]
      [(10, 1), (10, 1)]
    """
    if not isinstance(stats, RidgeStats):
        raise TypeError(f"stats must be a RidgeStats (from ridge_stats); got {type(stats).__name__}")
    _check_ridge(ridge)
    with _x64("float64" if stats.xtx.dtype == jnp.float64 else "float32"):
        return _solve_jit(stats, ridge)


def fit_ridge(cell, params, us, ys, state=None, *, ridge: float, washout: int = 0,
              teacher=None, key=None, chunk_size: int = 1024, precision: str = "float64"):
    """Fit a ridge readout by teacher forcing: run, accumulate, solve, in one jitted call.

    Args:
      cell: an :class:`EchoState`.
      params: ``cell.init(key)``.
      us: inputs ``(T, I)``.
      ys: targets ``(T, O)``; ``ys[t]`` is what the readout of the state after reading
        ``us[t]`` should output (for one-step prediction, ``us = u[:-1]``,
        ``ys = u[1:]``).
      state: initial :class:`EchoStateState` (default zeros).
      ridge: the ridge penalty, ``>= 0`` (the bias is not penalised; see
        :func:`solve_ridge`).
      washout: number of initial steps left out of the fit (the reservoir still runs
        through them).
      teacher: ``(T, F)`` fed-back values; defaults to ``ys`` when the cell has feedback.
      key: PRNG key for the state noise (none without a key or with ``cell.noise == 0``).
      chunk_size: steps per chunk of the ``X^T X`` accumulation (memory
        ``O(chunk_size * N + N^2)`` whatever ``T``).
      precision: ``"float64"`` (default) or ``"float32"`` accumulation and solve.

    Returns:
      ``(readout, state)``: ``{"w_out": (N, O), "b_out": (O,)}`` and the state after the
      last step, after reading ``us[-1]`` (to continue into a test segment). For a
      one-step predictor fitted on ``u[:-1] -> u[1:]`` this state has not read the last
      sample ``u[-1]``: read it (one step of :func:`predict`) before :func:`generate`
      forecasts the future.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = esn.fit_ridge(cell, params, u[:-1], u[1:], ridge=1e-6, washout=50)
      >>> readout["w_out"].shape
      (20, 1)
    """
    _check_precision(precision)
    _check_int("chunk_size", chunk_size, 1)
    _check_ridge(ridge)
    us, state = _prepare(cell, params, us, state, key)
    teacher = _prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with _x64(precision):
        return _fit_jit(_runtime(cell), params, us, ys, teacher, state, washout, ridge, key,
                        chunk=chunk_size, precision=precision)


def readout_apply(readout, hs):
    """Apply a readout: ``hs @ w_out + b_out``; ``hs`` ``(..., N)`` -> ``(..., O)``.

    The product runs in the readout's dtype (float64 by default: with small ridges the
    weights are large and the sum cancels) and is returned in ``hs``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import esn
      >>> readout = {"w_out": jnp.ones((4, 2)), "b_out": jnp.array([0.0, 1.0])}
      >>> esn.readout_apply(readout, jnp.ones((3, 4))).tolist()      # (T, N) -> (T, O)
      [[4.0, 5.0], [4.0, 5.0], [4.0, 5.0]]
    """
    _check_readout(readout, jnp.shape(hs)[-1])
    with _x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32"):
        return _readout_jit(readout, hs)


@jax.jit
def _readout_jit(readout, hs):
    return _readout(readout, hs).astype(hs.dtype)


def predict(cell, params, readout, us, state=None, *, teacher=None, key=None):
    """One-step prediction: drive the reservoir with ``us`` and read it out at every step.

    With output feedback, the fed-back value is ``teacher[t]`` when given (teacher
    forcing) and the readout's own output otherwise.

    Args:
      cell, params, us, state, key: as in :func:`harvest`.
      readout: ``{"w_out": (N, O), "b_out": (O,)}``.
      teacher: optional ``(T, F)``.

    Returns:
      ``(state, ys)`` with ``ys`` ``(T, O)`` in the parameter dtype (the readout product
      itself runs in the readout's dtype, float64 by default, then is rounded).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = esn.fit_ridge(cell, params, u[:200], u[1:201], ridge=1e-6, washout=50)
      >>> _, ys = esn.predict(cell, params, readout, u[200:-1], state)   # (T, O)
      >>> ys.shape, float(jnp.sqrt(jnp.mean((ys - u[201:]) ** 2))) < 0.01
      ((99, 1), True)
    """
    us, state = _prepare(cell, params, us, state, key)
    O = _check_readout(readout, cell.hidden_size)
    if cell.feedback_size:
        if O != cell.feedback_size and teacher is None:
            raise ValueError(
                f"readout outputs O = {O} values but the cell feeds back F = "
                f"{cell.feedback_size}; pass teacher (T, F)"
            )
        if teacher is not None:
            _check_series("teacher", teacher, cell.feedback_size, "F", us.shape[0])
            teacher = jnp.asarray(teacher, us.dtype)
    else:
        teacher = None
    with _x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32"):
        return _predict_jit(_runtime(cell), params, readout, us, state, teacher, key)


def generate(cell, params, readout, state, n: int, *, inputs=None):
    """Generative free run: the readout's output is fed back for ``n`` steps.

    At every step the readout of the current state is emitted and fed back: as the next
    input (when ``inputs`` is None; needs ``O == I``) and through ``w_fb`` (with
    feedback). So ``ys[0]`` is the one-step prediction from ``state`` and ``ys[k]`` the
    ``(k+1)``-step prediction. Noise-free. One jitted ``lax.scan``.

    To forecast the values after a series of observations use :func:`forecast`: from
    :func:`fit_ridge`'s state, ``generate``'s first output re-predicts the last known sample.

    Args:
      cell, params, readout: as in :func:`predict`.
      state: the :class:`EchoStateState` to start from (e.g. from :func:`fit_ridge`).
      n: number of steps.
      inputs: optional external inputs ``(n, I)``; the output then only feeds back
        through ``w_fb``.

    Returns:
      ``(state, ys)`` with ``ys`` ``(n, O)`` in the parameter dtype.

    Example:
      Forecast after the last observation (the state must have read it):

      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = esn.fit_ridge(cell, params, u[:-1], u[1:], ridge=1e-6, washout=50)
      >>> state, _ = esn.predict(cell, params, readout, u[-1:], state)  # read u[T-1]
      >>> _, ys = esn.generate(cell, params, readout, state, 10)        # ys[k] ~ u[T+k]
      >>> ys.shape                                          # (n, O)
      (10, 1)
    """
    _check_int("n", n, 1)
    dummy = jnp.zeros((1, cell.input_size), jnp.result_type(*jax.tree_util.tree_leaves(params)))
    _, state = _prepare(cell, params, dummy, state, None)
    O = _check_readout(readout, cell.hidden_size)
    if inputs is None:
        if O != cell.input_size:
            raise ValueError(
                f"free run feeds the output back as input, so the readout's O = {O} must equal "
                f"cell.input_size = {cell.input_size}; or pass inputs (n, I)"
            )
    else:
        _check_series("inputs", inputs, cell.input_size, "I", n)
        inputs = jnp.asarray(inputs, state.h.dtype)
    if cell.feedback_size and O != cell.feedback_size:
        raise ValueError(f"readout O = {O} must equal cell.feedback_size = {cell.feedback_size}")
    with _x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32"):
        return _generate_jit(_runtime(cell), params, readout, state, inputs, n=n)


# --------------------------------------------------------------------------- online readout


@functools.partial(jax.jit, static_argnames=("cell", "force"))
def _rls_jit(cell, params, us, ys, teacher, state, washout, delta, forgetting, key, *, force):
    N, O = cell.hidden_size, ys.shape[1]
    accum = jnp.result_type(float)  # float64 under the x64 context
    dt = state.h.dtype
    ts = jnp.arange(us.shape[0])
    use_noise = key is not None and cell.noise > 0
    P0 = jnp.eye(N + 1, dtype=accum) / delta
    W0 = jnp.zeros((N + 1, O), accum)

    def body(carry, inp):
        st, W, P = carry
        t, u, y, yt = inp
        noise = None
        if use_noise:
            noise = cell.noise * jax.random.normal(jax.random.fold_in(key, t), (N,), dt)
        st, h = cell.recur(params, st, cell.project(params, u), noise=noise)
        z = jnp.concatenate([h.astype(accum), jnp.ones((1,), accum)])
        Pz = P @ z
        k = Pz / (forgetting + z @ Pz)
        e = y.astype(accum) - z @ W
        on = t >= washout
        W = jnp.where(on, W + jnp.outer(k, e), W)
        P = jnp.where(on, (P - jnp.outer(k, Pz)) / forgetting, P)
        P = 0.5 * (P + P.T)  # keep P symmetric against round-off drift
        if cell.feedback_size:
            fb = (z @ W) if force else yt  # FORCE: feed back the (just updated) output
            st = st._replace(y=fb.astype(dt))
        return (st, W, P), None

    tf = teacher if teacher is not None else jnp.zeros((us.shape[0], 0), dt)
    (st, W, _), _ = jax.lax.scan(body, (state, W0, P0), (ts, us, ys, tf))
    return {"w_out": W[:-1], "b_out": W[-1]}, st


def fit_rls(cell, params, us, ys, state=None, *, washout: int = 0, delta: float = 1.0,
            forgetting: float = 1.0, feedback: str = "teacher", teacher=None, key=None,
            precision: str = "float64"):
    r"""Online readout by recursive least squares (FORCE-style with output feedback).

    With features :math:`z_t = [h_t, 1]`, ``P_0 = I / delta`` and forgetting factor
    :math:`\mu`, at every step ``t >= washout``:

    .. math::

        k = \frac{P z}{\mu + z^\top P z}, \quad
        W \leftarrow W + k\,(y_t - W^\top z)^\top, \quad
        P \leftarrow (P - k\, z^\top P) / \mu

    With :math:`\mu = 1` the final ``W`` is exactly the ridge solution with penalty
    ``delta`` on all weights, bias included (a test checks it). ``feedback="output"``
    (FORCE, Sussillo & Abbott 2009) feeds the readout's own output back through
    ``w_fb`` during learning instead of the teacher.

    Args:
      cell, params, us, ys, state, key, teacher: as in :func:`fit_ridge`.
      washout: steps before learning starts.
      delta: initial regulariser, ``P_0 = I / delta``; ``> 0``.
      forgetting: :math:`\mu \in (0, 1]`.
      feedback: ``"teacher"`` or ``"output"`` (only used with output feedback).
      precision: ``"float64"`` (default) or ``"float32"`` for ``W`` and ``P``.

    Returns:
      ``(readout, state)`` as :func:`fit_ridge`.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = esn.fit_rls(cell, params, u[:-1], u[1:], washout=50)
      >>> readout["w_out"].shape                            # (N, O)
      (20, 1)
    """
    _check_precision(precision)
    _check_range("delta", delta, 0.0, math.inf, lo_open=True)
    _check_range("forgetting", forgetting, 0.0, 1.0, lo_open=True)
    if feedback not in ("teacher", "output"):
        raise ValueError(f"feedback must be 'teacher' or 'output'; got {feedback!r}")
    us, state = _prepare(cell, params, us, state, key)
    teacher = _prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with _x64(precision):
        return _rls_jit(_runtime(cell), params, us, ys, teacher, state, washout, delta, forgetting, key,
                        force=feedback == "output")


# --------------------------------------------------------------------------- sweeps


@functools.partial(jax.jit, static_argnames=("cell", "chunk", "precision"))
def _sweep_jit(cell, params, scale, leak, ridge, u_tr, y_tr, tf_tr, u_te, y_te, washout,
               *, chunk, precision):
    """``params``: one unit-radius reservoir per seed, leaves ``(S, ...)``; ``scale``,
    ``leak``, ``ridge``: ``(S, G)`` for ``G`` models per seed. Within a seed the models
    share ``w`` and scale the product ``w @ h``, so the vmapped step is one matrix-matrix
    product ``w @ [h_1 ... h_G]`` instead of ``G`` matrix-vector products."""
    accum = _accum_dtype(precision)
    dt = u_tr.dtype
    S, G = scale.shape
    T, N = u_tr.shape[0], cell.hidden_size
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T
    fb = bool(cell.feedback_size)

    def padded(x):
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)]) if pad else x
        return x.reshape((n, C) + x.shape[1:])

    def vmap2(fn):  # over seeds (params batched) and over the models of a seed (shared w)
        return jax.vmap(jax.vmap(fn, in_axes=(None, 0, 0, 0) + (None,) * 3),
                        in_axes=(0, 0, 0, 0) + (None,) * 3)

    run = vmap2(lambda p, s, a, st, u, tf, t0: _scan(
        cell, p, a, st, u, tf if fb else None, t0, T if pad else None, None, s))
    state0 = jax.tree_util.tree_map(
        lambda x: jnp.broadcast_to(x, (S, G) + x.shape), cell.initial_state(dt))

    def body(carry, inp):
        st, Gm, Zm = carry
        c, u_c, y_c, tf_c = inp
        t0 = c * C
        st, H = run(params, scale, leak, st, u_c, tf_c, t0)  # H: (S, G, C, N)
        t = t0 + jnp.arange(C)
        m = ((t >= washout) & (t < T)).astype(accum)
        X = jnp.concatenate([H.astype(accum), jnp.ones((S, G, C, 1), accum)], axis=-1)
        X = (X * m[None, None, :, None]).reshape(S * G, C, N + 1)
        # one plain GEMM per model (lax.map) rather than a batched dot: XLA:CPU's batched
        # float64 dot was measured 3x slower than the same products one by one
        Gm = Gm + jax.lax.map(lambda x: x.T @ x, X)
        Zm = Zm + jax.lax.map(lambda x: x.T @ y_c.astype(accum), X)
        return (st, Gm, Zm), None

    O = y_tr.shape[1]
    init = (state0, jnp.zeros((S * G, N + 1, N + 1), accum), jnp.zeros((S * G, N + 1, O), accum))
    tf_p = padded(tf_tr) if fb else jnp.zeros((n, C, 0), dt)
    (st, Gm, Zm), _ = jax.lax.scan(
        body, init, (jnp.arange(n), padded(u_tr), padded(y_tr), tf_p))
    readouts = jax.vmap(_solve)(RidgeStats(Gm, Zm), ridge.reshape(S * G))
    readouts = jax.tree_util.tree_map(lambda x: x.reshape((S, G) + x.shape[1:]), readouts)

    test = vmap2(lambda p, s, a, st, u, tf, t0: _scan(
        cell, p, a, st, u, tf if fb else None, t0, None, None, s))
    _, H = test(params, scale, leak, st, u_te, y_te if fb else jnp.zeros((u_te.shape[0], 0), dt), 0)

    def score(readout, h):
        pred = _readout(readout, h)
        target = y_te.astype(pred.dtype)
        return jnp.sqrt(jnp.mean(jnp.square(pred - target)) / jnp.var(target))

    return jax.vmap(jax.vmap(score))(readouts, H)


def sweep(cell, u_train, y_train, u_test, y_test, *, spectral_radius: Sequence[float],
          leak_rate: Sequence[float], ridge: Sequence[float], seeds: Sequence[int],
          washout: int = 0, chunk_size: int = 1024, precision: str = "float64") -> dict:
    """Fit and score a grid of reservoirs in one ``vmap``-ed, jitted call.

    The grid is the product ``seeds x spectral_radius x leak_rate x ridge`` (``M``
    models, in that order). Per seed one unit-radius reservoir is built (``cell`` with
    ``spectral_radius=1``, ``init(jax.random.key(seed))``, one host eigenvalue solve
    per seed); inside the vmapped function the product ``w @ h`` is multiplied by the
    model's spectral radius and the leak rate and ridge are traced values. Models that
    share a seed share ``w``, so their vmapped step is one matrix-matrix product. Each
    model is fitted as by :func:`fit_ridge` on the training series (teacher-forced) and
    scored by the one-step NRMSE (RMSE / population std of the targets) on the test
    series, run on from the training's final state. The result equals fitting each
    model one by one (a test checks it). Memory: one ``N x N`` reservoir per seed, ``M``
    float64 ``(N+1) x (N+1)`` Gram matrices, ``M`` chunks of ``chunk_size x N`` states
    and ``M x T' x N`` test states.

    Args:
      cell: the :class:`EchoState` whose other hyperparameters all models share.
      u_train, y_train: ``(T, I)``, ``(T, O)``.
      u_test, y_test: ``(T', I)``, ``(T', O)``; the test follows the training series.
      spectral_radius, leak_rate, ridge, seeds: the grid's axes.
      washout, chunk_size, precision: as in :func:`fit_ridge`.

    Returns:
      A table as a dict of numpy arrays of length ``M``: ``"spectral_radius"``,
      ``"leak_rate"``, ``"ridge"``, ``"seed"``, ``"nrmse"``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import esn
      >>> u = jnp.sin(jnp.arange(400.0) / 5)[:, None]
      >>> cell = esn.EchoState(input_size=1, hidden_size=20)
      >>> table = esn.sweep(cell, u[:299], u[1:300], u[299:-1], u[300:], washout=50,
      ...                   spectral_radius=[0.5, 0.9], leak_rate=[0.3, 1.0],
      ...                   ridge=[1e-6], seeds=[0])
      >>> table["nrmse"].shape
      (4,)
    """
    if not isinstance(cell, EchoState):
        raise TypeError(f"cell must be an rnnjax.esn.EchoState; got {type(cell).__name__}")
    _check_precision(precision)
    _check_int("chunk_size", chunk_size, 1)
    axes = {}
    for name, vals in (("spectral_radius", spectral_radius), ("leak_rate", leak_rate),
                       ("ridge", ridge), ("seeds", seeds)):
        vals = list(np.atleast_1d(np.asarray(vals)))
        if not vals:
            raise ValueError(f"{name} must be a non-empty sequence; got {vals!r}")
        axes[name] = vals
    for v in axes["spectral_radius"]:
        _check_range("spectral_radius", float(v), 0.0, math.inf)
    for v in axes["leak_rate"]:
        _check_range("leak_rate", float(v), 0.0, 1.0, lo_open=True)
    for v in axes["ridge"]:
        _check_ridge(float(v))
    for v in axes["seeds"]:
        _check_int("seeds", v, 0)
    unit = dataclasses.replace(cell, spectral_radius=1.0)
    dtype = jnp.dtype(cell.param_dtype)
    _check_series("u_train", u_train, cell.input_size, "I")
    T = u_train.shape[0]
    O = y_train.shape[1] if getattr(y_train, "ndim", 0) == 2 else -1
    _check_series("y_train", y_train, O, "O", T)
    _check_series("u_test", u_test, cell.input_size, "I")
    _check_series("y_test", y_test, O, "O", u_test.shape[0])
    _check_int("washout", washout, 0)
    if washout >= T:
        raise ValueError(f"washout must be smaller than T = {T}; got {washout}")
    tf_tr = jnp.asarray(y_train, dtype) if cell.feedback_size else None
    if cell.feedback_size and O != cell.feedback_size:
        raise ValueError(f"y_train has O = {O} but cell.feedback_size = {cell.feedback_size}")

    bases = [unit.init(jax.random.key(int(s))) for s in axes["seeds"]]
    params = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *bases)  # (S, ...)
    S = len(axes["seeds"])
    # seed-major grid: models (s, g) with g over spectral_radius x leak_rate x ridge
    combos = list(itertools.product(axes["spectral_radius"], axes["leak_rate"], axes["ridge"]))
    G = len(combos)
    sr = np.tile(np.array([c[0] for c in combos], np.float64), (S, 1))
    lr = np.tile(np.array([c[1] for c in combos], np.float64), (S, 1))
    rg = np.tile(np.array([c[2] for c in combos], np.float64), (S, 1))
    sd = np.repeat(np.asarray(axes["seeds"])[:, None], G, axis=1)
    with _x64(precision):
        scores = _sweep_jit(
            _runtime(unit), params, jnp.asarray(sr, dtype), jnp.asarray(lr, dtype),
            jnp.asarray(rg, _accum_dtype(precision)), jnp.asarray(u_train, dtype),
            jnp.asarray(y_train, dtype), tf_tr, jnp.asarray(u_test, dtype),
            jnp.asarray(y_test, dtype), washout, chunk=chunk_size, precision=precision,
        )
        scores = np.asarray(scores, np.float64).reshape(-1)
    sr, lr, rg, sd = sr.reshape(-1), lr.reshape(-1), rg.reshape(-1), sd.reshape(-1)
    return {"spectral_radius": sr, "leak_rate": lr, "ridge": rg, "seed": sd, "nrmse": scores}


# --------------------------------------------------------------------------- diagnostics


class ESPResult(NamedTuple):
    """Result of :func:`echo_state_property`.

    Attributes:
      distance: ``(T,)`` Euclidean distance between the two runs' states after each step.
      converged: whether ``distance[-1] <= tol * distance[0]``.

    Example:
      What :func:`echo_state_property` returns:

      >>> import jax.numpy as jnp
      >>> from rnnjax import esn
      >>> result = esn.ESPResult(distance=jnp.array([1.0, 0.1, 1e-7]), converged=jnp.array(True))
      >>> result._fields, bool(result.converged)
      (('distance', 'converged'), True)
    """

    distance: jax.Array
    converged: jax.Array


def echo_state_property(cell, params, us, key, *, tol: float = 1e-6) -> ESPResult:
    """Empirical echo state property check: do two initial states converge?

    Two initial states drawn from ``U(-1, 1)^N`` are driven by the same input ``us``; a
    reservoir with the echo state property forgets its initial state, so their distance
    shrinks towards zero (Jaeger 2001, definition 1 and proposition 3). Noise-free.

    Args:
      cell, params, us: as in :func:`harvest`.
      key: PRNG key for the two initial states.
      tol: relative distance below which the runs count as converged.

    Returns:
      :class:`ESPResult`.

    References:
      Jaeger (2001), GMD Report 148; Yildiz, Jaeger & Kiebel (2012). Re-visiting the echo
      state property. Neural Networks 35.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, spectral_radius=0.8)
      >>> params = cell.init(jax.random.key(0))
      >>> bool(esn.echo_state_property(cell, params, jnp.ones((200, 1)), jax.random.key(1)).converged)
      True
    """
    us, state = _prepare(cell, params, us, None, None)
    _check_range("tol", tol, 0.0, math.inf, lo_open=True)
    ka, kb = jax.random.split(key)
    N, dt = cell.hidden_size, state.h.dtype
    sa = state._replace(h=jax.random.uniform(ka, (N,), dt, -1.0, 1.0))
    sb = state._replace(h=jax.random.uniform(kb, (N,), dt, -1.0, 1.0))
    _, ha = _harvest_jit(_runtime(cell), params, us, sa, None, None)
    _, hb = _harvest_jit(_runtime(cell), params, us, sb, None, None)
    d = jnp.linalg.norm(ha - hb, axis=-1)
    return ESPResult(distance=d, converged=d[-1] <= tol * jnp.linalg.norm(sa.h - sb.h))


# --------------------------------------------------------------------------- freezing


def _path_keys(path):
    return [getattr(p, "key", getattr(p, "name", None)) for p in path]


def frozen_labels(params, frozen: Sequence[str] = ("reservoir",)):
    """Optax labels: ``"frozen"`` for reservoir weights, ``"trainable"`` for the rest.

    A leaf is frozen when a key on its path is in ``frozen`` (default: a ``"reservoir"``
    sub-dict), or when ``params`` is itself a reservoir's dict (keys within
    :data:`RESERVOIR_KEYS`). Use with ``optax.multi_transform`` (see
    :func:`freeze_reservoir`), which gives the frozen leaves ``optax.set_to_zero()``
    updates, so they stay bit-for-bit unchanged and are still checkpointed with the rest.

    Args:
      params: a pytree of dicts, e.g. ``{"reservoir": esn_params, "readout": readout}``.
      frozen: dict keys whose sub-trees are frozen.

    Returns:
      A pytree of the same structure with ``"frozen"`` / ``"trainable"`` leaves.

    Example:
      >>> import jax
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=8)
      >>> params = {"reservoir": cell.init(jax.random.key(0)), "head": {"w": jax.numpy.ones(8)}}
      >>> labels = esn.frozen_labels(params)
      >>> labels["head"]["w"], set(jax.tree_util.tree_leaves(labels["reservoir"]))
      ('trainable', {'frozen'})
    """
    if isinstance(frozen, str):
        frozen = (frozen,)
    bare = isinstance(params, dict) and params and set(params) <= set(RESERVOIR_KEYS)

    def label(path, _):
        return "frozen" if bare or any(k in frozen for k in _path_keys(path)) else "trainable"

    return jax.tree_util.tree_map_with_path(label, params)


def trainable_mask(params, frozen: Sequence[str] = ("reservoir",)):
    """Boolean mask (``True`` = trainable) for ``optax.masked`` and friends; see
    :func:`frozen_labels`.

    Example:
      >>> import jax
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=8)
      >>> params = {"reservoir": cell.init(jax.random.key(0)), "head": {"w": jax.numpy.ones(8)}}
      >>> mask = esn.trainable_mask(params)
      >>> mask["head"]["w"], any(jax.tree_util.tree_leaves(mask["reservoir"]))
      (True, False)
    """
    return jax.tree_util.tree_map(lambda s: s == "trainable", frozen_labels(params, frozen))


def freeze_reservoir(optimizer: optax.GradientTransformation, params,
                     frozen: Sequence[str] = ("reservoir",)) -> optax.GradientTransformation:
    """Wrap ``optimizer`` so that reservoir weights get zero updates.

    ``optax.multi_transform({"trainable": optimizer, "frozen": optax.set_to_zero()},
    frozen_labels(params, frozen))``; the frozen leaves carry no optimiser state.

    Example:
      >>> import jax, optax
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=8)
      >>> params = {"reservoir": cell.init(jax.random.key(0)),
      ...           "readout": {"w_out": jax.numpy.zeros((8, 1)), "b_out": jax.numpy.zeros(1)}}
      >>> opt = esn.freeze_reservoir(optax.adam(1e-3), params)
      >>> opt_state = opt.init(params)
    """
    return optax.multi_transform(
        {"trainable": optimizer, "frozen": optax.set_to_zero()}, frozen_labels(params, frozen)
    )


# --------------------------------------------------------------------------- forecasting


def forecast(cell, params, readout, warmup, n_steps: int, *, state=None):
    """Forecast the ``n_steps`` values that follow the observations ``warmup``.

    For a readout fitted to predict the next sample (``fit_ridge(cell, params, u[:-1],
    u[1:], ...)``, so ``O == I``): the reservoir reads every observation ``warmup[0], ...,
    warmup[T-1]``, then runs freely with its output fed back. The result is aligned with
    the future: ``ys[k]`` forecasts ``u[T + k]``, the value ``k + 1`` steps after the last
    observation, and there are exactly ``n_steps`` of them.

    This is the safe way to free-run. :func:`generate` starts from a given state and
    emits the readout of that state first: from :func:`fit_ridge`'s state (which has read
    ``u[:-1]``, not the last observation) its first output re-predicts ``u[-1]``, a
    known sample, and every later output is one step behind.

    With output feedback (``cell.feedback_size == O``) the warmup feeds back the true
    next value (teacher forcing, as in the fit) and the last step its own output.

    Args:
      cell: an :class:`EchoState`.
      params: ``cell.init(key)``.
      readout: ``{"w_out": (N, O), "b_out": (O,)}`` with ``O == I``.
      warmup: the observations ``(T, I)``, ``T >= 1``, up to the last known one.
      n_steps: how many future values to return.
      state: the state before ``warmup[0]`` (default zeros); pass the state of a run
        that stopped just before ``warmup`` to continue it without rereading the past.

    Returns:
      ``ys`` of shape ``(n_steps, O)``: the forecasts of ``u[T], ..., u[T + n_steps - 1]``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=50, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(600.0) / 5)[:, None]
      >>> readout, _ = esn.fit_ridge(cell, params, u[:499], u[1:500], ridge=1e-7, washout=50)
      >>> ys = esn.forecast(cell, params, readout, u[:500], 20)
      >>> ys.shape, bool(jnp.max(jnp.abs(ys - u[500:520])) < 0.05)
      ((20, 1), True)
    """
    _check_int("n_steps", n_steps, 1)
    warmup, _ = _prepare(cell, params, warmup, state, None, name="warmup")
    if warmup.shape[0] < 1:
        raise ValueError(f"warmup must hold at least one observation (T >= 1); got shape "
                         f"{warmup.shape}")
    O = _check_readout(readout, cell.hidden_size)
    if O != cell.input_size:
        raise ValueError(
            f"forecast feeds the output back as the next input, so the readout's O = {O} must "
            f"equal cell.input_size = {cell.input_size}"
        )
    if cell.feedback_size and cell.feedback_size != O:
        raise ValueError(f"readout O = {O} must equal cell.feedback_size = {cell.feedback_size}")
    if cell.feedback_size and warmup.shape[0] > 1:
        state, _ = predict(cell, params, readout, warmup[:-1], state, teacher=warmup[1:])
        warmup = warmup[-1:]
    state, _ = predict(cell, params, readout, warmup, state)
    return generate(cell, params, readout, state, n_steps)[1]
