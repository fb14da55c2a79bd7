"""Deep residual blocks: against a hand-written reference, length and reset semantics,
batching, the parallel path against the sequential one, and bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, D = 6, 4
PAR = rj.ScanConfig(method="parallel")


def _perturb(p, seed=3):
    leaves, tree = jax.tree_util.tree_flatten(p)
    ks = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [v + 0.2 * jax.random.normal(k, v.shape, v.dtype) for v, k in zip(leaves, ks)]
    )


def _ref_norm(kind, p, x):
    x = np.asarray(x, np.float64)
    if kind == "layer":
        x = x - x.mean(-1, keepdims=True)
    x = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6)
    x = x * np.asarray(p["scale"])
    return x + np.asarray(p["bias"]) if kind == "layer" else x


def _ref_block(block, p, xs, length=None):
    """The block written out with numpy on top of the layer's own apply."""
    n = T if length is None else int(length)
    xs = np.asarray(xs, np.float64)
    xs = np.where(np.arange(T)[:, None] < n, xs, 0.0)
    h = _ref_norm(block.norm, p["norm1"], xs)
    _, r = block.layer.apply(p["layer"], jnp.asarray(h, jnp.float32), length)
    r = np.asarray(r, np.float64)
    if "out" in p:
        r = r @ np.asarray(p["out"]["w"]) + np.asarray(p["out"]["b"])
    m = p["mixer"]

    def mix(z):
        a = z @ np.asarray(m["w1"]) + np.asarray(m["b1"])
        if block.mixer == "glu":
            u, v = np.split(a, 2, axis=-1)
            a = u / (1.0 + np.exp(-v))
        else:
            a = np.asarray(jax.nn.gelu(jnp.asarray(a)))
        return a @ np.asarray(m["w2"]) + np.asarray(m["b2"])

    if block.residual == "each":
        u = xs + r
        y = u + mix(_ref_norm(block.norm, p["norm2"], u))
    else:
        y = xs + mix(np.asarray(jax.nn.gelu(jnp.asarray(r))))
    return np.where(np.arange(T)[:, None] < n, y, 0.0)


BLOCKS = {
    "mingru_mlp_each": rj.ResidualBlock(rj.MinGRU(D, D), mixer="mlp"),
    "minlstm_glu_rms": rj.ResidualBlock(rj.Recurrent(rj.MinLSTM(D, D), config=PAR), norm="rms"),
    "lru_glu_block": rj.ResidualBlock(
        rj.Recurrent(rj.LRU(D, 3), config=PAR), residual="block"
    ),  # the LRU paper's block
    "gru_glu": rj.ResidualBlock(rj.GRU(D, 5)),
}


@functools.lru_cache(maxsize=None)
def _apply(block):
    return jax.jit(block.apply)


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_matches_reference(name):
    block = BLOCKS[name]
    p = _perturb(block.init(jax.random.key(0)))
    xs = jax.random.normal(jax.random.key(1), (T, D))
    for length in (None, jnp.int32(4)):
        _, ys = _apply(block)(p, xs, length)
        np.testing.assert_allclose(ys, _ref_block(block, p, xs, length), rtol=2e-5, atol=2e-5)


def test_params_layout():
    p = BLOCKS["lru_glu_block"].init(jax.random.key(0))
    assert sorted(p) == ["layer", "mixer", "norm1", "out"]  # one residual: no norm2
    assert p["out"]["w"].shape == (6, D) and p["mixer"]["w1"].shape == (D, 4 * D)
    p = rj.ResidualBlock(rj.MinGRU(D, D), mixer=None, norm=None).init(jax.random.key(0))
    assert sorted(p) == ["layer", "norm1"] and p["norm1"] == {}


NET = rj.DeepRecurrent.stack(rj.MinGRU, width=D, depth=2, input_size=3, output_size=2)
NET_PAR = rj.DeepRecurrent.stack(
    rj.MinGRU, width=D, depth=2, input_size=3, output_size=2, config=PAR
)


@functools.lru_cache(maxsize=None)
def _net_fns(net):
    def loss(p, xs, n, resets):
        _, ys = net.apply_batch(p, xs, n, resets=resets)
        return jnp.sum(jnp.sin(ys))

    return jax.jit(lambda p, xs, n, r: net.apply_batch(p, xs, n, resets=r)), jax.jit(
        jax.grad(loss, argnums=(0, 1))
    )


def _net_data():
    xs = jax.random.normal(jax.random.key(2), (3, T, 3))
    n = jnp.array([T, 3, 0], jnp.int32)
    resets = jnp.zeros((3, T), bool).at[0, 2].set(True)
    return xs, n, resets


