"""Tests of the reservoir tasks (Mackey-Glass, NARMA, memory) and metrics.memory_capacity.

The references are written independently of the implementations: the Mackey-Glass
reference keeps an explicit delay buffer (collections.deque); the NARMA check verifies
the recurrence on the returned arrays; memory capacity is checked against
numpy.corrcoef.
"""

import collections

import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import metrics
from rnnjax.tasks.mackey_glass import mackey_glass
from rnnjax.tasks.memory import memory_task
from rnnjax.tasks.narma import narma


def mg_reference(n, tau, discard, dt=0.1, sub=10, x0=1.2):
    lag = int(round(tau / dt))
    hist = collections.deque([x0] * lag, maxlen=lag)  # x(t - tau) ... x(t - dt)
    x, out = x0, []
    for i in range((n + discard) * sub):
        delayed = hist[0]
        hist.append(x)
        x = x + dt * (0.2 * delayed / (1 + delayed**10) - 0.1 * x)
        if (i + 1) % sub == 0:
            out.append(x)
    return np.array(out[discard:])


@pytest.mark.parametrize("tau", [17, 30])
def test_mackey_glass_matches_reference(tau):
    got = mackey_glass(300, tau=tau, discard=50)
    np.testing.assert_allclose(got, mg_reference(300, tau, 50), rtol=1e-12, atol=1e-12)


def test_mackey_glass_properties():
    x = mackey_glass(2000)
    assert x.shape == (2000,) and x.dtype == np.float64
    assert 0.2 < x.min() and x.max() < 1.5 and 0.85 < x.mean() < 1.0  # the tau=17 attractor
    np.testing.assert_array_equal(x, mackey_glass(2000))  # deterministic
    y = mackey_glass(2000, seed=3)
    assert np.abs(x - y).max() > 0.1  # another history, another trajectory
    # the discard is an offset into the same trajectory
    np.testing.assert_allclose(
        mackey_glass(100, discard=1100), mackey_glass(200, discard=1000)[100:]
    )


def test_mackey_glass_bad_arguments():
    with pytest.raises(ValueError, match="n_samples"):
        mackey_glass(0)
    with pytest.raises(ValueError, match="tau / dt"):
        mackey_glass(10, tau=17.05)
    with pytest.raises(ValueError, match="tau must be > 0"):
        mackey_glass(10, tau=-1)


def test_narma10_recurrence_holds():
    u, y = narma(500, seed=1)
    assert u.shape == y.shape == (500,)
    assert 0 <= u.min() and u.max() <= 0.5
    # y[t] = y(t+1); check y(t+1) = 0.3 y(t) + 0.05 y(t) sum_{i<10} y(t-i) + 1.5 u(t-9) u(t) + 0.1
    yt = np.concatenate([[0.0], y])  # yt[t] = y(t)
    for t in range(9, 500):
        expect = (
            0.3 * yt[t]
            + 0.05 * yt[t] * sum(yt[t - i] for i in range(10))
            + 1.5 * u[t - 9] * u[t]
            + 0.1
        )
        assert abs(y[t] - expect) < 1e-12
    assert np.all(y[:9] == 0)


def test_narma_divergence_guard():
    # with an impossible bound every draw counts as diverged: a clear error, not NaNs
    with pytest.raises(RuntimeError, match="diverged"):
        narma(300, bound=0.01, max_tries=3)
    # NARMA-30 with these coefficients diverges for many draws; whatever is returned is bounded
    try:
        u, y = narma(2000, order=30, seed=0)
        assert np.all(np.isfinite(y)) and np.abs(y).max() <= 1.0
    except RuntimeError as e:
        assert "diverged" in str(e)


def test_memory_task_alignment():
    u, tg = memory_task(50, 4, seed=2)
    assert tg.shape == (50, 4)
    for k in range(1, 5):
        np.testing.assert_array_equal(tg[k:, k - 1], u[:-k])
        assert np.all(tg[:k, k - 1] == 0)
    with pytest.raises(ValueError, match="max_delay"):
        memory_task(10, 10)


def test_memory_capacity_matches_corrcoef():
    rng = np.random.default_rng(0)
    tg = rng.normal(size=(200, 5))
    pred = tg + rng.normal(scale=np.arange(1, 6) * 0.5, size=(200, 5))
    ref = [np.corrcoef(pred[:, k], tg[:, k])[0, 1] ** 2 for k in range(5)]
    mc, r2 = metrics.memory_capacity(jnp.asarray(pred), jnp.asarray(tg), per_delay=True)
    np.testing.assert_allclose(r2, ref, rtol=1e-5)
    assert abs(float(mc) - sum(ref)) < 1e-5
    # mask: only the selected steps count
    mask = np.arange(200) >= 50
    ref_m = sum(np.corrcoef(pred[50:, k], tg[50:, k])[0, 1] ** 2 for k in range(5))
    assert (
        abs(
            float(metrics.memory_capacity(jnp.asarray(pred), jnp.asarray(tg), jnp.asarray(mask)))
            - ref_m
        )
        < 1e-5
    )
    # a perfect memory of K delays scores K
    assert abs(float(metrics.memory_capacity(jnp.asarray(tg), jnp.asarray(tg))) - 5) < 1e-5
    with pytest.raises(ValueError, match="mask must have shape"):
        metrics.memory_capacity(jnp.asarray(pred), jnp.asarray(tg), jnp.ones((200, 5)))
