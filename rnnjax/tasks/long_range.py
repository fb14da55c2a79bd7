"""Long-range dependency tasks: the adding problem and the copy task, with their baselines.

Both generators are numpy (seeded, deterministic) and return batches in the format of
:mod:`rnnjax.train` (``{"inputs", "targets"}``).

Shapes: ``B`` batch, ``T`` the task's delay (the sequence length of the adding problem;
the blank gap of the copy task).

References:
  Hochreiter & Schmidhuber (1997). Long short-term memory. Neural Computation.
  (the adding problem, experiment 4)
  Arjovsky, Shah & Bengio (2016). Unitary evolution recurrent neural networks. ICML.
  (the copy task and its memoryless baseline)
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "adding_problem",
    "ADDING_BASELINE_MSE",
    "copy_task",
    "copy_baseline",
    "COPY_BLANK",
    "copy_delimiter",
]

ADDING_BASELINE_MSE = 1.0 / 6.0
"""MSE of always predicting 1, the mean of the target: ``Var(U1 + U2) = 2 / 12``."""

COPY_BLANK = 0
"""Token of the blank symbol of the copy task (symbols are ``1..n_symbols``)."""


def _check_int(name, v, minimum):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}; got {v!r}")


def adding_problem(batch_size: int, T: int, *, seed=0) -> dict:
    r"""A batch of the adding problem.

    Each sequence has two channels: values ``u_t ~ U(0, 1)`` and a marker that is 1 at
    exactly two positions, one drawn in the first half and one in the second half of the
    sequence; the target is the sum of the two marked values. Predicting the mean (1)
    scores :data:`ADDING_BASELINE_MSE` ``= 1/6 ~ 0.167``.

    Args:
      batch_size: ``B``.
      T: sequence length (``>= 2``).
      seed: an int or a tuple of ints for ``numpy.random.default_rng``.

    Returns:
      ``{"inputs": (B, T, 2) float32, "targets": (B, 1) float32}``.

    References:
      Hochreiter & Schmidhuber (1997), section 5.4.

    Example:
      >>> from rnnjax.tasks.long_range import adding_problem
      >>> batch = adding_problem(4, 10)
      >>> batch["inputs"].shape, batch["targets"].shape      # (B, T, 2), (B, 1)
      ((4, 10, 2), (4, 1))
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("T", T, 2)
    rng = np.random.default_rng(seed)
    u = rng.uniform(0.0, 1.0, size=(batch_size, T))
    half = T // 2
    i = rng.integers(0, half, size=batch_size)
    j = rng.integers(half, T, size=batch_size)
    marks = np.zeros((batch_size, T))
    rows = np.arange(batch_size)
    marks[rows, i] = 1.0
    marks[rows, j] = 1.0
    y = u[rows, i] + u[rows, j]
    x = np.stack([u, marks], axis=-1)
    return {"inputs": x.astype(np.float32), "targets": y[:, None].astype(np.float32)}


def copy_delimiter(n_symbols: int = 8) -> int:
    """Token of the delimiter ("start recalling") of the copy task: ``n_symbols + 1``.

    Example:
      >>> from rnnjax.tasks.long_range import copy_delimiter
      >>> copy_delimiter(8)
      9
    """
    return n_symbols + 1


def copy_task(batch_size: int, T: int, *, n_symbols: int = 8, n_copy: int = 10, seed=0) -> dict:
    r"""A batch of the copy task of Arjovsky et al. (2016).

    Input (length ``T + 2 * n_copy``): ``n_copy`` symbols drawn uniformly from
    ``1..n_symbols``, then ``T - 1`` blanks (0), the delimiter (``n_symbols + 1``) and
    ``n_copy`` blanks. Target: ``T + n_copy`` blanks, then the ``n_copy`` symbols. The
    vocabulary has ``n_symbols + 2`` tokens.

    Args:
      batch_size: ``B``.
      T: the delay (``>= 1``).
      n_symbols: size of the alphabet to copy (default 8).
      n_copy: number of symbols to copy (default 10).
      seed: an int or a tuple of ints for ``numpy.random.default_rng``.

    Returns:
      ``{"inputs": (B, T + 2 n_copy) int32, "targets": (B, T + 2 n_copy) int32}``.

    References:
      Arjovsky, Shah & Bengio (2016), section 4.1.

    Example:
      >>> from rnnjax.tasks.long_range import copy_task
      >>> batch = copy_task(2, 5)
      >>> batch["inputs"].shape, batch["targets"].shape      # (B, T + 2 * n_copy)
      ((2, 25), (2, 25))
    """
    _check_int("batch_size", batch_size, 1)
    _check_int("T", T, 1)
    _check_int("n_symbols", n_symbols, 1)
    _check_int("n_copy", n_copy, 1)
    rng = np.random.default_rng(seed)
    L = T + 2 * n_copy
    sym = rng.integers(1, n_symbols + 1, size=(batch_size, n_copy))
    x = np.full((batch_size, L), COPY_BLANK, np.int32)
    x[:, :n_copy] = sym
    x[:, T + n_copy - 1] = n_symbols + 1
    y = np.full((batch_size, L), COPY_BLANK, np.int32)
    y[:, T + n_copy :] = sym
    return {"inputs": x, "targets": y}


def copy_baseline(T: int, *, n_symbols: int = 8, n_copy: int = 10) -> float:
    r"""Cross-entropy per step (nats) of the memoryless strategy: predict blanks for the
    first ``T + n_copy`` steps, then a uniform guess over the symbols:
    ``n_copy * log(n_symbols) / (T + 2 * n_copy)`` (``10 log 8 / (T + 20)``).

    References:
      Arjovsky, Shah & Bengio (2016), section 4.1.

    Example:
      >>> from rnnjax.tasks.long_range import copy_baseline
      >>> round(copy_baseline(50), 4)                       # 10 log 8 / (T + 20)
      0.2971
    """
    _check_int("T", T, 1)
    _check_int("n_symbols", n_symbols, 1)
    _check_int("n_copy", n_copy, 1)
    return n_copy * math.log(n_symbols) / (T + 2 * n_copy)