def test_deep_parallel_matches_sequential_values_and_grads():
    p = _perturb(NET.init(jax.random.key(0)))
    xs, n, r = _net_data()
    (s1, y1), (s2, y2) = _net_fns(NET)[0](p, xs, n, r), _net_fns(NET_PAR)[0](p, xs, n, r)
    np.testing.assert_allclose(y1, y2, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(s1), jax.tree_util.tree_leaves(s2)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    g1, g2 = _net_fns(NET)[1](p, xs, n, r), _net_fns(NET_PAR)[1](p, xs, n, r)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_deep_lengths_resets_and_padding():
    p = _perturb(NET.init(jax.random.key(0)))
    xs, n, r = _net_data()
    apply, grad = _net_fns(NET)
    states, ys = apply(p, xs, n, r)
    assert ys.shape == (3, T, 2)
    assert bool((ys[1, 3:] == 0).all()) and bool((ys[2] == 0).all())
    # padding (even NaN) changes no output, state or gradient
    bad = xs.at[1, 3:].set(jnp.nan).at[2].set(1e3)
    states2, ys2 = apply(p, bad, n, r)
    np.testing.assert_array_equal(ys, ys2)
    for a, b in zip(jax.tree_util.tree_leaves(states), jax.tree_util.tree_leaves(states2)):
        np.testing.assert_array_equal(a, b)
    (gp, _), (gp2, gx2) = grad(p, xs, n, r), grad(p, bad, n, r)
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gp2)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert bool((gx2[1, 3:] == 0).all()) and bool((gx2[2] == 0).all())
    # a reset at t=2 makes steps 2.. what the segment gives alone (from the initial state)
    _, alone = apply(p, xs[:1, 2:], jnp.array([T - 2], jnp.int32), jnp.zeros((1, T - 2), bool))
    np.testing.assert_allclose(ys[0, 2:], alone[0], rtol=1e-5, atol=1e-6)
    # the state is each block's state at the length: one example run alone agrees
    s_one, y_one = NET.apply(p, xs[1], jnp.int32(3))
    np.testing.assert_allclose(ys[1], y_one, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(states), jax.tree_util.tree_leaves(s_one)):
        np.testing.assert_allclose(a[1], b, rtol=1e-5, atol=1e-6)


def test_architectures_expressible():
    # Feng et al.: MinGRU/MinLSTM blocks with an MLP; the LRU paper: one residual, GLU
    feng = rj.DeepRecurrent.stack(rj.MinLSTM, width=D, depth=3, mixer="mlp", norm="layer")
    lru = rj.DeepRecurrent.stack(rj.LRU, width=D, depth=2, hidden_size=8, residual="block")
    assert len(feng.blocks) == 3 and feng.blocks[0].mixer == "mlp"
    assert lru.blocks[0].layer.output_size == 16 and lru.blocks[0].residual == "block"
    assert rj.count_params(feng.init(jax.random.key(0))) > 0


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rj.ResidualBlock(rj.MinGRU(D, D), mixer="ffn"), "mixer must be one of"),
        (lambda: rj.ResidualBlock(rj.MinGRU(D, D), norm="batch"), "norm must be one of"),
        (lambda: rj.ResidualBlock(rj.MinGRU(D, D), residual="none"), "residual must be one of"),
        (lambda: rj.ResidualBlock(rj.MinGRU(D, D), expansion=0), "expansion"),
        (lambda: rj.ResidualBlock("gru"), "layer must be an rnnjax layer or cell"),
        (
            lambda: rj.DeepRecurrent([rj.MinGRU(D, D), rj.MinGRU(D + 1, D)]),
            r"blocks\[1\] has width 5",
        ),
        (lambda: rj.DeepRecurrent([]), "at least one block"),
        (lambda: rj.DeepRecurrent.stack(rj.MinGRU, width=0, depth=2), "width"),
        (lambda: rj.DeepRecurrent.stack(rj.MinGRU(D, D), width=D, depth=2), "cell class"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_bad_params():
    block = BLOCKS["mingru_mlp_each"]
    p = block.init(jax.random.key(0))
    del p["mixer"]
    with pytest.raises(ValueError, match="params must be a dict with keys"):
        block.apply(p, jnp.ones((T, D)))


def _stepped(layer, p, xs):
    """``step_layer`` carried over the positions of ``xs`` by a scan: (state, ys)."""
    one = lambda s, x: rj.blocks.step_layer(layer, p, s, x)
    return jax.lax.scan(one, layer.initial_state(), xs)


@pytest.mark.parametrize(
    "layer",
    [
        rj.DeepRecurrent.stack(
            rj.LRU, D, 2, hidden_size=3, input_size=3, output_size=5, mixer="mlp", residual="block"
        ),
        rj.Stacked([rj.Recurrent(rj.CausalConv(D, D, width=3)), rj.ResidualBlock(rj.S6(D, D))]),
    ],
    ids=["deep_lru", "conv_then_block"],
)
def test_stepping_equals_the_whole_sequence(layer):
    """One position at a time with the state carried gives the outputs at every position
    and the final state of the layer run over the whole sequence."""
    p = _perturb(layer.init(jax.random.key(0)))
    xs = jax.random.normal(jax.random.key(1), (T, layer.input_size))
    want_state, want = jax.jit(layer.apply)(p, xs)
    state, ys = jax.jit(functools.partial(_stepped, layer))(p, xs)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(want_state)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_stepping_names_what_reads_the_future_and_uses_a_layer_s_own_step():
    x, bi = jnp.ones(D), rj.Bidirectional(rj.GRU(D, 2))
    net = rj.DeepRecurrent([rj.ResidualBlock(rj.Stacked([rj.GRU(D, D), bi]))])
    with pytest.raises(ValueError, match=r"net\.blocks\[0\]\.layer\.layers\[1\] must be causal"):
        rj.blocks.step_layer(net, net.init(jax.random.key(0)), net.initial_state(), x, name="net")

    class Doubling:  # a layer of one's own: its step is what generation runs
        def step(self, params, state, x):
            return state + 1, 2.0 * x

    assert rj.blocks.step_layer(Doubling(), {}, 0, x)[1].tolist() == [2.0] * D
