"""rnnjax.linen: same outputs and gradients as the functional layers, length semantics,
dropout from the 'dropout' stream, state in/out, optax training, orbax round trip.

The independent reference is a float64 NumPy loop over a 2-layer bidirectional LSTM."""

import pathlib
import runpy

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

import rnnjax as rj
import rnnjax.linen as rl

B, T, I, H = 2, 5, 3, 4
LENGTH = np.array([5, 3], np.int32)


def _xs(seed=0, shape=(B, T, I)):
    return jax.random.normal(jax.random.key(seed), shape, jnp.float32)


def _layer_params(variables, n):
    return tuple(variables["params"][f"layer_{i}"] for i in range(n))


# ---------------------------------------------------------------- float64 reference


def _np_lstm(p, xs, n, reverse):
    """float64 loop over one sequence: PyTorch-order gates, padding-aware reverse."""
    w_ih, w_hh, b = (np.asarray(p[k], np.float64) for k in ("w_ih", "w_hh", "b"))
    Hh = w_hh.shape[0]
    h, c = np.zeros(Hh), np.zeros(Hh)
    ys = np.zeros((xs.shape[0], Hh))
    steps = range(n - 1, -1, -1) if reverse else range(n)
    sig = lambda v: 1.0 / (1.0 + np.exp(-v))
    for t in steps:
        z = xs[t] @ w_ih + h @ w_hh + b
        i, f, g, o = np.split(z, 4)
        c = sig(f) * c + sig(i) * np.tanh(g)
        h = sig(o) * np.tanh(c)
        ys[t] = h
    return (h, c), ys


def _np_bilstm_stack(params, xs, n):
    out = np.asarray(xs, np.float64)
    states = []
    for p in params:
        sf, yf = _np_lstm(p["forward"], out, n, False)
        sb, yb = _np_lstm(p["backward"], out, n, True)
        out = np.concatenate([yf, yb], axis=-1)
        states.append((sf, sb))
    return states, out


# ---------------------------------------------------------------- shared models

BILSTM = rl.LSTM(H, num_layers=2, bidirectional=True)


@pytest.fixture(scope="module")
def bilstm():
    xs = _xs()
    variables = BILSTM.init(jax.random.key(1), xs, LENGTH)
    return variables, jax.jit(BILSTM.apply)


def test_param_layout_is_one_plain_dict_per_layer(bilstm):
    variables, _ = bilstm
    params = variables["params"]
    assert sorted(params) == ["layer_0", "layer_1"]
    net = BILSTM.functional(I)
    for i, layer in enumerate(net.layers):
        expected = jax.eval_shape(layer.init, jax.random.key(0))
        got = params[f"layer_{i}"]
        assert isinstance(got, dict)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expected)
        assert jax.tree_util.tree_map(jnp.shape, got) == jax.tree_util.tree_map(
            lambda a: a.shape, expected
        )


def test_matches_float64_reference(bilstm):
    variables, apply = bilstm
    xs = _xs()
    (s0, s1), ys = apply(variables, xs, LENGTH)
    params = _layer_params(variables, 2)
    for b in range(B):
        states, ref = _np_bilstm_stack(params, np.asarray(xs[b]), int(LENGTH[b]))
        np.testing.assert_allclose(ys[b], ref, atol=2e-5)
        (hf, cf), (hb, cb) = states[1]
        np.testing.assert_allclose(s1.forward.h[b], hf, atol=2e-5)
        np.testing.assert_allclose(s1.forward.c[b], cf, atol=2e-5)
        np.testing.assert_allclose(s1.backward.h[b], hb, atol=2e-5)
        np.testing.assert_allclose(s0.backward.c[b], states[0][1][1], atol=2e-5)


