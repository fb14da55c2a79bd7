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


# --------------------------------------------------------------------------- user layers
# A user-written layer with only init / apply / initial_state (no input_size, no
# output_size, no apply_batch, no reverse): a plain Python loop over a cell's step, one
# sequence (T, I) at a time, as peer libraries' custom modules are written.


class LoopLayer:
    """A GRU run by a Python loop; outputs ``(T, H)`` or, with ``pytree=True``,
    ``(y, {"sq": y * y})``."""

    def __init__(self, input_size=I, hidden=H, pytree=False):
        self.cell = rj.GRU(input_size, hidden)
        self.pytree = pytree

    def init(self, key):
        return self.cell.init(key)

    def initial_state(self):
        return self.cell.initial_state()

    def apply(self, params, xs, length=None, state=None, *, resets=None, key=None):
        s = self.cell.initial_state() if state is None else state
        n = xs.shape[0] if length is None else length
        ys = []
        for t in range(xs.shape[0]):
            new, y = self.cell.step(params, s, xs[t])
            real = t < n
            s = jax.tree_util.tree_map(lambda a, b: jnp.where(real, a, b), new, s)
            ys.append(jnp.where(real, y, 0.0))
        ys = jnp.stack(ys)
        return s, ((ys, {"sq": ys * ys}) if self.pytree else ys)


def _loop_gru(cell, p, xs, n, reverse=False):
    """Reference for one sequence: the real steps by a Python loop over step."""
    s = cell.initial_state()
    ys = [jnp.zeros(cell.output_size)] * xs.shape[0]
    for t in reversed(range(n)) if reverse else range(n):
        s, ys[t] = cell.step(p, s, xs[t])
    return s, jnp.stack(ys)


B_LEN = jnp.array([6, 3, 1, 0])


def test_user_layer_in_stacked_apply_batch_is_batch_first():
    layer = LoopLayer()
    net = rj.Stacked([layer, rj.GRU(H, 5)])
    p = net.init(jax.random.key(0))
    xs = _xs(2, (4, T, I))
    (s0, s1), ys = net.apply_batch(p, xs, B_LEN)
    assert ys.shape == (4, T, 5)  # (B, T, H), the documented layout
    for b in range(4):
        n = int(B_LEN[b])
        r0, y0 = _loop_gru(layer.cell, p[0], xs[b], n)
        r1, y1 = _loop_gru(net.layers[1].cell, p[1], y0, n)
        _close((s0.h[b], s1.h[b], ys[b]), (r0.h, r1.h, y1))
    # time-major in, time-major out; a batch of sequences of length 1 (the shape)
    _, ys_tm = net.apply_batch(p, jnp.swapaxes(xs, 0, 1), B_LEN, time_major=True)
    _close(jnp.swapaxes(ys_tm, 0, 1), ys)
    _, one = rj.Stacked([layer]).apply_batch((p[0],), xs[:, :1])
    assert one.shape == (4, 1, H)
    _close(
        one[:, 0], jnp.stack([_loop_gru(layer.cell, p[0], xs[b, :1], 1)[1][0] for b in range(4)])
    )
    # unbatched apply and a key (dropout between the layers) pass through
    _, y_one = net.apply(p, xs[1], length=3)
    _close(y_one, ys[1])
    _, y_key = rj.Stacked([layer, rj.GRU(H, 5)], dropout=0.5).apply_batch(
        p, xs, B_LEN, key=jax.random.key(3)
    )
    assert y_key.shape == (4, T, 5) and bool(jnp.all(y_key[1, 3:] == 0))


def test_user_layer_in_bidirectional_runs_backwards_padding_aware():
    layer = LoopLayer()
    xs = _xs(4, (4, T, I))
    for bi in (rj.Bidirectional(layer), rj.Bidirectional(rj.GRU(I, H), backward=layer)):
        p = bi.init(jax.random.key(1))
        st, ys = bi.apply_batch(p, xs, B_LEN)
        assert ys.shape == (4, T, 2 * H)
        fwd_cell = bi.forward.cell if isinstance(bi.forward, rj.Recurrent) else layer.cell
        for b in range(4):
            n = int(B_LEN[b])
            sf, yf = _loop_gru(fwd_cell, p["forward"], xs[b], n)
            sb, yb = _loop_gru(layer.cell, p["backward"], xs[b], n, reverse=True)
            _close(
                (st.forward.h[b], st.backward.h[b], ys[b]),
                (sf.h, sb.h, jnp.concatenate([yf, yb], -1)),
            )
        # padding changes nothing
        garbage = xs.at[:, 3:].set(50.0)
        _close(
            bi.apply_batch(p, garbage, jnp.minimum(B_LEN, 3)),
            bi.apply_batch(p, xs, jnp.minimum(B_LEN, 3)),
        )


