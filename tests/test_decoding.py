"""Decoding: greedy against a Python loop, beam width 1 equals greedy, and beam search
finds the best-scoring sequence where all sequences can be enumerated."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import seq2seq
from rnnjax.decoding import (
    beam_search,
    filter_logits,
    generate,
    greedy_decode,
    length_penalty,
    sample,
)

SV, E, H, S = 7, 3, 5, 4


@pytest.fixture(scope="module")
def setup():
    model = seq2seq.build(
        src_vocab=SV,
        tgt_vocab=6,
        embed_size=E,
        hidden_size=H,
        attention="additive",
        bidirectional=True,
    )
    params = jax.jit(model.init)(jax.random.key(0))
    params["out"]["w"] = 4.0 * params["out"]["w"]  # peaked: EOS gets chosen sometimes
    src = jax.random.randint(jax.random.key(1), (6, S), 3, SV)
    src_len = jnp.array([1, 2, 3, 4, 4, 2])
    return model, params, src, src_len


_GREEDY_CACHE = {}


def _greedy_loop(model, params, src, src_len, max_len):
    _cache = _GREEDY_CACHE
    if model not in _cache:
        _cache[model] = jax.jit(model.encode), jax.jit(model.step)
    encode, step = _cache[model]
    memory, state = encode(params, src, src_len)
    tok, toks, logp = model.bos_id, [], 0.0
    for _ in range(max_len):
        state, logits, _ = step(params, state, jnp.asarray(tok), memory)
        lp = np.asarray(jax.nn.log_softmax(logits.astype(jnp.float32)), np.float64)
        tok = int(np.argmax(lp))
        toks.append(tok)
        logp += lp[tok]
        if tok == model.eos_id:
            break
    return toks, logp


def test_greedy_equals_python_loop(setup):
    model, params, src, src_len = setup
    L = 6
    out = greedy_decode(model, params, src, src_len, max_len=L)
    for b in range(src.shape[0]):
        toks, logp = _greedy_loop(model, params, src[b], src_len[b], L)
        n = len(toks)
        assert int(out.lengths[b]) == n
        assert np.asarray(out.tokens[b, :n]).tolist() == toks
        assert (np.asarray(out.tokens[b, n:]) == model.pad_id).all()
        np.testing.assert_allclose(float(out.log_probs[b]), logp, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 0.7])
def test_beam_width_one_equals_greedy(setup, alpha):
    model, params, src, src_len = setup
    g = greedy_decode(model, params, src, src_len, max_len=6)
    b = beam_search(model, params, src, src_len, beam_width=1, max_len=6, alpha=alpha)
    np.testing.assert_array_equal(np.asarray(b.tokens[:, 0]), np.asarray(g.tokens))
    np.testing.assert_array_equal(np.asarray(b.lengths[:, 0]), np.asarray(g.lengths))
    np.testing.assert_allclose(np.asarray(b.log_probs[:, 0]), np.asarray(g.log_probs), rtol=1e-5)
    lp = np.asarray(length_penalty(g.lengths, alpha))
    np.testing.assert_allclose(np.asarray(b.scores[:, 0]), np.asarray(g.log_probs) / lp, rtol=1e-5)


def test_beam_width_one_equals_greedy_with_luong_wiring():
    model = seq2seq.build(
        src_vocab=SV,
        tgt_vocab=6,
        embed_size=E,
        hidden_size=H,
        cell="lstm",
        attention="dot",
        wiring="luong",
    )
    params = jax.jit(model.init)(jax.random.key(3))
    params["out"]["w"] = 4.0 * params["out"]["w"]
    src = jax.random.randint(jax.random.key(4), (4, S), 3, SV)
    src_len = jnp.array([1, 2, 3, 4])
    g = greedy_decode(model, params, src, src_len, max_len=5)
    b = beam_search(model, params, src, src_len, beam_width=1, max_len=5)
    np.testing.assert_array_equal(np.asarray(b.tokens[:, 0]), np.asarray(g.tokens))
    np.testing.assert_allclose(np.asarray(b.log_probs[:, 0]), np.asarray(g.log_probs), rtol=1e-5)
    toks, _ = _greedy_loop(model, params, src[2], src_len[2], 5)
    assert np.asarray(g.tokens[2, : len(toks)]).tolist() == toks


def _all_sequences(V, eos, L):
    """Every hypothesis of at most L tokens: ended by eos, or cut at L without one."""
    seqs = []
    others = [v for v in range(V) if v != eos]
    for n in range(1, L + 1):
        for prefix in itertools.product(others, repeat=n - 1):
            seqs.append(list(prefix) + [eos])
    for full in itertools.product(others, repeat=L):
        seqs.append(list(full))
    return seqs


@pytest.fixture(scope="module")
def small():
    model = seq2seq.build(
        src_vocab=5,
        tgt_vocab=4,
        embed_size=2,
        hidden_size=3,
        attention="general",
        pad_id=0,
        bos_id=1,
        eos_id=2,
    )
    params = model.init(jax.random.key(7))
    params["out"]["w"] = 2.0 * params["out"]["w"]
    src = jax.random.randint(jax.random.key(8), (5, 3), 3, 5)
    src_len = jnp.array([3, 2, 1, 3, 2])
    return model, params, src, src_len


@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_search_finds_the_best_sequence_by_enumeration(small, alpha):
    model, params, src, src_len = small
    L, V = 3, model.tgt_vocab
    seqs = _all_sequences(V, model.eos_id, L)  # 1 + 3 + 9 + 27 = 40 hypotheses
    tgt = np.zeros((len(seqs), L), np.int32)
    for i, s in enumerate(seqs):
        tgt[i, : len(s)] = s
    lens = np.array([len(s) for s in seqs], np.int32)
    # independent scores: teacher-forced log-probabilities of every hypothesis
    score_all = jax.jit(
        jax.vmap(
            lambda s, sl: jax.vmap(lambda t, n: seq2seq.log_prob(model, params, s, sl, t, n))(
                tgt, lens
            )
        )
    )
    logps = np.asarray(score_all(src, src_len), np.float64)
    norm = logps / ((5.0 + lens) / 6.0) ** alpha
    K = 48  # more than the 40 candidates of the last step: exhaustive
    beam = beam_search(model, params, src, src_len, beam_width=K, max_len=L, alpha=alpha)
    greedy = greedy_decode(model, params, src, src_len, max_len=L)
    beaten = 0
    for b in range(src.shape[0]):
        best = int(np.argmax(norm[b]))
        got = np.asarray(beam.tokens[b, 0])
        assert got[: len(seqs[best])].tolist() == seqs[best]
        assert int(beam.lengths[b, 0]) == len(seqs[best])
        np.testing.assert_allclose(float(beam.scores[b, 0]), norm[b, best], rtol=1e-4)
        # the whole ranked list: every hypothesis once, in order of score
        finite = np.isfinite(np.asarray(beam.scores[b]))
        assert finite.sum() == len(seqs)
        np.testing.assert_allclose(
            np.asarray(beam.scores[b])[finite], np.sort(norm[b])[::-1], rtol=1e-4, atol=1e-6
        )
        g_norm = float(greedy.log_probs[b]) / ((5.0 + int(greedy.lengths[b])) / 6.0) ** alpha
        assert float(beam.scores[b, 0]) >= g_norm - 1e-5
        beaten += float(beam.scores[b, 0]) > g_norm + 1e-5
    # the brute force could tell beam search from greedy on at least one source
    assert alpha == 0.6 or beaten >= 1


def test_small_beam_is_not_worse_than_greedy(setup):
    model, params, src, src_len = setup
    g = greedy_decode(model, params, src, src_len, max_len=6)
    b = beam_search(model, params, src, src_len, beam_width=3, max_len=6)
    assert (np.asarray(b.log_probs[:, 0]) >= np.asarray(g.log_probs) - 1e-5).all()
    # beams are sorted best first and padded after the end token
    s = np.asarray(b.scores)
    assert (np.diff(s, axis=1) <= 1e-6).all()
    toks, lens = np.asarray(b.tokens), np.asarray(b.lengths)
    for i in range(toks.shape[0]):
        for k in range(toks.shape[1]):
            n = lens[i, k]
            assert (toks[i, k, n:] == model.pad_id).all()
            assert n == 6 or toks[i, k, n - 1] == model.eos_id
            assert (toks[i, k, : n - 1] != model.eos_id).all()


def test_bad_input_errors(setup):
    model, params, src, src_len = setup
    with pytest.raises(ValueError, match="beam_width must be an int >= 1"):
        beam_search(model, params, src, src_len, beam_width=0)
    with pytest.raises(ValueError, match="max_len must be an int >= 1"):
        greedy_decode(model, params, src, src_len, max_len=0)
    with pytest.raises(ValueError, match=r"src must be integer tokens of shape \(B, S\)"):
        greedy_decode(model, params, src[0], src_len[0])
    with pytest.raises(ValueError, match=r"src_len must be integers of shape \(6,\)"):
        greedy_decode(model, params, src, src_len[:2])
    with pytest.raises(ValueError, match="alpha must be (a number )?>= 0"):
        beam_search(model, params, src, src_len, alpha=-1.0)
    with pytest.raises(TypeError, match="model must expose decode_start and decode_step"):
        greedy_decode(object(), params, src, src_len)


# ----------------------------------------------------------------------------------------
# generation for a language model (SequenceModel) and sampling for every model

LV = 6


@pytest.fixture(scope="module")
def lm():
    model = rj.SequenceModel(
        rj.Stacked([rj.LSTM(4, 8), rj.GRU(8, 8)]), output_size=LV, vocab_size=LV
    )
    params = jax.jit(model.init)(jax.random.key(3))
    params["head"]["w"] = 3.0 * params["head"]["w"]  # peaked enough that tokens vary
    prompt = jnp.array([[1, 2, 3, 4], [5, 4, 0, 0], [2, 0, 0, 0]])
    prompt_len = jnp.array([4, 2, 1])
    return model, params, prompt, prompt_len


_apply_cache = {}


def _lm_logprobs(model, params, tokens):
    """log_softmax of the model run from scratch over ``tokens`` (T,), float64 on host."""
    if model not in _apply_cache:
        _apply_cache[model] = jax.jit(model.apply)
    _, logits = _apply_cache[model](params, jnp.asarray(tokens, jnp.int32))
    return np.asarray(jax.nn.log_softmax(logits), np.float64)


def _lm_greedy_loop(model, params, prompt, n, max_len, eos_id=None):
    """Greedy decoding by hand: rerun the model over the whole prefix at every step."""
    seq, toks, lps = list(np.asarray(prompt[:n])), [], []
    for _ in range(max_len):
        lp = _lm_logprobs(model, params, seq)[-1]
        tok = int(np.argmax(lp))
        toks.append(tok)
        lps.append(lp[tok])
        seq.append(tok)
        if tok == eos_id:
            break
    return toks, lps


def test_lm_greedy_equals_a_hand_written_loop(lm):
    model, params, prompt, prompt_len = lm
    L = 5
    out = generate(model, params, prompt, prompt_len, max_len=L)
    for b in range(prompt.shape[0]):
        toks, lps = _lm_greedy_loop(model, params, prompt[b], int(prompt_len[b]), L)
        assert np.asarray(out.tokens[b]).tolist() == toks
        np.testing.assert_allclose(np.asarray(out.token_log_probs[b]), lps, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(out.log_probs[b]), sum(lps), rtol=1e-5)
    assert out.lengths.tolist() == [L] * 3  # no end token: every sequence runs to max_len


def test_end_token_stops_and_pads(lm):
    model, params, prompt, prompt_len = lm
    L = 6
    free = generate(model, params, prompt, prompt_len, max_len=L)
    eos = int(free.tokens[0, 2])  # a token that row 0 emits third
    out = generate(model, params, prompt, prompt_len, max_len=L, eos_id=eos, pad_id=0)
    for b in range(prompt.shape[0]):
        toks, lps = _lm_greedy_loop(model, params, prompt[b], int(prompt_len[b]), L, eos)
        n = len(toks)
        assert int(out.lengths[b]) == n
        assert np.asarray(out.tokens[b, :n]).tolist() == toks
        assert (np.asarray(out.tokens[b, n:]) == 0).all()
        assert (np.asarray(out.token_log_probs[b, n:]) == 0).all()
        np.testing.assert_allclose(float(out.log_probs[b]), sum(lps), rtol=1e-5)
    assert int(out.lengths[0]) <= 3


def test_top_k_one_and_temperature_zero_are_greedy(lm):
    model, params, prompt, prompt_len = lm
    greedy = generate(model, params, prompt, prompt_len, max_len=4)
    k = jax.random.key(7)
    for kw in ({"top_k": 1}, {"temperature": 0.0}, {"top_k": 1, "top_p": 0.5}):
        out = sample(model, params, prompt, prompt_len, key=k, max_len=4, **kw)
        assert out.tokens.tolist() == greedy.tokens.tolist(), kw
        np.testing.assert_allclose(out.log_probs, greedy.log_probs, rtol=1e-6)


def test_top_p_one_and_top_k_vocab_are_plain_sampling(lm):
    model, params, prompt, prompt_len = lm
    k = jax.random.key(11)
    plain = sample(model, params, prompt, prompt_len, key=k, max_len=6)
    for kw in ({"top_p": 1.0}, {"top_k": LV}, {"temperature": 1.0}):
        out = sample(model, params, prompt, prompt_len, key=k, max_len=6, **kw)
        assert out.tokens.tolist() == plain.tokens.tolist(), kw
    other = sample(model, params, prompt, prompt_len, key=jax.random.key(12), max_len=6)
    assert other.tokens.tolist() != plain.tokens.tolist()  # the key matters


def test_sampled_log_probs_equal_recomputed_ones(lm):
    model, params, prompt, prompt_len = lm
    out = sample(
        model,
        params,
        prompt,
        prompt_len,
        key=jax.random.key(5),
        max_len=5,
        temperature=1.5,
        top_k=4,
    )
    for b in range(prompt.shape[0]):
        n = int(prompt_len[b])
        seq = list(np.asarray(prompt[b, :n])) + np.asarray(out.tokens[b]).tolist()
        lp = _lm_logprobs(model, params, seq)
        want = [lp[n - 1 + t, seq[n + t]] for t in range(5)]
        np.testing.assert_allclose(np.asarray(out.token_log_probs[b]), want, rtol=1e-5, atol=1e-6)


def _chi2_ok(counts, probs, n):
    """Pearson's chi-square against ``probs``: below the 99.9% quantile of its law
    (a Wilson-Hilferty bound), and no draw where the probability is zero."""
    probs = np.asarray(probs, np.float64)
    assert counts[probs == 0].sum() == 0, (counts, probs)
    live = probs > 0
    exp = n * probs[live]
    chi2 = float(((counts[live] - exp) ** 2 / exp).sum())
    dof = int(live.sum()) - 1
    if dof == 0:
        return True
    z = 3.09  # 99.9%
    q = dof * (1 - 2 / (9 * dof) + z * np.sqrt(2 / (9 * dof))) ** 3
    return chi2 < q


@pytest.mark.parametrize("kw", [{}, {"temperature": 0.7}, {"top_k": 3}, {"top_p": 0.6}])
def test_sampled_tokens_follow_the_filtered_softmax(lm, kw):
    model, params, _, _ = lm
    n = 4000
    prompt = jnp.tile(jnp.array([[1, 2, 3]]), (n, 1))
    out = sample(model, params, prompt, key=jax.random.key(2), max_len=1, **kw)
    _, first_logits = model.decode_start(params, prompt[:1])
    logits = np.asarray(first_logits[0], np.float64)
    # the expected law, written out independently of filter_logits
    z = logits / kw.get("temperature", 1.0)
    keep = np.ones(LV, bool)
    if "top_k" in kw:
        keep &= z >= np.sort(z)[::-1][kw["top_k"] - 1]
    if "top_p" in kw:
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        order = np.argsort(-p)
        before = np.cumsum(p[order]) - p[order]
        keep_sorted = before < kw["top_p"]
        keep &= np.isin(np.arange(LV), order[keep_sorted])
    probs = np.where(keep, np.exp(z - z.max()), 0.0)
    probs /= probs.sum()
    counts = np.bincount(np.asarray(out.tokens[:, 0]), minlength=LV)
    assert _chi2_ok(counts, probs, n), (counts / n, probs)
    if kw:
        # and the filter changes the law: the plain softmax fails the same test
        plain = np.exp(logits - logits.max())
        plain /= plain.sum()
        assert not _chi2_ok(counts, plain, n)


def test_filter_logits_nucleus_keeps_the_smallest_set():
    logits = jnp.log(jnp.array([[0.1, 0.5, 0.15, 0.25]]))
    kept = np.isfinite(np.asarray(filter_logits(logits, top_p=0.7)))[0]
    assert kept.tolist() == [False, True, False, True]  # 0.5 + 0.25 >= 0.7
    kept = np.isfinite(np.asarray(filter_logits(logits, top_p=0.3)))[0]
    assert kept.tolist() == [False, True, False, False]  # the top token always stays
    kept = np.isfinite(np.asarray(filter_logits(logits, top_k=2)))[0]
    assert kept.tolist() == [False, True, False, True]


def test_lm_beam_width_one_is_greedy_and_beam_log_probs_are_the_model_s(lm):
    model, params, prompt, prompt_len = lm
    greedy = generate(model, params, prompt, prompt_len, max_len=4)
    beam1 = beam_search(model, params, prompt, prompt_len, beam_width=1, max_len=4)
    assert beam1.tokens[:, 0].tolist() == greedy.tokens.tolist()
    beam = beam_search(model, params, prompt, prompt_len, beam_width=3, max_len=4)
    assert (beam.log_probs[:, 0] >= greedy.log_probs - 1e-5).all()
    for b in range(prompt.shape[0]):
        n = int(prompt_len[b])
        for k in range(3):
            seq = list(np.asarray(prompt[b, :n])) + np.asarray(beam.tokens[b, k]).tolist()
            lp = _lm_logprobs(model, params, seq)
            want = sum(lp[n - 1 + t, seq[n + t]] for t in range(4))
            np.testing.assert_allclose(float(beam.log_probs[b, k]), want, rtol=1e-5)
            np.testing.assert_allclose(float(beam.token_log_probs[b, k].sum()), want, rtol=1e-5)


def test_seq2seq_sampling_log_probs_equal_teacher_forced_ones(setup):
    model, params, src, src_len = setup
    out = sample(model, params, src, src_len, key=jax.random.key(4), max_len=5, top_p=0.9)
    token_losses = jax.jit(functools.partial(seq2seq.token_losses, model))
    for b in range(src.shape[0]):
        n = int(out.lengths[b])
        ce, _ = token_losses(params, src[b], src_len[b], out.tokens[b], n)
        np.testing.assert_allclose(
            -np.asarray(ce[:n]), np.asarray(out.token_log_probs[b, :n]), rtol=1e-5, atol=1e-6
        )
        assert (np.asarray(out.tokens[b, n:]) == model.pad_id).all()
        if n < 5:
            assert int(out.tokens[b, n - 1]) == model.eos_id


def test_generation_errors(lm):
    model, params, prompt, prompt_len = lm
    bi = rj.SequenceModel(rj.Bidirectional(rj.GRU(4, 3)), output_size=LV, vocab_size=LV)
    with pytest.raises(ValueError, match="bidirectional layer reads the future"):
        generate(bi, bi.init(jax.random.key(0)), prompt, max_len=2)
    floats = rj.SequenceModel(rj.GRU(4, 3), output_size=LV)
    with pytest.raises(ValueError, match="token inputs and a per-step head"):
        generate(floats, floats.init(jax.random.key(0)), prompt, max_len=2)
    with pytest.raises(ValueError, match=r"prompt_len must lie in \[0, T\]"):
        generate(model, params, prompt, jnp.array([5, 1, 1]), max_len=2)
    with pytest.raises(ValueError, match="prompt_len must be >= 1 for this model"):
        generate(model, params, prompt, jnp.array([0, 1, 1]), max_len=2)
    with pytest.raises(ValueError, match=r"top_p must be in \(0, 1\]"):
        sample(model, params, prompt, key=jax.random.key(0), top_p=0.0)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample(model, params, prompt, key=jax.random.key(0), temperature=-1.0)
    with pytest.raises(TypeError, match="key must be a jax.random.key"):
        sample(model, params, prompt, key=None)
    with pytest.raises(ValueError, match=r"eos_id must be an int in \[0, 5\]"):
        generate(model, params, prompt, eos_id=LV)


def test_lm_with_zoneout_generates_like_its_deterministic_apply():
    """Without a key zoneout takes its expectation: one step of generation must run the
    layer (not the bare cell) to give what apply gives."""
    model = rj.SequenceModel(rj.Recurrent(rj.GRU(4, 6), zoneout=0.4), output_size=LV, vocab_size=LV)
    params = model.init(jax.random.key(8))
    params["head"]["w"] = 3.0 * params["head"]["w"]
    prompt = jnp.array([[1, 2, 3]])
    out = generate(model, params, prompt, max_len=4)
    toks, lps = _lm_greedy_loop(model, params, prompt[0], 3, 4)
    assert out.tokens[0].tolist() == toks
    np.testing.assert_allclose(np.asarray(out.token_log_probs[0]), lps, rtol=1e-5, atol=1e-6)


# every causal model generates: the state carried one token at a time equals the full
# model re-run on the growing prefix

_W = 4  # the width of the blocks (the embedding size)


def _causal_layers():
    par = rj.ScanConfig(method="parallel")
    return {
        # (the default suite steps an LSTM-GRU stack in the tests above)
        "lstm_stack": pytest.param(
            rj.Stacked([rj.LSTM(_W, 6), rj.LSTM(6, 5)]),
            marks=[pytest.mark.slow, pytest.mark.properties],
        ),
        "deep_recurrent": rj.DeepRecurrent.stack(rj.MinGRU, width=_W, depth=2, config=par),
        "residual_block": rj.ResidualBlock(rj.GRU(_W, 6), residual="block", norm="rms"),
        "xlstm_mlstm": rj.xlstm_block(_W, "mlstm", num_heads=2),
        "xlstm_slstm": rj.xlstm_block(_W, "slstm", num_heads=2),
        "griffin": rj.griffin_block(_W, num_heads=2, config=par),
        "griffin_conv": rj.griffin_block(_W, num_heads=2, conv=3),
        # a matrix-state cell: the prompt runs chunkwise, each token one operator step
        "gated_deltanet_block": rj.linear_attention_block(
            _W, "gated_deltanet", num_heads=2, config=rj.ScanConfig(method="chunkwise", chunk=2)
        ),
    }


_reference_cache = {}


def _prefix_reference(model, params, prompt, prompt_len, L, key=None, **kw):
    """Generation by hand without any step: at every token the whole model runs again
    over the prefix (the prompt and the tokens so far), from which the last position's
    logits choose the next token, as ``generate`` draws it (the same keys)."""
    if model not in _reference_cache:
        _reference_cache[model] = jax.jit(model.apply_batch)
    run = _reference_cache[model]
    B, P = prompt.shape
    rows = jnp.arange(B)
    buf = jnp.zeros((B, P + L), jnp.int32).at[:, :P].set(prompt)
    n = jnp.asarray(prompt_len)
    keys = None if key is None else jax.random.split(key, L)
    toks, lps = [], []
    for t in range(L):
        _, logits = run(params, buf, n)  # the prefix: buf[b, :n[b]]
        last = logits[rows, n - 1]
        if keys is None:
            nxt = jnp.argmax(last, axis=-1)
        else:
            nxt = jax.random.categorical(keys[t], filter_logits(last, **kw), axis=-1)
        lps.append(jax.nn.log_softmax(last)[rows, nxt])
        buf, n = buf.at[rows, n].set(nxt.astype(jnp.int32)), n + 1
        toks.append(nxt)
    return np.stack(toks, 1), np.stack(lps, 1)


@pytest.mark.parametrize("layer", list(_causal_layers().values()), ids=list(_causal_layers()))
def test_every_causal_model_generates_like_its_prefix_rerun(layer):
    model = rj.SequenceModel(layer, output_size=LV, vocab_size=LV)
    params = model.init(jax.random.key(21))
    params["head"]["w"] = 3.0 * params["head"]["w"]  # peaked enough that tokens vary
    prompt, prompt_len, L = jnp.array([[1, 2, 3], [4, 5, 0]]), jnp.array([3, 2]), 4
    greedy = generate(model, params, prompt, prompt_len, max_len=L)
    toks, lps = _prefix_reference(model, params, prompt, prompt_len, L)
    assert greedy.tokens.tolist() == toks.tolist()
    np.testing.assert_allclose(greedy.token_log_probs, lps, rtol=1e-4, atol=1e-5)
    key = jax.random.key(3)
    drawn = sample(model, params, prompt, prompt_len, key=key, max_len=L, top_k=4)
    toks, lps = _prefix_reference(model, params, prompt, prompt_len, L, key, top_k=4)
    assert drawn.tokens.tolist() == toks.tolist()
    np.testing.assert_allclose(drawn.token_log_probs, lps, rtol=1e-4, atol=1e-5)
    assert drawn.tokens.tolist() != greedy.tokens.tolist()  # the draws are not greedy ones


def test_generation_names_the_layer_that_reads_the_future():
    layer = rj.DeepRecurrent(
        [rj.ResidualBlock(rj.GRU(_W, _W)), rj.ResidualBlock(rj.Recurrent(rj.GRU(_W, _W), True))]
    )
    model = rj.SequenceModel(layer, output_size=LV, vocab_size=LV)
    with pytest.raises(ValueError, match=r"layer\.blocks\[1\]\.layer must be causal.*reverse=True"):
        generate(model, model.init(jax.random.key(0)), jnp.array([[1, 2]]), max_len=2)
