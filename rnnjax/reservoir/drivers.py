r"""Drivers of a reservoir: harvest, teacher-forced fits, one-step prediction, free run.

Every teacher-forced run (:func:`harvest`, :func:`ridge_stats`, :func:`fit_ridge`,
:func:`fit_readouts`, :func:`predict` with the true inputs) goes through the shared engine
(:func:`rnnjax.engine.run`) with the private cell :class:`rnnjax.reservoir.cell.Drive`:
the input product, bias, teacher-forced feedback and noise are summed into one drive
outside the loop (under teacher forcing the fed-back value ``y_{t-1}`` is data, so it is
input), and the loop only recurs. Two drivers keep their own ``lax.scan``, because the
readout sits inside their loop: :func:`generate` (the free run feeds the readout's output
back) and :func:`predict` of a feedback reservoir without a teacher; and :func:`fit_rls`
(the readout and its inverse-correlation matrix update every step).

Precision. The reservoir runs in the parameter dtype (float32). The readout (the
``Z^T Z`` accumulation, the solve and the readout product) runs in float64 by default
(``precision="float64"``), switching on ``jax.enable_x64`` around its own jitted
computation only; ``precision="float32"`` keeps everything float32 (the solve centres the
sums and falls back to an eigendecomposition, see :mod:`rnnjax.reservoir.readouts`).

Shapes: ``T`` time, ``B`` batch, ``I`` input size, ``N`` reservoir size, ``O`` outputs,
``F`` feedback size.

References:
  Jaeger (2001). GMD Report 148. Lukosevicius (2012). A practical guide to applying echo
  state networks. Sussillo & Abbott (2009). Neuron 63(4) (FORCE learning).
"""

from __future__ import annotations

import functools
from typing import Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax.reservoir.readouts as ro
from rnnjax import checks, engine
from rnnjax.reservoir.cell import Drive, DriveState, EchoState, EchoStateState, runtime

__all__ = [
    "harvest",
    "ridge_stats",
    "fit_ridge",
    "fit_readouts",
    "fit_rls",
    "predict",
    "generate",
    "forecast",
    "echo_state_property",
    "ESPResult",
]


# --------------------------------------------------------------------------- checks


def check_precision(precision: str) -> str:
    return checks.choice("precision", precision, ro.PRECISIONS)


def check_series(name: str, x, size: int, what: str, T=None):
    """A ``(T, size)`` floating array (``T`` steps when given): :func:`rnnjax.checks.series`."""
    return checks.series(name, x, size, what, T)


def check_cell(cell) -> None:
    if not isinstance(cell, EchoState):
        raise TypeError(f"cell must be an rnnjax.esn.EchoState; got {type(cell).__name__}")


def check_reservoir_params(cell, params) -> None:
    if not isinstance(params, dict):
        raise TypeError(
            f"params must be the dict made by EchoState.init; got {type(params).__name__}"
        )
    expected = jax.eval_shape(cell.init, jax.random.key(0))
    checks.params("params", expected, params, owner=repr(cell))


def prepare(cell, params, us, state, key, name="us", batch=False):
    """Checks; returns ``(us, state)`` cast to the parameter dtype. With ``batch`` the
    inputs may carry one leading batch axis ``(B, T, I)``."""
    check_cell(cell)
    check_reservoir_params(cell, params)
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    if batch and getattr(us, "ndim", 0) == 3:
        us = checks.floating_array(name, us)
        if us.shape[-1] != cell.input_size:
            raise ValueError(
                f"{name} must have shape (B, T, {cell.input_size}) or (T, "
                f"{cell.input_size}); got {checks.describe(us)}"
            )
    else:
        us = check_series(name, us, cell.input_size, "I = cell.input_size")
    lead = us.shape[:-2]
    want = cell.initial_state(dtype)
    if state is None:
        state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, lead + a.shape), want)
    else:
        if not isinstance(state, EchoStateState):
            raise ValueError(
                f"state must be an EchoStateState with h {want.h.shape} and y "
                f"{want.y.shape}; got {type(state).__name__}"
            )
        sb = tuple(jnp.shape(state.h))[:-1]
        if sb not in ((), lead):
            raise ValueError(
                f"state must have batch shape () or {lead}; got h {jnp.shape(state.h)}"
            )
        state = checks.state("state", want, state, sb, dtype=dtype)
        state = jax.tree_util.tree_map(
            lambda a, w: jnp.broadcast_to(a, lead + w.shape), state, want
        )
    if key is not None and not isinstance(key, jax.Array):
        raise TypeError(f"key must be a jax PRNG key (jax.random.key); got {type(key).__name__}")
    return jnp.asarray(us, dtype), state


