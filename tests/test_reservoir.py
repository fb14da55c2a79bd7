"""Tests of the rnnjax.reservoir package beyond the classic ESN (tests/test_esn.py):
the centred and checked readouts, reservoir matrices, dtype rules, several readouts,
input-to-readout features, batched prediction, shared-matrix sweeps, random search,
NARMA of any order, Lorenz-63 and NVAR.

References are independent: numpy.linalg.lstsq in float64, dense numpy matrices and plain
Python loops, numpy eigenvalues. Shapes are tiny.
"""

import dataclasses
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax import metrics, reservoir
from rnnjax.reservoir import NVAR, matrices, nvar_features, readouts
from rnnjax.tasks.lorenz import lorenz63, valid_prediction_time
from rnnjax.tasks.narma import narma

N, I, T = 20, 2, 300


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    us = rng.uniform(-1, 1, (T, I)).astype(np.float32)
    ys = np.stack([np.roll(us[:, 0], 2) * us[:, 1], np.tanh(np.cumsum(us[:, 0]) / 10)], 1)
    return us, ys.astype(np.float32)


@pytest.fixture(scope="module")
def cell():
    return reservoir.EchoState(
        I, N, spectral_radius=0.9, leak_rate=0.5, bias_scaling=0.2, density=0.5
    )


@pytest.fixture(scope="module")
def params(cell):
    return cell.init(jax.random.key(1))


def lstsq_ridge(F, Y, ridge):
    """float64 reference: centred features, lstsq on [Fc; sqrt(ridge) I] (bias from means)."""
    F, Y = np.asarray(F, np.float64), np.asarray(Y, np.float64)
    mu, yb = F.mean(0), Y.mean(0)
    A = np.concatenate([F - mu, np.sqrt(ridge) * np.eye(F.shape[1])], 0)
    B = np.concatenate([Y - yb, np.zeros((F.shape[1], Y.shape[1]))], 0)
    W = np.linalg.lstsq(A, B, rcond=None)[0]
    return W, yb - mu @ W


def np_run(W, p, us, leak, h0=None):
    """float64 loop of the reservoir equation with a given dense W."""
    h = np.zeros(W.shape[0]) if h0 is None else np.asarray(h0, np.float64)
    out = []
    for u in np.asarray(us, np.float64):
        pre = u @ np.asarray(p["w_in"], np.float64) + np.asarray(p["b"], np.float64) + W @ h
        h = (1 - leak) * h + leak * np.tanh(pre)
        out.append(h)
    return np.array(out)


# --------------------------------------------------------------------------- readouts


