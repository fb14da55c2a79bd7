"""Language modelling data: a Markov source with an exact entropy rate, and text files.

- :class:`MarkovSource`: a random Markov chain of order ``k`` (default 2) over ``V``
  symbols (default 30), its transition rows drawn from a Dirichlet distribution. Its
  entropy rate is computed exactly from the stationary distribution over contexts, so
  ``exp(entropy_rate)`` is the lowest perplexity any model can reach on it.
- :class:`TextCorpus`: a character-level corpus from any plain text file the user names,
  with a vocabulary, ``encode`` / ``decode``, a training / validation split and batches
  drawn from the training part only.
- :class:`StreamBatcher`: ``B`` contiguous streams of a token sequence read in
  consecutive windows, for stateful truncated BPTT and stream evaluation.

Batches are functions of the data position (``batch(position)``), seeded by
``(seed, position)``, so a resumed run sees exactly the batches of an uninterrupted one.
A batch is ``{"inputs": (B, T) int32, "targets": (B, T) int32}`` with
``targets[:, t] = inputs[:, t + 1]`` in the underlying sequence.

Shapes: ``B`` batch, ``T`` time, ``V`` vocabulary size.

References:
  Cover & Thomas (2006). Elements of Information Theory, 2nd ed., section 4.2 (entropy
  rate of a stationary Markov chain: ``H = sum_s pi(s) H(P(. | s))``).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

import numpy as np

__all__ = ["MarkovSource", "TextCorpus", "Vocabulary", "StreamBatcher", "window_batch"]

_MAX_CONTEXTS = 1 << 16


def _check_int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {v!r}")


@dataclasses.dataclass(frozen=True)
class MarkovSource:
    r"""A random Markov chain of order ``k`` over ``V`` symbols with a known entropy rate.

    .. math::

        P(x_t = c \mid x_{t-k:t}) = P[x_{t-k}, \dots, x_{t-1}, c], \qquad
        P[s, :] \sim \mathrm{Dirichlet}(\alpha \mathbf{1}_V)

        H = \sum_s \pi(s) \Big(-\sum_c P[s, c] \log P[s, c]\Big) \text{ nats per symbol}

    where :math:`\pi` is the stationary distribution over the ``V**k`` contexts, solved
    exactly (a linear system in float64).

    Args:
      vocab_size: ``V`` (default 30).
      order: ``k`` (default 2).
      concentration: the Dirichlet ``alpha``; smaller is more predictable.
      seed: seed of the transition table.

    Example:
      >>> src = MarkovSource(vocab_size=30, order=2, concentration=0.1)
      >>> bound = float(np.exp(src.entropy_rate))  # the minimal perplexity
      >>> batch = src.batch(0, batch_size=4, seq_len=16)
      >>> batch["inputs"].shape
      (4, 16)
    """

    vocab_size: int = 30
    order: int = 2
    concentration: float = 0.1
    seed: int = 0

    def __post_init__(self):
        _check_int("vocab_size", self.vocab_size, 2)
        _check_int("order", self.order, 1)
        if not float(self.concentration) > 0:
            raise ValueError(f"concentration must be > 0; got {self.concentration!r}")
        if self.vocab_size**self.order > _MAX_CONTEXTS:
            raise ValueError(
                f"vocab_size ** order must be <= {_MAX_CONTEXTS} contexts; got "
                f"{self.vocab_size}**{self.order} = {self.vocab_size**self.order}"
            )

    @functools.cached_property
    def transitions(self) -> np.ndarray:
        """``(V**k, V)`` float64: row ``s`` is ``P(next | context s)``; context index
        ``s = sum_j x_{t-k+j} V**(k-1-j)`` (the oldest symbol most significant)."""
        rng = np.random.default_rng(self.seed)
        V = self.vocab_size
        p = rng.dirichlet(np.full(V, float(self.concentration)), size=V**self.order)
        p = np.maximum(p, 1e-300)  # keep every transition possible: the chain is ergodic
        return p / p.sum(axis=1, keepdims=True)

    @functools.cached_property
    def stationary(self) -> np.ndarray:
        """``(V**k,)`` float64 stationary distribution over contexts (exact linear solve)."""
        V, S = self.vocab_size, self.vocab_size**self.order
        P = self.transitions
        # context s = (rest..., c_old) -> s' = ((s mod V**(k-1)) * V + c)
        M = np.zeros((S, S))
        nxt = (np.arange(S)[:, None] % (V ** (self.order - 1))) * V + np.arange(V)[None, :]
        np.add.at(M, (np.repeat(np.arange(S), V), nxt.ravel()), P.ravel())
        A = M.T - np.eye(S)
        A[-1, :] = 1.0  # replace one (redundant) balance equation by sum(pi) = 1
        b = np.zeros(S)
        b[-1] = 1.0
        pi = np.linalg.solve(A, b)
        pi = np.maximum(pi, 0.0)
        return pi / pi.sum()

    @functools.cached_property
    def entropy_rate(self) -> float:
        """Entropy rate in nats per symbol; ``exp`` of it is the minimal perplexity."""
        P = self.transitions
        h_rows = -np.sum(P * np.log(P), axis=1)
        return float(self.stationary @ h_rows)

    @property
    def perplexity_bound(self) -> float:
        """``exp(entropy_rate)``: no predictor reaches a lower perplexity."""
        return float(np.exp(self.entropy_rate))

    def _cumulative(self):
        c = np.cumsum(self.transitions, axis=1)
        c[:, -1] = 1.0
        return c

    def sample(self, length: int, batch_size: Optional[int] = None, *, seed=0) -> np.ndarray:
        """Sample sequences started from the stationary distribution.

        Args:
          length: number of symbols per sequence.
          batch_size: ``None`` for one sequence ``(length,)``, else ``(batch_size, length)``.
          seed: an int or a sequence of ints for ``numpy.random.default_rng``.

        Returns:
          int32 symbols.
        """
        _check_int("length", length, self.order)
        B = 1 if batch_size is None else batch_size
        _check_int("batch_size", B, 1)
        rng = np.random.default_rng(seed)
        V, k = self.vocab_size, self.order
        S = V**k
        cum = self._cumulative()
        out = np.empty((B, length), np.int32)
        ctx = rng.choice(S, size=B, p=self.stationary)
        for j in range(k):  # unpack the starting context into its k symbols
            out[:, j] = (ctx // V ** (k - 1 - j)) % V
        u = rng.random((B, length))
        for t in range(k, length):
            c = (u[:, t][:, None] > cum[ctx]).sum(axis=1)
            c = np.minimum(c, V - 1)
            out[:, t] = c
            ctx = (ctx % (V ** (k - 1))) * V + c
        return out[0] if batch_size is None else out

    def log_prob(self, symbols: np.ndarray) -> np.ndarray:
        """``log P(x_t | x_{t-k:t})`` for ``t >= k`` of a sequence ``(..., L)`` (float64)."""
        x = np.asarray(symbols)
        V, k = self.vocab_size, self.order
        ctx = np.zeros(x.shape[:-1] + (x.shape[-1] - k,), np.int64)
        for j in range(k):
            ctx = ctx * V + x[..., j : x.shape[-1] - k + j]
        return np.log(self.transitions[ctx, x[..., k:]])

    def batch(self, position: int, batch_size: int, seq_len: int, *, seed: int = 0) -> dict:
        """A language-modelling batch for data position ``position``: fresh stationary
        sequences, seeded by ``(seed, position)``.

        Returns:
          ``{"inputs": (B, T) int32, "targets": (B, T) int32}``.
        """
        _check_int("position", position, 0)
        _check_int("seq_len", seq_len, 1)
        s = self.sample(max(seq_len + 1, self.order), batch_size, seed=(int(seed), int(position)))
        return {"inputs": s[:, :seq_len], "targets": s[:, 1 : seq_len + 1]}


def window_batch(
    tokens: np.ndarray, position: int, batch_size: int, seq_len: int, *, seed: int = 0
) -> dict:
    """Random windows of a token stream for data position ``position`` (seeded by
    ``(seed, position)``).

    Args:
      tokens: ``(N,)`` integer stream, ``N > seq_len``.

    Returns:
      ``{"inputs": (B, T) int32, "targets": (B, T) int32}``, targets shifted by one.

    Example:
      >>> import numpy as np
      >>> from rnnjax.tasks.language import window_batch
      >>> batch = window_batch(np.arange(100), position=0, batch_size=2, seq_len=5)
      >>> batch["inputs"].shape, bool((batch["targets"] == batch["inputs"] + 1).all())
      ((2, 5), True)
    """
    tokens = np.asarray(tokens)
    _check_int("position", position, 0)
    _check_int("batch_size", batch_size, 1)
    _check_int("seq_len", seq_len, 1)
    if tokens.ndim != 1 or tokens.shape[0] <= seq_len:
        raise ValueError(
            f"tokens must be a 1-D stream longer than seq_len = {seq_len}; got shape {tokens.shape}"
        )
    rng = np.random.default_rng((int(seed), int(position)))
    starts = rng.integers(0, tokens.shape[0] - seq_len, size=batch_size)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = tokens[idx].astype(np.int32)
    return {"inputs": w[:, :-1], "targets": w[:, 1:]}


class StreamBatcher:
    """``B`` contiguous streams of a token sequence, read in consecutive windows.

    The tokens are cut into ``B`` equal contiguous streams (row ``b`` holds tokens
    ``b * L .. (b + 1) * L``, the remainder dropped); window ``j`` is steps
    ``j * T .. (j + 1) * T`` of every stream, its targets shifted by one. Batch ``p`` is
    window ``p % num_windows``, so consecutive positions continue the same streams: the
    recurrent state carried from one batch to the next (``fit(..., stateful=True,
    reset_every=batcher.num_windows)``) sees each stream as one long sequence. This is the
    batching of stateful truncated BPTT (Williams & Peng 1990; Zaremba et al. 2014).

    Args:
      tokens: ``(N,)`` integer stream.
      batch_size: ``B`` streams.
      seq_len: ``T``, the window length.

    Attributes:
      num_windows: windows per pass over the streams.

    Example:
      >>> sb = StreamBatcher(np.arange(22), batch_size=2, seq_len=5)
      >>> sb.num_windows
      2
      >>> sb.batch(0)["inputs"].tolist(), sb.batch(1)["inputs"][0].tolist()
      ([[0, 1, 2, 3, 4], [11, 12, 13, 14, 15]], [5, 6, 7, 8, 9])
    """

    def __init__(self, tokens, batch_size: int, seq_len: int):
        tokens = np.asarray(tokens)
        _check_int("batch_size", batch_size, 1)
        _check_int("seq_len", seq_len, 1)
        if tokens.ndim != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"tokens must be a 1-D integer stream; got shape {tokens.shape} and dtype {tokens.dtype}"
            )
        length = tokens.shape[0] // batch_size  # tokens per stream (inputs and the last target)
        if length < seq_len + 1:
            raise ValueError(
                f"tokens must hold at least batch_size * (seq_len + 1) = {batch_size * (seq_len + 1)} "
                f"tokens; got {tokens.shape[0]}"
            )
        self.batch_size, self.seq_len = int(batch_size), int(seq_len)
        self.streams = tokens[: length * batch_size].reshape(batch_size, length).astype(np.int32)
        self.num_windows = (length - 1) // seq_len

    def batch(self, position: int) -> dict:
        """Window ``position % num_windows``: ``{"inputs", "targets"}``, ``(B, T)`` int32."""
        _check_int("position", position, 0)
        j = int(position) % self.num_windows
        a, T = j * self.seq_len, self.seq_len
        return {"inputs": self.streams[:, a : a + T], "targets": self.streams[:, a + 1 : a + T + 1]}

    __call__ = batch

    def all_windows(self):
        """Every window in order: ``(inputs, targets)``, each ``(num_windows, B, T)``."""
        n, T = self.num_windows, self.seq_len
        x = self.streams[:, : n * T].reshape(self.batch_size, n, T)
        y = self.streams[:, 1 : n * T + 1].reshape(self.batch_size, n, T)
        return np.swapaxes(x, 0, 1), np.swapaxes(y, 0, 1)


class Vocabulary:
    """A character vocabulary: ``encode`` text to token ids and ``decode`` them back.

    It is what a text model's run needs besides its parameters: a :class:`TextCorpus`
    records it (``corpus.config()``) in a checkpoint directory through
    ``rnnjax.Checkpointer(directory, trainer=..., data=corpus)``, and
    ``rnnjax.load_run(directory).vocabulary`` gives it back.

    Args:
      vocab: a sequence of distinct single characters (index = token id).

    Example:
      >>> v = Vocabulary("abc")
      >>> ids = v.encode("cab")
      >>> ids.tolist(), v.decode(ids), v.vocab_size
      ([2, 0, 1], 'cab', 3)
      >>> Vocabulary.from_config(v.config()) == v
      True
    """

    def __init__(self, vocab: Sequence[str]):
        if isinstance(vocab, (bytes, bytearray)) or not isinstance(vocab, (str, Sequence)):
            raise TypeError(f"vocab must be a sequence of characters; got {type(vocab).__name__}")
        vocab = tuple(vocab)
        if (
            not vocab
            or len(set(vocab)) != len(vocab)
            or not all(isinstance(c, str) and len(c) == 1 for c in vocab)
        ):
            raise ValueError(f"vocab must be distinct single characters; got {vocab!r}")
        self.vocab = vocab
        self._index = {c: i for i, c in enumerate(vocab)}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> np.ndarray:
        """Characters -> ``(len(text),)`` int32 indices."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        missing = sorted(set(text) - set(self._index))
        if missing:
            raise ValueError(f"text has characters outside the vocabulary: {missing[:10]!r}")
        return np.fromiter((self._index[c] for c in text), np.int32, len(text))

    def decode(self, ids) -> str:
        """Indices -> text."""
        ids = np.asarray(ids)
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"ids must be integers; got dtype {ids.dtype}")
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise ValueError(
                f"ids must lie in [0, {self.vocab_size}); got [{ids.min()}, {ids.max()}]"
            )
        return "".join(self.vocab[i] for i in ids.ravel())

    def config(self) -> dict:
        """A JSON-clean record: ``{"vocab": [characters]}``."""
        return {"vocab": list(self.vocab)}

    @classmethod
    def from_config(cls, config: dict) -> "Vocabulary":
        """Rebuild from :meth:`config`."""
        if not isinstance(config, dict) or not isinstance(config.get("vocab"), list):
            raise ValueError(
                f"config must be a dict with a 'vocab' list of characters; got {str(config)[:200]}"
            )
        return cls(config["vocab"])

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and other.vocab == self.vocab

    def __hash__(self):
        return hash(self.vocab)

    def __repr__(self):
        return f"Vocabulary({''.join(self.vocab)!r})"


