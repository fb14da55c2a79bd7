"""rnnjax.nnx: same outputs and gradients as the functional layers, length semantics,
dropout from nnx.Rngs with train/eval, nnx.jit + nnx.Optimizer training, orbax round
trip of the model state."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import rnnjax.nnx as rn

B, T, I, H = 2, 5, 3, 4
LENGTH = np.array([5, 3], np.int32)


def _xs(seed=0, shape=(B, T, I)):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _np_gru(p, xs, n):
    """float64 loop, reset_after=True GRU (PyTorch form), one sequence of length n."""
    w_ih, w_hh, b, b_hn = (np.asarray(p[k], np.float64) for k in ("w_ih", "w_hh", "b", "b_hn"))
    Hh = w_hh.shape[0]
    h = np.zeros(Hh)
    ys = np.zeros((xs.shape[0], Hh))
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    for t in range(n):
        xp = xs[t] @ w_ih + b
        hp = h @ w_hh
        r = sig(xp[:Hh] + hp[:Hh])
        z = sig(xp[Hh : 2 * Hh] + hp[Hh : 2 * Hh])
        cand = np.tanh(xp[2 * Hh :] + r * (hp[2 * Hh :] + b_hn))
        h = (1 - z) * cand + z * h
        ys[t] = h
    return h, ys


@pytest.fixture(scope="module")
def bilstm():
    return rn.LSTM(I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))


def test_params_are_nnx_params_in_the_functional_layout(bilstm):
    params = bilstm.layer_params()
    assert len(params) == 2
    for layer, p in zip(bilstm.functional().layers, params):
        expected = jax.eval_shape(layer.init, jax.random.key(0))
        assert jax.tree_util.tree_map(jnp.shape, p) == jax.tree_util.tree_map(
            lambda a: a.shape, expected
        )
    state = nnx.state(bilstm, nnx.Param)
    n_arrays = len(jax.tree_util.tree_leaves(params))
    assert len(jax.tree_util.tree_leaves(state)) == n_arrays
    assert isinstance(bilstm.layer_0["forward"]["w_ih"], nnx.Param)


def test_outputs_and_gradients_equal_functional_layer(bilstm):
    xs = _xs()
    net = bilstm.functional()

    def loss_module(model, x):
        state, ys = model(x, LENGTH)
        return jnp.sum(ys**2) + jnp.sum(state[1].backward.h)

    def loss_functional(p, x):
        state, ys = net.apply_batch(p, x, LENGTH)
        return jnp.sum(ys**2) + jnp.sum(state[1].backward.h)

    l_m, (g_m, gx_m) = nnx.jit(nnx.value_and_grad(loss_module, argnums=(0, 1)))(bilstm, xs)
    params = bilstm.layer_params()
    l_f, (g_f, gx_f) = jax.jit(jax.value_and_grad(loss_functional, argnums=(0, 1)))(params, xs)
    np.testing.assert_allclose(l_m, l_f, rtol=1e-6)
    np.testing.assert_allclose(gx_m, gx_f, rtol=1e-6, atol=1e-7)
    g_m = nnx.to_pure_dict(g_m)
    g_m = (g_m["layer_0"], g_m["layer_1"])
    assert jax.tree_util.tree_structure(g_m) == jax.tree_util.tree_structure(g_f)
    for a, b in zip(jax.tree_util.tree_leaves(g_m), jax.tree_util.tree_leaves(g_f)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(jnp.abs(gx_m).max()) > 1e-3


def test_gru_matches_float64_reference_and_padding_invariance():
    gru = rn.GRU(I, H, time_major=True, rngs=nnx.Rngs(1))
    # a non-zero b_hn so that its placement matters
    gru.layer_0["b_hn"][...] = 0.3 * jnp.arange(H, dtype=jnp.float32)
    xs = _xs(2, (T, B, I))
    xs_junk = jnp.where(jnp.arange(T)[:, None, None] < LENGTH[None, :, None], xs, 9.0)
    run = nnx.jit(lambda m, x: m(x, LENGTH))
    (s,), ys = run(gru, xs)
    (s2,), ys2 = run(gru, xs_junk)
    np.testing.assert_array_equal(ys, ys2)
    np.testing.assert_array_equal(s.h, s2.h)
    p = gru.layer_params()[0]
    for b in range(B):
        h_ref, y_ref = _np_gru(p, np.asarray(xs[:, b]), int(LENGTH[b]))
        np.testing.assert_allclose(ys[:, b], y_ref, atol=2e-5)
        np.testing.assert_allclose(s.h[b], h_ref, atol=2e-5)


def test_state_in_and_initial_state():
    rnn = rn.RNN(I, H, num_layers=2, rngs=nnx.Rngs(2))
    run = nnx.jit(lambda m, x, s: m(x, None, s))
    xs = _xs(3, (3, B, T, I))
    zero = rnn.initial_state((3, B))
    s_full, y_full = run(rnn, xs, None)
    s0, y0 = run(rnn, xs, zero)
    np.testing.assert_array_equal(y0, y_full)
    s_half, y_a = run(rnn, xs[..., :2, :], None)
    s_rest, y_b = run(rnn, xs[..., 2:, :], s_half)
    np.testing.assert_allclose(jnp.concatenate([y_a, y_b], -2), y_full, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s_rest), jax.tree_util.tree_leaves(s_full)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_dropout_train_eval_and_rngs():
    m = rn.LSTM(I, H, num_layers=2, dropout=0.5, recurrent_dropout=0.3, rngs=nnx.Rngs(0, dropout=5))
    xs = _xs(4)
    run = nnx.jit(lambda m, x, k: m(x, LENGTH, rngs=k)[1])
    functional = jax.jit(lambda p, x, k: m.functional().apply_batch(p, x, LENGTH, key=k)[1])
    a = run(m, xs, None)
    b = run(m, xs, None)
    assert not np.allclose(a, b)  # the module's stream advances between calls
    assert bool(jnp.all(a[1, 3:] == 0.0))
    m.eval()
    det = run(m, xs, None)
    ref = functional(m.layer_params(), xs, None)
    np.testing.assert_array_equal(det, ref)
    m.train()
    k = jax.random.key(9)
    c1 = run(m, xs, k)
    c2 = run(m, xs, k)
    np.testing.assert_array_equal(c1, c2)
    assert not np.allclose(c1, det)
    # the same key through the functional layer gives the same masks
    np.testing.assert_array_equal(c1, functional(m.layer_params(), xs, k))
    view = nnx.view(m, deterministic=True)
    np.testing.assert_array_equal(run(view, xs, None), ref)


def test_bad_inputs():
    with pytest.raises(TypeError, match="rngs"):
        rn.LSTM(I, H, rngs=0)
    with pytest.raises(ValueError, match="num_layers"):
        rn.GRU(I, H, num_layers=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="merge"):
        rn.GRU(I, H, bidirectional=True, merge="max", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="input_size"):
        rn.RNN(0, H, rngs=nnx.Rngs(0))
    m = rn.RNN(I, H, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="xs"):
        m(jnp.ones((B, T, I + 1)))
    with pytest.raises(TypeError, match="rngs"):
        rn.RNN(I, H, dropout=0.1, rngs=nnx.Rngs(0))(_xs(), rngs="key")


class _Classifier(nnx.Module):
    def __init__(self, vocab, classes, rngs):
        self.embed = nnx.Embed(vocab, 8, rngs=rngs)
        self.rnn = rn.GRU(8, 8, bidirectional=True, recurrent_dropout=0.1, rngs=rngs)
        self.out = nnx.Linear(16, classes, rngs=rngs)

    def __call__(self, tokens, length):
        _, ys = self.rnn(self.embed(tokens), length)
        mask = (jnp.arange(tokens.shape[1])[None, :] < length[:, None]).astype(ys.dtype)
        return self.out(jnp.sum(ys, 1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1.0))


@pytest.mark.slow  # tests/test_linen.py::test_readme_example_runs covers this by default
def test_trains_with_nnx_optimizer_and_round_trips_through_orbax(tmp_path):
    k1, k2 = jax.random.split(jax.random.key(3))
    tokens = jax.random.randint(k1, (8, 6), 1, 11)
    length = jax.random.randint(k2, (8,), 1, 7)
    labels = tokens[:, 0] % 3
    model = _Classifier(11, 3, nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    def loss_fn(m):
        logits = m(tokens, length)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @nnx.jit
    def step(m, opt):
        loss, grads = nnx.value_and_grad(loss_fn)(m)
        opt.update(m, grads)
        return loss

    eval_loss = nnx.jit(loss_fn)
    model.eval()
    first = float(eval_loss(model))
    model.train()
    for _ in range(15):
        step(model, opt)
    model.eval()
    assert float(eval_loss(model)) < 0.8 * first

    _, state = nnx.split(model)
    ckpt = ocp.StandardCheckpointer()
    ckpt.save(tmp_path / "nnx_ckpt", state)
    ckpt.wait_until_finished()
    fresh = nnx.eval_shape(lambda: _Classifier(11, 3, nnx.Rngs(1)))
    graphdef, abstract = nnx.split(fresh)
    restored = ckpt.restore(tmp_path / "nnx_ckpt", abstract)
    ckpt.close()
    model2 = nnx.merge(graphdef, restored)
    model2.eval()
    np.testing.assert_array_equal(model2(tokens, length), model(tokens, length))


# --------------------------------------------------------------------------- Recurrent(cell)

_CELLS = {
    "SimpleRNN": lambda: __import__("rnnjax").SimpleRNN(I, H),
    "LSTM": lambda: __import__("rnnjax").LSTM(I, H),
    "LSTM-proj": lambda: __import__("rnnjax").LSTM(I, H, proj_size=2),
    "GRU": lambda: __import__("rnnjax").GRU(I, H),
    "GRU-cho": lambda: __import__("rnnjax").GRU(I, H, reset_after=False),
    "MinGRU": lambda: __import__("rnnjax").MinGRU(I, H),
    "MinLSTM": lambda: __import__("rnnjax").MinLSTM(I, H),
    "LRU": lambda: __import__("rnnjax").LRU(I, H),
    "EchoState": lambda: __import__("rnnjax").EchoState(I, H),
}


@pytest.mark.parametrize("name", sorted(_CELLS))
def test_generic_recurrent_runs_every_cell_as_the_functional_layer(name):
    """Same outputs and final state as the functional rnnjax.Recurrent of that cell,
    with the module's own parameters, and the padded steps exactly zero."""
    import rnnjax as rj

    cell = _CELLS[name]()
    net = rn.Recurrent(cell, rngs=nnx.Rngs(0))
    assert net.cell is cell and net.output_size == cell.output_size
    (p,) = net.layer_params()
    ref = jax.eval_shape(cell.init, jax.random.key(0))
    assert jax.tree_util.tree_map(jnp.shape, p) == jax.tree_util.tree_map(lambda a: a.shape, ref)
    xs = _xs()
    (state,), ys = net(xs, LENGTH)
    want_state, want_ys = rj.Recurrent(cell).apply_batch(p, xs, LENGTH)
    np.testing.assert_allclose(ys, want_ys, rtol=1e-6, atol=1e-7)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(want_state)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert float(jnp.max(jnp.abs(ys[1, LENGTH[1] :]))) == 0.0
    # one example against the unbatched driver (a plain unroll of the cell)
    _, ys0 = rj.unroll(cell, p, xs[1], int(LENGTH[1]))
    np.testing.assert_allclose(ys[1], ys0, rtol=1e-5, atol=1e-6)