def prepare_targets(cell, us, ys, teacher, washout, dtype):
    T = us.shape[0]
    ys = check_series("ys", ys, ys.shape[1] if getattr(ys, "ndim", 0) == 2 else -1, "O outputs", T)
    checks.integer("washout", washout, 0)
    if washout >= T:
        raise ValueError(f"washout must be smaller than T = {T} (no samples left); got {washout}")
    if teacher is None and cell.feedback_size:
        teacher = ys
    if cell.feedback_size:
        teacher = check_series("teacher", teacher, cell.feedback_size, "F = cell.feedback_size", T)
        return jnp.asarray(teacher, dtype)
    return None


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
        b = b[None]
    else:
        b = b[None]
    d = d + b
    if fb_prev is not None:
        fb = fb_prev @ params["w_fb"]
        d = d + (fb if in_scale is None else fb[:, None, :])
    if key is not None and cell.noise > 0:
        ts = t0 + jnp.arange(C)
        xi = jax.vmap(lambda t: jax.random.normal(jax.random.fold_in(key, t), (N,), d.dtype))(ts)
        d = d + cell.noise * (xi if in_scale is None else xi[:, None, :])
    return d


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


def stats_run(cell, params, us, ys, teacher, state, washout, chunk, accum, key, with_input):
    """Run and accumulate centred :class:`~rnnjax.reservoir.readouts.Moments` chunk by
    chunk (``chunk`` states alive at a time). Returns ``(moments, state)``."""
    T, N = us.shape[0], cell.hidden_size
    C = min(chunk, T)
    n = -(-T // C)
    pad = n * C - T
    O = ys.shape[1]
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

    init = (state, ro.acc_init(F, O, accum))
    tf = None if teacher is None else padded_chunks(teacher, C, n)
    xs = (jnp.arange(n), padded_chunks(us, C, n), padded_chunks(ys, C, n), tf)
    (st, mom), _ = jax.lax.scan(body, init, xs)
    return mom, st


# --------------------------------------------------------------------------- jitted kernels

_STATIC = ("cell", "chunk", "precision", "with_input")


@functools.partial(jax.jit, static_argnames=("cell",))
def _harvest_jit(cell, params, us, state, teacher, key):
    return teacher_forced(cell, params, state, us, teacher, key)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _stats_jit(cell, params, us, ys, teacher, state, washout, key, *, chunk, precision, with_input):
    mom, st = stats_run(
        cell,
        params,
        us,
        ys,
        teacher,
        state,
        washout,
        chunk,
        ro.accum_dtype(precision),
        key,
        with_input,
    )
    return ro.acc_to_stats(mom), st


@functools.partial(jax.jit, static_argnames=_STATIC)
def _fit_jit(
    cell, params, us, ys, teacher, state, washout, ridge, key, *, chunk, precision, with_input=False
):
    mom, state = stats_run(
        cell,
        params,
        us,
        ys,
        teacher,
        state,
        washout,
        chunk,
        ro.accum_dtype(precision),
        key,
        with_input,
    )
    readout, info = ro.acc_solve(mom, ridge)
    return readout, state, info


@functools.partial(jax.jit, static_argnames=_STATIC + ("splits",))
def _fit_many_jit(
    cell,
    params,
    us,
    ys,
    teacher,
    state,
    washout,
    ridges,
    key,
    *,
    chunk,
    precision,
    with_input,
    splits,
):
    """One run, one eigendecomposition; target block ``k`` (columns ``splits[k]``) gets
    ridge ``ridges[k]``."""
    mom, state = stats_run(
        cell,
        params,
        us,
        ys,
        teacher,
        state,
        washout,
        chunk,
        ro.accum_dtype(precision),
        key,
        with_input,
    )
    outs = ro.acc_solve_many(mom, ridges, splits)
    return outs, state


def _x64_of(readout):
    return ro.x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32")


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
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=8)
      >>> _, hs = esn.harvest(cell, cell.init(jax.random.key(0)), jnp.ones((5, 1)))
      >>> hs.shape
      (5, 8)
    """
    us, state = prepare(cell, params, us, state, key)
    if cell.feedback_size and teacher is not None:
        teacher = check_series(
            "teacher", teacher, cell.feedback_size, "F = cell.feedback_size", us.shape[0]
        )
        teacher = jnp.asarray(teacher, us.dtype)
    else:
        teacher = None
    return _harvest_jit(runtime(cell), params, us, state, teacher, key)


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
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=10)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(100.0) / 5)[:, None]
      >>> stats, state = esn.ridge_stats(cell, params, u[:-1], u[1:], washout=10, chunk_size=32)
      >>> readout = esn.solve_ridge(stats, 1e-6)
      >>> readout["w_out"].shape, readout["b_out"].shape    # (N, O), (O,)
      ((10, 1), (1,))
    """
    check_precision(precision)
    checks.integer("chunk_size", chunk_size, 1)
    checks.boolean("include_input", include_input)
    us, state = prepare(cell, params, us, state, key)
    teacher = prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with ro.x64(precision):
        return _stats_jit(
            runtime(cell),
            params,
            us,
            ys,
            teacher,
            state,
            washout,
            key,
            chunk=chunk_size,
            precision=precision,
            with_input=include_input,
        )


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
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> readout, state = esn.fit_ridge(cell, params, u[:-1], u[1:], ridge=1e-6, washout=50)
      >>> readout["w_out"].shape
      (20, 1)
    """
    check_precision(precision)
    checks.integer("chunk_size", chunk_size, 1)
    checks.boolean("include_input", include_input)
    ridge = ro.check_ridge(ridge)
    us, state = prepare(cell, params, us, state, key)
    teacher = prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with ro.x64(precision):
        readout, state, info = _fit_jit(
            runtime(cell),
            params,
            us,
            ys,
            teacher,
            state,
            washout,
            ridge,
            key,
            chunk=chunk_size,
            precision=precision,
            with_input=include_input,
        )
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
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20)
      >>> u = jnp.sin(jnp.arange(200.0) / 5)[:, None]
      >>> outs, _ = esn.fit_readouts(cell, cell.init(jax.random.key(0)), u[:-2],
      ...                            {"next": u[1:-1], "after": u[2:]}, ridge=1e-6)
      >>> sorted(outs), outs["after"]["w_out"].shape
      (['after', 'next'], (20, 1))
    """
    check_precision(precision)
    checks.integer("chunk_size", chunk_size, 1)
    checks.boolean("include_input", include_input)
    if not isinstance(targets, Mapping) or not targets:
        raise TypeError(
            f"targets must be a non-empty dict {{name: ys (T, O)}}; got {checks.describe(targets)}"
        )
    names = list(targets)
    ridges = ridge if isinstance(ridge, Mapping) else {k: ridge for k in names}
    if set(ridges) != set(names):
        raise ValueError(f"ridge must have the keys of targets {names}; got {list(ridges)}")
    rs = [ro.check_ridge(ridges[k]) for k in names]
    us, state = prepare(cell, params, us, state, key)
    cols, splits, a = [], [], 0
    for k in names:
        y = check_series(
            f"targets[{k!r}]",
            targets[k],
            targets[k].shape[1] if getattr(targets[k], "ndim", 0) == 2 else -1,
            "O outputs",
            us.shape[0],
        )
        cols.append(jnp.asarray(y, us.dtype))
        splits.append((a, a + y.shape[1]))
        a += y.shape[1]
    ys = jnp.concatenate(cols, axis=1)
    if cell.feedback_size and teacher is None:
        raise ValueError("teacher (T, F) is required with output feedback and several targets")
    teacher = prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with ro.x64(precision):
        outs, state = _fit_many_jit(
            runtime(cell),
            params,
            us,
            ys,
            teacher,
            state,
            washout,
            jnp.asarray(rs, ro.accum_dtype(precision)),
            key,
            chunk=chunk_size,
            precision=precision,
            with_input=include_input,
            splits=tuple(splits),
        )
    result = {}
    for k, r, out in zip(names, rs, outs):
        if not np.all(np.isfinite(np.asarray(out["w_out"]))):
            raise FloatingPointError(f"the readout for {k!r} is not finite (ridge={r:g})")
        result[k] = out
    return result, state


