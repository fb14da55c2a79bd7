"""Dropout keys: a raw ``uint32`` key (``jax.random.PRNGKey``, what older code and the
trainer's state may hold) works in ``apply_batch`` and gives what the same typed key gives."""

import jax
import jax.numpy as jnp

import rnnjax as rj


def test_apply_batch_accepts_raw_and_typed_keys_alike():
    net = rj.Stacked(
        [rj.LSTM(3, 4), rj.Recurrent(rj.GRU(4, 4), recurrent_dropout=0.5)], dropout=0.5
    )
    params = net.init(jax.random.key(0))
    xs = jnp.ones((2, 3, 5, 3))  # two batch axes
    typed = jax.random.key(7)
    raw = jax.random.key_data(typed)  # the uint32 form, as jax.random.PRNGKey gives
    _, ys_raw = net.apply_batch(params, xs, key=raw)
    _, ys_typed = net.apply_batch(params, xs, key=typed)
    _, ys_off = net.apply_batch(params, xs)
    assert ys_raw.shape == (2, 3, 5, 4)
    assert jnp.array_equal(ys_raw, ys_typed)
    assert not jnp.array_equal(ys_raw, ys_off)  # dropout did act
