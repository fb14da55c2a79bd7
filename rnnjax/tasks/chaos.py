r"""Chaotic and oscillating series for reservoir computing (ReservoirPy's ``datasets``).

Maps: :func:`henon_map`, :func:`logistic_map`. A PDE: :func:`kuramoto_sivashinsky`
(ETDRK4, Kassam & Trefethen 2005; equal to ReservoirPy's to round-off). Flows, integrated with fourth-order
Runge-Kutta (``substeps`` steps per sample) in float64 NumPy and sampled every ``h``:
:func:`rossler`, :func:`lorenz96`, :func:`multiscroll`, :func:`doublescroll`,
:func:`rabinovich_fabrikant`. Oscillators: :func:`mso` (multiple superimposed
oscillators). Deterministic: no seed (the initial condition is an argument).

Conventions against ReservoirPy 0.4.2: the maps and :func:`mso` are equal to the last
bit. ReservoirPy integrates the flows with ``scipy.integrate.solve_ivp`` (adaptive RK45)
and samples them at ``linspace(0, n h, n)``, i.e. every ``n h / (n - 1)``, not every
``h``; here the samples are exactly ``h`` apart. With ReservoirPy's ``h`` set to
``h (n - 1) / n`` and tight solver tolerances the two agree to the solvers' accuracy over
horizons shorter than the Lyapunov time (the tests check it).

Shapes: ``T`` = ``n_timesteps``.

References:
  Henon (1976). Comm. Math. Phys. 50(1). May (1976). Nature 261. Rossler (1976). Phys.
  Lett. A 57(5). Lorenz (1996). Predictability: a problem partly solved. Chen & Ueta
  (1999) (multiscroll). Chang, Ogorzalek et al. (double scroll). Rabinovich & Fabrikant
  (1979). Jaeger & Haas (2004) (MSO).
"""

from __future__ import annotations

import numpy as np

from rnnjax import checks

__all__ = [
    "henon_map",
    "logistic_map",
    "mso",
    "rossler",
    "lorenz96",
    "multiscroll",
    "doublescroll",
    "rabinovich_fabrikant",
    "kuramoto_sivashinsky",
]


def henon_map(n_timesteps: int, a: float = 1.4, b: float = 0.3, x0=(0.0, 0.0)) -> np.ndarray:
    r"""The Henon map, :math:`x_{n+1} = 1 - a x_n^2 + y_n`, :math:`y_{n+1} = b x_n`.

    Args:
      n_timesteps: ``T >= 1``.
      a, b: the map's parameters.
      x0: the first point ``(x, y)``.

    Returns:
      ``(T, 2)`` float64, row 0 is ``x0``.

    Example:
      >>> from rnnjax.tasks.chaos import henon_map
      >>> henon_map(3).tolist()
      [[0.0, 0.0], [1.0, 0.0], [-0.3999999999999999, 0.3]]
    """
    n = checks.integer("n_timesteps", n_timesteps, 1)
    x0 = _x0("x0", x0, 2)
    s = np.zeros((n, 2))
    s[0] = x0
    for i in range(1, n):
        s[i, 0] = 1 - a * s[i - 1, 0] ** 2 + s[i - 1, 1]
        s[i, 1] = b * s[i - 1, 0]
    return s


def logistic_map(n_timesteps: int, r: float = 3.9, x0: float = 0.5) -> np.ndarray:
    r"""The logistic map :math:`x_{n+1} = r x_n (1 - x_n)`.

    Args:
      n_timesteps: ``T >= 1``.
      r: growth rate ``> 0``.
      x0: first value in ``(0, 1)``.

    Returns:
      ``(T, 1)`` float64.

    Example:
      >>> from rnnjax.tasks.chaos import logistic_map
      >>> logistic_map(3).ravel().tolist()
      [0.5, 0.975, 0.0950625000000001]
    """
    n = checks.integer("n_timesteps", n_timesteps, 1)
    checks.number("r", r, 0.0, min_open=True)
    checks.number("x0", x0, 0.0, 1.0, min_open=True, max_open=True)
    x = np.zeros(n)
    x[0] = x0
    for i in range(1, n):
        x[i] = r * x[i - 1] * (1 - x[i - 1])
    return x[:, None]