def test_outputs_and_gradients_equal_functional_layer(bilstm):
    variables, apply = bilstm
    xs = _xs()
    net = BILSTM.functional(I)

    def loss_module(v, x):
        state, ys = BILSTM.apply(v, x, LENGTH)
        return jnp.sum(ys**2) + jnp.sum(state[1].forward.c)

    def loss_functional(p, x):
        state, ys = net.apply_batch(p, x, LENGTH)
        return jnp.sum(ys**2) + jnp.sum(state[1].forward.c)

    l_m, (g_m, gx_m) = jax.jit(jax.value_and_grad(loss_module, argnums=(0, 1)))(variables, xs)
    params = _layer_params(variables, 2)
    l_f, (g_f, gx_f) = jax.jit(jax.value_and_grad(loss_functional, argnums=(0, 1)))(params, xs)
    np.testing.assert_allclose(l_m, l_f, rtol=1e-6)
    np.testing.assert_allclose(gx_m, gx_f, rtol=1e-6, atol=1e-7)
    for a, b in zip(
        jax.tree_util.tree_leaves(_layer_params(g_m, 2)), jax.tree_util.tree_leaves(g_f)
    ):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    # the gradient is not trivially zero
    assert float(jnp.abs(gx_m).max()) > 1e-3


def test_padding_invariance(bilstm):
    variables, apply = bilstm
    xs = _xs()
    junk = _xs(7)
    t = jnp.arange(T)[None, :, None]
    xs2 = jnp.where(t < LENGTH[:, None, None], xs, 100.0 * junk)
    s_a, y_a = apply(variables, xs, LENGTH)
    s_b, y_b = apply(variables, xs2, LENGTH)
    assert bool(jnp.all(y_a[1, 3:] == 0.0))
    np.testing.assert_array_equal(y_a, y_b)
    for a, b in zip(jax.tree_util.tree_leaves(s_a), jax.tree_util.tree_leaves(s_b)):
        np.testing.assert_array_equal(a, b)

    def loss(v, x):
        return jnp.sum(BILSTM.apply(v, x, LENGTH)[1] ** 2)

    g = jax.jit(jax.grad(loss, argnums=(0, 1)))
    (ga, _), (gb, gxb) = g(variables, xs), g(variables, xs2)
    for a, b in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert bool(jnp.all(gxb[1, 3:] == 0.0))


_unroll = jax.jit(rj.unroll, static_argnums=0)


def test_any_leading_batch_axes_and_time_major():
    m = rl.GRU(H, time_major=True)
    xs = _xs(2, (T, 2, 3, I))
    length = jnp.array([[5, 0, 2], [1, 4, 3]], jnp.int32)
    v = m.init(jax.random.key(0), xs, length)
    (state,), ys = m.apply(v, xs, length)
    assert ys.shape == (T, 2, 3, H) and state.h.shape == (2, 3, H)
    cell = rj.GRU(I, H)
    p = v["params"]["layer_0"]
    for a in range(2):
        for b in range(3):
            s_ref, y_ref = _unroll(cell, p, xs[:, a, b], length[a, b])
            np.testing.assert_allclose(ys[:, a, b], y_ref, rtol=1e-6, atol=1e-7)
            np.testing.assert_allclose(state.h[a, b], s_ref.h, rtol=1e-6, atol=1e-7)


def test_state_in_continues_the_sequence():
    m = rl.LSTM(H, num_layers=2)
    xs = _xs(3)
    v = m.init(jax.random.key(0), xs)
    apply = jax.jit(m.apply)
    s_full, y_full = apply(v, xs)
    s_half, y_first = apply(v, xs[:, :2])
    s_rest, y_rest = apply(v, xs[:, 2:], None, s_half)
    np.testing.assert_allclose(jnp.concatenate([y_first, y_rest], 1), y_full, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s_rest), jax.tree_util.tree_leaves(s_full)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    zero = m.initial_state((B,))
    s0, y0 = apply(v, xs, None, zero)
    np.testing.assert_array_equal(y0, y_full)
    assert jax.tree_util.tree_structure(zero) == jax.tree_util.tree_structure(s_full)


