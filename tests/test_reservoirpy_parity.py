"""New reservoir pieces against ReservoirPy 0.4.2: same weights, same series, same numbers.

Everything runs in float64 (``jax.enable_x64`` inside each test) so that agreement is to
round-off, not to float32.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import reservoir
from rnnjax.tasks import chaos
from rnnjax.tasks.lorenz import lorenz63 as chaos_lorenz63

rpy = pytest.importorskip("reservoirpy")
from reservoirpy import datasets as rds  # noqa: E402
from reservoirpy import nodes as rnodes  # noqa: E402
from reservoirpy import observables as robs  # noqa: E402

T, I, N = 60, 2, 12


def _series(T=T, I=I, seed=0):
    rng = np.random.default_rng(seed)
    return np.tanh(np.cumsum(rng.normal(size=(T, I)), axis=0) / 4)


def _np(p):
    return {k: np.asarray(v, np.float64) for k, v in p.items()}


def _init64(cell, key):
    """Draw in float32 outside the x64 context, then cast: drawing a float64 reservoir
    inside ``jax.enable_x64(True)`` trips the host callback of the spectral radius (it
    builds its result outside the context, in float32)."""
    cell32 = dataclasses.replace(cell, param_dtype=jnp.float32)
    with jax.enable_x64(False):
        p = cell32.init(key)
    with jax.enable_x64(True):
        return {k: jnp.asarray(np.asarray(v, np.float64)) for k, v in p.items()}


# --------------------------------------------------------------------------- cells


def test_es2n_states_equal_reservoirpy():
    with jax.enable_x64(True):
        cell = reservoir.variants.ES2N(
            I, N, proximity=0.3, density=0.5, bias_scaling=0.2, param_dtype=jnp.float64
        )
        p = _init64(cell, jax.random.key(0))
        u = _series()
        _, hs = rj.unroll(cell, p, jnp.asarray(u))
        q = _np(p)
        node = rnodes.ES2N(W=q["w"], Win=q["w_in"].T, O=q["o"], bias=q["b"], proximity=0.3)
        ref = node.run(u)
        np.testing.assert_allclose(np.asarray(hs), ref, rtol=0, atol=1e-12)
        # O is orthogonal
        np.testing.assert_allclose(q["o"] @ q["o"].T, np.eye(N), atol=1e-6)  # drawn in float32


@pytest.mark.parametrize("activation,mu", [("tanh", 0.0), ("sigmoid", 0.2)])
def test_intrinsic_plasticity_equals_reservoirpy(activation, mu):
    with jax.enable_x64(True):
        cell = reservoir.variants.IPReservoir(I, N, leak_rate=0.6, mu=mu, sigma=0.5, learning_rate=5e-3,
                               density=0.5, bias_scaling=0.3, activation=activation,
                               param_dtype=jnp.float64)  # fmt: skip
        p = _init64(cell, jax.random.key(1))
        u = _series(seed=1)
        state, hs_fit = rj.unroll(cell, p, jnp.asarray(u))
        q = _np(p)
        node = rnodes.IPReservoir(W=q["w"], Win=q["w_in"].T, bias=q["b"], lr=0.6, mu=mu,
                                  sigma=0.5, learning_rate=5e-3, activation=activation)  # fmt: skip
        node.fit(u)
        np.testing.assert_allclose(np.asarray(state.gain), node.a, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(state.shift), node.b, rtol=0, atol=1e-12)
        assert np.max(np.abs(node.a - 1.0)) > 1e-3  # the rule did move the gains
        # after the fit both run with the adapted gains frozen, from the same state
        frozen = dataclasses.replace(cell, learning_rate=0.0)
        _, hs = rj.unroll(frozen, p, jnp.asarray(u[:20]), state=state)
        ref = node.run(u[:20])
        np.testing.assert_allclose(np.asarray(hs), ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "rule,norm,act", [("oja", False, "tanh"), ("anti-oja", True, "tanh"), ("hebbian", True, "tanh"),
                      ("anti-hebbian", False, "sigmoid"), ("bcm", True, "tanh")]
)  # fmt: skip
def test_local_plasticity_equals_reservoirpy_rules_threaded(rule, norm, act):
    """ReservoirPy 0.4.2's own step and rule functions, threaded step by step (its
    ``fit`` never stores the new state, so its pre-synaptic values stay at zero)."""
    import scipy.sparse as sp

    with jax.enable_x64(True):
        cell = reservoir.variants.LocalPlasticityReservoir(
            I, N, local_rule=rule, eta=5e-3, bcm_theta=0.1, synapse_normalization=norm,
            leak_rate=0.7, density=0.4, bias_scaling=0.3, activation=act, param_dtype=jnp.float64,
        )  # fmt: skip
        p = _init64(cell, jax.random.key(6))
        u = _series(T=40, seed=6)
        state, hs = rj.unroll(cell, p, jnp.asarray(u))
        q = _np(p)
        node = rnodes.LocalPlasticityReservoir(
            W=q["w"].copy(), Win=q["w_in"].T, bias=q["b"], lr=0.7, local_rule=rule, eta=5e-3,
            bcm_theta=0.1, synapse_normalization=norm, activation=act,
        )  # fmt: skip
        node.initialize(u)
        st, ref = node.state, []
        for u_t in u:
            new = node._step(st, u_t)
            rows, cols, data = sp.find(node.W)
            node.W[rows, cols] += node.increment(data, st["internal"][cols], new["internal"][rows])
            if norm:
                node.W /= np.maximum(np.sqrt(np.sum(node.W**2, axis=1, keepdims=True)), 1e-300)
            st = new
            ref.append(new["out"])
        np.testing.assert_allclose(np.asarray(hs), np.array(ref), rtol=0, atol=1e-12)
        np.testing.assert_allclose(q["w"] + np.asarray(state.dw), node.W, rtol=0, atol=1e-12)
        assert np.max(np.abs(np.asarray(state.dw))) > 1e-4  # the rule moved W


def test_lif_spikes_equal_reservoirpy():
    with jax.enable_x64(True):
        cell = reservoir.spiking.LIF(I, N, threshold=0.8, leak_rate=0.2, inhibitory=0.25, density=0.4,
                       input_density=0.8, param_dtype=jnp.float64)  # fmt: skip
        p = _init64(cell, jax.random.key(7))
        u = np.abs(_series(seed=7))
        _, spikes = rj.unroll(cell, p, jnp.asarray(u))
        q = _np(p)
        assert np.all(q["w"][:, :3] <= 0) and np.all(q["w"][:, 3:] >= 0)  # 3 inhibitory units
        node = rnodes.LIF(W=q["w"], Win=q["w_in"].T, lr=0.2, threshold=0.8)
        ref = node.run(u)
        np.testing.assert_array_equal(np.asarray(spikes), ref)
        assert 0 < ref.mean() < 1  # some units fire, not all


def test_lms_readout_equals_reservoirpy():
    with jax.enable_x64(True):
        cell = reservoir.EchoState(I, N, density=0.5, leak_rate=0.5, param_dtype=jnp.float64)
        p = _init64(cell, jax.random.key(2))
        u = _series(seed=2)
        y = np.roll(u[:, :1], -1, axis=0)
        readout, _ = reservoir.fit_lms(cell, p, u, y, learning_rate=0.05)
        _, hs = reservoir.harvest(cell, p, u)
        node = rnodes.LMS(learning_rate=0.05)
        node.fit(np.asarray(hs), y)
        np.testing.assert_allclose(np.asarray(readout["w_out"]), node.Wout, rtol=0, atol=1e-12)
        np.testing.assert_allclose(np.asarray(readout["b_out"]), node.bias.ravel(), atol=1e-12)


# --------------------------------------------------------------------------- composition


def test_deep_esn_equals_reservoirpy_model_graph():
    """``[r1, r1 >> r2] >> Ridge`` in ReservoirPy against harvest_stack + fit_states."""
    with jax.enable_x64(True):
        r1 = reservoir.EchoState(1, N, leak_rate=0.5, density=0.5, param_dtype=jnp.float64)
        r2 = reservoir.EchoState(N, 8, leak_rate=0.8, density=0.5, param_dtype=jnp.float64)
        p1, p2 = _init64(r1, jax.random.key(3)), _init64(r2, jax.random.key(4))
        s = np.sin(np.arange(300) / 7.0)[:, None] * 0.8
        u, y = s[:-1], s[1:]
        hs = reservoir.compose.harvest_stack([r1, r2], [p1, p2], u)
        readout = reservoir.compose.fit_states([*hs], y, ridge=1e-6, washout=30)
        pred = reservoir.readout_apply(readout, jnp.concatenate(hs, axis=1))
        q1, q2 = _np(p1), _np(p2)
        n1 = rnodes.Reservoir(W=q1["w"], Win=q1["w_in"].T, bias=q1["b"], lr=0.5)
        n2 = rnodes.Reservoir(W=q2["w"], Win=q2["w_in"].T, bias=q2["b"], lr=0.8)
        ridge = rnodes.Ridge(ridge=1e-6)
        model = [n1, n1 >> n2] >> ridge
        model.fit(u, y, warmup=30)
        # a fresh run from zero states: the fit above left the reservoirs at the end
        n1.reset()
        n2.reset()
        ref = model.run(u)
        np.testing.assert_allclose(np.asarray(pred), ref, rtol=0, atol=1e-8)


# --------------------------------------------------------------------------- data, measures


def test_maps_and_mso_equal_reservoirpy_exactly():
    np.testing.assert_array_equal(
        chaos.henon_map(200, x0=(0.1, 0.2)), rds.henon_map(200, x0=[0.1, 0.2])
    )
    np.testing.assert_array_equal(
        chaos.logistic_map(200, r=3.7, x0=0.3), rds.logistic_map(200, r=3.7, x0=0.3)
    )
    np.testing.assert_array_equal(chaos.mso(300), rds.mso2(300))
    f8 = (0.2, 0.311, 0.42, 0.51, 0.63, 0.74, 0.85, 0.97)
    np.testing.assert_array_equal(chaos.mso(300, f8), rds.mso8(300))
    np.testing.assert_array_equal(
        chaos.mso(50, (0.3,), normalize=False), rds.mso(50, [0.3], normalize=False)
    )


@pytest.mark.parametrize(
    "name,n,h,kw",
    [
        ("rossler", 100, 0.1, {}),
        ("multiscroll", 100, 0.01, {}),
        ("doublescroll", 60, 0.25, {}),
        ("rabinovich_fabrikant", 100, 0.05, {}),
    ],
)
def test_flows_equal_reservoirpy_to_solver_accuracy(name, n, h, kw):
    """ReservoirPy samples at linspace(0, n h, n); its h is set so that the samples are
    exactly h apart, as here, and its adaptive solver is run at tight tolerances."""
    ours = getattr(chaos, name)(n, h=h, substeps=20, **kw)
    ref = getattr(rds, name)(n, h=h * (n - 1) / n, rtol=1e-11, atol=1e-12, **kw)
    scale = np.max(np.abs(ref))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6 * scale)


def test_lorenz96_equals_a_tight_solver():
    """ReservoirPy's lorenz96 samples at linspace(0, t_max * h, n) (t_max already holds
    h): its series is not sampled every h, so the reference is scipy's tight solve of the
    same equations on the same grid."""
    from scipy.integrate import solve_ivp

    n, N, h = 80, 6, 0.01
    ours = chaos.lorenz96(n, N=N, h=h, substeps=10)
    x0 = np.full(N, 8.0)
    x0[0] += 0.01
    rhs = lambda t, s: (np.roll(s, -1) - np.roll(s, 2)) * np.roll(s, 1) - s + 8.0  # noqa: E731
    t = np.arange(n) * h
    ref = solve_ivp(rhs, (0, t[-1]), x0, t_eval=t, rtol=1e-11, atol=1e-12).y.T
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-6)


def test_observables_equal_reservoirpy():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 2))
    p = y + 0.1 * rng.normal(size=(50, 2))
    assert reservoir.rsquare(y, p) == pytest.approx(robs.rsquare(y, p), rel=1e-12)
    assert reservoir.mae(y, p) == pytest.approx(robs.mae(y, p), rel=1e-12)
    W = rng.normal(size=(20, 20)) / 5
    for lr in (1.0, 0.3):
        assert reservoir.effective_spectral_radius(W, lr) == pytest.approx(
            robs.effective_spectral_radius(W, lr), rel=1e-9
        )
    with pytest.raises(ValueError, match="y_pred must have the shape"):
        reservoir.mae(y, p[:10])


@pytest.mark.parametrize("topology,rpy_name", [("cycle", "ring"), ("delay", "line")])
def test_cycle_and_delay_equal_reservoirpy_ring_and_line(topology, rpy_name):
    from reservoirpy import mat_gen

    n = 9
    cell = reservoir.EchoState(1, n, spectral_radius=0.8, topology=topology)
    W = reservoir.matrices.dense_matrix(topology, cell.init(jax.random.key(0)))
    ref = getattr(mat_gen, rpy_name)(n, n, sparsity_type="dense")
    ref = np.asarray(ref) * 0.8  # unit edge weights in ReservoirPy, times the radius
    np.testing.assert_allclose(np.asarray(W, np.float64), ref, rtol=0, atol=1e-7)
    if topology == "cycle":
        assert reservoir.effective_spectral_radius(np.asarray(W)) == pytest.approx(0.8, rel=1e-6)


def test_kuramoto_sivashinsky_equals_reservoirpy():
    ours = chaos.kuramoto_sivashinsky(200, warmup=20, N=64)
    ref = rds.kuramoto_sivashinsky(200, warmup=20, N=64)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9 * np.abs(ref).max())


def _lstsq_ridge(F, Y, ridge):
    Fc, Yc = F - F.mean(0), Y - Y.mean(0)
    n = F.shape[1]
    A = np.vstack([Fc, np.sqrt(ridge) * np.eye(n)])
    return np.linalg.lstsq(A, np.vstack([Yc, np.zeros((n, Y.shape[1]))]), rcond=None)[0]


def _rpy_ridge(F, Y, ridge):
    import warnings

    r = rnodes.Ridge(ridge=ridge)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ill-conditioned-matrix warning
        r.fit(F, Y)
    return np.asarray(r.Wout)


@pytest.mark.parametrize("ridge", [2.5e-6, 1e-9, 1e-12])
def test_ridge_on_badly_conditioned_features_beats_reservoirpy(ridge):
    """NVAR's Lorenz-63 monomials (condition ~2e8): the general float64 ridge readout
    (fit_states) redoes the Gram solve from the R factor; its distance to the float64
    lstsq solution is within 1.1x of ReservoirPy's Gram solve (measured: 1e-10 against
    3e-4 to 6e-3)."""
    with jax.enable_x64(True):
        x = np.asarray(chaos_lorenz63(1500), np.float64)
        m = reservoir.NVAR(3, delay=2, stride=1, order=2)
        F = np.asarray(m.features(jnp.asarray(x[:-1])))[m.warmup :]
        Y = (x[1:] - x[:-1])[m.warmup :]
        ours = np.asarray(reservoir.compose.fit_states(F, Y, ridge=ridge)["w_out"])
    W = _lstsq_ridge(F, Y, ridge)
    dist = lambda V: np.linalg.norm(V - W) / np.linalg.norm(W)  # noqa: E731
    assert dist(ours) <= 1.1 * dist(_rpy_ridge(F, Y, ridge))
    assert dist(ours) < 1e-6


@pytest.mark.parametrize("ridge", [1e-9, 1e-12])
def test_fit_ridge_on_badly_conditioned_states_beats_reservoirpy(ridge):
    """A linear reservoir driven by two sines: states of condition ~1e17. fit_ridge (the
    chunked run) redoes the solve from the R factor; within 1.1x of ReservoirPy's distance
    to lstsq on the same states (measured: 3e-8 and 1e-6 against 7e-4 and 23)."""
    cell = reservoir.EchoState(1, 40, spectral_radius=0.9, activation="identity")
    p = _init64(cell, jax.random.key(0))
    with jax.enable_x64(True):
        cell = dataclasses.replace(cell, param_dtype=jnp.float64)
        t = np.arange(1200.0)
        u = (np.sin(t / 7) + 0.5 * np.sin(t / 3.1))[:, None]
        y = np.roll(u, -1, 0) ** 2
        _, hs = reservoir.harvest(cell, p, u)
        readout, _ = reservoir.fit_ridge(cell, p, u, y, ridge=ridge, washout=100, chunk_size=256)
    H = np.asarray(hs)[100:]
    W = _lstsq_ridge(H, y[100:], ridge)
    dist = lambda V: np.linalg.norm(np.asarray(V) - W) / np.linalg.norm(W)  # noqa: E731
    assert dist(readout["w_out"]) <= 1.1 * dist(_rpy_ridge(H, y[100:], ridge))
