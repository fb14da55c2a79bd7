r"""Lorenz-63: the chaotic forecasting benchmark of next-generation reservoir computing.

.. math::

    \dot x = \sigma (y - x), \qquad \dot y = x (\rho - z) - y, \qquad \dot z = x y - \beta z

with :math:`\sigma = 10`, :math:`\rho = 28`, :math:`\beta = 8/3`, integrated by the classic
fourth-order Runge-Kutta scheme with step ``dt / substeps`` and sampled every ``dt`` time
units (default ``dt = 0.025``, one RK4 step per sample, as Gauthier et al. 2021), after
``discard`` samples of transient from ``x0``. The largest Lyapunov exponent is
:data:`LYAPUNOV_EXPONENT` = 0.9056 (Viswanath 1998), so one Lyapunov time is 1.104 time
units (about 44 samples at ``dt = 0.025``). Generated in numpy float64.

References:
  Lorenz (1963). Deterministic nonperiodic flow. J. Atmos. Sci. 20(2).
  Gauthier, Bollt, Griffith & Barbosa (2021). Next generation reservoir computing. Nat. Commun.
  Pathak, Hunt, Girvan, Lu & Ott (2018). Model-free prediction of large spatiotemporally
  chaotic systems from data. PRL 120 (valid prediction time).
"""

from __future__ import annotations

import numpy as np

from rnnjax import checks

__all__ = ["lorenz63", "valid_prediction_time", "LYAPUNOV_EXPONENT"]

LYAPUNOV_EXPONENT = 0.9056


def _rhs(s, sigma, rho, beta):
    x, y, z = s
    return np.array([sigma * (y - x), x * (rho - z) - y, x * y - beta * z])


def lorenz63(
    n_samples: int,
    *,
    dt: float = 0.025,
    substeps: int = 1,
    discard: int = 1000,
    x0=(1.0, 1.0, 1.0),
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8.0 / 3.0,
) -> np.ndarray:
    """A Lorenz-63 trajectory ``(T, 3)`` sampled every ``dt`` (RK4, ``substeps`` per sample).

    Example:
      >>> from rnnjax.tasks.lorenz import lorenz63
      >>> x = lorenz63(400)
      >>> x.shape, bool(abs(x[:, 0]).max() < 25)
      ((400, 3), True)
    """
    n_samples = checks.integer("n_samples", n_samples, 1)
    substeps = checks.integer("substeps", substeps, 1)
    discard = checks.integer("discard", discard, 0)
    dt = checks.number("dt", dt, 0.0, min_open=True)
    h = dt / substeps
    s = np.asarray(x0, np.float64)
    if s.shape != (3,):
        raise ValueError(f"x0 must be 3 numbers; got {x0!r}")
    out = np.empty((n_samples, 3))
    for i in range(discard + n_samples):
        for _ in range(substeps):
            k1 = _rhs(s, sigma, rho, beta)
            k2 = _rhs(s + 0.5 * h * k1, sigma, rho, beta)
            k3 = _rhs(s + 0.5 * h * k2, sigma, rho, beta)
            k4 = _rhs(s + h * k3, sigma, rho, beta)
            s = s + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
        if i >= discard:
            out[i - discard] = s
    return out


def valid_prediction_time(
    pred, truth, dt: float, *, threshold: float = 0.4, lyapunov_exponent: float = LYAPUNOV_EXPONENT
) -> float:
    r"""Valid prediction time in Lyapunov times (Pathak et al. 2018).

    The first step ``k`` at which the normalised error
    :math:`\|\hat y_k - y_k\| / \sqrt{\langle \|y\|^2 \rangle}` (average over ``truth``)
    exceeds ``threshold``, times ``dt * lyapunov_exponent``; the whole horizon if never.

    Example:
      >>> import numpy as np
      >>> from rnnjax.tasks.lorenz import valid_prediction_time
      >>> y = np.ones((100, 3)); p = y.copy(); p[50:] += 10
      >>> round(valid_prediction_time(p, y, 0.025), 4)
      1.132
    """
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    if pred.shape != truth.shape or pred.ndim != 2:
        raise ValueError(
            f"pred and truth must have the same shape (T, D); got {pred.shape} and {truth.shape}"
        )
    dt = checks.number("dt", dt, 0.0, min_open=True)
    scale = np.sqrt(np.mean(np.sum(truth**2, axis=1)))
    err = np.linalg.norm(pred - truth, axis=1) / scale
    bad = np.nonzero(err > threshold)[0]
    k = bad[0] if bad.size else len(err)
    return float(k * dt * lyapunov_exponent)