def mso(n_timesteps: int, freqs=(0.2, 0.311), normalize: bool = True) -> np.ndarray:
    r"""Multiple superimposed oscillators :math:`\sum_k \sin(f_k t)`, ``t = 0, 1, ...``
    (Jaeger & Haas 2004; MSO2 by default; MSO8 is ``freqs=(0.2, 0.311, 0.42, 0.51,
    0.63, 0.74, 0.85, 0.97)``).

    Args:
      n_timesteps: ``T >= 2``.
      freqs: the angular frequencies.
      normalize: scale the series to ``[-1, 1]``.

    Returns:
      ``(T, 1)`` float64.

    Example:
      >>> from rnnjax.tasks.chaos import mso
      >>> y = mso(100)
      >>> y.shape, float(y.min()), float(y.max())
      ((100, 1), -1.0, 1.0)
    """
    n = checks.integer("n_timesteps", n_timesteps, 2)
    fs = np.asarray(freqs, np.float64).ravel()
    if fs.size == 0:
        raise ValueError("freqs must hold at least one frequency; got an empty sequence")
    checks.boolean("normalize", normalize)
    t = np.arange(n).reshape(n, 1)
    y = np.zeros((n, 1))
    for f in fs:
        y += np.sin(f * t)
    if normalize:
        return (2 * y - y.min() - y.max()) / (y.max() - y.min())
    return y


_FLOW_DOC = """

    Args:
      n_timesteps: ``T``.
      {params}
      x0: {x0}
      h: time between samples.
      substeps: RK4 steps per sample.

    Returns:
      ``(T, 3)`` float64.

    Example:
      >>> from rnnjax.tasks.chaos import {name}
      >>> {name}(30).shape
      (30, 3)
    """


def _flow_doc(params: str, x0: str):
    """Completes the docstring of a three-variable flow sampled by :func:`_integrate`: the
    arguments, return value and example they share stand once, here."""

    def complete(f):
        f.__doc__ = f.__doc__.rstrip() + _FLOW_DOC.format(params=params, x0=x0, name=f.__name__)
        return f

    return complete


def _x0(name, x0, d):
    x = np.asarray(x0, np.float64)
    if x.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},); got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must be finite; got {x.tolist()}")
    return x


def _integrate(rhs, x0, n, h, substeps):
    """RK4 with step ``h / substeps``, sampled every ``h``; row 0 is ``x0``."""
    n = checks.integer("n_timesteps", n, 1)
    checks.number("h", h, 0.0, min_open=True)
    substeps = checks.integer("substeps", substeps, 1)
    dt = h / substeps
    out = np.zeros((n, x0.shape[0]))
    s = x0.copy()
    out[0] = s
    for i in range(1, n):
        with np.errstate(over="ignore", invalid="ignore"):  # a divergence is raised below
            for _ in range(substeps):
                k1 = rhs(s)
                k2 = rhs(s + 0.5 * dt * k1)
                k3 = rhs(s + 0.5 * dt * k2)
                k4 = rhs(s + dt * k3)
                s = s + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if not np.all(np.isfinite(s)):
            raise FloatingPointError(
                f"the integration diverged at step {i} of {n} (h={h:g}, substeps={substeps}): "
                "the step is too large for this system; use a smaller h or more substeps"
            )
        out[i] = s
    return out


@_flow_doc("a, b, c: parameters.", "initial point ``(3,)``.")
def rossler(n_timesteps, a=0.2, b=0.2, c=5.7, x0=(-0.1, 0.0, 0.02), h=0.1, substeps=10):
    r"""The Rossler attractor: :math:`\dot x = -y - z`, :math:`\dot y = x + a y`,
    :math:`\dot z = b + z (x - c)`.
    """
    rhs = lambda s: np.array([-s[1] - s[2], s[0] + a * s[1], b + s[2] * (s[0] - c)])  # noqa: E731
    return _integrate(rhs, _x0("x0", x0, 3), n_timesteps, h, substeps)


