"""Synthetic sequence-to-sequence tasks: reversal, sorting, and dates in words to ISO.

Every task returns a :class:`Seq2SeqData` of padded integer arrays, made with a seeded
NumPy generator (nothing is downloaded). Token ids ``0, 1, 2`` are the padding, begin
and end tokens in every vocabulary (:data:`PAD`, :data:`BOS`, :data:`EOS`); the
targets end with :data:`EOS`, which ``tgt_len`` counts.

- :func:`reversal`: ``x_1 ... x_n -> x_n ... x_1``.
- :func:`sorting`: ``x_1 ... x_n -> sorted(x)``.
- :func:`dates`: a date written out in English words, in one of several word orders
  (``"the twenty third of march nineteen eighty four"``), to its ISO 8601 form
  (``"1984-03-23"``, one token per character).

Lengths are set by ``min_len`` / ``max_len`` (reversal, sorting; drawn uniformly per
example) and by the word orders (dates). :func:`token_accuracy` and
:func:`sequence_accuracy` score decoded tokens against the targets.

Shapes: ``n`` examples, ``S`` padded source length, ``T`` padded target length.
"""

from __future__ import annotations

import datetime
from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "PAD",
    "BOS",
    "EOS",
    "SPECIALS",
    "Seq2SeqData",
    "reversal",
    "sorting",
    "dates",
    "date_words",
    "DATE_SRC_VOCAB",
    "DATE_TGT_VOCAB",
    "DATE_FORMATS",
    "token_accuracy",
    "sequence_accuracy",
    "detokenize",
]

PAD, BOS, EOS = 0, 1, 2
SPECIALS = ("<pad>", "<bos>", "<eos>")


class Seq2SeqData(NamedTuple):
    """A padded set of source/target pairs.

    Attributes:
      src: ``(n, S)`` int32 source tokens, :data:`PAD` past ``src_len``.
      src_len: ``(n,)`` int32.
      tgt: ``(n, T)`` int32 target tokens ending with :data:`EOS`, :data:`PAD` after.
      tgt_len: ``(n,)`` int32, counting the :data:`EOS`.

    Example:
      >>> from rnnjax.tasks.seq2seq_tasks import reversal
      >>> d = reversal(2, 3, 4, n_symbols=5, seed=0)
      >>> d._fields, d.src.shape[0]
      (('src', 'src_len', 'tgt', 'tgt_len'), 2)
    """

    src: np.ndarray
    src_len: np.ndarray
    tgt: np.ndarray
    tgt_len: np.ndarray


def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a numpy Generator; got {seed!r}")
    return np.random.default_rng(int(seed))


def _check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {value!r}")


def _pack(srcs, tgts, S, T) -> Seq2SeqData:
    n = len(srcs)
    src = np.full((n, S), PAD, np.int32)
    tgt = np.full((n, T), PAD, np.int32)
    for i, (s, t) in enumerate(zip(srcs, tgts)):
        src[i, : len(s)] = s
        tgt[i, : len(t)] = t
    return Seq2SeqData(
        src,
        np.array([len(s) for s in srcs], np.int32),
        tgt,
        np.array([len(t) for t in tgts], np.int32),
    )


def _symbol_task(n, min_len, max_len, n_symbols, seed, pad_to, transform) -> Seq2SeqData:
    _check_int("n", n, 1)
    _check_int("min_len", min_len, 1)
    _check_int("max_len", max_len, min_len)
    _check_int("n_symbols", n_symbols, 2)
    S = max_len if pad_to is None else pad_to
    _check_int("pad_to", S, max_len)
    rng = _rng(seed)
    lengths = rng.integers(min_len, max_len + 1, size=n)
    srcs, tgts = [], []
    for L in lengths:
        s = rng.integers(len(SPECIALS), len(SPECIALS) + n_symbols, size=L)
        srcs.append(s)
        tgts.append(np.append(transform(s), EOS))
    return _pack(srcs, tgts, S, S + 1)


