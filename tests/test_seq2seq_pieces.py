"""Seq2Seq as composed pieces: the refactored model gives the numbers of a straightforward
reference written here from the equations (plain Python loops over cell steps, one example
at a time), the pieces are the ones the strings choose, and the common Trainer and fit
train it (teacher forcing and scheduled sampling) with the numbers of make_train_step."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from rnnjax import schedules, seq2seq
from rnnjax.seq2seq import (
    BahdanauDecoder,
    CopyBridge,
    LinearBridge,
    LuongDecoder,
    LuongState,
    ZeroBridge,
    make_train_step,
)

SV, TV, E, H, S, T = 7, 6, 3, 4, 5, 4

CONFIGS = {
    "gru_additive_bi_linear": dict(cell="gru", attention="additive", bidirectional=True),
    "lstm_plain_copy": dict(cell="lstm"),
    "gru_dot_luong": dict(cell="gru", attention="dot", wiring="luong"),
    "rnn_general_zero": dict(cell="rnn", attention="general", bridge="zero"),
}


def _run_cell(cell, p, xs, n, reverse=False):
    """A cell over xs[:n] (backwards when reverse) by a Python loop: (final state, outputs
    (S, H) zero past n)."""
    s = cell.initial_state()
    ys = [jnp.zeros((cell.output_size,))] * xs.shape[0]
    order = range(n - 1, -1, -1) if reverse else range(n)
    for t in order:
        s, ys[t] = cell.step(p, s, xs[t])
    return s, jnp.stack(ys)


def _reference_logits(model, params, src, n, tgt, teacher):
    """Logits (T, V) of one example from the equations, feeding the truth or the argmax."""
    xs = params["src_embed"][src]
    enc = model.encoder
    if isinstance(enc, rj.Bidirectional):
        sf, yf = _run_cell(enc.forward.cell, params["encoder"]["forward"], xs, n)
        sb, yb = _run_cell(enc.backward.cell, params["encoder"]["backward"], xs, n, True)
        tops, outs = [sf, sb], jnp.concatenate([yf, yb], axis=-1)
    else:
        s, outs = _run_cell(enc.cell, params["encoder"], xs, n)
        tops = [s]
    context = jnp.concatenate([t.h for t in tops])
    dec = model.decoder
    if model.bridge == "copy":
        state = tops[0]
    elif model.bridge == "zero":
        state = dec.initial_state()
    else:
        summary = jnp.concatenate([jnp.ravel(a) for a in jax.tree_util.tree_leaves(tops)])
        leaves, treedef = jax.tree_util.tree_flatten(dec.initial_state())
        b = params["bridge"]
        state = jax.tree_util.tree_unflatten(
            treedef, [summary @ w + bb for w, bb in zip(b["w"], b["b"])]
        )
    mask = jnp.arange(S) < n
    att = model.attention

    def attend(q):
        scores = att.score(params["attention"], q, att.precompute(params["attention"], outs))
        scores = jnp.where(mask, scores, -jnp.inf)
        w = jax.nn.softmax(scores)
        return w @ outs

    tok, feed, logits = model.bos_id, jnp.zeros((H,)), []
    for t in range(tgt.shape[0]):
        emb = params["tgt_embed"][tok]
        if model.wiring == "luong":
            state, h = dec.step(params["decoder"], state, jnp.concatenate([emb, feed]))
            c = attend(h)
            feed = jnp.tanh(jnp.concatenate([c, h]) @ params["combine"]["w"])
            lg = feed @ params["out"]["w"] + params["out"]["b"]
        else:
            c = context if att is None else attend(state.h)
            state, h = dec.step(params["decoder"], state, jnp.concatenate([emb, c]))
            lg = jnp.concatenate([h, c]) @ params["out"]["w"] + params["out"]["b"]
        logits.append(lg)
        tok = tgt[t] if teacher else jnp.argmax(lg)
    return jnp.stack(logits)


def _reference_loss(model, params, src, src_len, tgt, tgt_len, teacher=True):
    total, count = 0.0, 0
    src_len, tgt_len = np.asarray(src_len), np.asarray(tgt_len)  # concrete: loop bounds
    for b in range(src.shape[0]):
        lg = _reference_logits(model, params, src[b], int(src_len[b]), tgt[b], teacher)
        n = int(tgt_len[b])
        ce = optax.softmax_cross_entropy_with_integer_labels(lg[:n], tgt[b, :n])
        total, count = total + jnp.sum(ce), count + n
    return total / count


@pytest.fixture(scope="module")
def data():
    ks = jax.random.split(jax.random.key(1), 2)
    src = jax.random.randint(ks[0], (2, S), 3, SV)
    tgt = jax.random.randint(ks[1], (2, T), 3, TV)
    src_len, tgt_len = jnp.array([3, 5]), jnp.array([2, 4])
    src = jnp.where(jnp.arange(S)[None, :] < src_len[:, None], src, 0)
    return src, src_len, tgt, tgt_len


@pytest.mark.parametrize(
    "name",
    [
        pytest.param("gru_additive_bi_linear", marks=pytest.mark.slow),
        pytest.param("lstm_plain_copy", marks=pytest.mark.slow),
        "gru_dot_luong",
        "rnn_general_zero",
    ],
)
def test_loss_gradient_and_free_run_equal_a_reference_from_the_equations(name, data):
    model = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, **CONFIGS[name])
    params = model.init(jax.random.key(0))
    params["out"]["w"] = 3.0 * params["out"]["w"]
    src, src_len, tgt, tgt_len = data
    # the reference runs eagerly, op by op: nothing of it is compiled as one program
    ref_fn = jax.value_and_grad(lambda p: _reference_loss(model, p, src, src_len, tgt, tgt_len))
    ref, ref_grad = ref_fn(params)
    got, got_grad = jax.jit(
        jax.value_and_grad(lambda p: seq2seq.loss_batch(model, p, src, src_len, tgt, tgt_len))
    )(params)
    np.testing.assert_allclose(float(got), float(ref), rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(got_grad), jax.tree_util.tree_leaves(ref_grad)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
    free, _ = seq2seq.decode_train_batch(
        model, params, src, src_len, tgt, tgt_len, teacher_prob=0.0
    )
    for b in range(2):
        want = _reference_logits(model, params, src[b], int(src_len[b]), tgt[b], False)
        np.testing.assert_allclose(np.asarray(free[b]), np.asarray(want), rtol=1e-5, atol=1e-6)


def test_the_strings_choose_the_pieces():
    bi = seq2seq.build(
        src_vocab=SV,
        tgt_vocab=TV,
        embed_size=E,
        hidden_size=H,
        attention="additive",
        bidirectional=True,
    )
    assert isinstance(bi.bridge_piece, LinearBridge) and bi.bridge == "linear"
    assert isinstance(bi.decoder_piece, BahdanauDecoder)
    plain = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H)
    assert isinstance(plain.bridge_piece, CopyBridge)
    assert plain.decoder_piece.attention is None
    zero = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, bridge="zero")
    assert isinstance(zero.bridge_piece, ZeroBridge)
    luong = seq2seq.build(
        src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, attention="dot", wiring="luong"
    )
    assert isinstance(luong.decoder_piece, LuongDecoder)
    memory, state = luong.encode_batch(luong.init(jax.random.key(0)), jnp.ones((3, S), jnp.int32))
    assert isinstance(state, LuongState) and state.attentional.shape == (3, H)
    assert memory.values.shape == (3, S, H) and memory.mask.shape == (3, S)


def test_encoder_runs_natively_batched():
    """The encoder is one apply_batch call (no vmap of apply): its jaxpr holds one scan
    over time for the whole batch, not a batched (vmapped) per-example program."""
    model = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H)
    params = model.init(jax.random.key(0))
    calls = []
    layer = model.encoder
    orig = type(layer).apply

    def spy(self, *a, **k):  # apply (one example) must not be used
        calls.append("apply")
        return orig(self, *a, **k)

    type(layer).apply = spy
    try:
        model.encode_batch(params, jnp.ones((3, S), jnp.int32), jnp.array([5, 2, 3]))
    finally:
        type(layer).apply = orig
    assert calls == []


def _copy_batch(i, n=8):
    src = jax.random.randint(jax.random.key(100 + i), (n, 3), 3, SV)
    tgt = jnp.concatenate([src, jnp.full((n, 1), 2)], 1)
    return {
        "inputs": src,
        "targets": tgt,
        "input_length": jnp.full((n,), 3),
        "target_length": jnp.full((n,), 4),
    }


@pytest.fixture(scope="module")
def trainer():
    model = seq2seq.build(
        src_vocab=SV, tgt_vocab=SV, embed_size=4, hidden_size=16, attention="additive"
    )
    return rj.Trainer(model, learning_rate=3e-2)


SCHED = schedules.sampling_schedule("inverse_sigmoid", k=5.0)


def test_trainer_step_equals_make_train_step_with_scheduled_sampling(trainer):
    state = trainer.init(jax.random.key(0))
    step_fn = make_train_step(trainer.model, trainer.tx, SCHED)
    params, opt_state, key = state.params, state.opt_state, state.key
    for i in range(2):
        b = _copy_batch(i)
        state, m = trainer.train_step(state, dict(b, teacher_prob=SCHED(i)))
        key, sub = jax.random.split(key)
        params, opt_state, loss, _ = step_fn(
            params,
            opt_state,
            i,
            (b["inputs"], b["input_length"], b["targets"], b["target_length"]),
            sub,
        )
        np.testing.assert_allclose(float(m["loss"]), float(loss), rtol=1e-6)
    for a, c in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(c), rtol=1e-5, atol=1e-7)
    ev = trainer.evaluate(state.params, b)
    assert set(ev) >= {"loss", "perplexity", "accuracy", "tokens"} and int(ev["tokens"]) == 32


def test_fit_trains_seq2seq_with_scheduled_sampling(trainer):
    def data(pos):
        return dict(_copy_batch(pos % 4), teacher_prob=SCHED(pos))

    state, history = rj.fit(trainer, trainer.init(jax.random.key(0)), data, 30, progress=False)
    assert int(state.step) == 30
    assert history[-1]["loss"] < 0.5 * history[0]["loss"]
    with pytest.raises(ValueError, match="loss must be the default"):
        rj.Trainer(trainer.model, loss="mse")
    with pytest.raises(ValueError, match="batch must be a dict with 'inputs'"):
        trainer.train_step(state, {"src": data(0)["inputs"]})