def lorenz96(n_timesteps, N=36, F=8.0, dF=0.01, h=0.01, x0=None, warmup=0, substeps=1):
    r"""Lorenz-96: :math:`\dot x_i = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F` (indices mod
    ``N``).

    Args:
      n_timesteps: ``T`` samples returned (after ``warmup``).
      N: number of variables ``>= 4``.
      F: forcing.
      dF: perturbation of ``x_0`` in the default initial point ``F + dF e_0``.
      h: time between samples.
      x0: initial point ``(N,)`` (default ``F`` everywhere, ``F + dF`` at 0).
      warmup: samples dropped at the start.
      substeps: RK4 steps per sample.

    Returns:
      ``(T, N)`` float64.

    Example:
      >>> from rnnjax.tasks.chaos import lorenz96
      >>> lorenz96(20, N=5).shape
      (20, 5)
    """
    N = checks.integer("N", N, 4)
    warmup = checks.integer("warmup", warmup, 0)
    if x0 is None:
        x0 = np.full(N, float(F))
        x0[0] += dF
    x0 = _x0("x0", x0, N)

    def rhs(s):
        return (np.roll(s, -1) - np.roll(s, 2)) * np.roll(s, 1) - s + F

    n = checks.integer("n_timesteps", n_timesteps, 1)
    return _integrate(rhs, x0, n + warmup, h, substeps)[warmup:]


@_flow_doc("a, b, c: parameters.", "initial point ``(3,)``.")
def multiscroll(n_timesteps, a=40.0, b=3.0, c=28.0, x0=(-0.1, 0.5, -0.6), h=0.01, substeps=10):
    r"""Chen's double-scroll (multiscroll) attractor: :math:`\dot x = a (y - x)`,
    :math:`\dot y = (c - a) x - x z + c y`, :math:`\dot z = x y - b z`.
    """

    def rhs(s):
        x, y, z = s
        return np.array([a * (y - x), (c - a) * x - x * z + c * y, x * y - b * z])

    return _integrate(rhs, _x0("x0", x0, 3), n_timesteps, h, substeps)


@_flow_doc("r1, r2, r4, ir, beta: circuit parameters.", "initial point ``(V_1, V_2, I)``.")
def doublescroll(
    n_timesteps,
    r1=1.2,
    r2=3.44,
    r4=0.193,
    ir=2 * 2.25e-5,
    beta=11.6,
    x0=(0.37926545, 0.058339, -0.08167691),
    h=0.25,
    substeps=10,
):
    r"""The double-scroll electronic circuit (Chang et al.): with
    :math:`\Delta V = V_1 - V_2` and :math:`g = \Delta V / R_2 + I_r \sinh(\beta \Delta V)`,
    :math:`\dot V_1 = V_1 / R_1 - g`, :math:`\dot V_2 = g - I`, :math:`\dot I = V_2 - R_4 I`.
    """

    def rhs(s):
        v1, v2, i = s
        g = (v1 - v2) / r2 + ir * np.sinh(beta * (v1 - v2))
        return np.array([v1 / r1 - g, g - i, v2 - r4 * i])

    return _integrate(rhs, _x0("x0", x0, 3), n_timesteps, h, substeps)