def reversal(
    n: int, min_len: int, max_len: int, n_symbols: int = 10, seed=0, pad_to=None
) -> Seq2SeqData:
    """Reverse a sequence of random symbols.

    Args:
      n: number of examples.
      min_len, max_len: source lengths are drawn uniformly from ``[min_len, max_len]``.
      n_symbols: symbols are tokens ``3 .. 3 + n_symbols - 1``; the vocabulary size (for
        source and target) is ``n_symbols + 3``.
      seed: an int or a ``numpy.random.Generator``.
      pad_to: ``S`` (default ``max_len``); targets are padded to ``S + 1``.

    Returns:
      :class:`Seq2SeqData` with ``src (n, S)``, ``tgt (n, S + 1)``.

    Example:
      >>> d = reversal(2, 3, 3, n_symbols=5, seed=0)
      >>> bool((d.tgt[:, :3] == d.src[:, ::-1]).all()), d.tgt[:, 3].tolist()
      (True, [2, 2])
    """
    return _symbol_task(n, min_len, max_len, n_symbols, seed, pad_to, lambda s: s[::-1])


def sorting(
    n: int, min_len: int, max_len: int, n_symbols: int = 10, seed=0, pad_to=None
) -> Seq2SeqData:
    """Sort a sequence of random symbols (ascending token id); arguments as :func:`reversal`.

    Example:
      >>> from rnnjax.tasks.seq2seq_tasks import sorting
      >>> d = sorting(3, 4, 4, seed=0)
      >>> bool((d.tgt[:, :3] <= d.tgt[:, 1:4]).all())        # ascending before the end token
      True
    """
    return _symbol_task(n, min_len, max_len, n_symbols, seed, pad_to, np.sort)


# --------------------------------------------------------------------------- dates

# number words, indexed by the digit (word lists written as one string each)
_UNITS = [""] + "one two three four five six seven eight nine".split()
_TEENS = "ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen".split()
_TENS = ["", ""] + "twenty thirty forty fifty sixty seventy eighty ninety".split()
_ORD_UNITS = [""] + "first second third fourth fifth sixth seventh eighth ninth".split()
_ORD_TEENS = (
    "tenth eleventh twelfth thirteenth fourteenth fifteenth sixteenth seventeenth eighteenth "
    "nineteenth"
).split()
_MONTHS = (
    "january february march april may june july august september october november december"
).split()

#: Word orders of :func:`dates`: ``{d}`` day ordinal, ``{m}`` month, ``{y}`` year.
DATE_FORMATS = (
    "{d} {m} {y}",
    "{d} of {m} {y}",
    "the {d} of {m} {y}",
    "{m} {d} {y}",
    "{m} the {d} {y}",
    "{m} {d} in the year {y}",
)