def test_rnn_callable_merge_sizes_the_next_layer():
    xs = _xs(4)
    merge = lambda f, b: jnp.concatenate([f, b, f * b], axis=-1)  # noqa: E731
    m = rl.RNN(H, num_layers=2, bidirectional=True, merge=merge, nonlinearity="relu")
    v = m.init(jax.random.key(0), xs, LENGTH)
    assert v["params"]["layer_1"]["forward"]["w_ih"].shape == (3 * H, H)
    _, ys = m.apply(v, xs, LENGTH)
    assert ys.shape == (B, T, 3 * H)
    # layer 1 recomputed from layer 0's merged outputs with the functional layers
    _, y0 = m.functional(I).layers[0].apply_batch(v["params"]["layer_0"], xs, LENGTH)
    _, ref = m.functional(I).layers[1].apply_batch(v["params"]["layer_1"], y0, LENGTH)
    np.testing.assert_allclose(ys, ref, rtol=1e-6, atol=1e-7)


def test_echo_state_reservoir_is_fixed_and_matches_float64_loop():
    esn = rl.EchoState(6, leak_rate=0.3, density=0.5, bias_scaling=0.2)
    xs = _xs(6)
    v = esn.init(jax.random.key(0), xs, LENGTH)
    assert sorted(v) == ["reservoir"]
    p = v["reservoir"]["layer_0"]
    (state,), hs = jax.jit(esn.apply)(v, xs, LENGTH)
    w_in, w, b = (np.asarray(p[k], np.float64) for k in ("w_in", "w", "b"))
    for i in range(B):
        h = np.zeros(6)
        for t in range(int(LENGTH[i])):
            h = 0.7 * h + 0.3 * np.tanh(np.asarray(xs[i, t], np.float64) @ w_in + w @ h + b)
            np.testing.assert_allclose(hs[i, t], h, atol=1e-5)
        np.testing.assert_allclose(state.h[i], h, atol=1e-5)
    assert bool(jnp.all(hs[1, int(LENGTH[1]) :] == 0.0))


# ---------------------------------------------------------------- Recurrent(cell), factories


def test_factories_are_recurrent_of_the_cell_and_keep_their_names():
    """rl.LSTM(H, ...) is rl.Recurrent(rj.LSTM(H, H, ...), ...); an unnamed one inside a
    parent is still named LSTM_0 (the paths of saved variables stay)."""
    m = rl.LSTM(H, num_layers=2, proj_size=2, dropout=0.1)
    assert isinstance(m, rl.Recurrent) and type(m).__name__ == "LSTM"
    assert m.cell == rj.LSTM(H, H, proj_size=2) and m.num_layers == 2 and m.dropout == 0.1
    assert rl.EchoState(H, leak_rate=0.5).trainable is False
    assert rl.EchoState(H).cell == rj.EchoState(H, H)

    class Parent(nn.Module):
        @nn.compact
        def __call__(self, xs):
            return rl.LSTM(H)(xs)[1] + rl.GRU(H)(xs)[1] + rl.LSTM(H)(xs)[1]

    shapes = jax.eval_shape(Parent().init, jax.random.key(0), _xs())
    assert sorted(shapes["params"]) == ["GRU_0", "LSTM_0", "LSTM_1"]


def test_recurrent_takes_its_input_size_from_the_inputs():
    """As Flax's linen cells: the first layer runs the cell rebuilt for xs's feature size;
    a cell that cannot be rebuilt (not a dataclass) must match it."""
    m = rl.Recurrent(rj.GRU(7, H))
    v = m.init(jax.random.key(0), _xs())
    assert v["params"]["layer_0"]["w_ih"].shape == (I, 3 * H)
    assert m.functional(I).layers[0].cell == rj.GRU(I, H)
    _, ys = m.apply(v, _xs(), LENGTH)
    _, want = rj.Recurrent(rj.GRU(I, H)).apply_batch(v["params"]["layer_0"], _xs(), LENGTH)
    np.testing.assert_array_equal(ys, want)

    class Frozen:
        """A cell that is not a dataclass: the protocol as properties."""

        input_size, output_size = 7, H

        def __getattr__(self, name):
            return getattr(rj.GRU(7, H), name)

    with pytest.raises(ValueError, match="xs must have the input size of the cell"):
        rl.Recurrent(Frozen()).init(jax.random.key(0), _xs())


