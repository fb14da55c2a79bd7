"""Echo state forecasting: ``reservoir.forecast`` returns exactly the next values after the
observations (the aligned protocol), where ``generate`` from ``fit_ridge``'s state is one
step behind."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import reservoir


def _nrmse(pred, truth):
    pred, truth = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    return float(np.sqrt(np.mean((pred - truth) ** 2)) / np.std(truth))


@pytest.fixture(scope="module")
def fitted():
    cell = reservoir.EchoState(input_size=1, hidden_size=100, spectral_radius=0.95, leak_rate=0.3)
    params = cell.init(jax.random.key(0))
    u = jnp.sin(jnp.arange(1200.0) / 5)[:, None]
    T = 1000
    readout, fit_state = reservoir.fit_ridge(
        cell, params, u[: T - 1], u[1:T], ridge=1e-7, washout=100
    )
    return cell, params, readout, fit_state, u, T


def test_forecast_is_aligned_with_the_future(fitted):
    cell, params, readout, fit_state, u, T = fitted
    n = 84
    ys = reservoir.forecast(cell, params, readout, u[:T], n)
    assert ys.shape == (n, 1)
    # the aligned protocol written out: read every observation (one-step predictions),
    # then feed the outputs back; the first free output forecasts u[T]
    state = cell.initial_state()
    step = jax.jit(cell.step)
    for t in range(T):
        state, _ = step(params, state, u[t])
    ref = []
    for _ in range(n):
        y = np.asarray(state.h, np.float64) @ np.asarray(readout["w_out"], np.float64)
        y = y + np.asarray(readout["b_out"], np.float64)
        ref.append(y)
        state, _ = step(params, state, jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(np.asarray(ys), np.asarray(ref), atol=2e-4)
    aligned = _nrmse(ys, u[T : T + n])
    assert aligned < 1e-2
    # generate from fit_ridge's state re-predicts the last known sample first: one step
    # behind the future, so against the future it is far worse than the aligned forecast
    _, late = reservoir.generate(cell, params, readout, fit_state, n)
    assert abs(float(late[0, 0]) - float(u[T - 1, 0])) < 1e-2
    assert _nrmse(late, u[T : T + n]) > 10 * aligned
    assert _nrmse(late, u[T - 1 : T - 1 + n]) < 1e-2


def test_forecast_continues_from_a_state(fitted):
    cell, params, readout, fit_state, u, T = fitted
    # fit_state has read u[:T-1]: the one observation left to read is u[T-1]
    a = reservoir.forecast(cell, params, readout, u[T - 1 : T], 10, state=fit_state)
    b = reservoir.forecast(cell, params, readout, u[:T], 10)
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)


def test_forecast_with_output_feedback_reads_the_truth_during_warmup():
    cell = reservoir.EchoState(input_size=1, hidden_size=60, leak_rate=0.5, feedback_size=1)
    params = cell.init(jax.random.key(1))
    u = jnp.sin(jnp.arange(700.0) / 4)[:, None]
    T = 600
    readout, _ = reservoir.fit_ridge(cell, params, u[: T - 1], u[1:T], ridge=1e-7, washout=50)
    ys = reservoir.forecast(cell, params, readout, u[:T], 30)
    assert ys.shape == (30, 1)
    assert _nrmse(ys, u[T : T + 30]) < 5e-2


def test_forecast_errors(fitted):
    cell, params, readout, _, u, T = fitted
    with pytest.raises(ValueError, match="n_steps must be an int >= 1"):
        reservoir.forecast(cell, params, readout, u[:T], 0)
    two = {"w_out": jnp.zeros((100, 2)), "b_out": jnp.zeros((2,))}
    with pytest.raises(ValueError, match="must equal cell.input_size"):
        reservoir.forecast(cell, params, two, u[:T], 5)
    with pytest.raises((ValueError, TypeError), match="warmup"):
        reservoir.forecast(cell, params, readout, u[:T, 0], 5)