def test_generic_recurrent_stacks_bidirectional_layers_and_trains():
    import rnnjax as rj

    net = rn.Recurrent(
        rj.MinGRU(I, H),
        num_layers=2,
        bidirectional=True,
        rngs=nnx.Rngs(1),
        config=rj.ScanConfig(method="parallel"),
    )
    params = net.layer_params()
    assert net.functional().layers[1].forward.cell.input_size == 2 * H
    xs = _xs(3)

    def loss_module(model):
        return jnp.sum(model(xs, LENGTH)[1] ** 2)

    def loss_functional(p):
        return jnp.sum(net.functional().apply_batch(p, xs, LENGTH)[1] ** 2)

    g_m = nnx.to_pure_dict(nnx.grad(loss_module)(net))
    g_f = jax.grad(loss_functional)(params)
    for a, b in zip(
        jax.tree_util.tree_leaves((g_m["layer_0"], g_m["layer_1"])), jax.tree_util.tree_leaves(g_f)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_generic_recurrent_refuses_what_is_not_a_cell():
    import rnnjax as rj

    with pytest.raises(TypeError, match="cell must be a cell instance.*instantiate"):
        rn.Recurrent(rj.GRU, rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="cell must be a cell instance.*lacks"):
        rn.Recurrent(object(), rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="rngs"):
        rn.Recurrent(rj.GRU(I, H), rngs=0)


def test_factories_are_recurrent_of_the_cell_and_take_resets():
    import rnnjax as rj

    m = rn.GRU(I, H, reset_after=False, num_layers=2, time_major=True, rngs=nnx.Rngs(0))
    assert isinstance(m, rn.Recurrent) and m.cell == rj.GRU(I, H, reset_after=False)
    assert m.num_layers == 2 and m.time_major is True and m.trainable is True
    xs = _xs(6, (T, B, I))
    resets = jnp.zeros((T, B), bool).at[2, 0].set(True)
    _, ys = m(xs, LENGTH, resets=resets)
    _, want = m.functional().apply_batch(
        m.layer_params(), xs, LENGTH, resets=resets, time_major=True
    )
    np.testing.assert_array_equal(ys, want)
    _, no_reset = m(xs, LENGTH)
    assert not np.allclose(ys[2:, 0], no_reset[2:, 0])


def test_echo_state_reservoir_is_fixed():
    """rn.EchoState's weights are Reservoir variables: not nnx.Param, so nnx.grad and
    nnx.Optimizer(wrt=nnx.Param) train only the readout, and nnx.state keeps them."""
    import rnnjax as rj

    class Model(nnx.Module):
        def __init__(self, rngs):
            self.esn = rn.EchoState(I, H, leak_rate=0.3, density=0.5, rngs=rngs)
            self.out = nnx.Linear(H, 1, rngs=rngs)

        def __call__(self, xs):
            return self.out(self.esn(xs, LENGTH)[1])

    model = Model(nnx.Rngs(0))
    esn = model.esn
    assert esn.trainable is False and esn.cell == rj.EchoState(I, H, leak_rate=0.3, density=0.5)
    assert isinstance(esn.layer_0["w"], rn.Reservoir)
    assert jax.tree_util.tree_leaves(nnx.state(esn, nnx.Param)) == []
    assert len(jax.tree_util.tree_leaves(nnx.state(esn, rn.Reservoir))) == 4
    xs = _xs(7)
    (state,), hs = esn(xs, LENGTH)
    p = esn.layer_params()[0]
    (want_state,), want = rj.Stacked([rj.Recurrent(esn.cell)]).apply_batch((p,), xs, LENGTH)
    np.testing.assert_array_equal(hs, want)
    np.testing.assert_array_equal(state.h, want_state.h)
    grads = nnx.grad(lambda m: jnp.mean(m(xs) ** 2))(model)
    assert sorted(nnx.to_pure_dict(grads)) == ["out"]
