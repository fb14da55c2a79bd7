"""Synthetic seq2seq tasks: reversal, sorting, dates in words (checked by an independent
parser of the words), and token / sequence accuracy against plain loops."""

import datetime

import numpy as np
import pytest

from rnnjax.tasks import seq2seq_tasks as st


def _check_layout(d, n, S, T):
    assert d.src.shape == (n, S) and d.tgt.shape == (n, T)
    for a in d:
        assert a.dtype == np.int32
    for i in range(n):
        assert (d.src[i, d.src_len[i] :] == st.PAD).all()
        assert (d.tgt[i, d.tgt_len[i] :] == st.PAD).all()
        assert d.tgt[i, d.tgt_len[i] - 1] == st.EOS
        assert (d.src[i, : d.src_len[i]] >= len(st.SPECIALS)).all()


@pytest.mark.parametrize("task,fn", [("reversal", lambda s: s[::-1]), ("sorting", sorted)])
def test_symbol_tasks(task, fn):
    d = getattr(st, task)(50, 2, 7, n_symbols=5, seed=3, pad_to=9)
    _check_layout(d, 50, 9, 10)
    assert d.src_len.min() >= 2 and d.src_len.max() <= 7
    assert len(set(d.src_len.tolist())) > 3  # lengths actually vary
    assert d.src.max() < 3 + 5
    for i in range(50):
        s = d.src[i, : d.src_len[i]].tolist()
        assert d.tgt_len[i] == len(s) + 1
        assert d.tgt[i, : len(s)].tolist() == list(fn(s))
    again = getattr(st, task)(50, 2, 7, n_symbols=5, seed=3, pad_to=9)
    for a, b in zip(d, again):
        np.testing.assert_array_equal(a, b)
    other = getattr(st, task)(50, 2, 7, n_symbols=5, seed=4, pad_to=9)
    assert not np.array_equal(d.src, other.src)


_NUM = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen".split()
    )
}
_NUM.update(
    {
        w: 10 * (i + 2)
        for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split())
    }
)
_ORD = {
    w: i + 1
    for i, w in enumerate(
        "first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth "
        "thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth "
        "twentieth".split()
    )
}
_ORD["thirtieth"] = 30
_MON = {
    m: i + 1
    for i, m in enumerate(
        "january february march april may june july august september october november "
        "december".split()
    )
}


def _parse(words):
    """An independent reading of the words back into a date."""
    words = [w for w in words if w not in ("the", "of", "in", "year")]
    month = [_MON[w] for w in words if w in _MON][0]
    words = [w for w in words if w not in _MON]
    # the day: ordinal, possibly preceded by a tens word
    i = next(k for k, w in enumerate(words) if w in _ORD)
    day = _ORD[words[i]]
    rest = words[i + 1 :]
    if i > 0:  # "twenty third": the tens word before the ordinal belongs to the day
        day += _NUM[words[i - 1]]
    year_words = rest  # the year always follows the day
    if year_words[:2] == ["two", "thousand"]:
        year = 2000 + (_NUM[year_words[-1]] if "and" in year_words else 0)
    else:

        def num(ws):
            return sum(_NUM[w] for w in ws)

        # century: the first number word (teens or "twenty"), then the rest
        hi = _NUM[year_words[0]]
        tail = year_words[1:]
        if tail == ["hundred"]:
            lo = 0
        elif tail and tail[0] == "oh":
            lo = _NUM[tail[1]]
        else:
            lo = num(tail)
        year = 100 * hi + lo
    return datetime.date(year, month, day)


def test_dates_targets_are_the_iso_form_of_the_words():
    d = st.dates(300, seed=1)
    assert d.tgt.shape == (300, 11) and (d.tgt_len == 11).all()
    _check_layout(d, 300, d.src.shape[1], 11)
    src_lens = set(d.src_len.tolist())
    assert min(src_lens) <= 4 and max(src_lens) >= 8  # the word orders vary the length
    for i in range(300):
        words = [st.DATE_SRC_VOCAB[t] for t in d.src[i, : d.src_len[i]]]
        iso = st.detokenize(d.tgt[i], st.DATE_TGT_VOCAB, sep="")
        assert _parse(words).isoformat() == iso


def test_date_words_cover_edge_cases():
    for day in [
        datetime.date(1900, 1, 1),
        datetime.date(2000, 2, 29),
        datetime.date(2007, 12, 31),
        datetime.date(2010, 10, 20),
        datetime.date(1999, 11, 30),
        datetime.date(1905, 5, 12),
    ]:
        for fmt in st.DATE_FORMATS:
            words = st.date_words(day, fmt)
            assert all(w in st.DATE_SRC_VOCAB for w in words)
            assert _parse(words) == day


def test_dates_respect_range_and_formats():
    lo, hi = datetime.date(2001, 3, 1), datetime.date(2001, 3, 31)
    d = st.dates(40, seed=0, start=lo, end=hi, formats=("{m} {d} {y}",))
    for i in range(40):
        iso = st.detokenize(d.tgt[i], st.DATE_TGT_VOCAB, sep="")
        assert lo <= datetime.date.fromisoformat(iso) <= hi
        assert st.DATE_SRC_VOCAB[d.src[i, 0]] == "march"


def test_accuracies_match_plain_loops():
    rng = np.random.default_rng(0)
    n, T = 40, 6
    tgt = rng.integers(3, 6, (n, T)).astype(np.int32)
    tgt_len = rng.integers(1, T + 1, n).astype(np.int32)
    pred = tgt.copy()
    flip = rng.random((n, T)) < 0.1
    pred[flip] = 6
    pred = np.concatenate([pred, rng.integers(0, 6, (n, 2))], 1)  # longer than T: ignored
    hits = total = 0
    seq_ok = 0
    for i in range(n):
        ok = True
        for t in range(tgt_len[i]):
            total += 1
            hits += pred[i, t] == tgt[i, t]
            ok &= bool(pred[i, t] == tgt[i, t])
        seq_ok += ok
    np.testing.assert_allclose(
        float(st.token_accuracy(pred, tgt, tgt_len)), hits / total, rtol=1e-6
    )
    np.testing.assert_allclose(
        float(st.sequence_accuracy(pred, tgt, tgt_len)), seq_ok / n, rtol=1e-6
    )
    # a prediction shorter than the target is padded and counts as wrong there
    short = st.token_accuracy(tgt[:, :2], tgt, np.full(n, T, np.int32))
    np.testing.assert_allclose(float(short), 2 / T, rtol=1e-6)


def test_detokenize_stops_at_eos():
    assert st.detokenize([3, 4, st.EOS, 5], ("a", "b", "c", "x", "y", "z")) == "x y"


def test_bad_input_errors():
    with pytest.raises(ValueError, match="max_len must be an int >= 3"):
        st.reversal(5, 3, 2)
    with pytest.raises(ValueError, match="pad_to must be an int >= 4"):
        st.sorting(5, 1, 4, pad_to=3)
    with pytest.raises(TypeError, match="seed must be an int"):
        st.reversal(5, 1, 4, seed="x")
    with pytest.raises(ValueError, match="words outside DATE_SRC_VOCAB"):
        st.dates(3, formats=("{d} {m} {y} banana",))
    with pytest.raises(ValueError, match="start <= end"):
        st.dates(3, start=datetime.date(2000, 1, 2), end=datetime.date(2000, 1, 1))
    with pytest.raises(ValueError, match="tgt_len must have shape"):
        st.token_accuracy(np.zeros((2, 3), np.int32), np.zeros((2, 3), np.int32), np.ones(3))