# --------------------------------------------------------------------------- prediction


@functools.partial(jax.jit, static_argnames=("cell",))
def _predict_jit(cell, params, readout, us, state, teacher, key):
    """One-step prediction of one sequence."""
    with_input = readout["w_out"].shape[0] != cell.hidden_size
    if not cell.feedback_size or teacher is not None:
        st, hs = teacher_forced(cell, params, state, us, teacher, key)
        ys = ro.apply(readout, hs, us if with_input else None).astype(hs.dtype)
        return st, ys
    # feedback of the readout's own output: the readout is inside the loop (own scan)
    N, dt = cell.hidden_size, state.h.dtype
    use_noise = key is not None and cell.noise > 0

    def body(st, inp):
        t, u = inp
        noise = None
        if use_noise:
            noise = cell.noise * jax.random.normal(jax.random.fold_in(key, t), (N,), dt)
        new, h = cell.recur(params, st, cell.project(params, u), noise=noise)
        y = ro.apply(readout, h, u if with_input else None).astype(dt)
        return new._replace(y=y), y

    return jax.lax.scan(body, state, (jnp.arange(us.shape[0]), us))


@functools.partial(jax.jit, static_argnames=("cell",))
def _predict_batch_jit(cell, params, readout, us, state, teacher, key):
    return jax.vmap(
        lambda u, s, t: _predict_jit(cell, params, readout, u, s, t, key),
        in_axes=(0, 0, None if teacher is None else 0),
    )(us, state, teacher)


