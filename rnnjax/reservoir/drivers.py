r"""Drivers of a reservoir: the shared preamble, the teacher-forced run, harvest and fits.

Every teacher-forced run (:func:`harvest`, :func:`ridge_stats`, :func:`fit_ridge`,
:func:`fit_readouts`, and :func:`rnnjax.reservoir.predict` with the true inputs) goes
through the shared engine (:func:`rnnjax.engine.run`) with the private cell
:class:`rnnjax.reservoir.cell.Drive`: the input product, bias, teacher-forced feedback and
noise are summed into one drive outside the loop (under teacher forcing the fed-back value
``y_{t-1}`` is data, so it is input), and the loop only recurs. The free run
(:mod:`rnnjax.reservoir.freerun`) and the online readouts (:mod:`rnnjax.reservoir.online`)
keep their own ``lax.scan``, because the readout sits inside their loop.

Every public driver starts with :func:`~rnnjax.reservoir.preamble.setup` (argument checks, the cast to the parameter
dtype, the initial state, the targets and teacher, the runtime cell) and calls its jitted
kernel through :func:`~rnnjax.reservoir.preamble.call` (the readout's precision switched on around it): the kernels
all take ``(cell, params, us, state, teacher, key, ...)``.

Precision. The reservoir runs in the parameter dtype (float32). The readout (the
``Z^T Z`` accumulation, the solve and the readout product) runs in float64 by default
(``precision="float64"``), switching on ``jax.enable_x64`` around its own jitted
computation only; ``precision="float32"`` keeps everything float32 (the solve centres the
sums and falls back to an eigendecomposition, see :mod:`rnnjax.reservoir.readouts`).

Shapes: ``T`` time, ``B`` batch, ``I`` input size, ``N`` reservoir size, ``O`` outputs,
``F`` feedback size.

References:
  Jaeger (2001). GMD Report 148. Lukosevicius (2012). A practical guide to applying echo
  state networks.
"""

from __future__ import annotations

import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax.reservoir.readouts as ro
from rnnjax import checks, engine
from rnnjax.reservoir.cell import Drive, DriveState, EchoState, EchoStateState
from rnnjax.reservoir.preamble import (  # noqa: F401  (check_*: sweeps and nvar use them)
    call,
    check_cell,
    check_inputs,
    check_precision,
    check_series,
    setup,
)

__all__ = ["harvest", "ridge_stats", "fit_ridge", "fit_readouts"]


# --------------------------------------------------------------------------- core run


def drive(cell, params, us, fb_prev, key, t0, in_scale=None, b_scale=None):
    """The non-recurrent part of every step, ``(C, N)`` (``(C, M, N)`` with per-model
    ``in_scale``/``b_scale`` ``(M,)``): ``u W_in + b + y_{t-1} W_fb + noise``."""
    C, N = us.shape[0], cell.hidden_size
    d = us @ params["w_in"]
    b = params["b"]
    if in_scale is not None:
        d = d[:, None, :] * in_scale[None, :, None].astype(d.dtype)
        b = b[None, :] * b_scale[:, None].astype(d.dtype)
    d = d + b[None]
    if fb_prev is not None:
        fb = fb_prev @ params["w_fb"]
        d = d + (fb if in_scale is None else fb[:, None, :])
    if key is not None and cell.noise > 0:
        ts = t0 + jnp.arange(C)
        xi = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(key, t), (N,), d.dtype))(ts)
        d = d + cell.noise * (xi if in_scale is None else xi[:, None, :])
    return d


def step_noise(cell, key, t, dtype):
    """The state noise of global step ``t`` (``None`` without a key or noise): the same
    draw as :func:`drive`'s, so the loops with the readout inside see the same noise."""
    if key is None or cell.noise <= 0:
        return None
    return cell.noise * jax.random.normal(jax.random.fold_in(key, t), (cell.hidden_size,), dtype)


def teacher_forced(cell, params, state, us, teacher, key, t0=0, T_valid=None):
    """Run ``us (C, I)`` from global step ``t0`` through the engine; the feedback of step
    ``t`` is ``teacher[t-1]`` (``state.y`` at the first step; ``state.y`` throughout
    without a teacher). Steps at or after ``T_valid`` leave the state unchanged.
    Returns ``(state, hs (C, N))``."""
    C = us.shape[0]
    fb_prev = None
    y_new = state.y
    if cell.feedback_size:
        if teacher is None:
            fb_prev = jnp.broadcast_to(state.y, (C,) + state.y.shape)
        else:
            fb_prev = jnp.concatenate([state.y[None], teacher[:-1]], axis=0)
            last = C - 1 if T_valid is None else jnp.clip(T_valid - t0 - 1, -1, C - 1)
            y_new = jnp.where(last >= 0, teacher[jnp.maximum(last, 0)], state.y)
    d = drive(cell, params, us, fb_prev, key, t0)
    valid = None if T_valid is None else (t0 + jnp.arange(C)) < T_valid
    st, hs = engine.run(Drive(cell), params, DriveState(state.h), d, valid=valid)
    return EchoStateState(h=st.h, y=y_new.astype(state.y.dtype)), hs


