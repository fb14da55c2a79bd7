r"""The short-term memory capacity task (Jaeger 2002).

An i.i.d. input ``u(t) ~ U[low, high]`` drives the reservoir and readout ``k`` is trained
to output ``u(t - k)`` for ``k = 1 .. max_delay``. The memory capacity is

.. math::

    MC = \sum_{k=1}^{K} r^2\big(u(t-k), y_k(t)\big)

(:func:`rnnjax.metrics.memory_capacity`). Jaeger (2002) proves ``MC <= N`` for a
reservoir of ``N`` units with i.i.d. input, with near-equality for linear reservoirs.

References:
  Jaeger (2002). Short term memory in echo state networks. GMD Report 152.
"""

from __future__ import annotations

import numpy as np

__all__ = ["memory_task"]


def memory_task(
    n_samples: int, max_delay: int, *, seed: int = 0, low: float = -0.5, high: float = 0.5
):
    """Input and delayed targets for the memory capacity task.

    Args:
      n_samples: ``T``.
      max_delay: ``K``, the longest delay.
      seed: numpy seed.
      low, high: the input's uniform range.

    Returns:
      ``(u, targets)``: numpy float64 ``u`` ``(T,)`` and ``targets`` ``(T, K)`` with
      ``targets[t, k - 1] = u[t - k]``, and 0 for ``t < k`` (wash out at least ``K``
      steps so the zeros never count).

    Example:
      >>> from rnnjax.tasks.memory import memory_task
      >>> u, y = memory_task(100, 5)
      >>> bool((y[10:, 2] == u[7:97]).all())
      True
    """
    for name, v in (("n_samples", n_samples), ("max_delay", max_delay)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name} must be an int >= 1; got {v!r}")
    if max_delay >= n_samples:
        raise ValueError(f"max_delay must be smaller than n_samples = {n_samples}; got {max_delay}")
    if not high > low:
        raise ValueError(f"high must be > low; got low={low!r}, high={high!r}")
    rng = np.random.default_rng(seed)
    u = rng.uniform(low, high, n_samples)
    targets = np.zeros((n_samples, max_delay), np.float64)
    for k in range(1, max_delay + 1):
        targets[k:, k - 1] = u[:-k]
    return u, targets
