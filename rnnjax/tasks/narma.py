r"""NARMA: the nonlinear autoregressive moving-average benchmark (Atiya & Parlos 2000).

Order ``n``, inputs :math:`u(t) \sim \mathcal{U}[0, 0.5]` i.i.d., coefficients
:math:`(\alpha, \beta, \gamma, \delta)`:

.. math::

    y(t+1) = \alpha\, y(t) + \beta\, y(t) \sum_{i=0}^{n-1} y(t-i)
             + \gamma\, u(t-n+1)\, u(t) + \delta

with ``y(t) = 0`` for the first ``n`` steps. Published coefficients (the default,
``coefficients=None``):

- ``n <= 10``: (0.3, 0.05, 1.5, 0.1): NARMA-10 exactly as in Atiya & Parlos (2000),
  Jaeger (2003) and Verstraeten et al. (2007).
- ``n > 10``: (0.2, 0.004, 1.5, 0.001): the 30th-order system of Atiya & Parlos (2000),
  used for every higher order (NARMA-20, NARMA-30), without a saturating nonlinearity.

``saturate=True`` wraps the right-hand side in ``tanh`` (the form some authors use to keep
NARMA-20 bounded with the NARMA-10 coefficients, e.g. Rodan & Tino 2011 with
(0.3, 0.05, 1.5, 0.01)); pass those through ``coefficients``. The task: from ``u`` up to
``t`` predict ``y(t+1)``; the returned pair is aligned so that ``y[t]`` is the target of
input ``u[t]`` (``y[t] = y(t+1)``).

Divergence guard: the recurrence can blow up for some input draws. A draw whose ``|y|``
exceeds ``bound`` (default 1.0; stable NARMA-10 draws stay below about 0.8) or is not finite
is rejected and the input redrawn from the next seed (``seed + 1000 * attempt``), up to
``max_tries`` times, after which a ``RuntimeError`` is raised. Generated in numpy float64.

References:
  Atiya & Parlos (2000). New results on recurrent network training: unifying the
  algorithms and accelerating convergence. IEEE TNN 11(3).
  Jaeger (2003). Adaptive nonlinear system identification with echo state networks. NIPS.
  Verstraeten, Schrauwen, D'Haene & Stroobandt (2007). An experimental unification of
  reservoir computing methods. Neural Networks 20(3).
  Rodan & Tino (2011). Minimum complexity echo state network. IEEE TNN 22(1).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from rnnjax import checks

__all__ = ["narma", "narma_coefficients"]


def narma_coefficients(order: int) -> tuple:
    """The published ``(alpha, beta, gamma, delta)`` for ``order`` (see the module doc).

    Example:
      >>> from rnnjax.tasks.narma import narma_coefficients
      >>> narma_coefficients(10), narma_coefficients(30)
      ((0.3, 0.05, 1.5, 0.1), (0.2, 0.004, 1.5, 0.001))
    """
    order = checks.integer("order", order, 1)
    return (0.3, 0.05, 1.5, 0.1) if order <= 10 else (0.2, 0.004, 1.5, 0.001)


def _narma_once(u: np.ndarray, order: int, coef, saturate: bool) -> np.ndarray:
    a, b, g, d = coef
    T = u.shape[0]
    y = np.zeros(T + 1, np.float64)  # y[t] = y(t); y[T] is the target of u[T-1]
    for t in range(order - 1, T):
        v = a * y[t] + b * y[t] * np.sum(y[t - order + 1 : t + 1]) + g * u[t - order + 1] * u[t] + d
        y[t + 1] = np.tanh(v) if saturate else v
    return y[1:]


def narma(
    n_samples: int,
    order: int = 10,
    *,
    seed: int = 0,
    bound: float = 1.0,
    max_tries: int = 10,
    coefficients: Optional[Sequence[float]] = None,
    saturate: bool = False,
):
    """Generate a NARMA-``order`` input/target pair.

    Args:
      n_samples: ``T``.
      order: 10 for NARMA-10 (the default); any order ``>= 1``.
      seed: numpy seed of the input draw.
      bound: a draw with ``max |y| > bound`` counts as diverged.
      max_tries: how many draws before giving up.
      coefficients: ``(alpha, beta, gamma, delta)``; default the published ones for the
        order (:func:`narma_coefficients`).
      saturate: wrap the update in ``tanh``.

    Returns:
      ``(u, y)``, two numpy float64 arrays of shape ``(T,)``; ``y[t] = y(t+1)`` is the
      target for input ``u[t]``. The first ``order`` targets are transients; wash them out.

    Raises:
      RuntimeError: every draw diverged.

    Example:
      >>> from rnnjax.tasks.narma import narma
      >>> u, y = narma(1000)
      >>> u.shape, y.shape, bool(abs(y).max() < 1)
      ((1000,), (1000,), True)
      >>> bool(abs(narma(1000, order=30)[1]).max() < 1)
      True
    """
    n_samples = checks.integer("n_samples", n_samples, 1)
    order = checks.integer("order", order, 1)
    max_tries = checks.integer("max_tries", max_tries, 1)
    bound = checks.number("bound", bound, 0.0, min_open=True)
    saturate = checks.boolean("saturate", saturate)
    if coefficients is None:
        coef = narma_coefficients(order)
    else:
        try:
            coef = tuple(float(c) for c in coefficients)
        except (TypeError, ValueError):
            raise TypeError(f"coefficients must be 4 numbers; got {coefficients!r}") from None
        if len(coef) != 4:
            raise ValueError(f"coefficients must be (alpha, beta, gamma, delta); got {coef}")
        for name, c in zip(("alpha", "beta", "gamma", "delta"), coef):
            checks.number(f"coefficients {name}", c)
    for attempt in range(max_tries):
        rng = np.random.default_rng(seed + 1000 * attempt)
        u = rng.uniform(0.0, 0.5, n_samples)
        with np.errstate(over="ignore", invalid="ignore"):
            y = _narma_once(u, order, coef, saturate)
        if np.all(np.isfinite(y)) and np.max(np.abs(y)) <= bound:
            return u, y
    raise RuntimeError(
        f"NARMA-{order} diverged (|y| > {bound}) for all {max_tries} input draws from seed "
        f"{seed}; try another seed or a larger bound"
    )
