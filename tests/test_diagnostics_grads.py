"""Gradient norms through time against jax.jacrev step by step; spectral figures against numpy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import rnnjax as rj
from rnnjax.diagnostics import (
    gradient_norms_through_time,
    largest_singular_value,
    pascanu_bound,
    spectral_radius,
)
from rnnjax.reservoir import EchoState

T, I, H = 6, 3, 5


def _loss_sq(state):
    return 0.5 * jnp.sum(state.h**2) + jnp.sum(state.h[:2])


def _reference(cell, params, xs, loss_fn):
    """Per-field ||dL/ds_t|| from jacrev of one step at a time, chained by hand."""
    s = cell.initial_state(xs.dtype)
    states = [s]
    for t in range(xs.shape[0]):
        s, _ = cell.step(params, s, xs[t])
        states.append(s)
    flat_last, unravel = ravel_pytree(states[-1])
    g = np.asarray(jax.grad(lambda v: loss_fn(unravel(v)))(flat_last), np.float64)
    out = [None] * xs.shape[0]
    out[-1] = g
    for t in range(xs.shape[0] - 1, 0, -1):
        flat_prev, unravel_prev = ravel_pytree(states[t])
        step_flat = lambda v, t=t: ravel_pytree(cell.step(params, unravel_prev(v), xs[t])[0])[0]
        J = np.asarray(jax.jacrev(step_flat)(flat_prev), np.float64)  # ds_t / ds_{t-1}
        g = g @ J
        out[t - 1] = g
    sizes = [int(np.size(leaf)) for leaf in jax.tree_util.tree_leaves(states[-1])]
    norms = []
    for gt in out:
        parts = np.split(gt, np.cumsum(sizes)[:-1])
        norms.append([np.linalg.norm(p) for p in parts])
    return np.array(norms).T  # (fields, T)


CELLS = [
    rj.SimpleRNN(I, H),
    rj.SimpleRNN(I, H, nonlinearity="relu"),
    rj.LSTM(I, H),
    rj.LSTM(I, H + 2, proj_size=H - 1),
    rj.GRU(I, H),
    rj.GRU(I, H, reset_after=False),
    EchoState(I, H, spectral_radius=0.9, leak_rate=0.5, density=0.5),
]


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: type(c).__name__)
@pytest.mark.parametrize("custom_loss", [False, True])
def test_matches_jacrev_step_by_step(cell, custom_loss):
    k1, k2 = jax.random.split(jax.random.key(1))
    params = cell.init(k1)
    xs = jax.random.normal(k2, (T, I))
    loss_fn = _loss_sq if custom_loss else (lambda s: jnp.sum(jax.tree_util.tree_leaves(s)[0]))
    got = gradient_norms_through_time(cell, params, xs, _loss_sq if custom_loss else None)
    want = _reference(cell, params, xs, loss_fn)
    leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(got)]
    assert type(got) is type(cell.initial_state())
    for leaf in leaves:
        assert leaf.shape == (T,)
    # fields of size 0 (EchoState's y without feedback) have norm 0 in both
    np.testing.assert_allclose(np.stack(leaves), want, rtol=2e-4, atol=1e-6)


def test_given_state_and_vmap():
    cell = rj.GRU(I, H)
    params = cell.init(jax.random.key(2))
    xs = jax.random.normal(jax.random.key(3), (4, T, I))
    s0 = cell.initial_state()._replace(h=jnp.full((H,), 0.3))
    batched = jax.vmap(lambda x: gradient_norms_through_time(cell, params, x, state=s0))(xs)
    one = gradient_norms_through_time(cell, params, xs[2], state=s0)
    np.testing.assert_allclose(np.asarray(batched.h[2]), np.asarray(one.h), rtol=1e-5)
    # a different initial state changes the gradients (the state is really used)
    other = gradient_norms_through_time(cell, params, xs[2])
    assert not np.allclose(np.asarray(other.h), np.asarray(one.h))


def test_bound_holds_for_contracting_rnn():
    """Pascanu et al.: ||dL/dh_t|| <= eta^(T-1-t) ||dL/dh_{T-1}|| for a tanh RNN."""
    cell = rj.SimpleRNN(I, H)
    params = cell.init(jax.random.key(4))
    for scale in (0.5, 0.9):
        p = dict(params, w_hh=params["w_hh"] * scale)  # orthogonal * scale: sigma_max = scale
        b = pascanu_bound(p["w_hh"])
        np.testing.assert_allclose(float(b.sigma_max), scale, rtol=1e-5)
        assert bool(b.vanishing)
        g = np.asarray(
            gradient_norms_through_time(cell, p, jax.random.normal(jax.random.key(5), (20, I))).h
        )
        envelope = float(b.eta) ** np.arange(19, -1, -1) * g[-1]
        assert np.all(g <= envelope * (1 + 1e-4) + 1e-7)
        assert g[0] < g[-1] * scale**10


def test_spectral_figures_equal_numpy():
    rng = np.random.default_rng(0)
    for n in (1, 4, 17):
        w = rng.normal(size=(n, n)).astype(np.float32)
        w64 = w.astype(np.float64)
        np.testing.assert_allclose(
            float(spectral_radius(jnp.asarray(w))),
            np.max(np.abs(np.linalg.eigvals(w64))),
            rtol=1e-5,
        )
        np.testing.assert_allclose(
            float(largest_singular_value(jnp.asarray(w))),
            np.linalg.svd(w64, compute_uv=False)[0],
            rtol=1e-5,
        )
        for nl, gamma in (("tanh", 1.0), ("sigmoid", 0.25), (0.5, 0.5)):
            b = pascanu_bound(jnp.asarray(w), nl)
            s = np.linalg.svd(w64, compute_uv=False)[0]
            np.testing.assert_allclose(float(b.eta), gamma * s, rtol=1e-5)
            assert bool(b.vanishing) == (s < 1 / gamma)
    # under jit
    w = jnp.asarray(rng.normal(size=(6, 6)), jnp.float32)
    b = jax.jit(pascanu_bound, static_argnums=1)(w, "sigmoid")
    np.testing.assert_allclose(
        float(b.sigma_max), np.linalg.svd(np.asarray(w, np.float64), compute_uv=False)[0], rtol=1e-5
    )


def test_errors():
    cell = rj.SimpleRNN(I, H)
    params = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="xs must be one sequence of shape"):
        gradient_norms_through_time(cell, params, jnp.ones((2, T, I)))
    with pytest.raises(ValueError, match="cell.input_size = 3"):
        gradient_norms_through_time(cell, params, jnp.ones((T, I + 1)))
    with pytest.raises(TypeError, match="xs must be floating"):
        gradient_norms_through_time(cell, params, jnp.ones((T, I), jnp.int32))
    with pytest.raises(TypeError, match="loss_fn must be a callable"):
        gradient_norms_through_time(cell, params, jnp.ones((T, I)), loss_fn=3)
    with pytest.raises(TypeError, match="cell must be an rnnjax cell"):
        gradient_norms_through_time(object(), params, jnp.ones((T, I)))
    with pytest.raises(ValueError, match="w_hh must be a square matrix"):
        pascanu_bound(jnp.ones((2, 3)))
    with pytest.raises(ValueError, match="nonlinearity must be one of"):
        pascanu_bound(jnp.eye(2), "softsign")
