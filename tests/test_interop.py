"""Equivalence with PyTorch: weights copied in, outputs and final states agree to 1e-5."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.interop import from_torch, to_torch, to_torch_state_dict

torch = pytest.importorskip("torch")

T, I, H = 7, 3, 5
LENGTHS = [T, 4, 1]


def _torch_h_n(state, layer):
    """rnnjax's final states in PyTorch's (num_layers * directions, ...) order: (h, c)."""
    per_layer = state if isinstance(layer, rj.Stacked) else (state,)
    hs, cs = [], []
    for s in per_layer:
        dirs = (s.forward, s.backward) if isinstance(s, rj.BidirectionalState) else (s,)
        for d in dirs:
            hs.append(d.h)
            cs.append(getattr(d, "c", None))
    return hs, cs


def _check(module, lengths=LENGTHS):
    torch.manual_seed(0)
    for p in module.parameters():  # non-zero biases everywhere, so their mapping is tested
        torch.nn.init.uniform_(p, -0.5, 0.5)
    layer, params = from_torch(module)
    x = torch.randn(len(lengths), T, I)
    packed = torch.nn.utils.rnn.pack_padded_sequence(
        x, torch.tensor(lengths), batch_first=True, enforce_sorted=False
    )
    with torch.no_grad():
        out, h = module(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    h_n, c_n = h if isinstance(h, tuple) else (h, None)
    xs = jnp.asarray(x.numpy())
    for b, n in enumerate(lengths):
        state, ys = layer.apply(params, xs[b], length=n)
        np.testing.assert_allclose(ys, out[b].numpy(), rtol=1e-5, atol=1e-5)
        hs, cs = _torch_h_n(state, layer)
        for k, hk in enumerate(hs):
            np.testing.assert_allclose(hk, h_n[k, b].numpy(), rtol=1e-5, atol=1e-5)
            if c_n is not None:
                np.testing.assert_allclose(cs[k], c_n[k, b].numpy(), rtol=1e-5, atol=1e-5)
    # the whole batch at once, laid out as the module's input
    _, ys_b = layer.apply_batch(params, xs, length=jnp.array(lengths))
    np.testing.assert_allclose(ys_b, out.numpy(), rtol=1e-5, atol=1e-5)
    return layer, params


@pytest.mark.parametrize("num_layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: torch.nn.RNN(I, H, nonlinearity="tanh", **kw),
        lambda **kw: torch.nn.RNN(I, H, nonlinearity="relu", **kw),
        lambda **kw: torch.nn.LSTM(I, H, **kw),
        lambda **kw: torch.nn.LSTM(I, H, proj_size=2, **kw),
        lambda **kw: torch.nn.GRU(I, H, **kw),
    ],
    ids=["rnn_tanh", "rnn_relu", "lstm", "lstm_proj", "gru"],
)
def test_matches_pytorch(make, num_layers, bidirectional):
    module = make(num_layers=num_layers, bidirectional=bidirectional, batch_first=True)
    layer, params = _check(module)
    expected = (
        rj.Stacked if num_layers > 1 else (rj.Bidirectional if bidirectional else rj.Recurrent)
    )
    assert isinstance(layer, expected)


def test_time_major_module_and_no_bias():
    module = torch.nn.GRU(I, H, bias=False)
    layer, params = from_torch(module)
    x = torch.randn(T, 2, I)
    with torch.no_grad():
        out, _ = module(x)
    _, ys = layer.apply_batch(params, jnp.asarray(x.numpy()), time_major=True)
    np.testing.assert_allclose(ys, out.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "layer",
    [
        rj.Recurrent(rj.SimpleRNN(I, H, nonlinearity="relu")),
        rj.Bidirectional(rj.GRU(I, H)),
        rj.Stacked(
            [
                rj.Bidirectional(rj.LSTM(I, H, proj_size=3)),
                rj.Bidirectional(rj.LSTM(6, H, proj_size=3)),
            ],
            dropout=0.2,
        ),
    ],
    ids=["rnn", "bigru", "stacked_bilstm_proj"],
)
def test_round_trip_to_torch_and_back(layer):
    params = layer.init(jax.random.key(0))
    params = jax.tree_util.tree_map(lambda a: a + 0.1, params)  # non-zero biases
    module = to_torch(layer, params, batch_first=True).eval()  # eval: no dropout
    assert module.dropout == getattr(layer, "dropout", 0.0)
    x = torch.randn(1, T, I)
    with torch.no_grad():
        out, _ = module(x)
    _, ys = layer.apply(params, jnp.asarray(x[0].numpy()))
    np.testing.assert_allclose(ys, out[0].numpy(), rtol=1e-5, atol=1e-5)
    layer2, params2 = from_torch(module)
    assert layer2 == layer
    _, ys2 = layer2.apply(params2, jnp.asarray(x[0].numpy()))
    np.testing.assert_allclose(ys2, ys, rtol=1e-5, atol=1e-6)


def test_export_errors():
    cho = rj.Recurrent(rj.GRU(I, H, reset_after=False))
    with pytest.raises(ValueError, match="reset_after=False"):
        to_torch_state_dict(cho, cho.init(jax.random.key(0)))
    mean = rj.Bidirectional(rj.LSTM(I, H), merge="sum")
    with pytest.raises(ValueError, match="merge='concat'"):
        to_torch(mean, mean.init(jax.random.key(0)))
    with pytest.raises(TypeError, match="torch.nn.RNN, LSTM or GRU"):
        from_torch(torch.nn.Linear(2, 3))


# ----------------------------------------------------------------------------------------
# PyTorch's (h_n, c_n) layout, and short reprs

from rnnjax.interop import state_from_torch, state_to_torch  # noqa: E402


@pytest.mark.parametrize(
    "kind,bidirectional,proj",
    [("lstm", False, 0), ("lstm", True, 0), ("gru", False, 0), ("gru", True, 0), ("lstm", True, 2)],
)
def test_states_to_and_from_pytorch_layout(kind, bidirectional, proj):
    torch.manual_seed(1)
    L, D, B, T_ = 2, 2 if bidirectional else 1, 3, 4
    if kind == "lstm":
        module = torch.nn.LSTM(I, H, num_layers=L, bidirectional=bidirectional, proj_size=proj)
    else:
        module = torch.nn.GRU(I, H, num_layers=L, bidirectional=bidirectional)
    x = torch.randn(T_, B, I)
    h0 = torch.randn(L * D, B, proj or H)
    c0 = torch.randn(L * D, B, H)
    with torch.no_grad():
        if kind == "lstm":
            out, (h_n, c_n) = module(x, (h0, c0))
        else:
            out, h_n = module(x, h0)
    layer, params = from_torch(module)
    state0 = state_from_torch(layer, h0, c0 if kind == "lstm" else None)
    state, ys = jax.jit(lambda p, xs, s: layer.apply_batch(p, xs, state=s, time_major=True))(
        params, jnp.asarray(x.numpy()), state0
    )
    np.testing.assert_allclose(np.asarray(ys), out.numpy(), atol=1e-5)
    got = state_to_torch(layer, state)
    if kind == "lstm":
        np.testing.assert_allclose(np.asarray(got[0]), h_n.numpy(), atol=1e-5)
        np.testing.assert_allclose(np.asarray(got[1]), c_n.numpy(), atol=1e-5)
        back = state_to_torch(layer, state0)
        np.testing.assert_array_equal(np.asarray(back[0]), h0.numpy())
        np.testing.assert_array_equal(np.asarray(back[1]), c0.numpy())
    else:
        np.testing.assert_allclose(np.asarray(got), h_n.numpy(), atol=1e-5)
        np.testing.assert_array_equal(np.asarray(state_to_torch(layer, state0)), h0.numpy())
    # the slots really are in PyTorch's order: layer 1's backward direction is entry 3
    if bidirectional and L == 2:
        first = state0[1].backward.h
        np.testing.assert_array_equal(np.asarray(first), h0[3].numpy())


def test_state_layout_unbatched_and_errors():
    layer, _ = from_torch(torch.nn.GRU(I, H, num_layers=2))
    s = state_from_torch(layer, np.ones((2, H), np.float32))
    assert s[0].h.shape == (H,)
    with pytest.raises(ValueError, match=r"layers \* directions = 2"):
        state_from_torch(layer, np.ones((4, 3, H), np.float32))
    with pytest.raises(ValueError, match="c_n is only for an LSTM"):
        state_from_torch(layer, np.ones((2, 3, H), np.float32), np.ones((2, 3, H), np.float32))
    with pytest.raises(ValueError, match=r"h_n\[0\] must have shape \(3, 5\)"):
        state_from_torch(layer, np.ones((2, 3, H + 1), np.float32))
    lstm, _ = from_torch(torch.nn.LSTM(I, H))
    with pytest.raises(ValueError, match="c_n is required for an LSTM"):
        state_from_torch(lstm, np.ones((1, 3, H), np.float32))


def test_reprs_are_short_and_keep_every_non_default_field():
    layer, _ = from_torch(torch.nn.LSTM(64, 128, num_layers=2, bidirectional=True))
    assert repr(layer) == "Stacked(Bidirectional(LSTM(64->128)), Bidirectional(LSTM(256->128)))"
    assert len(repr(layer)) < 100
    same = rj.Stacked([rj.Bidirectional(rj.LSTM(8, 8)), rj.Bidirectional(rj.LSTM(16, 8))])
    assert repr(same) == "Stacked(Bidirectional(LSTM(8->8)), Bidirectional(LSTM(16->8)))"
    assert (
        repr(rj.Stacked([rj.GRU(4, 4)] * 3, dropout=0.2)) == "Stacked(3 x GRU(4->4), dropout=0.2)"
    )
    assert repr(rj.LSTM(3, 4)) == "LSTM(3->4)"
    assert repr(rj.LSTM(3, 4, proj_size=2)) == "LSTM(3->4, proj_size=2)"
    assert repr(rj.Recurrent(rj.GRU(3, 4), reverse=True)) == "Recurrent(GRU(3->4), reverse=True)"
    assert (
        repr(rj.Bidirectional(rj.GRU(3, 4), merge="sum")) == "Bidirectional(GRU(3->4), merge='sum')"
    )
    # different hyperparameters never print the same
    variants = [
        rj.LSTM(3, 4),
        rj.LSTM(3, 4, forget_bias=0.0),
        rj.LSTM(3, 4, chrono_t_max=10.0),
        rj.LSTM(3, 4, param_dtype=jnp.bfloat16),
        rj.LSTM(3, 4, recurrent_init="glorot_uniform"),
    ]
    assert len({repr(v) for v in variants}) == len(variants)
    assert "SequenceModel(layer=Recurrent(LSTM(4->8))" in repr(rj.SequenceModel(rj.LSTM(4, 8), 5))