def _two_digits(n: int) -> list:
    if n < 10:
        return [_UNITS[n]]
    if n < 20:
        return [_TEENS[n - 10]]
    return [_TENS[n // 10]] + ([_UNITS[n % 10]] if n % 10 else [])


def _ordinal(d: int) -> list:
    if d < 10:
        return [_ORD_UNITS[d]]
    if d < 20:
        return [_ORD_TEENS[d - 10]]
    if d % 10 == 0:
        return [_TENS[d // 10][:-1] + "ieth"]  # twentieth, thirtieth
    return [_TENS[d // 10], _ORD_UNITS[d % 10]]


def _year(y: int) -> list:
    hi, lo = divmod(y, 100)
    if y % 1000 < 10 and y >= 2000:  # two thousand (and five)
        return ["two", "thousand"] + (["and", _UNITS[y % 10]] if y % 10 else [])
    words = _two_digits(hi)
    if lo == 0:
        return words + ["hundred"]
    if lo < 10:
        return words + ["oh", _UNITS[lo]]
    return words + _two_digits(lo)


def date_words(date: datetime.date, fmt: str = DATE_FORMATS[0]) -> list:
    """The words of ``date`` in the word order ``fmt`` (one of :data:`DATE_FORMATS`).

    Example:
      >>> import datetime
      >>> " ".join(date_words(datetime.date(1984, 3, 23), "the {d} of {m} {y}"))
      'the twenty third of march nineteen eighty four'
    """
    parts = {"d": _ordinal(date.day), "m": [_MONTHS[date.month - 1]], "y": _year(date.year)}
    out = []
    for w in fmt.split():
        out.extend(parts[w[1]] if w.startswith("{") else [w])
    return out


def _date_vocab() -> tuple:
    words = set(_UNITS[1:] + _TEENS + _TENS[2:] + _ORD_UNITS[1:] + _ORD_TEENS + _MONTHS)
    words |= {
        "twentieth",
        "thirtieth",
        "hundred",
        "thousand",
        "and",
        "oh",
        "of",
        "the",
        "in",
        "year",
    }
    return SPECIALS + tuple(sorted(words))


#: Source vocabulary of :func:`dates` (ids are positions).
DATE_SRC_VOCAB = _date_vocab()
#: Target vocabulary of :func:`dates`: the specials, ``0``-``9`` and ``-``.
DATE_TGT_VOCAB = SPECIALS + tuple("0123456789-")


def dates(
    n: int,
    seed=0,
    start=datetime.date(1900, 1, 1),
    end=datetime.date(2099, 12, 31),
    formats: Sequence[str] = DATE_FORMATS,
) -> Seq2SeqData:
    """Dates written out in words to ISO 8601 (``YYYY-MM-DD``), one character per token.

    Args:
      n: number of examples.
      seed: an int or a ``numpy.random.Generator``.
      start, end: dates are drawn uniformly from ``[start, end]``.
      formats: the word orders to draw from (uniformly), a subset of
        :data:`DATE_FORMATS` or any strings with ``{d}``, ``{m}``, ``{y}`` and words of
        :data:`DATE_SRC_VOCAB`; longer orders give longer sources.

    Returns:
      :class:`Seq2SeqData`; ``src`` ids index :data:`DATE_SRC_VOCAB`, ``tgt`` ids index
      :data:`DATE_TGT_VOCAB`; targets have 10 characters and the end token.

    Example:
      >>> d = dates(1, seed=0)
      >>> detokenize(d.tgt[0], DATE_TGT_VOCAB, sep="")[:4].isdigit()
      True
    """
    _check_int("n", n, 1)
    if not isinstance(start, datetime.date) or not isinstance(end, datetime.date) or end < start:
        raise ValueError(f"start and end must be dates with start <= end; got {start!r}, {end!r}")
    if isinstance(formats, str) or not formats:
        raise ValueError(f"formats must be a non-empty sequence of strings; got {formats!r}")
    rng = _rng(seed)
    src_ids = {w: i for i, w in enumerate(DATE_SRC_VOCAB)}
    tgt_ids = {c: i for i, c in enumerate(DATE_TGT_VOCAB)}
    span = (end - start).days
    srcs, tgts = [], []
    for _ in range(n):
        day = start + datetime.timedelta(days=int(rng.integers(0, span + 1)))
        fmt = formats[int(rng.integers(0, len(formats)))]
        words = date_words(day, fmt)
        unknown = [w for w in words if w not in src_ids]
        if unknown:
            raise ValueError(f"formats use words outside DATE_SRC_VOCAB: {unknown}")
        srcs.append([src_ids[w] for w in words])
        tgts.append([tgt_ids[c] for c in day.isoformat()] + [EOS])
    S = max(len(s) for s in srcs)
    return _pack(srcs, tgts, S, 11)


def detokenize(tokens, vocab: Sequence[str], sep: str = " ") -> str:
    """Tokens up to (not including) the first :data:`EOS` as a string, padding dropped.

    Example:
      >>> from rnnjax.tasks.seq2seq_tasks import DATE_TGT_VOCAB, EOS, detokenize
      >>> detokenize([DATE_TGT_VOCAB.index("1"), DATE_TGT_VOCAB.index("9"), EOS, 0],
      ...            DATE_TGT_VOCAB, sep="")
      '19'
    """
    ids = np.asarray(tokens)
    if ids.ndim != 1 or not (np.issubdtype(ids.dtype, np.integer) or ids.size == 0):
        raise ValueError(
            f"tokens must be a 1-D sequence of integer token ids; got shape {ids.shape} and "
            f"dtype {ids.dtype}"
        )
    if ids.size and (ids.min() < 0 or ids.max() >= len(vocab)):
        raise ValueError(
            f"tokens must lie in [0, len(vocab)) = [0, {len(vocab)}); got values in "
            f"[{ids.min()}, {ids.max()}]"
        )
    out = []
    for t in ids.tolist():
        if t == EOS:
            break
        if t != PAD:
            out.append(vocab[t])
    return sep.join(out)


# --------------------------------------------------------------------------- metrics


def _align(pred, tgt):
    pred = jnp.asarray(pred)
    tgt = jnp.asarray(tgt)
    if pred.ndim != tgt.ndim or pred.shape[:-1] != tgt.shape[:-1]:
        raise ValueError(
            f"pred must have the leading shape of tgt {tgt.shape[:-1]}; got {pred.shape}"
        )
    T, L = tgt.shape[-1], pred.shape[-1]
    if L < T:
        pad = [(0, 0)] * (pred.ndim - 1) + [(0, T - L)]
        pred = jnp.pad(pred, pad, constant_values=PAD)
    return pred[..., :T], tgt


def _hits(pred, tgt, tgt_len):
    pred, tgt = _align(pred, tgt)
    if jnp.shape(tgt_len) != tgt.shape[:-1]:
        raise ValueError(f"tgt_len must have shape {tgt.shape[:-1]}; got {jnp.shape(tgt_len)}")
    t = jnp.arange(tgt.shape[-1]).reshape((1,) * (tgt.ndim - 1) + (tgt.shape[-1],))
    mask = t < jnp.asarray(tgt_len)[..., None]
    return (pred == tgt) & mask, mask


def token_accuracy(pred, tgt, tgt_len) -> jax.Array:
    """Fraction of real target positions (``t < tgt_len``, the end token included)
    where the decoded token is right.

    Args:
      pred: ``(..., L)`` decoded tokens (cut or padded to ``T``).
      tgt: ``(..., T)`` targets; tgt_len: ``(...)``.

    Returns:
      A scalar in ``[0, 1]``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.tasks.seq2seq_tasks import token_accuracy
      >>> tgt = jnp.array([[5, 6, 2, 0]])                     # (B, T): 3 real positions
      >>> float(token_accuracy(jnp.array([[5, 7, 2, 9]]), tgt, jnp.array([3])))
      0.6666666865348816
    """
    hits, mask = _hits(pred, tgt, tgt_len)
    return jnp.sum(hits) / jnp.sum(mask)


def sequence_accuracy(pred, tgt, tgt_len, per_example: bool = False) -> jax.Array:
    """Fraction of sequences decoded exactly: every real target position right, the end
    token included (so a longer or shorter output is wrong; what follows the end token
    is ignored). With ``per_example=True``, the ``(...)`` bool array instead.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.tasks.seq2seq_tasks import sequence_accuracy
      >>> tgt = jnp.array([[5, 6, 2], [5, 6, 2]])            # (B, T), end token 2
      >>> pred = jnp.array([[5, 6, 2], [5, 7, 2]])
      >>> float(sequence_accuracy(pred, tgt, jnp.array([3, 3])))
      0.5
    """
    hits, mask = _hits(pred, tgt, tgt_len)
    ok = jnp.all(hits | ~mask, axis=-1)
    return ok if per_example else jnp.mean(ok.astype(jnp.float32))
