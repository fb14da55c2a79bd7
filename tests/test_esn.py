"""Tests of rnnjax.reservoir: the EchoState cell, ridge / RLS readouts, run modes, sweeps.

References are independent: plain Python loops over numpy float64 and
``numpy.linalg.lstsq``. Shapes are tiny (N <= 30, T <= 600) to keep the run short.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from rnnjax import metrics, reservoir
from rnnjax.tasks.memory import memory_task

N, I, T = 24, 2, 400


@pytest.fixture(scope="module")
def cell():
    return reservoir.EchoState(
        I, N, spectral_radius=0.9, leak_rate=0.4, bias_scaling=0.2, density=0.5, input_density=0.8
    )


@pytest.fixture(scope="module")
def params(cell):
    return cell.init(jax.random.key(1))


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    us = rng.uniform(-1, 1, (T, I)).astype(np.float32)
    # a nonlinear target with memory, two outputs
    ys = np.stack([np.roll(us[:, 0], 3) * us[:, 1], np.tanh(np.cumsum(us[:, 0]) / 10)], 1)
    return us, ys.astype(np.float32)


def np_reservoir(cell, params, us, h0=None, fb=None, noise=None):
    """Reference: the state equation in numpy float64, one Python loop."""
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    h = np.zeros(cell.hidden_size) if h0 is None else np.asarray(h0, np.float64)
    y_prev = np.zeros(cell.feedback_size)
    out = []
    for t, u in enumerate(np.asarray(us, np.float64)):
        pre = u @ p["w_in"] + p["b"] + p["w"] @ h + y_prev @ p["w_fb"]
        if noise is not None:
            pre = pre + noise[t]
        act = np.tanh(pre) if cell.activation == "tanh" else pre
        h = (1 - cell.leak_rate) * h + cell.leak_rate * act
        if fb is not None:
            y_prev = np.asarray(fb[t], np.float64)
        out.append(h)
    return np.array(out)


def np_ridge(H, Y, ridge, penalise_bias=False):
    """Reference ridge: lstsq on [H 1; sqrt(ridge) D 0] in float64."""
    H = np.asarray(H, np.float64)
    Z = np.concatenate([H, np.ones((H.shape[0], 1))], 1)
    d = np.ones(Z.shape[1])
    if not penalise_bias:
        d[-1] = 0.0
    A = np.concatenate([Z, np.sqrt(ridge) * np.diag(d)], 0)
    B = np.concatenate([np.asarray(Y, np.float64), np.zeros((Z.shape[1], Y.shape[1]))], 0)
    W = np.linalg.lstsq(A, B, rcond=None)[0]
    return W[:-1], W[-1]


# --------------------------------------------------------------------------- the cell


def test_cell_protocol_and_unroll_matches_loop(cell, params, data):
    us, _ = data
    state = cell.initial_state()
    assert hasattr(state, "h") and state.h.shape == (N,)
    assert cell.output_size == cell.state_size == N
    hash(cell)  # a static argument of jit
    x = jnp.asarray(us[0])
    s1, y1 = cell.step(params, state, x)
    s2, y2 = cell.recur(params, state, cell.project(params, x))
    np.testing.assert_array_equal(y1, y2)
    _, ys = rj.unroll(cell, params, jnp.asarray(us[:50]))
    np.testing.assert_allclose(ys, np_reservoir(cell, params, us[:50]), rtol=1e-5, atol=1e-5)
    # padding semantics hold for the ESN cell too
    _, yp = rj.unroll(cell, params, jnp.asarray(us[:50]), length=jnp.asarray(30))
    np.testing.assert_allclose(yp[:30], ys[:30], rtol=1e-6, atol=1e-6)
    assert bool((yp[30:] == 0).all())


def test_harvest_matches_loop(cell, params, data):
    us, _ = data
    _, hs = reservoir.harvest(cell, params, us)
    np.testing.assert_allclose(hs, np_reservoir(cell, params, us), rtol=1e-4, atol=1e-5)


def test_weights_sparsity_and_scalings():
    cell = reservoir.EchoState(
        3,
        200,
        spectral_radius=None,
        density=0.1,
        input_density=0.3,
        input_scaling=0.5,
        bias_scaling=0.25,
        feedback_size=2,
        feedback_scaling=0.1,
    )
    p = cell.init(jax.random.key(0))
    assert {k: v.shape for k, v in p.items()} == {
        "w_in": (3, 200),
        "w": (200, 200),
        "b": (200,),
        "w_fb": (2, 200),
    }
    assert abs(float(jnp.mean(p["w"] != 0)) - 0.1) < 0.01
    assert abs(float(jnp.mean(p["w_in"] != 0)) - 0.3) < 0.05
    assert float(jnp.abs(p["w_in"]).max()) <= 0.5
    assert float(jnp.abs(p["b"]).max()) <= 0.25
    assert float(jnp.abs(p["w_fb"]).max()) <= 0.1


@pytest.mark.parametrize("sr", [0.5, 0.95, 1.3])
def test_spectral_radius_after_scaling_is_exact(sr):
    cell = reservoir.EchoState(1, 60, spectral_radius=sr, density=0.2)
    w = np.asarray(cell.init(jax.random.key(3))["w"], np.float64)
    assert abs(np.max(np.abs(np.linalg.eigvals(w))) - sr) < 1e-4


def test_invalid_hyperparameters_raise():
    with pytest.raises(ValueError, match="leak_rate"):
        reservoir.EchoState(1, 10, leak_rate=0.0)
    with pytest.raises(ValueError, match="density"):
        reservoir.EchoState(1, 10, density=1.5)
    with pytest.raises(ValueError, match="hidden_size"):
        reservoir.EchoState(1, 0)
    with pytest.raises(ValueError, match="activation"):
        reservoir.EchoState(1, 10, activation="relu")


# --------------------------------------------------------------------------- ridge


def test_ridge_equals_lstsq(cell, params, data):
    us, ys = data
    washout, ridge = 30, 1e-3
    readout, _ = reservoir.fit_ridge(cell, params, us, ys, ridge=ridge, washout=washout)
    _, hs = reservoir.harvest(cell, params, us)
    w, b = np_ridge(np.asarray(hs)[washout:], ys[washout:], ridge)
    np.testing.assert_allclose(readout["w_out"], w, rtol=1e-4, atol=1e-4 * np.abs(w).max())
    np.testing.assert_allclose(readout["b_out"], b, rtol=1e-4, atol=1e-4 * np.abs(b).max())


def test_ridge_small_penalty_float64_matches_lstsq_predictions(cell, params, data):
    """At ridge 1e-9 the weights are ill-determined; the fitted outputs are not."""
    us, ys = data
    readout, _ = reservoir.fit_ridge(cell, params, us, ys, ridge=1e-9, washout=20)
    _, hs = reservoir.harvest(cell, params, us)
    H = np.asarray(hs, np.float64)[20:]
    w, b = np_ridge(H, ys[20:], 1e-9)
    ref = H @ w + b
    got = np.asarray(reservoir.readout_apply(readout, hs[20:]), np.float64)
    err_ref = np.sqrt(np.mean((ref - ys[20:]) ** 2))
    assert np.sqrt(np.mean((got - ref) ** 2)) < 1e-3 * np.std(ys[20:])
    assert abs(np.sqrt(np.mean((got - ys[20:]) ** 2)) - err_ref) < 1e-3 * err_ref + 1e-6


def test_ridge_float32_precision_option(cell, params, data):
    us, ys = data
    readout, _ = reservoir.fit_ridge(
        cell, params, us, ys, ridge=1e-1, washout=10, precision="float32"
    )
    assert readout["w_out"].dtype == jnp.float32
    _, hs = reservoir.harvest(cell, params, us)
    w, b = np_ridge(np.asarray(hs)[10:], ys[10:], 1e-1)
    np.testing.assert_allclose(readout["w_out"], w, rtol=1e-2, atol=1e-3 * np.abs(w).max())


@pytest.mark.parametrize("chunk", [7, 64, 1000])
def test_chunked_xtx_equals_direct(cell, params, data, chunk):
    us, ys = data
    washout = 25
    stats, state = reservoir.ridge_stats(cell, params, us, ys, washout=washout, chunk_size=chunk)
    final, hs = reservoir.harvest(cell, params, us)
    Z = np.concatenate([np.asarray(hs, np.float64), np.ones((T, 1))], 1)[washout:]
    # the states come from another compiled scan: equal to float32 rounding (~1e-7)
    np.testing.assert_allclose(stats.xtx, Z.T @ Z, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(
        stats.xty, Z.T @ ys[washout:].astype(np.float64), rtol=1e-5, atol=1e-5
    )
    assert float(stats.xtx[-1, -1]) == T - washout
    # the final state is the state after the last real step, not after chunk padding
    np.testing.assert_allclose(state.h, final.h, rtol=1e-6, atol=1e-6)


def test_stats_of_two_halves_add_up(cell, params, data):
    us, ys = data
    s1, st = reservoir.ridge_stats(cell, params, us[:150], ys[:150], washout=10)
    s2, _ = reservoir.ridge_stats(cell, params, us[150:], ys[150:], st)
    whole, _ = reservoir.ridge_stats(cell, params, us, ys, washout=10)
    np.testing.assert_allclose(s1.xtx + s2.xtx, whole.xtx, rtol=1e-6, atol=1e-6)
    r1 = reservoir.solve_ridge(
        reservoir.readouts.RidgeStats(s1.xtx + s2.xtx, s1.xty + s2.xty), 1e-3
    )
    r2 = reservoir.solve_ridge(whole, 1e-3)
    np.testing.assert_allclose(r1["w_out"], r2["w_out"], rtol=1e-4, atol=1e-5)


def test_fit_is_one_compiled_function(cell, params, data):
    us, ys = data
    reservoir.fit_ridge(cell, params, us, ys, ridge=1e-3, washout=5)
    n = reservoir.drivers._fit_jit._cache_size()
    reservoir.fit_ridge(cell, params, us + 1.0, ys, ridge=1e-2, washout=7)
    assert reservoir.drivers._fit_jit._cache_size() == n  # new data, ridge and washout: no retrace


def test_noise_is_chunking_invariant(params, data):
    us, ys = data
    noisy = reservoir.EchoState(
        I,
        N,
        spectral_radius=0.9,
        leak_rate=0.4,
        bias_scaling=0.2,
        density=0.5,
        input_density=0.8,
        noise=0.05,
    )
    key = jax.random.key(7)
    _, clean = reservoir.harvest(noisy, params, us)
    _, hs = reservoir.harvest(noisy, params, us, key=key)
    assert float(jnp.abs(hs - clean).max()) > 1e-3
    stats, _ = reservoir.ridge_stats(noisy, params, us, ys, key=key, chunk_size=37)
    Z = np.concatenate([np.asarray(hs, np.float64), np.ones((T, 1))], 1)
    np.testing.assert_allclose(stats.xtx, Z.T @ Z, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- modes


def test_predict_equals_harvest_then_readout(cell, params, data):
    us, ys = data
    readout, state = reservoir.fit_ridge(cell, params, us[:300], ys[:300], ridge=1e-4, washout=20)
    _, pred = reservoir.predict(cell, params, readout, us[300:], state)
    _, hs = reservoir.harvest(cell, params, us[300:], state)
    ref = np.asarray(hs, np.float64) @ np.asarray(readout["w_out"]) + np.asarray(readout["b_out"])
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-5)


def test_generate_equals_python_loop():
    cell = reservoir.EchoState(1, 20, spectral_radius=0.8, leak_rate=0.5, bias_scaling=0.1)
    p = cell.init(jax.random.key(2))
    s = np.sin(np.arange(301) / 4.0).astype(np.float32)
    readout, state = reservoir.fit_ridge(cell, p, s[:-1, None], s[1:, None], ridge=1e-6, washout=50)
    _, ys = reservoir.generate(cell, p, readout, state, 30)
    # reference loop in float64: emit readout, feed it back as input
    pn = {k: np.asarray(v, np.float64) for k, v in p.items()}
    w, b = np.asarray(readout["w_out"]), np.asarray(readout["b_out"])
    h = np.asarray(state.h, np.float64)
    ref = []
    for _ in range(30):
        y = h @ w + b
        ref.append(y)
        h = 0.5 * h + 0.5 * np.tanh(y @ pn["w_in"] + pn["b"] + pn["w"] @ h)
    np.testing.assert_allclose(ys, np.array(ref), rtol=1e-3, atol=1e-4)
    # and it continues the sine: ys[0] predicts s[300] (the state has seen s[299])
    true = np.sin((300 + np.arange(30)) / 4.0)
    assert np.sqrt(np.mean((np.asarray(ys)[:, 0] - true) ** 2)) < 0.05


def test_output_feedback_teacher_forcing_matches_loop():
    cell = reservoir.EchoState(
        1, 16, spectral_radius=0.8, leak_rate=0.7, feedback_size=1, feedback_scaling=0.5
    )
    p = cell.init(jax.random.key(4))
    rng = np.random.default_rng(1)
    us = rng.uniform(-1, 1, (60, 1)).astype(np.float32)
    ys = np.sin(np.cumsum(us, 0)).astype(np.float32)
    _, hs = reservoir.harvest(cell, p, us, teacher=ys)
    np.testing.assert_allclose(hs, np_reservoir(cell, p, us, fb=ys), rtol=1e-4, atol=1e-5)
    readout, state = reservoir.fit_ridge(cell, p, us, ys, ridge=1e-4)  # teacher defaults to ys
    np.testing.assert_allclose(state.y, ys[-1], rtol=1e-6)
    w, b = np_ridge(np.asarray(hs), ys, 1e-4)
    np.testing.assert_allclose(readout["w_out"], w, rtol=1e-3, atol=1e-4 * np.abs(w).max())


def test_rls_equals_ridge_with_penalised_bias(cell, params, data):
    us, ys = data
    delta = 1e-2
    readout, _ = reservoir.fit_rls(cell, params, us, ys, washout=40, delta=delta)
    _, hs = reservoir.harvest(cell, params, us)
    w, b = np_ridge(np.asarray(hs)[40:], ys[40:], delta, penalise_bias=True)
    np.testing.assert_allclose(readout["w_out"], w, rtol=1e-4, atol=1e-5 * np.abs(w).max())
    np.testing.assert_allclose(readout["b_out"], b, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_force_learning_with_feedback_learns_a_sine():
    """FORCE: no input, output fed back; the free run afterwards continues the sine.

    The free run is aligned: its first output is the readout of the last training state,
    the very value FORCE fed back at the last training step. What used to fail was the
    learning: ``delta`` is the ridge penalty of the final readout (``P_0 = I / delta``)
    and the old default 1.0 kept the closed loop about 0.1 off the target by the end
    of training; the default is now ReservoirPy's ``alpha`` 1e-6.
    """
    cell = reservoir.EchoState(
        1,
        100,
        spectral_radius=0.9,
        leak_rate=0.5,
        feedback_size=1,
        input_scaling=0.0,
        feedback_scaling=0.5,
        bias_scaling=0.2,
        density=0.2,
    )
    p = cell.init(jax.random.key(5))
    ys = (0.5 * np.sin(np.arange(1000) / 6.0))[:, None].astype(np.float32)
    us = np.zeros((1000, 1), np.float32)
    readout, state = reservoir.fit_rls(cell, p, us, ys, feedback="output")
    # the closed loop tracks the target at the end of training
    assert abs(float(state.y[0]) - ys[-1, 0]) < 0.01
    _, gen = reservoir.generate(cell, p, readout, state, 40, inputs=np.zeros((40, 1), np.float32))
    # gen[0] is the readout of the last training state, i.e. the output for step 999
    np.testing.assert_allclose(np.asarray(gen)[0], np.asarray(state.y), atol=1e-6)
    true = 0.5 * np.sin(np.arange(999, 1039) / 6.0)
    assert np.sqrt(np.mean((np.asarray(gen)[:, 0] - true) ** 2)) < 0.05
    # a one-step shift would fail this: the free run is in phase, not a step ahead
    assert np.sqrt(np.mean((np.asarray(gen)[1:, 0] - true[:-1]) ** 2)) > 0.05


def test_memory_capacity_of_linear_reservoir_close_to_n_never_above():
    n, K = 10, 40
    cell = reservoir.EchoState(1, n, spectral_radius=0.9, density=1.0, activation="identity")
    for seed in range(2):
        p = cell.init(jax.random.key(seed))
        u, tg = memory_task(4000, K, seed=seed)
        u, tg = u[:, None].astype(np.float32), tg.astype(np.float32)
        readout, state = reservoir.fit_ridge(cell, p, u[:2500], tg[:2500], ridge=1e-9, washout=K)
        _, pred = reservoir.predict(cell, p, readout, u[2500:], state)
        mc = float(metrics.memory_capacity(pred, tg[2500:]))
        assert 0.85 * n < mc <= n


# --------------------------------------------------------------------------- sweeps


def test_sweep_equals_fits_one_by_one(data):
    us, ys = data
    base = reservoir.EchoState(I, 16, leak_rate=1.0, bias_scaling=0.2, density=0.5)
    kw = dict(spectral_radius=[0.6, 1.1], leak_rate=[0.3, 1.0], ridge=[1e-5, 1e-2], seeds=[0, 3])
    # 16 models, 4 distinct cells (sr x leak) for the one-by-one reference
    table = reservoir.sweep(
        base, us[:300], ys[:300], us[300:], ys[300:], washout=20, chunk_size=64, **kw
    )
    assert table["nrmse"].shape == (16,)
    assert (
        len(
            {
                (r["spectral_radius"], r["leak_rate"], r["ridge"], r["seed"])
                for r in [dict(zip(table, v)) for v in zip(*table.values())]
            }
        )
        == 16
    )
    for m in range(16):
        c = dataclasses.replace(
            base,
            spectral_radius=float(table["spectral_radius"][m]),
            leak_rate=float(table["leak_rate"][m]),
        )
        p = c.init(jax.random.key(int(table["seed"][m])))
        readout, state = reservoir.fit_ridge(
            c, p, us[:300], ys[:300], ridge=float(table["ridge"][m]), washout=20
        )
        _, pred = reservoir.predict(c, p, readout, us[300:], state)
        ref = float(metrics.nrmse(pred, jnp.asarray(ys[300:])))
        assert abs(table["nrmse"][m] - ref) <= 1e-3 * ref + 1e-6, (m, table["nrmse"][m], ref)
    # the grid is not degenerate: hyperparameters change the score
    assert np.ptp(table["nrmse"]) > 1e-3


# --------------------------------------------------------------------------- diagnostics


def test_echo_state_property():
    rng = np.random.default_rng(3)
    us = rng.uniform(-1, 1, (300, 1)).astype(np.float32)
    good = reservoir.EchoState(1, 30, spectral_radius=0.8, density=0.5)
    res = reservoir.echo_state_property(good, good.init(jax.random.key(0)), us, jax.random.key(1))
    assert bool(res.converged) and res.distance.shape == (300,)
    assert float(res.distance[-1]) < 1e-6 * float(res.distance[0])
    # a linear reservoir with radius > 1 amplifies the difference of its initial states
    bad = reservoir.EchoState(1, 30, spectral_radius=1.2, density=0.5, activation="identity")
    res = reservoir.echo_state_property(
        bad, bad.init(jax.random.key(0)), us[:100], jax.random.key(1)
    )
    assert not bool(res.converged) and float(res.distance[-1]) > float(res.distance[0])


# --------------------------------------------------------------------------- freezing


def test_frozen_reservoir_is_untouched_by_optax(cell, params):
    model = {"reservoir": params, "readout": {"w_out": jnp.zeros((N, 2)), "b_out": jnp.zeros((2,))}}
    labels = reservoir.freezing.frozen_labels(model)
    assert all(v == "frozen" for v in jax.tree_util.tree_leaves(labels["reservoir"]))
    assert all(v == "trainable" for v in jax.tree_util.tree_leaves(labels["readout"]))
    mask = reservoir.freezing.trainable_mask(model)
    assert not any(jax.tree_util.tree_leaves(mask["reservoir"]))
    assert all(
        v == "frozen" for v in jax.tree_util.tree_leaves(reservoir.freezing.frozen_labels(params))
    )
    opt = reservoir.freeze_reservoir(optax.adam(1e-2), model)
    state = opt.init(model)
    grads = jax.tree_util.tree_map(jnp.ones_like, model)
    updates, state = opt.update(grads, state, model)
    new = optax.apply_updates(model, updates)
    for a, b in zip(
        jax.tree_util.tree_leaves(new["reservoir"]), jax.tree_util.tree_leaves(model["reservoir"])
    ):
        np.testing.assert_array_equal(a, b)
    assert float(jnp.abs(new["readout"]["w_out"]).min()) > 0


# --------------------------------------------------------------------------- errors


def test_bad_inputs_raise_clear_errors(cell, params, data):
    us, ys = data
    with pytest.raises(ValueError, match=r"us must have shape \(T, 2\)"):
        reservoir.harvest(cell, params, us[:, :1])
    with pytest.raises(ValueError, match="ys must have T = 400"):
        reservoir.fit_ridge(cell, params, us, ys[:10], ridge=1e-3)
    with pytest.raises(ValueError, match="washout"):
        reservoir.fit_ridge(cell, params, us, ys, ridge=1e-3, washout=400)
    with pytest.raises(ValueError, match="ridge"):
        reservoir.fit_ridge(cell, params, us, ys, ridge=-1.0)
    with pytest.raises(ValueError, match="precision"):
        reservoir.fit_ridge(cell, params, us, ys, ridge=1e-3, precision="float16")
    with pytest.raises(ValueError, match="params must have the keys"):
        reservoir.harvest(cell, {"w": params["w"]}, us)
    with pytest.raises(TypeError, match="cell must be"):
        reservoir.harvest(rj.GRU(2, 3), params, us)
    readout, state = reservoir.fit_ridge(cell, params, us, ys[:, :1], ridge=1e-3)
    with pytest.raises(ValueError, match="cell.input_size"):
        reservoir.generate(cell, params, readout, state, 5)  # O = 1 output cannot feed I = 2
    with pytest.raises(ValueError, match="readout must"):
        reservoir.predict(cell, params, {"w_out": readout["w_out"]}, us)
