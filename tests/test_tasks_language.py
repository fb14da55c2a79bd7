"""Tests for rnnjax.tasks.language: exact entropy rate, sampling, text corpus loading."""

import numpy as np
import pytest

from rnnjax.tasks.language import MarkovSource, TextCorpus, window_batch


def joint_entropy(p):
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def test_stationary_distribution_by_power_iteration_order2():
    """Independent reference: iterate pi'(b, c) = sum_a pi(a, b) P(c | a, b) to convergence."""
    src = MarkovSource(vocab_size=4, order=2, concentration=0.5, seed=3)
    V = 4
    P = src.transitions.reshape(V, V, V)
    pi = np.full((V, V), 1.0 / V**2)
    for _ in range(5000):
        pi = np.einsum("ab,abc->bc", pi, P)
    np.testing.assert_allclose(src.stationary.reshape(V, V), pi, atol=1e-12)
    # entropy rate = H(X_{t-2}, X_{t-1}, X_t) - H(X_{t-2}, X_{t-1}) under stationarity
    joint3 = pi[:, :, None] * P
    np.testing.assert_allclose(
        src.entropy_rate, joint_entropy(joint3) - joint_entropy(pi), rtol=1e-10
    )


def test_order1_matches_eigenvector_formula():
    src = MarkovSource(vocab_size=5, order=1, concentration=1.0, seed=1)
    P = src.transitions
    w, v = np.linalg.eig(P.T)
    pi = np.real(v[:, np.argmin(np.abs(w - 1))])
    pi = pi / pi.sum()
    np.testing.assert_allclose(src.stationary, pi, atol=1e-12)
    h = -np.sum(pi[:, None] * P * np.log(P))
    np.testing.assert_allclose(src.entropy_rate, h, rtol=1e-10)


def test_default_source_is_order2_over_30_symbols_and_samples_its_entropy():
    src = MarkovSource()
    assert src.vocab_size == 30 and src.order == 2 and src.transitions.shape == (900, 30)
    np.testing.assert_allclose(src.transitions.sum(axis=1), 1.0, rtol=1e-12)
    x = src.sample(4000, batch_size=8, seed=0)
    lp = src.log_prob(x)
    est, se = -lp.mean(), lp.std() / np.sqrt(lp.size)
    assert abs(est - src.entropy_rate) < 5 * se + 0.01  # Monte Carlo estimate of the rate
    assert 1.0 < src.perplexity_bound < 30.0
    np.testing.assert_allclose(src.perplexity_bound, np.exp(src.entropy_rate))


def test_empirical_transitions_match_the_table():
    src = MarkovSource(vocab_size=3, order=2, concentration=1.0, seed=2)
    x = src.sample(20000, batch_size=4, seed=5)
    counts = np.zeros((9, 3))
    ctx = x[:, :-2] * 3 + x[:, 1:-1]
    np.add.at(counts, (ctx.ravel(), x[:, 2:].ravel()), 1)
    freq = counts / counts.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(freq, src.transitions, atol=0.03)
    # context frequencies match the stationary distribution
    np.testing.assert_allclose(counts.sum(axis=1) / counts.sum(), src.stationary, atol=0.02)


def test_batches_are_deterministic_in_the_position():
    src = MarkovSource(vocab_size=7, order=2, seed=0)
    a, b, c = src.batch(3, 4, 10), src.batch(3, 4, 10), src.batch(4, 4, 10)
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    assert not np.array_equal(a["inputs"], c["inputs"])
    np.testing.assert_array_equal(a["inputs"][:, 1:], a["targets"][:, :-1])
    assert a["inputs"].shape == (4, 10) and a["inputs"].dtype == np.int32


def test_source_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vocab_size"):
        MarkovSource(vocab_size=1)
    with pytest.raises(ValueError, match="order"):
        MarkovSource(order=0)
    with pytest.raises(ValueError, match="concentration"):
        MarkovSource(concentration=0.0)
    with pytest.raises(ValueError, match="contexts"):
        MarkovSource(vocab_size=30, order=4)


def test_text_corpus_from_file(tmp_path):
    text = "the cat sat on the mat.\nthe end"
    path = tmp_path / "tiny.txt"
    path.write_text(text, encoding="utf-8")
    corpus = TextCorpus.from_file(path)
    assert corpus.vocab == tuple(sorted(set(text))) and corpus.vocab_size == len(set(text))
    assert corpus.decode(corpus.tokens) == text
    train, valid = corpus.split(0.75)
    assert corpus.decode(train) + corpus.decode(valid) == text
    b = corpus.batch(2, batch_size=3, seq_len=5, seed=1)
    for row_in, row_out in zip(b["inputs"], b["targets"]):
        s_in, s_out = corpus.decode(row_in), corpus.decode(row_out)
        assert s_in in text and s_out in text and s_in[1:] == s_out[:-1]
    np.testing.assert_array_equal(b["inputs"], corpus.batch(2, 3, 5, seed=1)["inputs"])


def test_text_corpus_errors(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TextCorpus.from_file(missing)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        TextCorpus.from_file(empty)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    with pytest.raises(ValueError, match="not valid utf-8"):
        TextCorpus.from_file(bad)
    corpus = TextCorpus("abc")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        corpus.encode("abd")
    with pytest.raises(ValueError, match="ids must lie"):
        corpus.decode([0, 3])
    with pytest.raises(ValueError, match="longer than seq_len"):
        window_batch(np.arange(4), 0, 2, 4)
    with pytest.raises(ValueError, match="distinct single characters"):
        TextCorpus("ab", vocab=["a", "a", "b"])


@pytest.mark.slow
def test_gru_learns_an_order1_source_close_to_its_bound():
    """End to end: a small GRU trained with the Trainer reaches a held-out perplexity
    within 5% of exp(entropy rate) on an order-1 source over 6 symbols."""
    import jax
    import jax.numpy as jnp

    import rnnjax as rj
    from rnnjax.blocks import SequenceModel
    from rnnjax.train import Trainer, fit

    src = MarkovSource(vocab_size=6, order=1, concentration=0.3, seed=4)
    model = SequenceModel(rj.GRU(8, 16), output_size=6, vocab_size=6)
    tr = Trainer(model, learning_rate=1e-2)
    data = lambda p: {k: jnp.asarray(v) for k, v in src.batch(p, 16, 32).items()}  # noqa: E731
    state, _ = fit(tr, tr.init(jax.random.key(0)), data, 400, progress=False)
    held = {k: jnp.asarray(v) for k, v in src.batch(0, 64, 64, seed=99).items()}
    ppl = float(tr.evaluate(state.params, held)["perplexity"])
    assert src.perplexity_bound * 0.97 < ppl < src.perplexity_bound * 1.05, (
        ppl,
        src.perplexity_bound,
    )
