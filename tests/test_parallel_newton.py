"""The Newton solves: the exact quasi-DEER diagonal, ELK and quasi-ELK.

- The diagonal against ``jnp.diag(jax.jacfwd(step))`` at random states, every nonlinear cell.
- quasi-DEER's iteration count against a plain reference quasi-DEER written here.
- The ELK step against the dense least-squares problem it solves (diagonal and full).
- ELK converges where damped DEER crawls; never an unconverged result returned.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import parallel

I, H = 3, 4

CELLS = {
    "rnn": rj.SimpleRNN(I, H),
    "gru": rj.GRU(I, H),
    "gru_cho": rj.GRU(I, H, reset_after=False),
    "lstm": rj.LSTM(I, H),
    "lstm_proj": rj.LSTM(I, H, proj_size=2),
    "esn": rj.EchoState(I, 6),
}


def _flat_step(cell, p, x):
    """The step on the flattened state (as the Newton solve sees it)."""
    like = cell.initial_state()

    def f(h):
        leaves, tree = jax.tree_util.tree_flatten(like)
        out, o = [], 0
        for leaf in leaves:
            out.append(h[o : o + leaf.shape[-1]])
            o += leaf.shape[-1]
        new, _ = cell.step(p, jax.tree_util.tree_unflatten(tree, out), x)
        return jnp.concatenate(jax.tree_util.tree_leaves(new))

    return f


@pytest.mark.parametrize("name", sorted(CELLS))
def test_diagonal_is_the_true_jacobians(name):
    cell = CELLS[name]
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(
            lambda v: (2.0 * v).astype(jnp.float64), cell.init(jax.random.key(0))
        )
        S = sum(a.shape[-1] for a in jax.tree_util.tree_leaves(cell.initial_state()))
        xs = jax.random.normal(jax.random.key(1), (5, I), jnp.float64)
        hs = jax.random.normal(jax.random.key(2), (5, S), jnp.float64)

        def f_all(hp):
            return jax.vmap(lambda x, h: _flat_step(cell, p, x)(h))(xs, hp)

        for chunk in (1, 3, 8):
            fh, d = parallel.jacobian_diagonal(f_all, hs, chunk=chunk)
            want = jax.vmap(lambda x, h: jnp.diag(jax.jacfwd(_flat_step(cell, p, x))(h)))(xs, hs)
            np.testing.assert_allclose(d, want, rtol=1e-12, atol=1e-13)
            np.testing.assert_allclose(fh, f_all(hs), rtol=1e-12, atol=1e-13)


def _reference_quasi_deer(cell, p, xs, tol, max_iter):
    """Plain quasi-DEER: the diagonal of jacfwd at every step, a Python-driven Newton loop
    over a sequential linear recurrence. Returns (iterations, states)."""
    S = H
    f = jax.jit(jax.vmap(lambda x, h: _flat_step(cell, p, x)(h)))
    jd = jax.jit(jax.vmap(lambda x, h: jnp.diag(jax.jacfwd(_flat_step(cell, p, x))(h))))
    Hs = np.zeros((xs.shape[0], S))

    def shift(Hs):
        return np.concatenate([np.zeros((1, S)), Hs[:-1]])

    for k in range(max_iter + 1):
        if np.max(np.abs(np.asarray(f(xs, shift(Hs))) - Hs)) <= tol:
            return k, Hs
        hp = shift(Hs)
        fh, J = np.asarray(f(xs, hp)), np.asarray(jd(xs, hp))
        b = fh - J * hp
        h = np.zeros(S)
        for t in range(xs.shape[0]):
            h = J[t] * h + b[t]
            Hs[t] = h
    return None, Hs


def test_quasi_deer_reproduction_converges_with_reference_iterations():
    """A GRU with w_hh scaled by 2.5: the exact diagonal converges (the old masked one
    ran out of iterations and fell back), in the reference's number of iterations."""
    cell = rj.GRU(I, H)
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), cell.init(jax.random.key(0)))
        p["w_hh"] = p["w_hh"] * 2.5
        xs = jax.random.normal(jax.random.key(3), (128, I), jnp.float64)
        opts = parallel.ParallelOptions(jacobian="diag", max_iter=200, tol=1e-8)
        with warnings.catch_warnings():
            warnings.simplefilter("error", parallel.NotConvergedWarning)
            _, ys, info = rj.parallel_solve(cell, p, xs, options=opts)
        k_ref, H_ref = _reference_quasi_deer(cell, p, xs, 1e-8, 200)
        assert bool(info.converged) and not bool(info.fell_back)
        assert k_ref is not None and abs(int(info.iterations) - k_ref) <= 1
        np.testing.assert_allclose(ys, H_ref, atol=1e-7)
        np.testing.assert_allclose(ys, rj.unroll(cell, p, xs)[1], atol=1e-7)


def _elk_dense(J, c, y, h0, lam):
    """The minimiser of sum_t |h_t - J_t h_{t-1} - c_t|^2 + lam |h_t - y_t|^2 (h_0 fixed),
    by one dense least-squares solve."""
    T, S = c.shape
    n = T * S
    A = np.zeros((2 * n, n))
    rhs = np.zeros(2 * n)
    for t in range(T):
        A[t * S : (t + 1) * S, t * S : (t + 1) * S] = np.eye(S)
        if t:
            A[t * S : (t + 1) * S, (t - 1) * S : t * S] = -J[t]
            rhs[t * S : (t + 1) * S] = c[t]
        else:
            rhs[:S] = c[0] + J[0] @ h0
        A[n + t * S : n + (t + 1) * S, t * S : (t + 1) * S] = np.sqrt(lam) * np.eye(S)
        rhs[n + t * S : n + (t + 1) * S] = np.sqrt(lam) * y[t]
    return np.linalg.lstsq(A, rhs, rcond=None)[0].reshape(T, S)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("scan", ["sequential", "associative"])