def padded_chunks(x, C, n):
    pad = n * C - x.shape[0]
    if pad:
        x = jnp.concatenate([x, jnp.zeros((pad,) + x.shape[1:], x.dtype)])
    return x.reshape((n, C) + x.shape[1:])


def stats_run(
    cell, params, us, ys, teacher, state, washout, chunk, accum, key, with_input, qr=False
):
    """Run and accumulate centred :class:`~rnnjax.reservoir.readouts.Moments` chunk by
    chunk (``chunk`` states alive at a time). Returns ``(moments, state)``."""
    T, N = us.shape[0], cell.hidden_size
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T
    F = N + (cell.input_size if with_input else 0)

    def body(carry, inp):
        st, mom = carry
        c, u_c, y_c, tf_c = inp
        t0 = c * C
        st, H = teacher_forced(cell, params, st, u_c, tf_c, key, t0, T if pad else None)
        t = t0 + jnp.arange(C)
        m = (t >= washout) & (t < T)
        mom = ro.acc_add(mom, ro.features(H, u_c if with_input else None), y_c, m)
        return (st, mom), None

    init = (state, ro.acc_init(F, ys.shape[1], accum, qr))
    tf = None if teacher is None else padded_chunks(teacher, C, n)
    xs = (jnp.arange(n), padded_chunks(us, C, n), padded_chunks(ys, C, n), tf)
    (st, mom), _ = jax.lax.scan(body, init, xs)
    return mom, st


# --------------------------------------------------------------------------- jitted kernel


@functools.partial(
    jax.jit, static_argnames=("mode", "chunk", "precision", "with_input", "splits", "cell")
)
def _fit_jit(
    cell,
    params,
    us,
    state,
    teacher,
    key,
    ys=None,
    washout=0,
    ridges=None,
    *,
    mode,
    chunk=1024,
    precision,
    with_input=False,
    splits=None,
):
    """The one teacher-forced kernel. ``mode``: ``"harvest"`` (every state), ``"stats"``
    (the ridge statistics), ``"fit"`` (one ridge value) or ``"many"`` (target block ``k``,
    columns ``splits[k]``, gets ridge ``ridges[k]``; one eigendecomposition)."""
    if mode == "harvest":
        return teacher_forced(cell, params, state, us, teacher, key)
    state0 = state
    mom, state = stats_run(
        cell, params, us, ys, teacher, state, washout, chunk, ro.accum_dtype(precision), key,
        with_input,
    )  # fmt: skip
    if mode == "stats":
        return ro.acc_to_stats(mom), state
    if mode == "fit":
        out = ro.acc_solve(mom, ridges)

        def by_qr(_):  # the same run again, accumulating the R factor (same noise key)
            args = (us, ys, teacher, state0, washout, chunk, ro.accum_dtype(precision), key)
            return ro.acc_solve(stats_run(cell, params, *args, with_input, qr=True)[0], ridges)

        if isinstance(mom, ro.Moments):
            out = jax.lax.cond(ro.needs_qr(mom, out[1]), by_qr, lambda _: out, None)
        return out[0], state, out[1]
    return ro.acc_solve_many(mom, ridges, splits), state