def predict(cell, params, readout, us, state=None, *, teacher=None, key=None):
    """One-step prediction: drive the reservoir with ``us`` and read it out at every step.

    With output feedback, the fed-back value is ``teacher[t]`` when given (teacher
    forcing) and the readout's own output otherwise. Batched: ``us`` ``(B, T, I)`` (and
    ``state`` with leaves ``(B, ...)`` or unbatched, ``teacher`` ``(B, T, F)``) run ``B``
    sequences in one call.

    Args:
      cell, params, us, state, key: as in :func:`harvest`.
      readout: ``{"w_out": (F, O), "b_out": (O,)}``.
      teacher: optional ``(T, F)``.

    Returns:
      ``(state, ys)`` with ``ys`` ``(T, O)`` (``(B, T, O)``) in the parameter dtype (the
      readout product itself runs in the readout's dtype, float64 by default).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20)
      >>> p = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> r, st = esn.fit_ridge(cell, p, u[:199], u[1:200], ridge=1e-6, washout=50)
      >>> segments = jnp.stack([u[200:250], u[230:280]])          # (B, T, I)
      >>> esn.predict(cell, p, r, segments, st)[1].shape
      (2, 50, 1)
    """
    us, state = prepare(cell, params, us, state, key, batch=True)
    batched = us.ndim == 3
    O, with_input = ro.check_readout(readout, cell.hidden_size, cell.input_size)
    if cell.feedback_size:
        if O != cell.feedback_size and teacher is None:
            raise ValueError(
                f"readout outputs O = {O} values but the cell feeds back F = "
                f"{cell.feedback_size}; pass teacher (T, F)"
            )
        if teacher is not None:
            teacher = checks.floating_array("teacher", teacher)
            if teacher.shape != us.shape[:-1] + (cell.feedback_size,):
                raise ValueError(
                    f"teacher must have shape {us.shape[:-1] + (cell.feedback_size,)}"
                    f" (as us, F); got {checks.describe(teacher)}"
                )
            teacher = jnp.asarray(teacher, us.dtype)
    else:
        teacher = None
    fn = _predict_batch_jit if batched else _predict_jit
    with _x64_of(readout):
        return fn(runtime(cell), params, readout, us, state, teacher, key)


