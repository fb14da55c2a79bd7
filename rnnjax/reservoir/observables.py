r"""Observables of a reservoir and of its predictions.

:func:`echo_state_property` (do two initial states converge under the same input?),
:func:`effective_spectral_radius` (the spectral radius of the leaky reservoir's linear
part, ``(1 - a) I + a W``), and the error measures of ReservoirPy's ``observables`` that
:mod:`rnnjax.metrics` lacks: :func:`rsquare`, :func:`mae` (``mse``, ``nrmse`` and
``memory_capacity`` are in :mod:`rnnjax.metrics`).

Shapes: ``T`` time, ``N`` reservoir size, ``O`` outputs.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks
from rnnjax.reservoir.drivers import _fit_jit, call, setup

__all__ = ["ESPResult", "echo_state_property", "effective_spectral_radius", "rsquare", "mae"]


class ESPResult(NamedTuple):
    """Result of :func:`echo_state_property`.

    Attributes:
      distance: ``(T,)`` Euclidean distance between the two runs' states after each step.
      converged: whether ``distance[-1] <= tol * distance[0]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> result = reservoir.observables.ESPResult(distance=jnp.array([1.0, 0.1, 1e-7]), converged=jnp.array(True))
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

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20, spectral_radius=0.8)
      >>> params = cell.init(jax.random.key(0))
      >>> result = reservoir.echo_state_property(cell, params, jnp.ones((200, 1)), jax.random.key(1))
      >>> result.distance.shape, bool(result.converged)     # (T,)
      ((200,), True)

    References:
      Jaeger (2001), GMD Report 148; Yildiz, Jaeger & Kiebel (2012). Re-visiting the echo
      state property. Neural Networks 35.
    """
    s = setup(cell, params, us)
    checks.number("tol", tol, 0.0, min_open=True)
    ka, kb = jax.random.split(key)
    N, dt = cell.hidden_size, s.state.h.dtype
    sa = s.state._replace(h=jax.random.uniform(ka, (N,), dt, -1.0, 1.0))
    sb = s.state._replace(h=jax.random.uniform(kb, (N,), dt, -1.0, 1.0))
    _, ha = call(_fit_jit, s._replace(state=sa), mode="harvest", precision="float32")
    _, hb = call(_fit_jit, s._replace(state=sb), mode="harvest", precision="float32")
    d = jnp.linalg.norm(ha - hb, axis=-1)
    return ESPResult(distance=d, converged=d[-1] <= tol * jnp.linalg.norm(sa.h - sb.h))


def effective_spectral_radius(w, leak_rate: float = 1.0) -> float:
    r"""Spectral radius of ``(1 - a) I + a W``: the linearised leaky reservoir's
    contraction near the origin (ReservoirPy's ``effective_spectral_radius``).

    Computed with LAPACK in float64 on the host.

    Args:
      w: the recurrent matrix ``(N, N)`` in the math orientation (``W @ x``).
      leak_rate: :math:`a \in (0, 1]`.

    Returns:
      The largest eigenvalue modulus, a Python float.

    Example:
      >>> import numpy as np
      >>> from rnnjax import reservoir
      >>> round(reservoir.effective_spectral_radius(0.9 * np.eye(3), leak_rate=0.5), 6)
      0.95
    """
    w = checks.floating_array("w", w, 2, " (N, N)")
    if w.shape[0] != w.shape[1]:
        raise ValueError(f"w must be square (N, N); got {checks.describe(w)}")
    checks.number("leak_rate", leak_rate, 0.0, 1.0, min_open=True)
    if not bool(np.all(np.isfinite(np.asarray(w)))):
        raise ValueError(f"w must be finite; got {checks.describe(w)} holding NaN or Inf")
    a = float(leak_rate)
    m = (1 - a) * np.eye(w.shape[0]) + a * np.asarray(w, np.float64)
    return float(np.max(np.abs(np.linalg.eigvals(m))))


def _pair(y_true, y_pred):
    y_true = np.asarray(checks.floating_array("y_true", y_true), np.float64)
    y_pred = np.asarray(checks.floating_array("y_pred", y_pred), np.float64)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_pred must have the shape of y_true {y_true.shape}; got {y_pred.shape}")
    if y_true.size == 0:
        raise ValueError("y_true must hold at least one value; got an empty array")
    return y_true, y_pred


def rsquare(y_true, y_pred) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` over all entries.

    Args:
      y_true: targets, any shape.
      y_pred: predictions, the same shape.

    Returns:
      A Python float (1 for a perfect prediction).

    Example:
      >>> from rnnjax import reservoir
      >>> reservoir.rsquare([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
      1.0
    """
    t, p = _pair(y_true, y_pred)
    return float(1.0 - np.sum((t - p) ** 2) / np.sum((t - t.mean()) ** 2))


def mae(y_true, y_pred) -> float:
    """Mean absolute error over all entries, in float64.

    Args:
      y_true: targets, any shape.
      y_pred: predictions, the same shape.

    Returns:
      A Python float.

    Example:
      >>> from rnnjax import reservoir
      >>> reservoir.mae([0.0, 0.0], [1.0, -3.0])
      2.0
    """
    t, p = _pair(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))