@pytest.mark.parametrize("ridge", [1e-2, 1e-6, 1e-10, 0.0])
def test_solve_ridge_equals_lstsq_float64_down_to_zero(ridge):
    rng = np.random.default_rng(1)
    F = rng.normal(size=(200, 12)) + 3.0  # far from centred: the mean dominates the Gram
    Y = F @ rng.normal(size=(12, 2)) + 0.1 * rng.normal(size=(200, 2)) + 5.0
    Z = np.concatenate([F, np.ones((200, 1))], 1)
    with jax.enable_x64(True):
        stats = readouts.RidgeStats(jnp.asarray(Z.T @ Z), jnp.asarray(Z.T @ Y))
    r = reservoir.solve_ridge(stats, ridge)
    w, b = lstsq_ridge(F, Y, ridge)
    np.testing.assert_allclose(r["w_out"], w, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(r["b_out"], b, rtol=1e-9, atol=1e-10)
    many = reservoir.readouts.solve_ridges(stats, [ridge, 1.0])
    np.testing.assert_allclose(many["w_out"][0], w, rtol=1e-8, atol=1e-9)


def test_fit_ridge_tiny_ridge_is_finite_and_matches_lstsq(cell, params, data):
    """The uncentred Cholesky returned NaN here; the centred solve matches lstsq's fit."""
    us, ys = data
    _, hs = reservoir.harvest(cell, params, us)
    H = np.asarray(hs, np.float64)[20:]
    for ridge in (1e-12, 0.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            r, _ = reservoir.fit_ridge(cell, params, us, ys, ridge=ridge, washout=20)
        assert np.all(np.isfinite(np.asarray(r["w_out"])))
        w, b = lstsq_ridge(H, ys[20:], ridge)
        got = np.asarray(reservoir.readout_apply(r, hs[20:]), np.float64)
        ref = H @ w + b
        assert np.sqrt(np.mean((got - ref) ** 2)) < 1e-4 * np.std(ys[20:])


def test_float32_readout_close_to_float64(cell, params, data):
    us, ys = data
    errs = {}
    for prec in ("float32", "float64"):
        r, st = reservoir.fit_ridge(
            cell, params, us[:200], ys[:200], ridge=1e-8, washout=20, precision=prec, chunk_size=64
        )
        assert r["w_out"].dtype == (jnp.float32 if prec == "float32" else jnp.float64)
        _, pred = reservoir.predict(cell, params, r, us[200:], st)
        errs[prec] = float(metrics.nrmse(pred, jnp.asarray(ys[200:])))
    assert errs["float32"] <= 1.05 * errs["float64"], errs


def test_float32_stats_equal_float64_stats(cell, params, data):
    """The float32 R-factor accumulation gives the same sums (to float32 precision)."""
    us, ys = data
    s32, _ = reservoir.ridge_stats(
        cell, params, us, ys, washout=10, chunk_size=50, precision="float32"
    )
    s64, _ = reservoir.ridge_stats(cell, params, us, ys, washout=10, chunk_size=50)
    np.testing.assert_allclose(s32.xtx, s64.xtx, rtol=2e-4, atol=2e-3)
    np.testing.assert_allclose(s32.xty, s64.xty, rtol=2e-4, atol=2e-3)


def test_non_finite_raises_and_ill_posed_warns():
    with jax.enable_x64(True):
        bad = readouts.RidgeStats(jnp.full((3, 3), jnp.nan), jnp.zeros((3, 1)))
        with pytest.raises(FloatingPointError, match="NaN"):
            reservoir.solve_ridge(bad, 1e-3)
        F = np.random.default_rng(0).normal(size=(50, 1))
        F = np.concatenate([F, F], 1)  # rank deficient: ridge 0 is ill-posed
        Z = np.concatenate([F, np.ones((50, 1))], 1)
        stats = readouts.RidgeStats(jnp.asarray(Z.T @ Z), jnp.asarray(Z.T @ F[:, :1]))
    with pytest.warns(RuntimeWarning, match="condition number"):
        r = reservoir.solve_ridge(stats, 0.0)
    # the minimum-norm solution: the weight split evenly between the two copies
    np.testing.assert_allclose(np.asarray(r["w_out"])[:, 0], [0.5, 0.5], atol=1e-8)


def test_include_input_features_match_lstsq(cell, params, data):
    us, ys = data
    r, st = reservoir.fit_ridge(
        cell, params, us[:200], ys[:200], ridge=1e-4, washout=10, include_input=True
    )
    assert r["w_out"].shape == (N + I, 2)
    _, hs = reservoir.harvest(cell, params, us[:200])
    Fe = np.concatenate([np.asarray(hs, np.float64), us[:200]], 1)[10:]
    w, b = lstsq_ridge(Fe, ys[10:200], 1e-4)
    np.testing.assert_allclose(r["w_out"], w, rtol=1e-4, atol=1e-5 * np.abs(w).max())
    _, pred = reservoir.predict(cell, params, r, us[200:], st)
    _, h2 = reservoir.harvest(cell, params, us[200:], st)
    ref = np.concatenate([np.asarray(h2, np.float64), us[200:]], 1) @ w + b
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="pass us"):
        reservoir.readout_apply(r, hs)


def test_several_readouts_on_one_run_equal_separate_fits(cell, params, data):
    us, ys = data
    outs, st = reservoir.fit_readouts(
        cell, params, us, {"a": ys[:, :1], "b": ys[:, 1:]}, ridge={"a": 1e-3, "b": 1e-6}, washout=15
    )
    for k, col, ridge in (("a", slice(0, 1), 1e-3), ("b", slice(1, 2), 1e-6)):
        ref, st2 = reservoir.fit_ridge(cell, params, us, ys[:, col], ridge=ridge, washout=15)
        np.testing.assert_allclose(
            outs[k]["w_out"], ref["w_out"], rtol=1e-5, atol=1e-6 * np.abs(ref["w_out"]).max()
        )
        np.testing.assert_allclose(outs[k]["b_out"], ref["b_out"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(st.h, st2.h)


# --------------------------------------------------------------------------- dtypes


def test_float64_params_need_x64_and_are_drawn_in_float64():
    with pytest.raises(ValueError, match="param_dtype=float64 needs 64-bit"):
        reservoir.EchoState(1, 8, param_dtype=jnp.float64)
    with jax.enable_x64(True):
        cell = reservoir.EchoState(1, 8, param_dtype=jnp.float64, density=1.0)
        p = cell.init(jax.random.key(0))
        assert all(v.dtype == jnp.float64 for v in p.values())
        w_in = np.asarray(p["w_in"])
        # drawn in float64: not float32 numbers cast up
        assert np.any(w_in != w_in.astype(np.float32).astype(np.float64))
    p16 = reservoir.EchoState(1, 8, param_dtype=jnp.bfloat16).init(jax.random.key(0))
    assert all(v.dtype == jnp.bfloat16 for v in p16.values())


# --------------------------------------------------------------------------- matrices


def test_orthogonal_cycle_jumps_delay_spectra():
    n, sr = 24, 0.8
    for topo in ("orthogonal", "cycle"):
        c = reservoir.EchoState(1, n, spectral_radius=sr, topology=topo)
        W = matrices.dense_matrix(topo, c.init(jax.random.key(0)))
        ev = np.linalg.eigvals(W)
        np.testing.assert_allclose(np.abs(ev), sr, rtol=1e-5)  # every eigenvalue on the circle
    # the cycle's eigenvalues are sr times the n-th roots of unity
    W = matrices.dense_matrix(
        "cycle",
        reservoir.EchoState(1, n, spectral_radius=sr, topology="cycle").init(jax.random.key(0)),
    )
    np.testing.assert_allclose(np.sort(np.angle(np.linalg.eigvals(W / sr) ** n)), 0, atol=1e-4)
    assert np.count_nonzero(W) == n and np.allclose(W[np.arange(1, n), np.arange(n - 1)], sr)
    c = reservoir.EchoState(
        1, n, spectral_radius=sr, topology="jumps", jump_size=3, jump_weight=0.4
    )
    W = matrices.dense_matrix("jumps", c.init(jax.random.key(0)), 3)
    assert abs(np.max(np.abs(np.linalg.eigvals(W))) - sr) < 1e-5
    assert np.allclose(
        W - np.diag(np.diag(W, -1), -1) - np.diag([W[0, -1]], n - 1),
        (W - np.diag(np.diag(W, -1), -1) - np.diag([W[0, -1]], n - 1)).T,
    )
    c = reservoir.EchoState(1, n, spectral_radius=0.7, topology="delay")
    W = matrices.dense_matrix("delay", c.init(jax.random.key(0)))
    np.testing.assert_allclose(W, np.diag(np.full(n - 1, 0.7), -1), atol=1e-7)
    assert np.allclose(np.linalg.matrix_power(W, n), 0)  # nilpotent: spectrum {0}


def test_user_w_and_uniform_sparse():
    rng = np.random.default_rng(0)
    W0 = rng.normal(size=(16, 16)).astype(np.float32)
    p = reservoir.EchoState(1, 16, spectral_radius=0.5).init(jax.random.key(0), w=W0)
    assert abs(np.max(np.abs(np.linalg.eigvals(np.asarray(p["w"], np.float64)))) - 0.5) < 1e-5
    p = reservoir.EchoState(1, 16, spectral_radius=None).init(jax.random.key(0), w=W0)
    np.testing.assert_array_equal(p["w"], W0)
    with pytest.raises(ValueError, match=r"w must have shape \(N, N\)"):
        reservoir.EchoState(1, 16).init(jax.random.key(0), w=W0[:4])
    c = reservoir.EchoState(1, 200, spectral_radius=None, topology="uniform", density=0.05)
    w = np.asarray(c.init(jax.random.key(0))["w"])
    assert abs(np.mean(w != 0) - 0.05) < 0.01 and np.abs(w).max() <= 1.0


@pytest.mark.parametrize("topo", ["cycle", "jumps", "delay", "orthogonal"])
def test_structured_run_matches_dense_loop(topo, data):
    us, _ = data
    c = reservoir.EchoState(
        I, 12, spectral_radius=0.9, leak_rate=0.6, topology=topo, jump_size=4, bias_scaling=0.1
    )
    p = c.init(jax.random.key(2))
    _, hs = reservoir.harvest(c, p, us[:60])
    ref = np_run(matrices.dense_matrix(topo, p, 4), p, us[:60], 0.6)
    np.testing.assert_allclose(hs, ref, rtol=1e-4, atol=1e-5)


def test_cycle_of_100k_units_runs():
    c = reservoir.EchoState(1, 100_000, spectral_radius=0.9, topology="cycle", input_density=0.5)
    p = c.init(jax.random.key(0))
    assert p["w"].shape == (100_000,)
    _, hs = reservoir.harvest(c, p, jnp.ones((5, 1)))
    assert hs.shape == (5, 100_000) and bool(jnp.isfinite(hs).all())


def test_memory_capacity_of_linear_orthogonal_reservoir():
    from rnnjax.tasks.memory import memory_task

    n, K = 20, 60
    c = reservoir.EchoState(1, n, spectral_radius=0.9, topology="orthogonal", activation="identity")
    p = c.init(jax.random.key(0))
    u, tg = memory_task(3000, K, seed=0)
    u, tg = u[:, None].astype(np.float32), tg.astype(np.float32)
    r, st = reservoir.fit_ridge(c, p, u[:2000], tg[:2000], ridge=1e-10, washout=K)
    _, pred = reservoir.predict(c, p, r, u[2000:], st)
    mc = float(metrics.memory_capacity(pred, tg[2000:]))
    assert 0.9 * n < mc <= n + 0.5


# --------------------------------------------------------------------------- batched modes


def test_batched_predict_and_generate_equal_one_by_one(cell, params, data):
    us, ys = data
    r, st = reservoir.fit_ridge(cell, params, us[:200], ys[:200, :1], ridge=1e-4, washout=10)
    segs = np.stack([us[200:250], us[240:290]])
    _, pb = reservoir.predict(cell, params, r, segs, st)
    for k in range(2):
        _, p1 = reservoir.predict(cell, params, r, segs[k], st)
        np.testing.assert_allclose(pb[k], p1, rtol=1e-6, atol=1e-6)
    c1 = reservoir.EchoState(1, N, spectral_radius=0.8, leak_rate=0.5)
    p = c1.init(jax.random.key(0))
    s = np.sin(np.arange(400) / 5.0)[:, None].astype(np.float32)
    r, st = reservoir.fit_ridge(c1, p, s[:299], s[1:300], ridge=1e-6, washout=20)
    st2, _ = reservoir.harvest(c1, p, s[299:320], st)
    starts = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), st, st2)
    _, gb = reservoir.generate(c1, p, r, starts, 15)
    for k, s0 in enumerate((st, st2)):
        _, g1 = reservoir.generate(c1, p, r, s0, 15)
        # closed loop: each output is the next input, so the batched and the single
        # products' float32 rounding (a few 1e-7) compounds over the 15 steps (1.4e-6
        # measured); an off-by-one or a wrong state would differ by 1e-2 or more
        np.testing.assert_allclose(gb[k], g1, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- sweeps


def test_sweep_every_ridge_and_shared_scalings_equal_fits_one_by_one(data):
    us, ys = data
    base = reservoir.EchoState(I, 12, leak_rate=1.0, density=0.5, bias_scaling=0.1)
    table = reservoir.sweep(
        base,
        us[:200],
        ys[:200],
        us[200:],
        ys[200:],
        washout=20,
        chunk_size=64,
        spectral_radius=[0.5, 1.1],
        leak_rate=[0.4],
        input_scaling=[0.3, 1.0],
        bias_scaling=[0.0, 0.5],
        ridge=[1e-7, 1e-4, 1e-1],
        seeds=[3],
    )
    assert table["nrmse"].shape == (24,)
    for m in range(24):
        c = dataclasses.replace(
            base,
            spectral_radius=float(table["spectral_radius"][m]),
            leak_rate=float(table["leak_rate"][m]),
            input_scaling=float(table["input_scaling"][m]),
            bias_scaling=float(table["bias_scaling"][m]),
        )
        p = c.init(jax.random.key(int(table["seed"][m])))
        r, st = reservoir.fit_ridge(
            c, p, us[:200], ys[:200], ridge=float(table["ridge"][m]), washout=20
        )
        _, pred = reservoir.predict(c, p, r, us[200:], st)
        ref = float(metrics.nrmse(pred, jnp.asarray(ys[200:])))
        assert abs(table["nrmse"][m] - ref) <= 2e-3 * ref + 1e-6, (m, table["nrmse"][m], ref)
    assert np.ptp(table["nrmse"]) > 1e-3


def test_sweep_free_run_equals_generate():
    s = (np.sin(np.arange(500) / 6.0) * 0.8)[:, None].astype(np.float32)
    base = reservoir.EchoState(1, 16, leak_rate=0.5, density=0.5)
    table = reservoir.sweep(
        base,
        s[:299],
        s[1:300],
        s[299:-1],
        s[300:],
        washout=30,
        spectral_radius=[0.7, 0.95],
        leak_rate=[0.5],
        ridge=[1e-8, 1e-6, 1e-4, 1e-3, 1e-2],
        seeds=[0],
        free_run=25,
    )
    for m in range(10):  # 5 ridges: the one-eigendecomposition path
        c = dataclasses.replace(base, spectral_radius=float(table["spectral_radius"][m]))
        p = c.init(jax.random.key(0))
        r, st = reservoir.fit_ridge(
            c, p, s[:299], s[1:300], ridge=float(table["ridge"][m]), washout=30
        )
        _, g = reservoir.generate(c, p, r, st, 25)
        ref = np.sqrt(np.mean((np.asarray(g, np.float64) - s[299:324]) ** 2)) / np.std(s[299:-1])
        assert abs(table["nrmse_free"][m] - ref) <= 1e-3 * ref + 1e-5, (
            m,
            table["nrmse_free"][m],
            ref,
        )


def test_random_search_draws_log_uniform_in_range(data):
    us, ys = data
    base = reservoir.EchoState(I, 8, density=0.5)
    t = reservoir.random_search(
        base,
        us[:150],
        ys[:150],
        us[150:],
        ys[150:],
        n_samples=6,
        seed=1,
        ranges={"spectral_radius": (0.1, 1.0), "input_scaling": (0.01, 1.0)},
        ridge=[1e-4, 1e-2],
        washout=10,
    )
    assert t["nrmse"].shape == (12,)
    assert np.all((t["spectral_radius"] >= 0.1) & (t["spectral_radius"] <= 1.0))
    assert np.all(t["leak_rate"] == base.leak_rate)
    rng = np.random.default_rng(1)
    ref = np.exp(rng.uniform(np.log(0.1), np.log(1.0), 6))
    np.testing.assert_allclose(t["spectral_radius"][::2], ref)
    with pytest.raises(ValueError, match="ranges key"):
        reservoir.random_search(
            base,
            us[:150],
            ys[:150],
            us[150:],
            ys[150:],
            n_samples=2,
            ranges={"density": (0.1, 1.0)},
            ridge=[1e-4],
        )


# --------------------------------------------------------------------------- tasks


@pytest.mark.parametrize("order", [20, 30])
def test_narma_high_orders_use_atiya_parlos_coefficients(order):
    u, y = narma(800, order=order, seed=2)
    yt = np.concatenate([[0.0], y])
    for t in range(order - 1, 800):
        expect = (
            0.2 * yt[t]
            + 0.004 * yt[t] * yt[t - order + 1 : t + 1].sum()
            + 1.5 * u[t - order + 1] * u[t]
            + 0.001
        )
        assert abs(y[t] - expect) < 1e-12
    u2, y2 = narma(300, order=order, coefficients=(0.3, 0.05, 1.5, 0.01), saturate=True)
    assert np.abs(y2).max() < 1


def test_lorenz_rk4_matches_scipy():
    from scipy.integrate import solve_ivp

    x = lorenz63(200, dt=0.01, substeps=2, discard=0, x0=(1.0, 2.0, 3.0))

    def f(_, s):
        return [10 * (s[1] - s[0]), s[0] * (28 - s[2]) - s[1], s[0] * s[1] - 8 / 3 * s[2]]

    ref = solve_ivp(
        f,
        (0, 2.0),
        [1.0, 2.0, 3.0],
        t_eval=np.arange(1, 201) * 0.01,
        rtol=1e-11,
        atol=1e-11,
        method="DOP853",
    ).y.T
    np.testing.assert_allclose(x, ref, rtol=1e-4, atol=2e-4)  # RK4, h = 0.005


# --------------------------------------------------------------------------- NVAR


def test_nvar_features_match_hand_construction():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(9, 2))
    feats = np.asarray(nvar_features(jnp.asarray(u, jnp.float32), delay=3, stride=2, order=2))
    for t in range(9):
        past = [u[t - 2 * j] if t - 2 * j >= 0 else np.zeros(2) for j in range(3)]
        lin = np.concatenate(past)
        quad = [lin[i] * lin[j] for i in range(6) for j in range(i, 6)]
        np.testing.assert_allclose(feats[t], np.concatenate([lin, quad]), rtol=1e-5, atol=1e-6)
    cub = np.asarray(nvar_features(jnp.asarray(u[:, :1], jnp.float32), delay=2, order=3))
    a, b = u[4, 0], u[3, 0]
    np.testing.assert_allclose(cub[4], [a, b, a**3, a * a * b, a * b * b, b**3], rtol=1e-5)


def test_nvar_forecasts_lorenz():
    dt = 0.025
    x = lorenz63(1200, dt=dt)
    m = NVAR(3, delay=2, stride=1, order=2)
    r = m.fit(x[:399], x[1:400], ridge=1e-2, residual=True)
    one = m.predict(r, x[:600], residual=True)
    assert np.sqrt(np.mean((one[400:599] - x[401:600]) ** 2)) < 0.05
    f = m.forecast(r, x[:400], 300)
    np.testing.assert_allclose(f[0], one[399], rtol=1e-6)  # first value: the first unseen one
    assert valid_prediction_time(f, x[400:700], dt) > 2.0


@pytest.mark.parametrize("ridge", [2.5e-6, 1e-9, 0.0])
def test_nvar_readout_is_the_svd_least_squares_solution_on_lorenz(ridge):
    """NVAR's monomials of Lorenz-63 have condition ~1e8: the readout comes from the R
    factor of the centred features, within 1e-6 of the float64 SVD ridge solution (the
    Gram-based solve was 1e-4 to 1e-2 off)."""
    with jax.enable_x64(True):
        x = np.asarray(lorenz63(1500), np.float64)
        m = NVAR(3, delay=2, stride=1, order=2)
        u, y = x[:-1], x[1:]
        r = m.fit(u, y, ridge=ridge, residual=True)
        F = np.asarray(m.features(jnp.asarray(u)))[m.warmup :]
        tgt = (y - u)[m.warmup :]
        Fc, Yc = F - F.mean(0), tgt - tgt.mean(0)
        U, s, Vt = np.linalg.svd(Fc, full_matrices=False)
        assert s[0] / s[-1] > 1e7
        W = Vt.T @ ((s / (s**2 + ridge))[:, None] * (U.T @ Yc))
        b = tgt.mean(0) - F.mean(0) @ W
        assert np.linalg.norm(np.asarray(r["w_out"]) - W) <= 1e-6 * np.linalg.norm(W)
        np.testing.assert_allclose(np.asarray(r["b_out"]), b, rtol=0, atol=1e-6 * np.abs(b).max())


# --------------------------------------------------------------------------- bad input (new pieces)


def test_new_reservoir_pieces_refuse_bad_input_naming_the_argument():
    from rnnjax.tasks import chaos

    cases = [
        (lambda: reservoir.variants.ES2N(1, 4, proximity=0.0), "proximity"),
        (lambda: reservoir.variants.IPReservoir(1, 4, activation="relu"), "activation"),
        (lambda: reservoir.variants.IPReservoir(1, 4, activation="sigmoid", mu=0.0), "mu"),
        (lambda: reservoir.variants.LocalPlasticityReservoir(1, 4, local_rule="stdp"), "local_rule"),
        (lambda: reservoir.spiking.LIF(1, 4, leak_rate=2.0), "leak_rate"),
        (lambda: reservoir.compose.fit_states([jnp.ones((5, 2)), jnp.ones((4, 2))], jnp.ones((5, 1)), ridge=1.0),
         "features\\[1\\]"),
        (lambda: reservoir.compose.fit_states(jnp.ones((5, 2)), jnp.ones((5, 1)), ridge=1.0, washout=5),
         "washout"),
        (lambda: reservoir.compose.harvest_stack([reservoir.EchoState(1, 4), reservoir.EchoState(3, 2)],
                                   [None, None], jnp.ones((5, 1))), "cells\\[1\\].input_size"),
        (lambda: reservoir.compose.harvest_stack([reservoir.EchoState(1, 4)], [], jnp.ones((5, 1))), "params"),
        (lambda: reservoir.effective_spectral_radius(np.ones((2, 3))), "w must be square"),
        (lambda: reservoir.rsquare(np.ones(3), np.ones(4)), "y_pred"),
        (lambda: chaos.henon_map(5, x0=(0.0,)), "x0"),
        (lambda: chaos.logistic_map(5, x0=1.5), "x0"),
        (lambda: chaos.lorenz96(5, N=3), "N"),
        (lambda: chaos.rossler(5, h=0.0), "h"),
    ]  # fmt: skip
    for fn, match in cases:
        with pytest.raises(ValueError, match=match):
            fn()
    cell = reservoir.EchoState(1, 4)
    p = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="learning_rate"):
        reservoir.fit_lms(cell, p, jnp.ones((5, 1)), jnp.ones((5, 1)), learning_rate=0.0)
    with pytest.raises(ValueError, match="feedback"):
        reservoir.fit_lms(cell, p, jnp.ones((5, 1)), jnp.ones((5, 1)), feedback="both")
