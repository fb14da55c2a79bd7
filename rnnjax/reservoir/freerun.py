r"""Prediction and free run: the readout inside the loop.

:func:`predict` reads the reservoir out at every step (teacher-forced runs go through the
engine, :func:`rnnjax.reservoir.drivers.teacher_forced`; a feedback reservoir fed its own
output keeps a ``lax.scan`` with the readout inside); :func:`generate` runs freely from a
state with the output fed back; :func:`forecast` reads observations, then free-runs, with
its outputs aligned to the future. One jitted kernel per driver serves batched and
unbatched calls (``vmap`` inside it when the inputs carry a batch axis).

Shapes: ``T`` time, ``B`` batch, ``I`` input size, ``N`` reservoir size, ``O`` outputs,
``F`` feedback size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import rnnjax.reservoir.readouts as ro
from rnnjax import checks
from rnnjax.reservoir.cell import EchoStateState
from rnnjax.reservoir.drivers import call, check_cell, setup, step_noise, teacher_forced

__all__ = ["predict", "generate", "forecast", "readout_apply"]


def _precision(readout) -> str:
    return "float64" if readout["w_out"].dtype == jnp.float64 else "float32"


def _predict_one(cell, params, us, state, teacher, key, readout):
    with_input = readout["w_out"].shape[0] != cell.hidden_size
    if not cell.feedback_size or teacher is not None:
        st, hs = teacher_forced(cell, params, state, us, teacher, key)
        return st, ro.apply(readout, hs, us if with_input else None).astype(hs.dtype)
    dt = state.h.dtype

    def body(st, inp):  # the readout's own output is fed back: the readout is in the loop
        t, u = inp
        new, h = cell.recur(params, st, cell.project(params, u), noise=step_noise(cell, key, t, dt))
        y = ro.apply(readout, h, u if with_input else None).astype(dt)
        return new._replace(y=y), y

    return jax.lax.scan(body, state, (jnp.arange(us.shape[0]), us))


@functools.partial(jax.jit, static_argnames=("cell", "batched"))
def _predict_jit(cell, params, us, state, teacher, key, readout, *, batched):
    one = functools.partial(_predict_one, cell, params, key=key, readout=readout)
    if not batched:
        return one(us, state, teacher)
    return jax.vmap(one, in_axes=(0, 0, None if teacher is None else 0))(us, state, teacher)


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
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20)
      >>> p = cell.init(jax.random.key(0))
      >>> r = {"w_out": jnp.ones((20, 3)) / 20, "b_out": jnp.zeros(3)}   # O = 3 outputs
      >>> segments = jnp.ones((2, 50, 1))                          # (B, T, I), from zeros
      >>> reservoir.predict(cell, p, r, segments)[1].shape
      (2, 50, 3)
    """
    s = setup(cell, params, us, state, key=key, teacher=teacher, batch=True)
    O, _ = check_readout(readout, cell.hidden_size, cell.input_size)
    if cell.feedback_size and O != cell.feedback_size and teacher is None:
        raise ValueError(
            f"readout outputs O = {O} values but the cell feeds back F = "
            f"{cell.feedback_size}; pass teacher (T, F)"
        )
    return call(_predict_jit, s, readout, x64=_precision(readout), batched=s.us.ndim == 3)


def _generate_one(cell, params, inputs, state, readout, n):
    dt = state.h.dtype

    def body(st, u_ext):
        y = ro.apply(readout, st.h).astype(dt)  # emitted, then fed back
        u = y if u_ext is None else u_ext
        if cell.feedback_size:
            st = st._replace(y=y)
        st, _ = cell.recur(params, st, cell.project(params, u))
        return st, y

    if inputs is None:
        return jax.lax.scan(lambda s, _: body(s, None), state, None, length=n)
    return jax.lax.scan(body, state, inputs)


