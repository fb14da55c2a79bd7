"""rnnjax.flax_convert: Flax's LSTMCell / OptimizedLSTMCell / GRUCell parameters and
carries <-> rnnjax's, checked against Flax's own ``nn.RNN`` over padded sequences."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
import rnnjax.linen as rl
from rnnjax import flax_convert as fc

B, T, I, H = 3, 6, 3, 5
LENGTH = jnp.array([6, 4, 1], jnp.int32)
XS = jax.random.normal(jax.random.key(0), (B, T, I), jnp.float32)

FLAX_CELLS = {
    "OptimizedLSTMCell": (nn.OptimizedLSTMCell, fc.lstm_from_flax, fc.lstm_to_flax),
    "LSTMCell": (nn.LSTMCell, fc.lstm_from_flax, fc.lstm_to_flax),
    "GRUCell": (nn.GRUCell, fc.gru_from_flax, fc.gru_to_flax),
}


def _perturb(tree, key):
    """Flax initialises biases to zero: make every parameter non-trivial."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [l + 0.3 * jax.random.normal(k, l.shape, l.dtype) for l, k in zip(leaves, keys)]
    )


@functools.lru_cache(maxsize=None)
def _flax_rnn(cell_cls, reverse):
    """Flax's nn.RNN over the cell, its jitted init and apply (compiled once per test run)."""
    rnn = nn.RNN(cell_cls(H), return_carry=True, reverse=reverse, keep_order=True)
    init = jax.jit(lambda k: rnn.init(k, XS, seq_lengths=LENGTH))
    apply = jax.jit(lambda v: rnn.apply(v, XS, seq_lengths=LENGTH))
    return rnn, init, apply


def _flax_run(cell_cls, reverse, variables=None):
    rnn, init, apply = _flax_rnn(cell_cls, reverse)
    if variables is None:
        variables = {"params": _perturb(init(jax.random.key(1))["params"], jax.random.key(2))}
    carry, ys = apply(variables)
    return rnn, variables, carry, ys


_unroll_batch = jax.jit(rj.unroll_batch, static_argnums=0)


def _valid(ys):
    return np.asarray(ys) * (np.arange(T)[None, :, None] < np.asarray(LENGTH)[:, None, None])


def _state_from_flax(name, carry):
    return fc.gru_state_from_flax(carry) if name == "GRUCell" else fc.lstm_state_from_flax(carry)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", sorted(FLAX_CELLS))
def test_flax_params_give_flax_outputs(name, reverse):
    cell_cls, from_flax, _ = FLAX_CELLS[name]
    rnn, variables, carry, ys_flax = _flax_run(cell_cls, reverse)
    cell = fc.cell_from_flax(rnn.cell, input_size=I)
    params = from_flax(variables["params"]["cell"])
    layer = rj.Recurrent(cell, reverse=reverse)
    state, ys = jax.jit(layer.apply_batch)(params, XS, LENGTH)
    # flax leaves whatever it computed at padded steps; rnnjax zeroes them
    np.testing.assert_allclose(ys, _valid(ys_flax), atol=1e-5)
    assert bool(jnp.all(ys[2, 1:] == 0.0))
    expected = _state_from_flax(name, carry)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(expected)):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("name", sorted(FLAX_CELLS))
def test_round_trips_and_rnnjax_params_give_flax_outputs(name):
    cell_cls, from_flax, to_flax = FLAX_CELLS[name]
    _, variables, _, _ = _flax_run(cell_cls, False)
    flax_params = variables["params"]["cell"]
    # flax -> rnnjax -> flax is exact
    back = to_flax(from_flax(flax_params))
    assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(flax_params)
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(flax_params)):
        np.testing.assert_array_equal(a, b)
    # rnnjax -> flax -> rnnjax is exact, and Flax then computes what rnnjax computes
    cell = rj.GRU(I, H) if name == "GRUCell" else rj.LSTM(I, H)
    params = _perturb(cell.init(jax.random.key(3)), jax.random.key(4))
    again = from_flax(to_flax(params))
    assert sorted(again) == sorted(params)
    for k in params:
        np.testing.assert_array_equal(again[k], params[k])
    _, _, carry, ys_flax = _flax_run(cell_cls, False, {"params": {"cell": to_flax(params)}})
    state, ys = _unroll_batch(cell, params, XS, LENGTH)
    np.testing.assert_allclose(ys, _valid(ys_flax), atol=1e-5)
    np.testing.assert_allclose(state.h, _state_from_flax(name, carry).h, atol=1e-5)


