"""Layers: Recurrent, Bidirectional, Stacked, dropout variants, zoneout."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, I, H = 6, 3, 4


def _xs(seed=1, shape=(T, I)):
    return jax.random.normal(jax.random.key(seed), shape)


def _close(a, b, **kw):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(x, y, rtol=kw.get("rtol", 1e-5), atol=kw.get("atol", 1e-6))


LAYERS = {
    "recurrent": rj.Recurrent(rj.LSTM(I, H)),
    "reverse": rj.Recurrent(rj.GRU(I, H), reverse=True),
    "bidir": rj.Bidirectional(rj.LSTM(I, H)),
    "stacked": rj.Stacked([rj.Bidirectional(rj.GRU(I, H)), rj.LSTM(2 * H, H)], dropout=0.3),
    "regularised": rj.Recurrent(
        rj.LSTM(I, H), input_dropout=0.2, recurrent_dropout=0.3, zoneout=0.1
    ),
}


def test_recurrent_without_regularisation_is_unroll():
    cell = rj.GRU(I, H)
    p = cell.init(jax.random.key(0))
    for reverse in (False, True):
        got = rj.Recurrent(cell, reverse=reverse).apply(p, _xs(), length=4, key=jax.random.key(5))
        _close(got, rj.unroll(cell, p, _xs(), length=4, reverse=reverse))


@pytest.mark.parametrize("merge", ["concat", "sum", "mean", "fn"])
def test_bidirectional_equals_two_unrolls(merge):
    cell = rj.LSTM(I, H)
    m = (lambda f, b: f * b) if merge == "fn" else merge
    layer = rj.Bidirectional(cell, merge=m)
    p = layer.init(jax.random.key(0))
    state, ys = layer.apply(p, _xs(), length=4)
    sf, yf = rj.unroll(cell, p["forward"], _xs(), length=4)
    sb, yb = rj.unroll(cell, p["backward"], _xs(), length=4, reverse=True)
    expected = {
        "concat": jnp.concatenate([yf, yb], -1),
        "sum": yf + yb,
        "mean": (yf + yb) / 2,
        "fn": yf * yb,
    }[merge]
    _close(ys, expected)
    _close(state, rj.BidirectionalState(sf, sb))
    assert isinstance(state, rj.BidirectionalState)
    if merge != "fn":
        assert ys.shape[-1] == layer.output_size
    # the backward direction starts at the last real step: its output there is one step
    # of the cell from the zero state
    _, y_last = cell.step(p["backward"], cell.initial_state(), _xs()[3])
    _close(yb[3], y_last)


def test_stacked_equals_composition_and_dropout_only_with_key():
    net = LAYERS["stacked"]
    p = net.init(jax.random.key(0))
    states, ys = net.apply(p, _xs(), length=5)
    s0, y0 = net.layers[0].apply(p[0], _xs(), length=5)
    s1, y1 = net.layers[1].apply(p[1], y0, length=5)
    _close((states, ys), ((s0, s1), y1))
    # without a key: deterministic; with one: different, and reproducible per key
    _, ys_k = net.apply(p, _xs(), length=5, key=jax.random.key(1))
    _, ys_k2 = net.apply(p, _xs(), length=5, key=jax.random.key(1))
    np.testing.assert_array_equal(ys_k, ys_k2)
    assert not np.allclose(ys_k[:5], ys[:5])
    assert np.all(np.asarray(ys_k)[5:] == 0)


def test_stacked_state_in_and_out():
    net = rj.Stacked([rj.LSTM(I, H), rj.GRU(H, H)])
    p = net.init(jax.random.key(0))
    xs = _xs()
    # running two halves with the state carried equals one run
    s_half, y_a = net.apply(p, xs[:3])
    s_full, y_full = net.apply(p, xs)
    s_rest, y_b = net.apply(p, xs[3:], state=s_half)
    _close(jnp.concatenate([y_a, y_b]), y_full)
    _close(s_rest, s_full)


@functools.lru_cache(maxsize=None)
def _jit_apply(layer):
    return jax.jit(lambda p, xs, n, k: layer.apply(p, xs, n, key=k))


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("with_key", [False, True])
def test_layer_padding_invariance(name, with_key):
    layer = LAYERS[name]
    p = layer.init(jax.random.key(0))
    n = 3
    xs = _xs()
    garbage = xs.at[n:].set(100.0 * _xs(9)[n:])
    key = jax.random.key(4) if with_key else None

    def loss(p, xs):
        state, ys = layer.apply(p, xs, length=n, key=key)
        return jnp.sum(ys**2) + sum(jnp.sum(s) for s in jax.tree_util.tree_leaves(state)), (
            state,
            ys,
        )

    g = jax.jit(jax.grad(loss, has_aux=True))
    r1, r2 = g(p, xs), g(p, garbage)
    for a, b in zip(jax.tree_util.tree_leaves(r1), jax.tree_util.tree_leaves(r2)):
        np.testing.assert_array_equal(a, b)
    assert np.all(np.asarray(r1[1][1])[n:] == 0)


def _identity_rnn(rate_in=0.0, rate_rec=0.0, mode="variational", zoneout=0.0):
    cell = rj.SimpleRNN(H, H, nonlinearity="relu")
    layer = rj.Recurrent(
        cell,
        input_dropout=rate_in,
        recurrent_dropout=rate_rec,
        recurrent_dropout_mode=mode,
        zoneout=zoneout,
    )
    return layer, {"w_ih": jnp.eye(H), "w_hh": jnp.eye(H), "b": jnp.zeros(H)}


def test_input_dropout_one_mask_per_sequence():
    layer, p = _identity_rnn(rate_in=0.5)
    p = dict(p, w_hh=jnp.zeros((H, H)))  # h_t = relu(mask * x_t): the mask itself
    xs = jnp.ones((16, T, H))
    _, ys = layer.apply_batch(p, xs, key=jax.random.key(0))
    ys = np.asarray(ys)
    np.testing.assert_array_equal(ys, np.broadcast_to(ys[:, :1], ys.shape))  # same every step
    assert set(np.unique(ys)) <= {0.0, 2.0} and len(np.unique(ys)) == 2
    assert len({tuple(y[0]) for y in ys}) > 1  # examples draw their own masks
    _, y_eval = layer.apply(p, xs[0])
    np.testing.assert_array_equal(y_eval, 1.0)  # no key: no dropout


@pytest.mark.parametrize("mode", ["variational", "per_step"])
def test_recurrent_dropout_masks(mode):
    n_units = 64
    cell = rj.SimpleRNN(n_units, n_units, nonlinearity="relu")
    layer = rj.Recurrent(cell, recurrent_dropout=0.5, recurrent_dropout_mode=mode)
    p = {"w_ih": jnp.eye(n_units), "w_hh": jnp.eye(n_units), "b": jnp.zeros(n_units)}
    _, ys = layer.apply(p, jnp.ones((T, n_units)), key=jax.random.key(1))
    ys = np.asarray(ys)
    # h_t = m_t * h_{t-1} + 1 per unit, with m in {0, 2}
    kept = np.cumsum(2.0 ** np.arange(T))  # mask 2 at every step: 1, 3, 7, ...
    dropped = np.ones(T)
    consistent = np.array([np.allclose(u, kept) or np.allclose(u, dropped) for u in ys.T])
    if mode == "variational":
        assert consistent.all()
        assert 0 < sum(np.allclose(u, kept) for u in ys.T) < n_units
    else:
        assert not consistent.all()


def test_zoneout_without_key_takes_the_expectation():
    z = 0.25
    cell = rj.LSTM(I, H)
    p = cell.init(jax.random.key(0))
    layer = rj.Recurrent(cell, zoneout=z)
    state, ys = layer.apply(p, _xs())
    s = cell.initial_state()
    for t in range(T):
        new, _ = cell.step(p, s, _xs()[t])
        s = jax.tree_util.tree_map(lambda o, n: z * o + (1 - z) * n, s, new)
        np.testing.assert_allclose(ys[t], s.h, rtol=1e-5, atol=1e-6)
    _close(state, s)


def test_zoneout_sampled_keeps_or_updates_each_unit():
    cell = rj.SimpleRNN(I, 32)
    p = cell.init(jax.random.key(0))
    layer = rj.Recurrent(cell, zoneout=0.5)
    _, ys = layer.apply(p, _xs(), key=jax.random.key(3))
    h = cell.initial_state().h
    kept = updated = 0
    for t in range(T):
        cand = np.asarray(cell.step(p, rj.SimpleRNNState(h), _xs()[t])[1])
        y = np.asarray(ys[t])
        keep = np.isclose(y, np.asarray(h), atol=1e-6)
        take = np.isclose(y, cand, atol=1e-6)
        assert np.all(keep | take)
        kept += int((keep & ~take).sum())
        updated += int((take & ~keep).sum())
        h = ys[t]
    assert kept > 10 and updated > 10


def test_check_grads_layers_float64():
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        for name in ("bidir", "stacked", "regularised"):
            layer = LAYERS[name]
            p = jax.tree_util.tree_map(
                lambda a: a.astype(jnp.float64), layer.init(jax.random.key(0))
            )
            xs = _xs().astype(jnp.float64)
            key = jax.random.key(2)
            f = lambda p, x: layer.apply(p, x, length=4, key=key)[1]
            check_grads(f, (p, xs), order=1, modes=["rev"], eps=1e-6)


def test_layer_errors():
    with pytest.raises(ValueError, match="merge must be one of"):
        rj.Bidirectional(rj.LSTM(I, H), merge="max")
    with pytest.raises(ValueError, match="backward must be a reverse=True"):
        rj.Bidirectional(rj.LSTM(I, H), backward=rj.Recurrent(rj.LSTM(I, H)))
    with pytest.raises(ValueError, match="forward must run forwards"):
        rj.Bidirectional(rj.Recurrent(rj.LSTM(I, H), reverse=True))
    with pytest.raises(ValueError, match=r"layers\[1\].input_size must equal"):
        rj.Stacked([rj.LSTM(I, H), rj.LSTM(H + 1, H)])
    with pytest.raises(ValueError, match="at least one"):
        rj.Stacked([])
    with pytest.raises(ValueError, match="dropout must be a float in"):
        rj.Stacked([rj.LSTM(I, H)], dropout=1.0)
    with pytest.raises(ValueError, match="zoneout must be a float in"):
        rj.Recurrent(rj.LSTM(I, H), zoneout=-0.1)
    with pytest.raises(ValueError, match="recurrent_dropout_mode"):
        rj.Recurrent(rj.LSTM(I, H), recurrent_dropout_mode="naive")
    with pytest.raises(TypeError, match=r"layers\[1\] must be an rnnjax layer or cell"):
        rj.Stacked([rj.LSTM(I, H), 3])
    with pytest.raises(TypeError, match="forward must be an rnnjax layer or cell"):
        rj.Bidirectional("lstm")
    net = rj.Stacked([rj.LSTM(I, H), rj.LSTM(H, H)])
    with pytest.raises(ValueError, match="params must be a tuple of 2"):
        net.apply(net.init(jax.random.key(0))[:1], _xs())
    bi = rj.Bidirectional(rj.LSTM(I, H))
    with pytest.raises(ValueError, match="params must be a dict with keys"):
        bi.apply({"forward": {}}, _xs())
    with pytest.raises(ValueError, match="feature size 3"):
        net.apply(net.init(jax.random.key(0)), jnp.ones((T, I + 2)))
