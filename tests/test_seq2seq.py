"""Seq2Seq: teacher forcing against a step-by-step loop, scheduled sampling at 1 and 0,
free running against a greedy loop, padding invariance, bridges, schedules, errors."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from rnnjax import schedules, seq2seq
from rnnjax.attention import AdditiveAttention
from rnnjax.seq2seq import Seq2Seq, make_train_step

SV, TV, E, H = 7, 6, 3, 4
S, T = 5, 4

CONFIGS = {
    "gru_additive_bi": dict(cell="gru", attention="additive", bidirectional=True),
    "lstm_plain": dict(cell="lstm", attention=None),
    "gru_general_stacked": dict(cell="gru", attention="general", num_layers=2),
    "lstm_dot_luong": dict(cell="lstm", attention="dot", wiring="luong"),
}


@pytest.fixture(scope="module", params=list(CONFIGS))
def setup(request):
    model = seq2seq.build(
        src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, **CONFIGS[request.param]
    )
    params = jax.jit(model.init)(jax.random.key(0))
    # larger output weights: peaked distributions, so argmax feeding differs from truth
    params["out"]["w"] = 3.0 * params["out"]["w"]
    ks = jax.random.split(jax.random.key(1), 2)
    src = jax.random.randint(ks[0], (2, S), 3, SV)
    tgt = jax.random.randint(ks[1], (2, T), 3, TV)
    src_len = jnp.array([3, 5])
    tgt_len = jnp.array([2, 4])
    src = jnp.where(jnp.arange(S)[None, :] < src_len[:, None], src, 0)
    return model, params, (src, src_len, tgt, tgt_len), _jitted(model)


def _jitted(model):
    """Jitted entry points, compiled once per model and shared by the tests."""
    return dict(
        tf=jax.jit(lambda p, s, sl, t, tl: seq2seq.decode_train_batch(model, p, s, sl, t, tl)),
        fr=jax.jit(
            lambda p, s, sl, t, tl: seq2seq.decode_train_batch(
                model, p, s, sl, t, tl, teacher_prob=0.0
            )
        ),
        mixed=jax.jit(
            lambda p, s, sl, t, tl, prob, key: seq2seq.decode_train_batch(
                model, p, s, sl, t, tl, teacher_prob=prob, key=key
            )[0]
        ),
        loss=jax.jit(lambda p, s, sl, t, tl: seq2seq.loss_batch(model, p, s, sl, t, tl)),
        loss_grad=jax.jit(
            jax.value_and_grad(lambda p, s, sl, t, tl: seq2seq.loss_batch(model, p, s, sl, t, tl))
        ),
        encode=jax.jit(model.encode),
        step=jax.jit(model.step),
    )


def _loop(model, fns, params, src, src_len, tgt, feed_truth):
    """Plain Python loop over model.step: feeds the ground truth or the own argmax."""
    memory, state = fns["encode"](params, src, src_len)
    tok = model.bos_id
    logits, weights = [], []
    for t in range(tgt.shape[0]):
        state, lg, w = fns["step"](params, state, jnp.asarray(tok), memory)
        logits.append(np.asarray(lg))
        weights.append(None if w is None else np.asarray(w))
        tok = int(tgt[t]) if feed_truth else int(np.argmax(lg))
    return np.stack(logits), weights


def test_teacher_forcing_equals_step_loop_feeding_truth(setup):
    model, params, (src, src_len, tgt, tgt_len), fns = setup
    logits, weights = fns["tf"](params, src, src_len, tgt, tgt_len)
    for b in range(2):
        ref, ref_w = _loop(model, fns, params, src[b], src_len[b], tgt[b], feed_truth=True)
        np.testing.assert_allclose(np.asarray(logits[b]), ref, rtol=1e-5, atol=1e-5)
        if model.attention is not None:
            np.testing.assert_allclose(
                np.asarray(weights[b]), np.stack(ref_w), rtol=1e-5, atol=1e-6
            )
    # the loss is the masked mean of the loop's cross-entropies (float64 reference)
    ce, n = 0.0, 0
    for b in range(2):
        ref, _ = _loop(model, fns, params, src[b], src_len[b], tgt[b], feed_truth=True)
        ref = ref.astype(np.float64)
        for t in range(int(tgt_len[b])):
            z = ref[t] - ref[t].max()
            ce += -(z[int(tgt[b, t])] - np.log(np.exp(z).sum()))
            n += 1
    loss = fns["loss"](params, src, src_len, tgt, tgt_len)
    np.testing.assert_allclose(float(loss), ce / n, rtol=1e-5)


def test_free_running_equals_greedy_loop(setup):
    model, params, (src, src_len, tgt, tgt_len), fns = setup
    logits, _ = fns["fr"](params, src, src_len, tgt, tgt_len)
    for b in range(2):
        ref, _ = _loop(model, fns, params, src[b], src_len[b], tgt[b], feed_truth=False)
        np.testing.assert_allclose(np.asarray(logits[b]), ref, rtol=1e-5, atol=1e-5)


def test_scheduled_sampling_at_one_is_teacher_forcing_and_at_zero_free_running(setup):
    model, params, (src, src_len, tgt, tgt_len), fns = setup
    # a traced probability takes the random path (one Bernoulli draw per step)
    run = lambda p, key: fns["mixed"](params, src, src_len, tgt, tgt_len, p, key)
    tf = fns["tf"](params, src, src_len, tgt, tgt_len)[0]
    fr = fns["fr"](params, src, src_len, tgt, tgt_len)[0]
    assert not np.allclose(np.asarray(tf), np.asarray(fr))  # the test can tell them apart
    for seed in range(3):
        k = jax.random.key(seed)
        np.testing.assert_allclose(np.asarray(run(1.0, k)), np.asarray(tf), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(np.asarray(run(0.0, k)), np.asarray(fr), rtol=1e-6, atol=1e-6)


def test_scheduled_sampling_mixes_truth_and_own_predictions():
    model = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H)
    params = jax.jit(model.init)(jax.random.key(0))
    n, TT = 64, 6
    src = jax.random.randint(jax.random.key(1), (n, S), 3, SV)
    tgt = jax.random.randint(jax.random.key(2), (n, TT), 3, TV)
    src_len = jnp.full((n,), S)

    @jax.jit
    def fed(p, key):
        def one(s, sl, t, k):
            memory, state = model.encode(params, s, sl)
            return seq2seq.decode(model, params, memory, state, t, teacher_prob=p, key=k)

        logits, _, toks = jax.vmap(one)(src, src_len, tgt, jax.random.split(key, n))
        return logits, toks

    logits, toks = fed(0.3, jax.random.key(3))
    gt_prev = np.concatenate([np.full((n, 1), model.bos_id), np.asarray(tgt[:, :-1])], 1)
    own_prev = np.concatenate(
        [np.full((n, 1), model.bos_id), np.asarray(jnp.argmax(logits, -1))[:, :-1]], 1
    )
    toks = np.asarray(toks)
    is_gt, is_own = toks == gt_prev, toks == own_prev
    assert (is_gt | is_own).all()  # every fed token is the truth or the own prediction
    frac = is_gt[:, 1:][gt_prev[:, 1:] != own_prev[:, 1:]].mean()
    assert 0.15 < frac < 0.45  # about teacher_prob = 0.3 of the distinguishable draws


def test_padding_never_changes_loss_or_gradient(setup):
    model, params, (src, src_len, tgt, tgt_len), fns = setup
    pad_src = jnp.where(jnp.arange(S)[None, :] < src_len[:, None], src, 5)
    pad_tgt = jnp.where(jnp.arange(T)[None, :] < tgt_len[:, None], tgt, 4)
    l1, g1 = fns["loss_grad"](params, src, src_len, tgt, tgt_len)
    l2, g2 = fns["loss_grad"](params, pad_src, src_len, pad_tgt, tgt_len)
    assert float(l1) == float(l2)
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_attention_weights_in_decoder_sum_to_one_and_zero_on_padding(setup):
    model, params, (src, src_len, tgt, tgt_len), fns = setup
    if model.attention is None:
        assert fns["tf"](params, src, src_len, tgt, tgt_len)[1] is None
        return
    _, w = fns["tf"](params, src, src_len, tgt, tgt_len)
    w = np.asarray(w)
    assert w.shape == (2, T, S)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    for b in range(2):
        assert (w[b, :, int(src_len[b]) :] == 0).all()


def test_copy_bridge_and_fixed_context_come_from_the_encoder_final_state():
    model = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, cell="lstm")
    assert model.bridge == "copy" and model.context_size == H
    params = jax.jit(model.init)(jax.random.key(0))
    src = jnp.array([3, 4, 5, 6, 0])
    memory, state = jax.jit(model.encode)(params, src, jnp.asarray(4))
    ref_state, ref_ys = jax.jit(rj.unroll, static_argnums=0)(
        model.encoder.cell, params["encoder"], params["src_embed"][src], jnp.asarray(4)
    )
    np.testing.assert_allclose(np.asarray(state.h), np.asarray(ref_state.h), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(state.c), np.asarray(ref_state.c), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(memory.context), np.asarray(ref_state.h), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(memory.values), np.asarray(ref_ys), rtol=1e-6)


def test_luong_step_matches_its_equations_in_float64():
    model = seq2seq.build(
        src_vocab=SV,
        tgt_vocab=TV,
        embed_size=E,
        hidden_size=H,
        cell="gru",
        attention="general",
        wiring="luong",
    )
    assert model.decoder.input_size == E + H
    params = jax.jit(model.init)(jax.random.key(0))
    src = jnp.array([3, 4, 5, 6, 0])
    memory, state = jax.jit(model.encode)(params, src, jnp.asarray(4))
    assert (np.asarray(state.attentional) == 0).all()
    prev = state._replace(attentional=jnp.linspace(-0.5, 0.5, H))
    new, logits, w = jax.jit(model.step)(params, prev, jnp.asarray(4), memory)
    # reference: the cell step (tested elsewhere), then Luong's equations in numpy float64
    _, h = model.decoder.step(
        params["decoder"], prev.cell, jnp.concatenate([params["tgt_embed"][4], prev.attentional])
    )
    h = np.asarray(h, np.float64)
    keys = np.asarray(memory.values, np.float64)[:4]
    e = keys @ np.asarray(params["attention"]["w"], np.float64).T @ h
    a = np.exp(e - e.max()) / np.exp(e - e.max()).sum()
    ctx = a @ keys
    att = np.tanh(np.concatenate([ctx, h]) @ np.asarray(params["combine"]["w"], np.float64))
    ref = att @ np.asarray(params["out"]["w"], np.float64) + np.asarray(params["out"]["b"])
    np.testing.assert_allclose(np.asarray(w)[:4], a, rtol=1e-5, atol=1e-6)
    assert (np.asarray(w)[4:] == 0).all()
    np.testing.assert_allclose(np.asarray(new.attentional), att, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(logits), ref, rtol=1e-5, atol=1e-5)


def test_linear_bridge_for_a_bidirectional_encoder():
    model = seq2seq.build(
        src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, bidirectional=True, cell="lstm"
    )
    assert model.bridge == "linear" and model.context_size == 2 * H
    params = jax.jit(model.init)(jax.random.key(0))
    src = jnp.array([3, 4, 5, 6, 0])
    memory, state = jax.jit(model.encode)(params, src, jnp.asarray(4))
    enc_state, _ = jax.jit(model.encoder.apply)(
        params["encoder"], params["src_embed"][src], jnp.asarray(4)
    )
    summary = np.concatenate(
        [
            np.asarray(x)
            for x in (
                enc_state.forward.h,
                enc_state.forward.c,
                enc_state.backward.h,
                enc_state.backward.c,
            )
        ]
    )
    for i, leaf in enumerate((state.h, state.c)):
        ref = summary @ np.asarray(params["bridge"]["w"][i]) + np.asarray(params["bridge"]["b"][i])
        np.testing.assert_allclose(np.asarray(leaf), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_train_step_learns_a_tiny_copy_task():
    model = seq2seq.build(
        src_vocab=SV, tgt_vocab=SV, embed_size=4, hidden_size=16, attention="additive"
    )
    params = jax.jit(model.init)(jax.random.key(0))
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(3e-2))
    step = make_train_step(model, opt, schedules.sampling_schedule("inverse_sigmoid", k=5.0))
    src = jax.random.randint(jax.random.key(1), (16, 3), 3, SV)
    tgt = jnp.concatenate([src, jnp.full((16, 1), 2)], 1)
    batch = (src, jnp.full((16,), 3), tgt, jnp.full((16,), 4))
    opt_state = opt.init(params)
    losses, epss = [], []
    for i in range(40):
        params, opt_state, loss, eps = step(params, opt_state, i, batch, jax.random.key(i))
        losses.append(float(loss))
        epss.append(float(eps))
    assert losses[-1] < 0.5 * losses[0]
    np.testing.assert_allclose(epss, [5 / (5 + math.exp(i / 5)) for i in range(40)], rtol=1e-5)


def test_schedules_match_bengio_formulas():
    inv = schedules.sampling_schedule("inverse_sigmoid", k=20.0)
    lin = schedules.sampling_schedule("linear", steps=100, eps_min=0.1)
    exp = schedules.sampling_schedule("exponential", k=0.99)
    const = schedules.sampling_schedule("constant", value=0.25)
    for i in [0, 1, 7, 50, 99, 100, 500, 3000]:
        np.testing.assert_allclose(
            float(inv(i)), 20.0 / (20.0 + math.exp(i / 20.0)), rtol=1e-5, atol=1e-30
        )
        np.testing.assert_allclose(float(lin(i)), max(0.1, 1.0 - (0.9 / 100) * i), rtol=1e-5)
        np.testing.assert_allclose(float(exp(i)), 0.99**i, rtol=1e-4)
        assert float(const(i)) == 0.25
    # traced step inside jit
    np.testing.assert_allclose(
        float(jax.jit(inv)(jnp.asarray(40))), 20 / (20 + math.exp(2)), rtol=1e-6
    )


def test_schedule_errors():
    with pytest.raises(ValueError, match="k must be a number >= 1"):
        schedules.inverse_sigmoid_decay(0.5)
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\)"):
        schedules.sampling_schedule("exponential", k=1.5)
    with pytest.raises(TypeError, match="missing"):
        schedules.sampling_schedule("linear")
    with pytest.raises(ValueError, match="kind must be"):
        schedules.sampling_schedule("cosine", k=1)


def test_bad_input_errors():
    model = seq2seq.build(
        src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, attention="additive"
    )
    params = model.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"decoder.input_size must be embed_size \+ context"):
        Seq2Seq(rj.GRU(E, H), rj.GRU(E, H), SV, TV, E, AdditiveAttention(H, H))
    with pytest.raises(ValueError, match="attention.key_size"):
        Seq2Seq(rj.GRU(E, H), rj.GRU(E + 5, H), SV, TV, E, AdditiveAttention(H, 5))
    with pytest.raises(ValueError, match="bridge='copy'"):
        Seq2Seq(rj.Bidirectional(rj.GRU(E, H)), rj.GRU(E + 2 * H, H), SV, TV, E, bridge="copy")
    with pytest.raises(ValueError, match="wiring='luong' needs an attention module"):
        seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, wiring="luong")
    with pytest.raises(ValueError, match="wiring must be"):
        seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H, wiring="x")
    with pytest.raises(ValueError, match="eos_id must be < tgt_vocab"):
        seq2seq.build(src_vocab=SV, tgt_vocab=2, embed_size=E, hidden_size=H)
    with pytest.raises(TypeError, match="src must be an integer token array"):
        model.encode(params, jnp.ones(3))
    with pytest.raises(ValueError, match=r"src must have shape \(S,\)"):
        model.encode(params, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="key is required"):
        seq2seq.decode_train(
            model, params, jnp.array([3, 4]), 2, jnp.array([3, 2]), 2, teacher_prob=0.5
        )
    with pytest.raises(ValueError, match=r"teacher_prob must be in \[0, 1\]"):
        seq2seq.decode_train(
            model, params, jnp.array([3, 4]), 2, jnp.array([3, 2]), 2, teacher_prob=1.5
        )
    with pytest.raises(ValueError, match="tgt_len must (be integers of|have the batch) shape"):
        seq2seq.loss_batch(
            model,
            params,
            jnp.ones((2, 3), jnp.int32),
            jnp.array([3, 3]),
            jnp.ones((2, 3), jnp.int32),
            jnp.array([3]),
        )


@pytest.mark.slow  # float64 recompiles the model: about 15 s
def test_gradient_matches_float64_finite_differences():
    model = seq2seq.build(
        src_vocab=SV, tgt_vocab=TV, embed_size=2, hidden_size=3, attention="additive"
    )
    src = jnp.array([[3, 4, 5], [6, 3, 0]])
    tgt = jnp.array([[5, 4, 2], [3, 2, 0]])
    src_len, tgt_len = jnp.array([3, 2]), jnp.array([3, 2])
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda a: jnp.asarray(a, jnp.float64), model.init(jax.random.key(0))
        )
        loss = jax.jit(lambda p: seq2seq.loss_batch(model, p, src, src_len, tgt, tgt_len))
        grads = jax.jit(
            jax.grad(lambda p: seq2seq.loss_batch(model, p, src, src_len, tgt, tgt_len))
        )(params)
        leaves, treedef = jax.tree_util.tree_flatten(params)
        direction = [
            jax.random.normal(k, l.shape, jnp.float64)
            for k, l in zip(jax.random.split(jax.random.key(1), len(leaves)), leaves)
        ]
        shift = lambda h: jax.tree_util.tree_unflatten(
            treedef, [l + h * d for l, d in zip(leaves, direction)]
        )
        h = 1e-6
        fd = (float(loss(shift(h))) - float(loss(shift(-h)))) / (2 * h)
        ad = sum(float(jnp.vdot(g, d)) for g, d in zip(jax.tree_util.tree_leaves(grads), direction))
    np.testing.assert_allclose(ad, fd, rtol=1e-6)


def test_sampled_feeding_follows_the_softmax():
    model = seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H)
    params = jax.jit(model.init)(jax.random.key(0))
    src = jax.random.randint(jax.random.key(1), (8, S), 3, SV)
    tgt = jax.random.randint(jax.random.key(2), (8, T), 3, TV)
    src_len, tgt_len = jnp.full((8,), S), jnp.full((8,), T)
    run = jax.jit(
        lambda p, key, feed: seq2seq.decode_train_batch(
            model, p, src, src_len, tgt, tgt_len, teacher_prob=0.0, key=key, feed=feed
        )[0],
        static_argnames="feed",
    )
    # a near-deterministic softmax: sampling is the arg-max, so it is free running
    sharp = dict(params, out={"w": 1e4 * params["out"]["w"], "b": params["out"]["b"]})
    np.testing.assert_allclose(
        np.asarray(run(sharp, jax.random.key(3), "sample")),
        np.asarray(run(sharp, jax.random.key(3), "argmax")),
        rtol=1e-6,
    )
    # a flat softmax: samples differ between keys and from the arg-max path
    flat = dict(params, out={"w": 0.05 * params["out"]["w"], "b": params["out"]["b"]})
    a = np.asarray(run(flat, jax.random.key(3), "sample"))
    b = np.asarray(run(flat, jax.random.key(4), "sample"))
    np.testing.assert_array_equal(a, np.asarray(run(flat, jax.random.key(3), "sample")))
    assert not np.allclose(a, b)


def test_deprecated_methods_warn_and_give_the_functions_numbers():
    """The methods that became module functions stay one release: each warns, names its
    replacement and returns what the function returns."""
    with pytest.warns(DeprecationWarning, match=r"use rnnjax\.seq2seq\.build\("):
        model = Seq2Seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H)
    assert model == seq2seq.build(src_vocab=SV, tgt_vocab=TV, embed_size=E, hidden_size=H)
    params = model.init(jax.random.key(0))
    src, tgt = jnp.array([3, 4, 5]), jnp.array([4, 3, 2])
    bsrc, btgt, blen = src[None], tgt[None], jnp.array([3])
    memory, state = model.encode(params, src)
    calls = {
        "decode": (memory, state, tgt),
        "decode_train": (src, 3, tgt, 3),
        "decode_train_batch": (bsrc, blen, btgt, blen),
        "token_losses": (src, 3, tgt, 2),
        "log_prob": (src, 3, tgt, 2),
        "loss_batch": (bsrc, blen, btgt, blen),
    }
    for name, args in calls.items():
        with pytest.warns(
            DeprecationWarning,
            match=rf"Seq2Seq\.{name} is deprecated.*"
            rf"rnnjax\.seq2seq\.{name}\(model, ",
        ):
            old = getattr(model, name)(params, *args)
        new = getattr(seq2seq, name)(model, params, *args)
        for a, b in zip(jax.tree_util.tree_leaves(old), jax.tree_util.tree_leaves(new)):
            np.testing.assert_array_equal(a, b)