def test_carries_convert_both_ways():
    c, h = jnp.ones((B, H)), jnp.zeros((B, H))
    s = fc.lstm_state_from_flax((c, h))
    assert isinstance(s, rj.LSTMState) and s.c is c and s.h is h
    c2, h2 = fc.lstm_state_to_flax(s)
    assert c2 is c and h2 is h
    g = fc.gru_state_from_flax(h)
    assert isinstance(g, rj.GRUState) and fc.gru_state_to_flax(g) is h


def test_flax_bilstm_switches_to_rnnjax_linen_module():
    """A Flax bidirectional LSTM's weights loaded into rnnjax.linen.LSTM(bidirectional)."""
    fwd = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True)
    bwd = nn.RNN(nn.OptimizedLSTMCell(H), return_carry=True, reverse=True, keep_order=True)
    bi = nn.Bidirectional(fwd, bwd, return_carry=True)
    v = jax.jit(lambda k: bi.init(k, XS, seq_lengths=LENGTH))(jax.random.key(5))
    v = {"params": _perturb(v["params"], jax.random.key(6))}
    (c_f, c_b), ys_flax = jax.jit(lambda v: bi.apply(v, XS, seq_lengths=LENGTH))(v)
    p = v["params"]
    layer0 = {
        "forward": fc.lstm_from_flax(p["forward_rnn"]["cell"]),
        "backward": fc.lstm_from_flax(p["backward_rnn"]["cell"]),
    }
    module = rl.LSTM(H, bidirectional=True, forget_bias=0.0)
    (state,), ys = jax.jit(module.apply)({"params": {"layer_0": layer0}}, XS, LENGTH)
    np.testing.assert_allclose(ys, _valid(ys_flax), atol=1e-5)
    np.testing.assert_allclose(state.forward.c, c_f[0], atol=1e-5)
    np.testing.assert_allclose(state.backward.h, c_b[1], atol=1e-5)


def test_unrepresentable_and_malformed_params_raise():
    lstm_p = rj.LSTM(I, H, proj_size=2).init(jax.random.key(0))
    with pytest.raises(ValueError, match="w_hr"):
        fc.lstm_to_flax(lstm_p)
    gru_p = rj.GRU(I, H, reset_after=False).init(jax.random.key(0))
    with pytest.raises(ValueError, match="reset_after"):
        fc.gru_to_flax(gru_p)
    _, variables, _, _ = _flax_run(nn.LSTMCell, False)
    flax_p = dict(variables["params"]["cell"])
    del flax_p["hf"]
    with pytest.raises(ValueError, match="'hf'"):
        fc.lstm_from_flax(flax_p)
    with pytest.raises(ValueError, match="keys"):
        fc.lstm_to_flax({"w_ih": jnp.ones((I, 4 * H))})
    with pytest.raises(ValueError, match="divisible"):
        fc.gru_to_flax(
            {
                "w_ih": jnp.ones((I, 7)),
                "w_hh": jnp.ones((H, 3 * H)),
                "b": jnp.ones(3 * H),
                "b_hn": jnp.ones(H),
            }
        )
    with pytest.raises(TypeError, match="flax_cell"):
        fc.cell_from_flax(nn.SimpleCell(H), I)
    with pytest.raises(ValueError, match="gate_fn"):
        fc.cell_from_flax(nn.LSTMCell(H, gate_fn=nn.hard_sigmoid), I)
    with pytest.raises(TypeError, match="LSTMState"):
        fc.lstm_state_to_flax((jnp.ones(H), jnp.ones(H)))
