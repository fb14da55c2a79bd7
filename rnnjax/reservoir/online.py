r"""Online readouts: recursive least squares (FORCE) and least mean squares.

Both learn while the reservoir runs, so the readout (and RLS's inverse-correlation matrix
``P``) is inside the loop: one ``lax.scan`` kernel serves both rules. With output feedback
the fed-back value is the teacher (``feedback="teacher"``) or the readout's output just
after its update (``feedback="output"``: FORCE, Sussillo & Abbott 2009; ReservoirPy's
online nodes feed back the same post-update output).

Shapes: ``T`` time, ``I`` input size, ``N`` reservoir size, ``O`` outputs, ``F`` feedback
size.

References:
  Sussillo & Abbott (2009). Generating coherent patterns of activity from chaotic neural
  networks. Neuron 63(4). Widrow & Hoff (1960). Adaptive switching circuits.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks
from rnnjax.reservoir.drivers import call, setup, step_noise

__all__ = ["fit_rls", "fit_lms"]


@functools.partial(jax.jit, static_argnames=("cell", "rule", "force"))
def _online_jit(
    cell, params, us, state, teacher, key, ys, washout, rate, forgetting, *, rule, force
):
    """``rule="rls"``: ``rate`` is ``delta`` (``P_0 = I / delta``); ``rule="lms"``:
    ``rate`` is the learning rate. Returns ``(readout, state)``."""
    N, O = cell.hidden_size, ys.shape[1]
    accum = jnp.result_type(float)  # float64 under the x64 context
    dt = state.h.dtype
    P0 = jnp.eye(N + 1, dtype=accum) / rate if rule == "rls" else jnp.zeros((0, 0), accum)
    W0 = jnp.zeros((N + 1, O), accum)

    def body(carry, inp):
        st, W, P = carry
        t, u, y, yt = inp
        st, h = cell.recur(params, st, cell.project(params, u), noise=step_noise(cell, key, t, dt))
        z = jnp.concatenate([h.astype(accum), jnp.ones((1,), accum)])
        e = y.astype(accum) - z @ W
        on = t >= washout
        if rule == "rls":
            Pz = P @ z
            k = Pz / (forgetting + z @ Pz)
            W = jnp.where(on, W + jnp.outer(k, e), W)
            P = jnp.where(on, (P - jnp.outer(k, Pz)) / forgetting, P)
            P = 0.5 * (P + P.T)  # keep P symmetric against round-off drift
        else:
            W = jnp.where(on, W + rate * jnp.outer(z, e), W)
        if cell.feedback_size:
            fb = (z @ W) if force else yt  # FORCE: feed back the (just updated) output
            st = st._replace(y=fb.astype(dt))
        return (st, W, P), None

    tf = teacher if teacher is not None else jnp.zeros((us.shape[0], 0), dt)
    xs = (jnp.arange(us.shape[0]), us, ys, tf)
    (st, W, _), _ = jax.lax.scan(body, (state, W0, P0), xs)
    return {"w_out": W[:-1], "b_out": W[-1]}, st


def _online(cell, params, us, ys, state, washout, rate, forgetting, feedback, teacher, key,
            precision, rule):  # fmt: skip
    checks.choice("feedback", feedback, ("teacher", "output"))
    s = setup(
        cell, params, us, state, key=key, ys=ys, teacher=teacher, washout=washout,
        precision=precision,
    )  # fmt: skip
    readout, st = call(
        _online_jit, s, s.ys, washout, rate, forgetting, x64=precision, rule=rule,
        force=feedback == "output",
    )  # fmt: skip
    w = readout["w_out"]
    if checks.is_concrete(w) and not bool(np.all(np.isfinite(np.asarray(w)))):
        what = "learning_rate" if rule == "lms" else "delta"
        raise FloatingPointError(
            f"the {rule.upper()} readout is not finite ({what}={rate:g}): the targets or "
            f"inputs hold NaN/Inf, or the updates diverged (for LMS, a learning_rate too "
            "large for the features' scale: try a smaller one, or fit_ridge)"
        )
    return readout, st


def fit_rls(
    cell,
    params,
    us,
    ys,
    state=None,
    *,
    washout: int = 0,
    delta: float = 1e-6,
    forgetting: float = 1.0,
    feedback: str = "teacher",
    teacher=None,
    key=None,
    precision: str = "float64",
):
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
      delta: initial regulariser, ``P_0 = I / delta``, ``> 0``: the ridge penalty of the
        final readout (default ``1e-6``, ReservoirPy's ``alpha``; FORCE needs a small one).
      forgetting: :math:`\mu \in (0, 1]`.
      feedback: ``"teacher"`` or ``"output"`` (only used with output feedback).
      precision: ``"float64"`` (default) or ``"float32"`` for ``W`` and ``P``.

    Returns:
      ``(readout, state)`` as :func:`fit_ridge`.

    Raises:
      FloatingPointError: the readout is not finite (non-finite targets or inputs, or
        updates that diverged).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = reservoir.fit_rls(cell, params, u[:-1], u[1:], washout=50)
      >>> readout["w_out"].shape                            # (N, O)
      (20, 1)
    """
    checks.number("delta", delta, 0.0, min_open=True)
    checks.number("forgetting", forgetting, 0.0, 1.0, min_open=True)
    return _online(cell, params, us, ys, state, washout, delta, forgetting, feedback, teacher,
                   key, precision, "rls")  # fmt: skip


def fit_lms(
    cell,
    params,
    us,
    ys,
    state=None,
    *,
    learning_rate: float = 1e-6,
    washout: int = 0,
    feedback: str = "teacher",
    teacher=None,
    key=None,
    precision: str = "float64",
):
    r"""Online readout by least mean squares (Widrow-Hoff; ReservoirPy's ``LMS``).

    With features :math:`z_t = [h_t, 1]` and learning rate :math:`\eta`, at every step
    ``t >= washout``: :math:`W \leftarrow W + \eta\, z_t (y_t - W^\top z_t)^\top` (the
    bias is the last row and learns at the same rate, as ReservoirPy's ``fit_bias``).

    Args:
      cell, params, us, ys, state, key, teacher, washout: as in :func:`fit_rls`.
      learning_rate: :math:`\eta > 0` (default ``1e-6``, ReservoirPy's default).
      feedback: ``"teacher"`` or ``"output"`` (only used with output feedback).
      precision: ``"float64"`` (default) or ``"float32"`` for ``W``.

    Returns:
      ``(readout, state)``: ``{"w_out": (N, O), "b_out": (O,)}`` and the last state.

    Example:
      Two inputs, three targets: the readout maps ``N`` reservoir units to ``O = 3``.

      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=2, hidden_size=8)
      >>> us = jnp.cos(jnp.arange(100.0) / 7)[:, None] * jnp.array([1.0, -1.0])  # (T, I)
      >>> ys = jnp.stack([us[:, 0], us[:, 1], us[:, 0] ** 2], axis=1)            # (T, O)
      >>> r, _ = reservoir.fit_lms(cell, cell.init(jax.random.key(1)), us, ys, learning_rate=0.01)
      >>> r["w_out"].shape, r["b_out"].shape                # (N, O), (O,)
      ((8, 3), (3,))
    """
    checks.number("learning_rate", learning_rate, 0.0, min_open=True)
    return _online(cell, params, us, ys, state, washout, learning_rate, 1.0, feedback, teacher,
                   key, precision, "lms")  # fmt: skip