@functools.partial(jax.jit, static_argnames=("cell", "n", "batched"))
def _generate_jit(cell, params, inputs, state, teacher, key, readout, *, n, batched):
    """The free run keeps its own scan: the readout's output is the next step's input."""
    one = functools.partial(_generate_one, cell, params, readout=readout, n=n)
    if not batched:
        return one(inputs, state)
    return jax.vmap(one, in_axes=(None if inputs is None else 0, 0))(inputs, state)


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
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=20)
      >>> p = cell.init(jax.random.key(0))
      >>> r = {"w_out": jnp.full((20, 1), 0.1), "b_out": jnp.zeros(1)}   # any readout
      >>> st = cell.initial_state()
      >>> starts = jax.tree_util.tree_map(lambda a: jnp.stack([a, a]), st)  # two runs
      >>> reservoir.generate(cell, p, r, starts, 10)[1].shape
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
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    dummy = jnp.zeros(batch + (1, cell.input_size), dtype)
    s = setup(cell, params, dummy, state, batch=True)
    O, with_input = check_readout(readout, cell.hidden_size, cell.input_size)
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
        inputs = jnp.asarray(inputs, dtype)
    if cell.feedback_size and O != cell.feedback_size:
        raise ValueError(f"readout O = {O} must equal cell.feedback_size = {cell.feedback_size}")
    s = s._replace(us=inputs)
    return call(_generate_jit, s, readout, x64=_precision(readout), n=n, batched=bool(batch))


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
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=50, leak_rate=0.5)
      >>> params = cell.init(jax.random.key(0))
      >>> u = jnp.sin(jnp.arange(600.0) / 5)[:, None]
      >>> readout, _ = reservoir.fit_ridge(cell, params, u[:499], u[1:500], ridge=1e-7, washout=50)
      >>> ys = reservoir.forecast(cell, params, readout, u[:500], 20)
      >>> ys.shape, bool(jnp.max(jnp.abs(ys - u[500:520])) < 0.05)
      ((20, 1), True)
    """
    n_steps = checks.integer("n_steps", n_steps, 1)
    warmup = setup(cell, params, warmup, state, name="warmup").us
    if warmup.shape[0] < 1:
        raise ValueError(
            f"warmup must hold at least one observation (T >= 1); got shape {warmup.shape}"
        )
    O, with_input = check_readout(readout, cell.hidden_size, cell.input_size)
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


@jax.jit
def _apply_jit(readout, hs, us):
    return ro.apply(readout, hs, us).astype(hs.dtype)


def readout_apply(readout, hs, us=None):
    """Apply a readout: ``[hs, us] @ w_out + b_out``; ``hs`` ``(..., N)`` -> ``(..., O)``.

    ``us`` ``(..., I)`` is needed (and only allowed) when the readout was fitted with
    ``include_input=True``. The product runs in the readout's dtype (float64 by default:
    with small ridges the weights are large and the sum cancels) and is returned in
    ``hs``'s dtype.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.reservoir import readout_apply
      >>> r = {"w_out": jnp.ones((3, 1)), "b_out": jnp.zeros(1)}
      >>> readout_apply(r, jnp.ones((5, 3))).shape
      (5, 1)
    """
    hs = checks.floating_array("hs", hs)
    N = hs.shape[-1]
    rows = jnp.shape(readout["w_out"])[0] if isinstance(readout, dict) and "w_out" in readout else N
    if us is None and rows != N:
        raise ValueError(
            f"the readout has {rows} rows but hs has N = {N}: a readout fitted "
            "with include_input=True needs its inputs, pass us"
        )
    I = 0 if us is None else jnp.shape(us)[-1]  # noqa: E741
    _, with_input = check_readout(readout, N, I)
    if us is not None and not with_input:
        raise ValueError(
            "us was given but the readout has no input rows (fit without include_input)"
        )
    with ro.x64("float64" if readout["w_out"].dtype == jnp.float64 else "float32"):
        return _apply_jit(readout, hs, None if us is None else jnp.asarray(us, hs.dtype))


def check_readout(readout, N: int, I: int = 0) -> tuple:  # noqa: E741
    """Checks a readout dict; returns ``(O, include_input)``: ``w_out`` has ``N`` rows
    (states only) or ``N + I`` (states and inputs)."""
    if not isinstance(readout, dict) or set(readout) != set(ro.READOUT_KEYS):
        raise ValueError(
            f"readout must be a dict with keys {ro.READOUT_KEYS} (from fit_ridge / fit_rls); "
            f"got {type(readout).__name__} {list(readout) if isinstance(readout, dict) else ''}"
        )
    w, b = readout["w_out"], readout["b_out"]
    rows = jnp.shape(w)[0] if jnp.ndim(w) == 2 else None
    if rows not in (N, N + I) or jnp.shape(b) != (jnp.shape(w)[1],):
        want = f"{N}" + (f" or N + I = {N + I}" if I else "")
        raise ValueError(
            f"readout must hold w_out of shape (N, O) with N = {want} rows and b_out of "
            f"shape (O,); got w_out {jnp.shape(w)}, b_out {jnp.shape(b)}"
        )
    return jnp.shape(w)[1], bool(I) and rows == N + I
