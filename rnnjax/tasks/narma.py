r"""NARMA: the nonlinear autoregressive moving-average benchmark (Atiya & Parlos 2000).

NARMA-10, exactly as in Jaeger (2003) and Verstraeten et al. (2007):

.. math::

    y(t+1) = 0.3\, y(t) + 0.05\, y(t) \sum_{i=0}^{9} y(t-i) + 1.5\, u(t-9)\, u(t) + 0.1,
    \qquad u(t) \sim \mathcal{U}[0, 0.5] \text{ i.i.d.}

with ``y(t) = 0`` for the first ``order`` steps. The general order-``n`` form
(coefficients 0.3, 0.05, 1.5, 0.1; sum over ``n`` terms, ``u(t - n + 1)``) is available
through ``order``. The task: from ``u`` up to ``t`` predict ``y(t+1)``; the returned
pair is aligned so that ``y[t]`` is the target of input ``u[t]`` (``y[t] = y(t+1)``).

Divergence guard: the recurrence is known to blow up for some input draws (more often
for larger orders). A draw whose ``|y|`` exceeds ``bound`` (default 1.0; stable NARMA-10
draws stay below about 0.8) or is not finite is rejected and the input redrawn from the next
seed (``seed + 1000 * attempt``), up to ``max_tries`` times, after which a
``RuntimeError`` is raised. Generated in numpy float64 on the host.

References:
  Atiya & Parlos (2000). New results on recurrent network training. IEEE TNN 11(3).
  Jaeger (2003). Adaptive nonlinear system identification with echo state networks. NIPS.
  Verstraeten, Schrauwen, D'Haene & Stroobandt (2007). An experimental unification of
  reservoir computing methods. Neural Networks 20(3).
"""

from __future__ import annotations

import numpy as np

__all__ = ["narma"]


def _narma_once(u: np.ndarray, order: int) -> np.ndarray:
    T = u.shape[0]
    y = np.zeros(T + 1, np.float64)  # y[t] = y(t); y[T] is the target of u[T-1]
    for t in range(order - 1, T):
        y[t + 1] = (
            0.3 * y[t]
            + 0.05 * y[t] * np.sum(y[t - order + 1 : t + 1])
            + 1.5 * u[t - order + 1] * u[t]
            + 0.1
        )
    return y[1:]


def narma(n_samples: int, order: int = 10, *, seed: int = 0, bound: float = 1.0,
          max_tries: int = 10):
    """Generate a NARMA-``order`` input/target pair.

    Args:
      n_samples: ``T``.
      order: 10 for NARMA-10 (the default).
      seed: numpy seed of the input draw.
      bound: a draw with ``max |y| > bound`` counts as diverged.
      max_tries: how many draws before giving up.

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
    """
    for name, v, lo in (("n_samples", n_samples, 1), ("order", order, 1), ("max_tries", max_tries, 1)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise ValueError(f"{name} must be an int >= {lo}; got {v!r}")
    if not float(bound) > 0:
        raise ValueError(f"bound must be > 0; got {bound!r}")
    for attempt in range(max_tries):
        rng = np.random.default_rng(seed + 1000 * attempt)
        u = rng.uniform(0.0, 0.5, n_samples)
        with np.errstate(over="ignore", invalid="ignore"):
            y = _narma_once(u, order)
        if np.all(np.isfinite(y)) and np.max(np.abs(y)) <= bound:
            return u, y
    raise RuntimeError(
        f"NARMA-{order} diverged (|y| > {bound}) for all {max_tries} input draws from seed "
        f"{seed}; try another seed or a larger bound"
    )