def test_user_layer_pytree_outputs_and_merges():
    layer = LoopLayer(pytree=True)
    xs = _xs(5, (2, T, I))
    n = jnp.array([4, 2])
    net = rj.Stacked([rj.GRU(I, I), layer])  # the last layer may output a pytree
    p = net.init(jax.random.key(0))
    _, (y, extra) = net.apply_batch(p, xs, n)
    assert y.shape == (2, T, H) and extra["sq"].shape == (2, T, H)
    _close(extra["sq"], y * y)
    with pytest.raises(ValueError, match=r"layers\[0\] must output an array"):
        rj.Stacked([layer, rj.GRU(H, H)]).apply_batch(
            rj.Stacked([layer, rj.GRU(H, H)]).init(jax.random.key(0)), xs, n
        )
    bi = rj.Bidirectional(layer, merge="sum")
    pb = bi.init(jax.random.key(2))
    _, (ys, ex) = bi.apply_batch(pb, xs, n)
    _, (yf, exf) = rj.Stacked([layer]).apply_batch((pb["forward"],), xs, n)
    yb = jnp.stack(
        [_loop_gru(layer.cell, pb["backward"], xs[b], int(n[b]), reverse=True)[1] for b in range(2)]
    )
    _close((ys, ex["sq"]), (yf + yb, exf["sq"] + yb * yb))
    with pytest.raises(ValueError, match="merge='concat'"):
        rj.Bidirectional(layer).apply_batch(pb, xs, n)
    _, both = rj.Bidirectional(layer, merge=lambda f, b: (f, b)).apply_batch(pb, xs, n)
    assert len(both) == 2


def test_pytree_output_cell_through_every_layer_type():
    from test_sequence import PAIR, PAIR_P, _loop_reference

    xs = _xs(6, (2, T, 2))
    n = jnp.array([5, 2])
    rec = rj.Recurrent(PAIR)
    _, got = rec.apply_batch(PAIR_P, xs, n)
    for b in range(2):
        _, ref = _loop_reference(PAIR, PAIR_P, xs[b], int(n[b]))
        _close(jax.tree_util.tree_map(lambda a: a[b], got), ref)
    bi = rj.Bidirectional(PAIR, merge="mean")
    pb = bi.init(jax.random.key(0))
    _, got = bi.apply_batch(pb, xs, n)
    for b in range(2):
        _, f = _loop_reference(PAIR, pb["forward"], xs[b], int(n[b]))
        _, r = _loop_reference(PAIR, pb["backward"], xs[b], int(n[b]), reverse=True)
        _close(
            jax.tree_util.tree_map(lambda a: a[b], got),
            jax.tree_util.tree_map(lambda u, v: 0.5 * (u + v), f, r),
        )
    with pytest.raises(ValueError, match="merge"):
        rj.Bidirectional(PAIR).apply_batch(pb, xs, n)
    st = rj.Stacked([rj.GRU(2, 2), PAIR])
    ps = st.init(jax.random.key(1))
    _, got = st.apply_batch(ps, xs, n)
    y0 = rj.Recurrent(rj.GRU(2, 2)).apply_batch(ps[0], xs, n)[1]
    for b in range(2):
        _, ref = _loop_reference(PAIR, ps[1], y0[b], int(n[b]))
        _close(jax.tree_util.tree_map(lambda a: a[b], got), ref)


def test_user_layer_lacking_a_method_is_refused_naming_it():
    class NoState:
        def init(self, key):
            return {}

        def apply(self, params, xs, length=None, state=None, *, resets=None, key=None):
            return None, xs

    with pytest.raises(TypeError, match="lacks initial_state"):
        rj.Stacked([NoState()])
    with pytest.raises(TypeError, match="lacks initial_state"):
        rj.Bidirectional(NoState())

    class NoInit:
        def step(self, params, state, x):
            return state, x

    with pytest.raises(TypeError, match="lacks init"):
        rj.Stacked([NoInit()])


def test_layer_unroll_field_is_deprecated_and_still_works():
    """``unroll`` is set in one place, ``ScanConfig.unroll``; the layer's own field warns
    and gives the same scan setting and the same numbers."""
    cell = rj.GRU(2, 3)
    with pytest.warns(DeprecationWarning, match=r"ScanConfig\(unroll=2\)"):
        old = rj.Recurrent(cell, unroll=2)
    new = rj.Recurrent(cell, config=rj.ScanConfig(unroll=2))
    assert old.scan_config() == new.scan_config() and new.scan_config().unroll == 2
    assert rj.Recurrent(cell).unroll is None
    p = new.init(jax.random.key(0))
    xs = jnp.ones((5, 2))
    np.testing.assert_array_equal(old.apply(p, xs, length=4)[1], new.apply(p, xs, length=4)[1])
