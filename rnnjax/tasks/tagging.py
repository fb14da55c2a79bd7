"""A tagging task whose labels depend on later tokens, and the bound of a causal tagger.

The label of token ``t`` is ``(x_t + x_{t+d}) mod V``: it needs the token ``d`` steps
ahead. A causal (unidirectional, left-to-right) tagger sees ``x_{0..t}`` only; the future
token is uniform and independent of them, so at a position with a future it can do no
better than chance ``1 / V``; the last ``d`` positions of a sequence (no future) are
labelled ``x_t`` and are fully predictable. :func:`future_blind_bound` computes the best
accuracy any causal tagger can reach; a bidirectional tagger can reach 1.

Shapes: ``B`` batch, ``T`` time.
"""

from __future__ import annotations

import numpy as np

__all__ = ["future_tagging", "future_blind_bound"]


def _check_int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {v!r}")


def _labels(x: np.ndarray, d: int, V: int, length: np.ndarray) -> np.ndarray:
    B, T = x.shape
    y = x.copy()
    t = np.arange(T)[None, :]
    ahead = np.concatenate([x[:, d:], np.zeros((B, d), x.dtype)], axis=1)
    has_future = t + d < length[:, None]
    y = np.where(has_future, (x + ahead) % V, x)
    return np.where(t < length[:, None], y, 0).astype(np.int32)


def future_tagging(
    batch_size: int, T: int, *, vocab_size: int = 4, delay: int = 1, min_length=None, seed=0
) -> dict:
    """A batch of the future-dependent tagging task.

    Args:
      batch_size: ``B``.
      T: padded sequence length.
      vocab_size: ``V``: tokens and labels are in ``0..V-1``.
      delay: ``d >= 1``, how far ahead the label looks.
      min_length: if given, lengths are uniform in ``[min_length, T]`` (padding with 0);
        default all sequences have length ``T``.
      seed: an int or a tuple of ints for ``numpy.random.default_rng``.

    Returns:
      ``{"inputs": (B, T) int32, "targets": (B, T) int32, "length": (B,) int32}``; the
      label of position ``t < length`` is ``(x_t + x_{t+d}) mod V`` when ``t + d < length``,
      else ``x_t``.

    Example:
      >>> from rnnjax.tasks.tagging import future_tagging
      >>> batch = future_tagging(2, 6)
      >>> batch["inputs"].shape, batch["targets"].shape      # (B, T), (B, T)
      ((2, 6), (2, 6))
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("T", T, 1)
    _check_int("vocab_size", vocab_size, 2)
    _check_int("delay", delay, 1)
    rng = np.random.default_rng(seed)
    x = rng.integers(0, vocab_size, size=(batch_size, T)).astype(np.int32)
    if min_length is None:
        length = np.full((batch_size,), T, np.int32)
    else:
        _check_int("min_length", min_length, 1)
        if min_length > T:
            raise ValueError(f"min_length must be <= T = {T}; got {min_length}")
        length = rng.integers(min_length, T + 1, size=batch_size).astype(np.int32)
    x = np.where(np.arange(T)[None, :] < length[:, None], x, 0).astype(np.int32)
    return {"inputs": x, "targets": _labels(x, delay, vocab_size, length), "length": length}


def future_blind_bound(length, *, vocab_size: int = 4, delay: int = 1) -> float:
    r"""The highest expected token accuracy of any causal tagger on :func:`future_tagging`.

    Of the ``n`` real tokens of a sequence, ``max(n - d, 0)`` have a future (accuracy at
    most ``1 / V``: the label is a bijection of the unseen, uniform ``x_{t+d}``) and
    ``min(n, d)`` have none (accuracy 1). Averaged over all real tokens of ``length``:

    .. math::

        \frac{\sum_b \big[\max(n_b - d, 0) / V + \min(n_b, d)\big]}{\sum_b n_b}.

    Args:
      length: an int ``T`` or an array of lengths ``(B,)``.
      vocab_size: ``V``.
      delay: ``d``.

    Returns:
      The bound, a float in ``(0, 1]``.

    Example:
      >>> from rnnjax.tasks.tagging import future_blind_bound
      >>> round(future_blind_bound(10), 4)
      0.325
    """
    _check_int("vocab_size", vocab_size, 2)
    _check_int("delay", delay, 1)
    n = np.atleast_1d(np.asarray(length, np.int64))
    if n.ndim != 1 or n.size == 0 or n.min() < 0 or n.sum() == 0:
        raise ValueError(
            f"length must be an int >= 1 or a non-empty array of lengths >= 0 with a positive sum; got {length!r}"
        )
    with_future = np.maximum(n - delay, 0)
    return float((with_future / vocab_size + np.minimum(n, delay)).sum() / n.sum())