def test_recurrent_with_a_cell_class_is_deprecated_and_gives_the_same_numbers():
    xs = _xs(8)
    with pytest.warns(DeprecationWarning, match=r"Recurrent\(LSTM\(input_size, 4") as rec:
        old = rl.Recurrent(H, cell=rj.LSTM, num_layers=2, options=(("proj_size", 2),))
    assert rec[0].filename == __file__  # the warning points at the caller
    new = rl.Recurrent(rj.LSTM(I, H, proj_size=2), num_layers=2)
    v_old, v_new = old.init(jax.random.key(2), xs), new.init(jax.random.key(2), xs)
    for a, b in zip(jax.tree_util.tree_leaves(v_old), jax.tree_util.tree_leaves(v_new)):
        np.testing.assert_array_equal(a, b)
    (s_old, _), y_old = old.apply(v_old, xs, LENGTH)
    (s_new, _), y_new = new.apply(v_new, xs, LENGTH)
    np.testing.assert_array_equal(y_old, y_new)
    np.testing.assert_array_equal(s_old.c, s_new.c)
    assert float(jnp.max(jnp.abs(y_new))) > 0.0
    with pytest.warns(DeprecationWarning, match="deprecated"):
        by_name = rl.Recurrent(cell=rj.MinGRU, hidden_size=H, time_major=True)
    assert by_name.cell == rj.MinGRU(H, H) and by_name.time_major is True
    with pytest.warns(DeprecationWarning), pytest.raises(ValueError, match="recurrent_init"):
        rl.Recurrent(H, cell=rj.MinGRU, recurrent_init="zeros")
    with pytest.raises(TypeError, match="cell must be a cell instance.*instantiate"):
        rl.Recurrent(rj.GRU)


# ---------------------------------------------------------------- dropout

DROP = rl.LSTM(H, num_layers=2, dropout=0.5, recurrent_dropout=0.3, input_dropout=0.2)


@pytest.fixture(scope="module")
def drop():
    xs = _xs(5)
    v = DROP.init(jax.random.key(0), xs, LENGTH, deterministic=True)

    @jax.jit
    def run(v, xs, k):
        return DROP.apply(v, xs, LENGTH, deterministic=False, rngs={"dropout": k})

    return v, run


def test_deterministic_is_the_functional_layer_without_key(drop):
    v, _ = drop
    xs = _xs(5)
    _, ys = DROP.apply(v, xs, LENGTH, deterministic=True)
    _, ref = DROP.functional(I).apply_batch(_layer_params(v, 2), xs, LENGTH)
    np.testing.assert_array_equal(ys, ref)


def test_dropout_uses_the_dropout_stream(drop):
    v, run = drop
    xs = _xs(5)
    _, det = DROP.apply(v, xs, LENGTH, deterministic=True)
    _, a = run(v, xs, jax.random.key(1))
    _, a2 = run(v, xs, jax.random.key(1))
    _, b = run(v, xs, jax.random.key(2))
    np.testing.assert_array_equal(a, a2)
    assert not np.allclose(a, b)
    assert not np.allclose(a, det)
    assert bool(jnp.all(a[1, 3:] == 0.0))
    # padding invariance holds with dropout on, for the same dropout key
    t = jnp.arange(T)[None, :, None]
    xs2 = jnp.where(t < LENGTH[:, None, None], xs, -50.0)
    _, a3 = run(v, xs2, jax.random.key(1))
    np.testing.assert_array_equal(a, a3)


def test_dropout_needs_deterministic_or_rng(drop):
    v, _ = drop
    with pytest.raises(ValueError, match="deterministic"):
        DROP.apply(v, _xs(5), LENGTH)
    with pytest.raises(Exception, match="dropout"):
        DROP.apply(v, _xs(5), LENGTH, deterministic=False)


