"""Tests for rnnjax.SequenceModel against a plain Python loop over cell.step."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel

V, E, H, O, T = 6, 3, 4, 2, 5


def loop_reference(layer_params, xs, length):
    """A plain Python loop of the LSTM equations (gate order i, f, g, o) in numpy float64."""
    w_ih, w_hh, b = (np.asarray(layer_params[k], np.float64) for k in ("w_ih", "w_hh", "b"))
    Hh = w_hh.shape[0]
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    h, c, hs = np.zeros(Hh), np.zeros(Hh), []
    for t in range(length):
        z = xs[t] @ w_ih + h @ w_hh + b
        i, f, g, o = sig(z[:Hh]), sig(z[Hh : 2 * Hh]), np.tanh(z[2 * Hh : 3 * Hh]), sig(z[3 * Hh :])
        c = f * c + i * g
        h = o * np.tanh(c)
        hs.append(h)
    return np.stack(hs)


@pytest.fixture(scope="module")
def lm():
    model = SequenceModel(rj.LSTM(E, H), output_size=V, vocab_size=V)
    return model, model.init(jax.random.key(0))


def test_per_step_tokens_match_python_loop(lm):
    model, params = lm
    tokens = jnp.asarray([1, 4, 0, 5, 2], jnp.int32)
    state, logits = model.apply(params, tokens, length=3)
    emb = np.asarray(params["embed"], np.float64)[np.asarray(tokens)]
    hs = loop_reference(params["layer"], emb, 3)
    ref = hs @ np.asarray(params["head"]["w"], np.float64) + np.asarray(
        params["head"]["b"], np.float64
    )
    np.testing.assert_allclose(np.asarray(logits[:3]), ref, rtol=1e-5, atol=1e-6)
    assert bool(jnp.all(logits[3:] == 0.0))
    np.testing.assert_allclose(np.asarray(state.h), hs[-1], rtol=1e-5, atol=1e-6)
    assert params["embed"].shape == (V, E) and params["head"]["w"].shape == (H, V)


def test_padding_never_changes_outputs(lm):
    model, params = lm
    a = jnp.asarray([1, 4, 0, 5, 2], jnp.int32)
    b = a.at[3:].set(3)
    sa, ya = model.apply(params, a, length=3)
    sb, yb = model.apply(params, b, length=3)
    np.testing.assert_array_equal(ya, yb)
    np.testing.assert_array_equal(sa.h, sb.h)


def test_final_head_is_last_real_output():
    cell = rj.GRU(E, H)
    per_step = SequenceModel(cell, output_size=O)
    final = SequenceModel(cell, output_size=O, head="final")
    params = per_step.init(jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (T, E))
    for n in (1, 3, T):
        _, ys = per_step.apply(params, xs, length=n)
        _, y = final.apply(params, xs, length=n)
        np.testing.assert_allclose(y, ys[n - 1], rtol=1e-6, atol=1e-7)
    _, y = final.apply(params, xs)
    _, ys = per_step.apply(params, xs)
    np.testing.assert_allclose(y, ys[-1], rtol=1e-6, atol=1e-7)


def test_cell_is_wrapped_in_recurrent_and_layers_work():
    cell = rj.GRU(E, H)
    assert SequenceModel(cell, output_size=O).layer == rj.Recurrent(cell)
    net = SequenceModel(
        rj.Stacked([rj.Bidirectional(rj.LSTM(E, H)), rj.GRU(2 * H, H)]), output_size=O
    )
    params = net.init(jax.random.key(0))
    _, ys = net.apply(params, jnp.ones((T, E)), length=4)
    assert ys.shape == (T, O) and bool(jnp.all(ys[4:] == 0.0))


def test_apply_batch_equals_loop_over_examples(lm):
    model, params = lm
    toks = jax.random.randint(jax.random.key(3), (3, T), 0, V)
    lens = jnp.asarray([T, 2, 0], jnp.int32)
    states, ys = model.apply_batch(params, toks, lens)
    for i in range(3):
        s, y = model.apply(params, toks[i], length=lens[i])
        np.testing.assert_allclose(ys[i], y, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(states.c[i], s.c, rtol=1e-6, atol=1e-7)


def test_bad_arguments_are_clear_errors(lm):
    model, params = lm
    with pytest.raises(ValueError, match="head must be one of"):
        SequenceModel(rj.GRU(E, H), output_size=O, head="mean")
    with pytest.raises(ValueError, match="output_size"):
        SequenceModel(rj.GRU(E, H), output_size=0)
    with pytest.raises(ValueError, match="vocab_size"):
        SequenceModel(rj.GRU(E, H), output_size=O, vocab_size=0)
    with pytest.raises(TypeError, match="layer must be"):
        SequenceModel("lstm", output_size=O)
    with pytest.raises(ValueError, match="integer tokens of shape"):
        model.apply(params, jnp.ones((T, E)))
    with pytest.raises(ValueError, match="feature size"):
        SequenceModel(rj.GRU(E, H), output_size=O).apply(
            SequenceModel(rj.GRU(E, H), output_size=O).init(jax.random.key(0)), jnp.ones((T, E + 1))
        )
    with pytest.raises(ValueError, match="leading batch axis"):
        model.apply_batch(params, jnp.ones((T,), jnp.int32))
