"""Small-world, cluster, bernoulli and fast spectral matrices against ReservoirPy's.

rnnjax draws with JAX's RNG and ReservoirPy with numpy's: the same seed cannot give the same
matrix. These tests compare what is deterministic (the lattice, the block pattern, the value
set) exactly and the rest statistically (degrees, densities, symmetry, spectral radius).
"""

import jax
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import diagnostics, reservoir

mat_gen = pytest.importorskip("reservoirpy.mat_gen")


def _np(w):
    return np.asarray(w, np.float64)


def _rpy(fn, n, seed, **kw):
    return np.asarray(
        getattr(mat_gen, fn)(n, n, sparsity_type="dense", seed=np.random.default_rng(seed), **kw)
    )


def _radius(w):
    return float(np.max(np.abs(np.linalg.eigvals(w))))


def test_small_world_lattice_equals_reservoirpy():
    n, k = 12, 4
    ours = _np(reservoir.topologies.small_world(jax.random.key(0), n, neighbours=k, rewire=0.0))
    ref = _rpy("small_world", n, 0, nb_close_neighbours=k, proba_rewire=0.0)
    np.testing.assert_array_equal(ours != 0, ref != 0)
    assert (ours != 0).sum(axis=0).tolist() == [k] * n
    assert not np.allclose(ours, ours.T)  # independent weights in each direction


def test_small_world_rewired_statistics_match_reservoirpy():
    n, k, p = 60, 4, 0.3
    lattice = _rpy("small_world", n, 0, nb_close_neighbours=k, proba_rewire=0.0) != 0
    kept = {"ours": [], "rpy": []}
    for s in range(4):
        for name, w in (
            (
                "ours",
                _np(reservoir.topologies.small_world(jax.random.key(s), n, neighbours=k, rewire=p)),
            ),
            ("rpy", _rpy("small_world", n, s, nb_close_neighbours=k, proba_rewire=p)),
        ):
            nz = w != 0
            np.testing.assert_array_equal(nz, nz.T)  # symmetric pattern
            assert nz.sum() == n * k and not nz.diagonal().any()
            assert nz.sum(axis=1).min() >= k // 2  # a unit keeps the edges it rewires
            kept[name].append((nz & lattice).sum() / (n * k))
    mo, mr = np.mean(kept["ours"]), np.mean(kept["rpy"])
    # 1 - p of the lattice stays (plus the few edges a rewire lands back on)
    assert mo == pytest.approx(1 - p, abs=0.07) and mr == pytest.approx(1 - p, abs=0.07)
    assert abs(mo - mr) < 0.07


def test_small_world_scaled_to_the_radius():
    w = reservoir.topologies.small_world(
        jax.random.key(1), 40, neighbours=4, rewire=0.2, spectral_radius=0.7
    )
    assert _radius(_np(w)) == pytest.approx(0.7, rel=1e-5)
    with pytest.raises(ValueError, match="even"):
        reservoir.topologies.small_world(jax.random.key(0), 10, neighbours=3)


def test_cluster_blocks_and_densities_match_reservoirpy():
    n, c, p_in, p_out = 90, 3, 0.4, 0.05
    block = np.arange(n)[:, None] // (n // c) == np.arange(n)[None, :] // (n // c)
    dens = {"ours": [], "rpy": []}
    for s in range(3):
        for name, w in (
            (
                "ours",
                _np(
                    reservoir.topologies.cluster(
                        jax.random.key(s), n, clusters=c, density=p_in, inter_density=p_out
                    )
                ),
            ),
            ("rpy", _rpy("cluster", n, s, cluster=c, p_in=p_in, p_out=p_out)),
        ):
            nz = w != 0
            dens[name].append((nz[block].mean(), nz[~block].mean()))
    for name in dens:
        d_in, d_out = np.mean(dens[name], axis=0)
        assert d_in == pytest.approx(p_in, abs=0.03), name
        assert d_out == pytest.approx(p_out, abs=0.01), name
    # with inter_density 0 the blocks are the only non-zeros
    w = _np(
        reservoir.topologies.cluster(
            jax.random.key(0), 30, clusters=3, density=0.5, inter_density=0.0
        )
    )
    assert not (w[~block[:30, :30]]).any()
    w = reservoir.topologies.cluster(
        jax.random.key(0), 30, clusters=3, spectral_radius=0.9, density=0.5
    )
    assert _radius(_np(w)) == pytest.approx(0.9, rel=1e-5)
    with pytest.raises(ValueError, match="multiple"):
        reservoir.topologies.cluster(jax.random.key(0), 10, clusters=3)


