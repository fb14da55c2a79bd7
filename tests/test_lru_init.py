"""The LRU's initialisation: the ring of eigenvalues (moduli uniform in area between
r_min and r_max, phases uniform in [0, max_phase]), the normalisation, r_max = 1."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import rnnjax as rj

N = 4096


def _eig(cell, key=0):
    p = cell.init(jax.random.key(key))
    mod = np.exp(-np.exp(np.asarray(p["nu_log"], np.float64)))
    phase = np.exp(np.asarray(p["theta_log"], np.float64))
    return p, mod, phase


@pytest.mark.parametrize(
    "r_min, r_max, max_phase",
    [(0.9, 0.999, 2 * math.pi), (0.0, 1.0, 6.28), (0.4, 0.8, math.pi / 10)],
)
def test_ring_moduli_and_phases(r_min, r_max, max_phase):
    cell = rj.LRU(2, N, r_min=r_min, r_max=r_max, max_phase=max_phase)
    p, mod, phase = _eig(cell)
    assert np.all(mod >= r_min - 1e-6) and np.all(mod < 1.0) and np.all(mod <= r_max + 1e-6)
    assert np.all(phase >= 0.0) and np.all(phase <= max_phase * (1 + 1e-6))
    # uniform on the ring: |lambda|^2 uniform on [r_min^2, r_max^2]; phases uniform
    u = (mod**2 - r_min**2) / (r_max**2 - r_min**2)
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    assert stats.kstest(phase / max_phase, "uniform").pvalue > 1e-3
    # a uniform draw fills the ring: the extremes come close to both ends
    assert u.min() < 0.01 and u.max() > 0.99
    # the normalisation gamma = sqrt(1 - |lambda|^2), finite and positive
    gamma = np.exp(np.asarray(p["gamma_log"], np.float64))
    assert np.all(np.isfinite(gamma)) and np.all(gamma > 0)
    np.testing.assert_allclose(gamma, np.sqrt(1.0 - mod**2), rtol=2e-3, atol=1e-6)
    assert all(bool(jnp.isfinite(v).all()) for v in p.values())


def test_r_max_one_trains_and_bad_rings_raise():
    cell = rj.LRU(2, 8, r_min=0.0, r_max=1.0)
    p = cell.init(jax.random.key(1))
    xs = jnp.ones((5, 2))
    g = jax.grad(lambda p: jnp.sum(rj.unroll(cell, p, xs)[1] ** 2))(p)
    assert all(bool(jnp.isfinite(v).all()) for v in g.values())
    with pytest.raises(ValueError, match="r_max"):
        rj.LRU(2, 3, r_max=1.01)
    with pytest.raises(ValueError, match="r_min must be smaller than r_max"):
        rj.LRU(2, 3, r_min=0.5, r_max=0.5)