@functools.partial(jax.jit, static_argnames=("cell", "n"))
def _generate_jit(cell, params, readout, state, inputs, *, n):
    """The free run keeps its own scan: the readout's output is the next step's input."""
    dt = state.h.dtype
    with_input = readout["w_out"].shape[0] != cell.hidden_size

    def body(st, u_ext):
        # with input rows the readout needs this step's input: the previous output in a
        # free run (kept in st.y's place via the carry below)
        st, u_prev = st
        y = ro.apply(readout, st.h, u_prev if with_input else None).astype(dt)
        u = y if u_ext is None else u_ext
        if cell.feedback_size:
            st = st._replace(y=y)
        st, _ = cell.recur(params, st, cell.project(params, u))
        return (st, u), y

    u0 = jnp.zeros((cell.input_size,), dt) if inputs is None else inputs[0]
    if inputs is None:
        (st, _), ys = jax.lax.scan(lambda s, _: body(s, None), (state, u0), None, length=n)
    else:
        (st, _), ys = jax.lax.scan(body, (state, u0), inputs)
    return st, ys


@functools.partial(jax.jit, static_argnames=("cell", "n"))
def _generate_batch_jit(cell, params, readout, state, inputs, *, n):
    return jax.vmap(
        lambda s, i: _generate_jit(cell, params, readout, s, i, n=n),
        in_axes=(0, None if inputs is None else 0),
    )(state, inputs)


def generate(cell, params, readout, state, n: int, *, inputs=None):
    """Generative free run: the readout's output is fed back for ``n`` steps.

    At every step the readout of the current state is emitted and fed back: as the next
    input (when ``inputs`` is None; needs ``O == I``) and through ``w_fb`` (with
    feedback). So ``ys[0]`` is the one-step prediction from ``state`` and ``ys[k]`` the
    ``(k+1)``-step prediction. Noise-free. Batched: a ``state`` with leaves ``(B, ...)``
    runs ``B`` free runs in one call (``inputs`` then ``(B, n, I)``).

    Readouts with input rows (``include_input=True``) cannot be started from a state
    alone (they need the last input): use them with :func:`predict`.

    Args:
      cell, params, readout: as in :func:`predict`.
      state: the :class:`EchoStateState` to start from (e.g. from :func:`fit_ridge`).
      n: number of steps.
      inputs: optional external inputs ``(n, I)``; the output then only feeds back
        through ``w_fb``.

    Returns:
      ``(state, ys)`` with ``ys`` ``(n, O)`` (``(B, n, O)``) in the parameter dtype.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20)
      >>> p = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(300.0) / 5)[:, None]
      >>> r, st = esn.fit_ridge(cell, p, u[:-1], u[1:], ridge=1e-6, washout=50)
      >>> starts = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), st)
      >>> esn.generate(cell, p, r, starts, 10)[1].shape
      (2, 10, 1)
    """
    checks.integer("n", n, 1)
    check_cell(cell)
    if not isinstance(state, EchoStateState):
        raise ValueError(
            f"state must be an EchoStateState (e.g. from fit_ridge); got {type(state).__name__}"
        )
    batch = tuple(jnp.shape(state.h))[:-1]
    if len(batch) > 1:
        raise ValueError(f"state may have one batch axis; got h {jnp.shape(state.h)}")
    dummy = jnp.zeros(
        batch + (1, cell.input_size), jnp.result_type(*jax.tree_util.tree_leaves(params))
    )
    _, state = prepare(cell, params, dummy, state, None, batch=True)
    O, with_input = ro.check_readout(readout, cell.hidden_size, cell.input_size)
    if with_input:
        raise ValueError(
            "generate needs a readout of the states alone (no include_input): "
            "a free run from a state has no last input to read"
        )
    if inputs is None:
        if O != cell.input_size:
            raise ValueError(
                f"free run feeds the output back as input, so the readout's O = {O} must equal "
                f"cell.input_size = {cell.input_size}; or pass inputs (n, I)"
            )
    else:
        inputs = checks.floating_array("inputs", inputs)
        if inputs.shape != batch + (n, cell.input_size):
            raise ValueError(
                f"inputs must have shape {batch + (n, cell.input_size)} (n, I); "
                f"got {checks.describe(inputs)}"
            )
        inputs = jnp.asarray(inputs, state.h.dtype)
    if cell.feedback_size and O != cell.feedback_size:
        raise ValueError(f"readout O = {O} must equal cell.feedback_size = {cell.feedback_size}")
    fn = _generate_batch_jit if batch else _generate_jit
    with _x64_of(readout):
        return fn(runtime(cell), params, readout, state, inputs, n=n)


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
    n_steps = checks.integer("n_steps", n_steps, 1)
    warmup, _ = prepare(cell, params, warmup, state, None, name="warmup")
    if warmup.shape[0] < 1:
        raise ValueError(
            f"warmup must hold at least one observation (T >= 1); got shape {warmup.shape}"
        )
    O, with_input = ro.check_readout(readout, cell.hidden_size, cell.input_size)
    if with_input:
        raise ValueError(
            "forecast needs a readout of the states alone (include_input=False): the free "
            "run has no next input to read"
        )
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