def test_bernoulli_value_set_and_probability_match_reservoirpy():
    n, p, d = 80, 0.7, 0.3
    ours = _np(reservoir.topologies.bernoulli(jax.random.key(0), n, p=p, density=d))
    ref = _rpy("bernoulli", n, 0, p=p, connectivity=d)
    for w in (ours, ref):
        assert set(np.unique(w)) == {-1.0, 0.0, 1.0}
        assert (w != 0).mean() == pytest.approx(d, abs=0.03)
        assert (w[w != 0] > 0).mean() == pytest.approx(p, abs=0.05)
    w = _np(reservoir.topologies.bernoulli(jax.random.key(1), n, density=d, spectral_radius=0.8))
    ref = _rpy("bernoulli", n, 1, connectivity=d, sr=0.8)
    for m in (w, ref):
        c = np.abs(m[m != 0])
        np.testing.assert_allclose(c, c[0], rtol=1e-6)  # values {0, +c, -c}
        assert _radius(m) == pytest.approx(0.8, rel=1e-5)


def test_fast_spectral_expected_radius_matches_reservoirpy():
    n, d, r = 500, 0.1, 0.9
    a = 6 * r / (np.sqrt(12) * np.sqrt(d * n))  # ReservoirPy's bound
    ours, ref = [], []
    for s in range(3):
        w = _np(
            reservoir.topologies.fast_spectral(jax.random.key(s), n, spectral_radius=r, density=d)
        )
        assert np.abs(w).max() <= a * (1 + 1e-6)
        assert (w != 0).mean() == pytest.approx(d, abs=0.01)
        ours.append(_radius(w))
        ref.append(
            _radius(
                np.asarray(
                    mat_gen.fast_spectral_initialization(
                        n,
                        sr=r,
                        connectivity=d,
                        seed=np.random.default_rng(s),
                        sparsity_type="dense",
                    )
                )
            )
        )
    # the circular law: radius r up to a finite-size deviation, the same for both
    assert np.mean(ours) == pytest.approx(r, rel=0.05)
    assert np.mean(ref) == pytest.approx(r, rel=0.05)
    assert abs(np.mean(ours) - np.mean(ref)) < 0.03


@pytest.mark.parametrize("topology", ["small_world", "cluster", "bernoulli", "fast_spectral"])
def test_echo_state_topologies_run(topology):
    cell = reservoir.EchoState(1, 30, spectral_radius=0.8, density=0.3, topology=topology)
    params = cell.init(jax.random.key(0))
    assert params["w"].shape == (30, 30)
    rho = float(diagnostics.spectral_radius(params["w"]))
    if topology == "fast_spectral":
        assert 0.5 < rho < 1.1  # expected 0.8; no solve, a finite-size deviation at N = 30
    else:
        assert rho == pytest.approx(0.8, rel=1e-5)
    _, xs = rj.unroll(cell, params, np.ones((5, 1), np.float32))
    assert xs.shape == (5, 30) and np.isfinite(np.asarray(xs)).all()


def test_echo_state_topology_options_checked():
    with pytest.raises(ValueError, match="multiple"):
        reservoir.EchoState(1, 10, topology="cluster", clusters=3)
    with pytest.raises(ValueError, match="even"):
        reservoir.EchoState(1, 10, topology="small_world", neighbours=3)
    w = reservoir.EchoState(1, 12, topology="small_world", neighbours=4, rewire=0.0).init(
        jax.random.key(0)
    )["w"]
    assert (np.asarray(w) != 0).sum(axis=1).tolist() == [4] * 12