class TextCorpus:
    """A character-level corpus read from a plain text file, with a training /
    validation split.

    The first ``train_fraction`` of the text is the training part, the rest the
    validation part; :meth:`batch` draws training windows from the training part only
    (a window never reaches into the validation text), whatever :meth:`split` is asked.

    Args:
      text: the text.
      vocab: optional sequence of characters (the vocabulary, index = position); default
        the sorted set of characters of ``text``. A character of ``text`` outside a given
        ``vocab`` is an error.
      train_fraction: the share of the text used for training, in ``(0, 1]`` (``1``: no
        validation part).

    Attributes:
      vocab: tuple of characters; ``vocab_size`` its length.
      tokens: ``(N,)`` int32 encoding of the text.

    Example:
      >>> corpus = TextCorpus("abracadabra" * 3, train_fraction=0.8)
      >>> corpus.decode(corpus.encode("cab"))
      'cab'
      >>> train, valid = corpus.split()
      >>> len(train), len(valid)
      (26, 7)
    """

    def __init__(
        self, text: str, vocab: Optional[Sequence[str]] = None, *, train_fraction: float = 0.9
    ):
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        if not text:
            raise ValueError("text must not be empty; got an empty string")
        self._vocabulary = Vocabulary(sorted(set(text)) if vocab is None else vocab)
        self.vocab = self._vocabulary.vocab
        self.tokens = self.encode(text)
        self.train_fraction = self._fraction(train_fraction, allow_one=True)

    @staticmethod
    def _fraction(fraction, allow_one=False):
        ok = isinstance(fraction, (int, float, np.floating)) and not isinstance(fraction, bool)
        hi = 1.0 if allow_one else np.nextafter(1.0, 0.0)
        if not ok or not 0.0 < float(fraction) <= hi:
            raise ValueError(
                f"fraction must be a float in (0, 1{']' if allow_one else ')'}; got {fraction!r}"
            )
        return float(fraction)

    @classmethod
    def from_file(
        cls,
        path,
        vocab: Optional[Sequence[str]] = None,
        encoding: str = "utf-8",
        *,
        train_fraction: float = 0.9,
    ) -> "TextCorpus":
        """Read the corpus from the plain text file at ``path``."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"text file {os.path.abspath(path)} does not exist")
        try:
            with open(path, encoding=encoding) as f:
                text = f.read()
        except UnicodeDecodeError as err:
            raise ValueError(
                f"text file {os.path.abspath(path)} is not valid {encoding}: {err}"
            ) from err
        if not text:
            raise ValueError(f"text file {os.path.abspath(path)} is empty")
        return cls(text, vocab, train_fraction=train_fraction)

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    @property
    def vocabulary(self) -> Vocabulary:
        """The :class:`Vocabulary` (``encode``, ``decode``) of the corpus."""
        return self._vocabulary

    def config(self) -> dict:
        """A JSON-clean record of what encoding and decoding need (the vocabulary), kept
        in a checkpoint directory by ``rnnjax.Checkpointer(..., data=corpus)`` and given
        back by ``rnnjax.load_run(directory).vocabulary``."""
        return {"kind": "TextCorpus", "vocab": list(self.vocab)}

    def encode(self, text: str) -> np.ndarray:
        """Characters -> ``(len(text),)`` int32 indices (:meth:`Vocabulary.encode`)."""
        return self._vocabulary.encode(text)

    def decode(self, ids) -> str:
        """Indices -> text (:meth:`Vocabulary.decode`)."""
        return self._vocabulary.decode(ids)

    def _n_train(self) -> int:
        return int(len(self.tokens) * self.train_fraction)

    def split(self, fraction: Optional[float] = None):
        """``(train, valid)`` token streams: the first ``fraction`` and the rest.

        Args:
          fraction: the training share in ``(0, 1)``; default the corpus's
            ``train_fraction``. Giving one sets ``train_fraction``, so :meth:`batch`
            keeps drawing from the training part returned here.
        """
        if fraction is not None:
            self.train_fraction = self._fraction(fraction)
        n = self._n_train()
        return self.tokens[:n], self.tokens[n:]

    @property
    def train_tokens(self) -> np.ndarray:
        """The training part ``(N_train,)``."""
        return self.tokens[: self._n_train()]

    @property
    def valid_tokens(self) -> np.ndarray:
        """The validation part ``(N - N_train,)`` (empty with ``train_fraction=1``)."""
        return self.tokens[self._n_train() :]

    def batch(self, position: int, batch_size: int, seq_len: int, *, seed: int = 0) -> dict:
        """Random windows of the training part for data position ``position``
        (see :func:`window_batch`); no window reaches into the validation part."""
        return window_batch(self.train_tokens, position, batch_size, seq_len, seed=seed)

    def streams(self, batch_size: int, seq_len: int, part: str = "train") -> StreamBatcher:
        """The training or validation part as :class:`StreamBatcher` streams.

        Args:
          batch_size: ``B`` streams; seq_len: ``T``; part: ``"train"`` or ``"valid"``.
        """
        if part not in ("train", "valid"):
            raise ValueError(f"part must be 'train' or 'valid'; got {part!r}")
        return StreamBatcher(
            self.train_tokens if part == "train" else self.valid_tokens, batch_size, seq_len
        )