# --------------------------------------------------------------------------- public API


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
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=8)
      >>> _, hs = reservoir.harvest(cell, cell.init(jax.random.key(0)), jnp.ones((5, 1)))
      >>> hs.shape
      (5, 8)
    """
    s = setup(cell, params, us, state, key=key, teacher=teacher)
    return call(_fit_jit, s, mode="harvest", precision="float32")


def ridge_stats(
    cell,
    params,
    us,
    ys,
    state=None,
    *,
    washout: int = 0,
    teacher=None,
    key=None,
    chunk_size: int = 1024,
    precision: str = "float64",
    include_input: bool = False,
):
    """Accumulate ``Z^T Z`` and ``Z^T Y`` chunk by chunk while running the reservoir.

    Only ``chunk_size`` states exist at a time, so memory is ``O(chunk_size * N + N^2)``
    whatever ``T``. Stats of several series add up (sum the fields), then
    :func:`rnnjax.reservoir.solve_ridge`.

    Args:
      cell, params, us, state, key: as in :func:`harvest`.
      ys: targets ``(T, O)``; ``ys[t]`` is what the readout of ``h_t`` should output.
      washout: number of initial steps left out (the reservoir still runs through them).
      teacher: ``(T, F)`` fed-back values; defaults to ``ys`` when the cell has feedback.
      chunk_size: steps per chunk.
      precision: ``"float64"`` (default) or ``"float32"`` accumulation.
      include_input: features ``[h_t, u_t, 1]`` instead of ``[h_t, 1]``.

    Returns:
      ``(RidgeStats, state)``: the stats and the reservoir state after the last step.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=10)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(100.0) / 5)[:, None]
      >>> stats, state = reservoir.ridge_stats(cell, params, u[:-1], u[1:], washout=10, chunk_size=32)
      >>> readout = reservoir.solve_ridge(stats, 1e-6)
      >>> readout["w_out"].shape, readout["b_out"].shape    # (N, O), (O,)
      ((10, 1), (1,))
    """
    s = setup(
        cell, params, us, state, key=key, ys=ys, teacher=teacher, washout=washout,
        precision=precision, chunk_size=chunk_size, include_input=include_input,
    )  # fmt: skip
    return call(
        _fit_jit, s, s.ys, washout, x64=precision, precision=precision, mode="stats", chunk=chunk_size,
        with_input=include_input,
    )  # fmt: skip


def fit_ridge(
    cell,
    params,
    us,
    ys,
    state=None,
    *,
    ridge: float,
    washout: int = 0,
    teacher=None,
    key=None,
    chunk_size: int = 1024,
    precision: str = "float64",
    include_input: bool = False,
):
    """Fit a ridge readout by teacher forcing: run, accumulate, solve, in one jitted call.

    The solve centres the accumulated sums and uses a checked Cholesky with an
    eigendecomposition fallback (:mod:`rnnjax.reservoir.readouts`).

    Args:
      as :func:`ridge_stats` and :func:`rnnjax.reservoir.solve_ridge`.

    Returns:
      ``(readout, state)``: ``{"w_out": (F, O), "b_out": (O,)}`` (``F = N``, or ``N + I``
      with ``include_input``) and the state after the last step (to continue into a test
      segment).

    Raises:
      FloatingPointError: the solution is not finite (the run diverged).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = reservoir.fit_ridge(cell, params, u[:-1], u[1:], ridge=1e-6, washout=50)
      >>> readout["w_out"].shape
      (20, 1)
    """
    ridge = ro.check_ridge(ridge)
    s = setup(
        cell, params, us, state, key=key, ys=ys, teacher=teacher, washout=washout,
        precision=precision, chunk_size=chunk_size, include_input=include_input,
    )  # fmt: skip
    readout, state, info = call(
        _fit_jit, s, s.ys, washout, ridge, x64=precision, precision=precision, mode="fit", chunk=chunk_size,
        with_input=include_input,
    )  # fmt: skip
    ro.check_solution(readout, info, ridge)
    return readout, state


def fit_readouts(
    cell,
    params,
    us,
    targets: Mapping,
    state=None,
    *,
    ridge,
    washout: int = 0,
    teacher=None,
    key=None,
    chunk_size: int = 1024,
    precision: str = "float64",
    include_input: bool = False,
):
    """Several readouts fitted on ONE reservoir run and one eigendecomposition.

    Args:
      cell, params, us, state, washout, key: as :func:`fit_ridge`.
      teacher: as :func:`fit_ridge`; required with feedback.
      chunk_size, precision, include_input: as :func:`fit_ridge`.
      targets: ``{name: ys (T, O_k)}``.
      ridge: one value for all, or ``{name: value}``.

    Returns:
      ``({name: readout}, state)``; each readout equals ``fit_ridge`` on its targets.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20)
      >>> u = jnp.sin(jnp.arange(200.0) / 5)[:, None]
      >>> outs, _ = reservoir.fit_readouts(cell, cell.init(jax.random.key(0)), u[:-2],
      ...                            {"next": u[1:-1], "after": u[2:]}, ridge=1e-6)
      >>> sorted(outs), outs["after"]["w_out"].shape
      (['after', 'next'], (20, 1))
    """
    if not isinstance(targets, Mapping) or not targets:
        raise TypeError(
            f"targets must be a non-empty dict {{name: ys (T, O)}}; got {checks.describe(targets)}"
        )
    names = list(targets)
    ridges = ridge if isinstance(ridge, Mapping) else {k: ridge for k in names}
    if set(ridges) != set(names):
        raise ValueError(f"ridge must have the keys of targets {names}; got {list(ridges)}")
    rs = [ro.check_ridge(ridges[k]) for k in names]
    T = check_inputs(cell, us, "us", False).shape[0] if isinstance(cell, EchoState) else None
    cols, splits, a = [], [], 0
    for k in names:
        y = targets[k]
        y = check_series(
            f"targets[{k!r}]", y, y.shape[1] if getattr(y, "ndim", 0) == 2 else -1, "O outputs", T
        )
        cols.append(jnp.asarray(y))
        splits.append((a, a + y.shape[1]))
        a += y.shape[1]
    if getattr(cell, "feedback_size", 0) and teacher is None:
        raise ValueError("teacher (T, F) is required with output feedback and several targets")
    s = setup(
        cell, params, us, state, key=key, ys=jnp.concatenate(cols, axis=1), teacher=teacher,
        washout=washout, precision=precision, chunk_size=chunk_size, include_input=include_input,
    )  # fmt: skip
    outs, state = call(
        _fit_jit, s, s.ys, washout, np.asarray(rs, np.float64),
        x64=precision, precision=precision, mode="many", chunk=chunk_size, with_input=include_input,
        splits=tuple(splits),
    )  # fmt: skip
    result = {}
    for k, r, out in zip(names, rs, outs):
        if not np.all(np.isfinite(np.asarray(out["w_out"]))):
            raise FloatingPointError(f"the readout for {k!r} is not finite (ridge={r:g})")
        result[k] = out
    return result, state