def test_elk_step_is_the_trust_region_least_squares(full, scan):
    T, S, lam = 7, 3, 0.7
    with jax.enable_x64(True):
        ks = jax.random.split(jax.random.key(0), 4)
        J = 1.5 * jax.random.normal(ks[0], (T, S, S) if full else (T, S), jnp.float64)
        c = jax.random.normal(ks[1], (T, S), jnp.float64)
        y = jax.random.normal(ks[2], (T, S), jnp.float64)
        h0 = jax.random.normal(ks[3], (S,), jnp.float64)
        opts = parallel.ParallelOptions(scan=scan)
        got = parallel._elk_step(J, c, y, h0, jnp.float64(lam), full, opts)
        Jm = np.asarray(J) if full else np.stack([np.diag(j) for j in np.asarray(J)])
        want = _elk_dense(Jm, np.asarray(c), np.asarray(y), np.asarray(h0), lam)
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-10)


@functools.lru_cache(maxsize=None)
def _solver(cell, options):
    return jax.jit(lambda p, xs: rj.parallel_solve(cell, p, xs, options=options))


@pytest.mark.parametrize("rho", [1.5, 2.0])
def test_elk_beats_damped_deer_on_chaotic_tanh_rnn(rho):
    cell = rj.SimpleRNN(I, 8)
    p = cell.init(jax.random.key(0))
    p = {**p, "w_hh": rho * p["w_hh"]}
    xs = jax.random.normal(jax.random.key(1), (200, I))
    seq = rj.unroll(cell, p, xs)[1]
    its = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", parallel.NotConvergedWarning)
        for name, kw in {
            "deer_damped": dict(jacobian="full", damping=0.0),
            "elk": dict(jacobian="full", solver="elk"),
            "qdeer_damped": dict(jacobian="diag", damping=0.0),
            "qelk": dict(jacobian="diag", solver="elk"),
        }.items():
            opts = parallel.ParallelOptions(max_iter=200, **kw)
            _, ys, info = _solver(cell, opts)(p, xs)
            its[name] = (int(info.iterations), bool(info.converged))
            # never an unconverged result: converged, or the sequential scan's
            np.testing.assert_allclose(ys[:20], seq[:20], atol=1e-4)
    if rho == 1.5:
        # ELK beats damped DEER here; quasi-ELK converges but does not beat damped
        # quasi-DEER (measured 98-102 iterations against 79); at rho=2.0 the adaptive
        # trust region stalls and falls back (checked above: the sequential result)
        assert its["elk"][1] and its["qelk"][1], its
        assert its["elk"][0] < its["deer_damped"][0], its


def test_elk_gradients_match_sequential():
    cell = rj.GRU(I, H)
    p = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (20, I))
    cfg = rj.ScanConfig(
        method="parallel", parallel=parallel.ParallelOptions(solver="elk", jacobian="diag")
    )
    g = jax.grad(lambda p: jnp.sum(jnp.sin(rj.unroll(cell, p, xs, config=cfg)[1])))(p)
    gs = jax.grad(lambda p: jnp.sum(jnp.sin(rj.unroll(cell, p, xs)[1])))(p)
    for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(gs)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_options_checks():
    with pytest.raises(ValueError, match="solver must be one of"):
        parallel.ParallelOptions(solver="kalman")
    with pytest.raises(ValueError, match="trust"):
        parallel.ParallelOptions(trust=0.0)


def _gru_scaled(rho, seed=1):
    """A float64 GRU whose recurrent gate blocks each have spectral radius ``rho``."""
    cell = rj.GRU(I, H)
    p = jax.tree_util.tree_map(lambda v: v.astype(jnp.float64), cell.init(jax.random.key(seed)))
    W = np.asarray(p["w_hh"]).copy()
    for g in range(3):
        blk = W[:, g * H : (g + 1) * H]
        W[:, g * H : (g + 1) * H] = blk * rho / np.max(np.abs(np.linalg.eigvals(blk)))
    xs = jax.random.normal(jax.random.key(seed + 100), (256, I), jnp.float64)
    return cell, {**p, "w_hh": jnp.asarray(W)}, xs


def _iterations(cell, p, xs, **kw):
    opts = parallel.ParallelOptions(max_iter=300, tol=1e-9, **kw)
    _, ys, info = _solver(cell, opts)(p, xs)
    return int(info.iterations), bool(info.converged), ys


@pytest.mark.parametrize(
    "rho",
    [3.0, pytest.param(0.9, marks=pytest.mark.slow), pytest.param(2.0, marks=pytest.mark.slow)],
)
@pytest.mark.parametrize("jac", ["full", "diag"])
def test_elk_never_needs_more_iterations_than_deer(rho, jac):
    """At spectral radius 3 (seed 1) the trust region alone stalled: ELK's residual stayed
    near 0.06 for thousands of iterations while DEER converged in about 50. The solve now
    runs the plain Newton iterate beside the trust region's and stops at the first to meet
    the tolerance, so ELK converges wherever DEER does, in no more iterations."""
    with jax.enable_x64(True):
        cell, p, xs = _gru_scaled(rho)
        seq = rj.unroll(cell, p, xs)[1]
        k_deer, conv_deer, _ = _iterations(cell, p, xs, jacobian=jac)
        k_elk, conv_elk, ys = _iterations(cell, p, xs, jacobian=jac, solver="elk")
        assert conv_deer and conv_elk, (k_deer, k_elk)
        assert k_elk <= k_deer, (k_deer, k_elk)
        np.testing.assert_allclose(ys, seq, atol=1e-6)