def test_bad_inputs():
    m = rl.LSTM(H)
    with pytest.raises(ValueError, match="xs"):
        m.init(jax.random.key(0), jnp.ones((T, I)))
    with pytest.raises(ValueError, match="num_layers"):
        rl.LSTM(H, num_layers=0).init(jax.random.key(0), _xs())
    with pytest.raises(ValueError, match="merge"):
        rl.LSTM(H, bidirectional=True, merge="max").init(jax.random.key(0), _xs())
    with pytest.raises(ValueError, match="dropout"):
        rl.GRU(H, dropout=1.5).init(jax.random.key(0), _xs())
    v = m.init(jax.random.key(0), _xs())
    with pytest.raises(ValueError, match="length"):
        m.apply(v, _xs(), jnp.array([9, 1]))


# ---------------------------------------------------------------- training, checkpoint


class _Classifier(nn.Module):
    vocab: int = 11
    classes: int = 3

    @nn.compact
    def __call__(self, tokens, length, deterministic=True):
        x = nn.Embed(self.vocab, 8)(tokens)
        _, ys = rl.GRU(8, bidirectional=True, recurrent_dropout=0.1)(
            x, length, deterministic=deterministic
        )
        mask = (jnp.arange(tokens.shape[1])[None, :] < length[:, None]).astype(ys.dtype)
        pooled = jnp.sum(ys, 1) / jnp.maximum(jnp.sum(mask, 1, keepdims=True), 1.0)
        return nn.Dense(self.classes)(pooled)


@pytest.fixture(scope="module")
def task():
    k1, k2 = jax.random.split(jax.random.key(3))
    tokens = jax.random.randint(k1, (8, 6), 1, 11)
    length = jax.random.randint(k2, (8,), 1, 7)
    labels = tokens[:, 0] % 3
    return tokens, length, labels


@pytest.mark.slow  # the README example below covers this in the default run
def test_trains_with_optax_and_round_trips_through_orbax(task, tmp_path):
    tokens, length, labels = task
    model = _Classifier()
    params = model.init(jax.random.key(0), tokens, length)["params"]
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    opt_state = tx.init(params)

    def loss_fn(p, key, det):
        logits = model.apply({"params": p}, tokens, length, det, rngs={"dropout": key})
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()

    @jax.jit
    def step(p, s, key):
        loss, g = jax.value_and_grad(loss_fn)(p, key, False)
        u, s = tx.update(g, s, p)
        return optax.apply_updates(p, u), s, loss

    eval_loss = jax.jit(lambda p: loss_fn(p, jax.random.key(0), True))
    first = float(eval_loss(params))
    for i in range(15):
        params, opt_state, _ = step(params, opt_state, jax.random.key(100 + i))
    assert float(eval_loss(params)) < 0.8 * first

    ckpt = ocp.StandardCheckpointer()
    path = tmp_path / "linen_ckpt"
    ckpt.save(path, {"params": params, "opt_state": opt_state})
    ckpt.wait_until_finished()
    abstract = jax.tree_util.tree_map(
        ocp.utils.to_shape_dtype_struct, {"params": params, "opt_state": opt_state}
    )
    restored = ckpt.restore(path, abstract)
    ckpt.close()
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(abstract)
    logits = model.apply({"params": params}, tokens, length)
    logits_r = model.apply({"params": restored["params"]}, tokens, length)
    np.testing.assert_array_equal(logits, logits_r)


def test_readme_example_runs():
    """experiments/flax_example.py (the README example, linen and NNX): both models train
    (loss falls) and come back from orbax with identical outputs (asserted inside)."""
    path = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "flax_example.py"
    ns = runpy.run_path(str(path), run_name="flax_example")
    for name in ("linen_losses", "nnx_losses"):
        losses = ns[name]
        assert len(losses) == 20 and all(np.isfinite(losses))
        assert losses[-1] < 0.5 * losses[0], (name, losses)
