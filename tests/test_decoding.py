"""Decoding: greedy against a Python loop, beam width 1 equals greedy, and beam search
finds the best-scoring sequence where all sequences can be enumerated."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.decoding import beam_search, greedy_decode, length_penalty
from rnnjax.seq2seq import Seq2Seq

SV, E, H, S = 7, 3, 5, 4


@pytest.fixture(scope="module")
def setup():
    model = Seq2Seq.build(src_vocab=SV, tgt_vocab=6, embed_size=E, hidden_size=H,
                          attention="additive", bidirectional=True)
    params = jax.jit(model.init)(jax.random.key(0))
    params["out"]["w"] = 4.0 * params["out"]["w"]  # peaked: EOS gets chosen sometimes
    src = jax.random.randint(jax.random.key(1), (6, S), 3, SV)
    src_len = jnp.array([1, 2, 3, 4, 4, 2])
    return model, params, src, src_len


def _greedy_loop(model, params, src, src_len, max_len, _cache={}):
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
    np.testing.assert_allclose(np.asarray(b.scores[:, 0]), np.asarray(g.log_probs) / lp,
                               rtol=1e-5)


def test_beam_width_one_equals_greedy_with_luong_wiring():
    model = Seq2Seq.build(src_vocab=SV, tgt_vocab=6, embed_size=E, hidden_size=H, cell="lstm",
                          attention="dot", wiring="luong")
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
    model = Seq2Seq.build(src_vocab=5, tgt_vocab=4, embed_size=2, hidden_size=3,
                          attention="general", pad_id=0, bos_id=1, eos_id=2)
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
    score_all = jax.jit(jax.vmap(
        lambda s, sl: jax.vmap(lambda t, n: model.log_prob(params, s, sl, t, n))(tgt, lens)))
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
        np.testing.assert_allclose(np.asarray(beam.scores[b])[finite], np.sort(norm[b])[::-1],
                                   rtol=1e-4, atol=1e-6)
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
    with pytest.raises(TypeError, match="model must be an rnnjax Seq2Seq"):
        greedy_decode(object(), params, src, src_len)