@_flow_doc("alpha, gamma: parameters.", "initial point ``(3,)``.")
def rabinovich_fabrikant(n_timesteps, alpha=1.1, gamma=0.89, x0=(-1.0, 0.0, 0.5), h=0.05,
                         substeps=10):  # fmt: skip
    r"""The Rabinovich-Fabrikant equations: :math:`\dot x = y (z - 1 + x^2) + \gamma x`,
    :math:`\dot y = x (3 z + 1 - x^2) + \gamma y`, :math:`\dot z = -2 z (\alpha + x y)`.
    """

    def rhs(s):
        x, y, z = s
        return np.array(
            [y * (z - 1 + x**2) + gamma * x, x * (3 * z + 1 - x**2) + gamma * y,
             -2 * z * (alpha + x * y)]
        )  # fmt: skip

    return _integrate(rhs, _x0("x0", x0, 3), n_timesteps, h, substeps)


def kuramoto_sivashinsky(n_timesteps, warmup=0, N=128, M=16.0, x0=None, h=0.25) -> np.ndarray:
    r"""The Kuramoto-Sivashinsky equation :math:`u_t = -u u_x - u_{xx} - u_{xxxx}` on a
    periodic domain of length :math:`2 \pi M` with ``N`` grid points, integrated by
    exponential time differencing RK4 (Kassam & Trefethen 2005), whose coefficients
    are contour means over ``M`` points of the complex circle (ReservoirPy's choice:
    exact to round-off for the default ``M = 16``).

    Args:
      n_timesteps: ``T`` steps integrated (the first is ``x0``); ``T - warmup`` returned.
      warmup: steps dropped at the start.
      N: grid points (even).
      M: the domain length over :math:`2 \pi` (and the number of contour points).
      x0: initial profile ``(N,)`` (default :math:`\cos(x / M)(1 + \sin(x / M))`).
      h: time step.

    Returns:
      ``(T - warmup, N)`` float64.

    Example:
      >>> from rnnjax.tasks.chaos import kuramoto_sivashinsky
      >>> kuramoto_sivashinsky(20, N=32).shape
      (20, 32)
    """
    n = checks.integer("n_timesteps", n_timesteps, 1)
    warmup = checks.integer("warmup", warmup, 0, n - 1)
    N = checks.integer("N", N, 2)
    if N % 2:
        raise ValueError(f"N must be even; got {N}")
    checks.number("M", M, 0.0, min_open=True)
    checks.number("h", h, 0.0, min_open=True)
    if x0 is None:
        x = 2 * M * np.pi * np.arange(1, N + 1) / N
        x0 = np.cos(x / M) * (1 + np.sin(x / M))
    x0 = _x0("x0", x0, N)
    k = np.concatenate([np.arange(0, N / 2), [0.0], np.arange(-N / 2 + 1, 0)]) / M
    L = k**2 - k**4
    E, E2 = np.exp(h * L), np.exp(h * L / 2)
    n_c = int(M)
    r = np.exp(1j * np.pi * (np.arange(1, n_c + 1) - 0.5) / n_c)
    LR = h * L[:, None] + r[None, :]
    Q = h * np.real(np.mean((np.exp(LR / 2) - 1) / LR, axis=1))
    f1 = h * np.real(np.mean((-4 - LR + np.exp(LR) * (4 - 3 * LR + LR**2)) / LR**3, axis=1))
    f2 = h * np.real(np.mean((2 + LR + np.exp(LR) * (-2 + LR)) / LR**3, axis=1))
    f3 = h * np.real(np.mean((-4 - 3 * LR - LR**2 + np.exp(LR) * (4 - LR)) / LR**3, axis=1))
    g = -0.5j * k

    def nonlin(v):
        return g * np.fft.fft(np.real(np.fft.ifft(v)) ** 2)

    out = np.zeros((n, N))
    v = np.fft.fft(x0)
    out[0] = np.real(np.fft.ifft(v))
    for i in range(1, n):
        Nv = nonlin(v)
        a = E2 * v + Q * Nv
        Na = nonlin(a)
        b = E2 * v + Q * Na
        Nb = nonlin(b)
        c = E2 * a + Q * (2 * Nb - Nv)
        v = E * v + Nv * f1 + 2 * (Na + Nb) * f2 + nonlin(c) * f3
        out[i] = np.real(np.fft.ifft(v))
    return out[warmup:]
