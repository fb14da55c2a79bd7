"""Tests of rnnjax.diagnostics against numpy float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.diagnostics import largest_singular_value, spectral_radius


@pytest.fixture(scope="module")
def mats():
    rng = np.random.default_rng(0)
    return rng.normal(size=(4, 30, 30)).astype(np.float32)


def test_spectral_radius_matches_numpy(mats):
    for m in mats:
        ref = np.max(np.abs(np.linalg.eigvals(m.astype(np.float64))))
        assert abs(float(spectral_radius(jnp.asarray(m))) - ref) < 1e-5 * ref


def test_spectral_radius_complex_pair_and_nilpotent():
    # rotation by 90 degrees scaled by 2: eigenvalues +-2i, which power iteration on a
    # real vector never converges to; the eigenvalue route is exact
    assert abs(float(spectral_radius(jnp.array([[0.0, 2.0], [-2.0, 0.0]]))) - 2.0) < 1e-6
    # nilpotent: radius 0 although the norm is large
    assert float(spectral_radius(jnp.array([[0.0, 5.0], [0.0, 0.0]]))) == 0.0


def test_spectral_radius_under_jit_and_vmap(mats):
    ref = [np.max(np.abs(np.linalg.eigvals(m.astype(np.float64)))) for m in mats]
    got = jax.jit(jax.vmap(spectral_radius))(jnp.asarray(mats))
    np.testing.assert_allclose(got, ref, rtol=1e-5)


def test_largest_singular_value_matches_numpy_and_bounds_radius(mats):
    for m in mats:
        ref = np.linalg.svd(m.astype(np.float64), compute_uv=False)[0]
        got = float(largest_singular_value(jnp.asarray(m)))
        assert abs(got - ref) < 1e-5 * ref
        assert float(spectral_radius(jnp.asarray(m))) <= got * (1 + 1e-6)
    rect = np.random.default_rng(1).normal(size=(5, 3))
    assert abs(float(largest_singular_value(jnp.asarray(rect))) - np.linalg.norm(rect, 2)) < 1e-5


def test_bad_shapes_raise():
    with pytest.raises(
        ValueError, match=r"w must be a square matrix of shape \(N, N\); got shape \(2, 3\)"
    ):
        spectral_radius(jnp.zeros((2, 3)))
    with pytest.raises(ValueError, match="w must be a matrix"):
        largest_singular_value(jnp.zeros(3))