# --------------------------------------------------------------------------- online readout


@functools.partial(jax.jit, static_argnames=("cell", "force"))
def _rls_jit(cell, params, us, ys, teacher, state, washout, delta, forgetting, key, *, force):
    """Recursive least squares keeps its own scan: the readout and ``P`` update every
    step (and FORCE feeds the updated output back), so nothing can leave the loop."""
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


def fit_rls(
    cell,
    params,
    us,
    ys,
    state=None,
    *,
    washout: int = 0,
    delta: float = 1.0,
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
    check_precision(precision)
    checks.number("delta", delta, 0.0, min_open=True)
    checks.number("forgetting", forgetting, 0.0, 1.0, min_open=True)
    checks.choice("feedback", feedback, ("teacher", "output"))
    us, state = prepare(cell, params, us, state, key)
    teacher = prepare_targets(cell, us, ys, teacher, washout, us.dtype)
    with ro.x64(precision):
        return _rls_jit(
            runtime(cell),
            params,
            us,
            ys,
            teacher,
            state,
            washout,
            delta,
            forgetting,
            key,
            force=feedback == "output",
        )


# --------------------------------------------------------------------------- diagnostics


class ESPResult(NamedTuple):
    """Result of :func:`echo_state_property`.

    Attributes:
      distance: ``(T,)`` Euclidean distance between the two runs' states after each step.
      converged: whether ``distance[-1] <= tol * distance[0]``.

    Example:
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

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import esn
      >>> cell = esn.EchoState(input_size=1, hidden_size=20, spectral_radius=0.8)
      >>> params = cell.init(jax.random.key(0))
      >>> result = esn.echo_state_property(cell, params, jnp.ones((200, 1)), jax.random.key(1))
      >>> result.distance.shape, bool(result.converged)     # (T,)
      ((200,), True)

    References:
      Jaeger (2001), GMD Report 148; Yildiz, Jaeger & Kiebel (2012). Re-visiting the echo
      state property. Neural Networks 35.
    """
    us, state = prepare(cell, params, us, None, None)
    checks.number("tol", tol, 0.0, min_open=True)
    ka, kb = jax.random.split(key)
    N, dt = cell.hidden_size, state.h.dtype
    sa = state._replace(h=jax.random.uniform(ka, (N,), dt, -1.0, 1.0))
    sb = state._replace(h=jax.random.uniform(kb, (N,), dt, -1.0, 1.0))
    _, ha = _harvest_jit(runtime(cell), params, us, sa, None, None)
    _, hb = _harvest_jit(runtime(cell), params, us, sb, None, None)
    d = jnp.linalg.norm(ha - hb, axis=-1)
    return ESPResult(distance=d, converged=d[-1] <= tol * jnp.linalg.norm(sa.h - sb.h))
