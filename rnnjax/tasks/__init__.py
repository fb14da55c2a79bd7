"""Synthetic tasks and small data sets for recurrent networks; nothing downloads.

- :mod:`rnnjax.tasks.long_range`: the adding problem and the copy task (batches of
  ``(B, T, I)`` inputs with their targets).
- :mod:`rnnjax.tasks.mackey_glass`, :mod:`rnnjax.tasks.narma`, :mod:`rnnjax.tasks.memory`:
  time series and the memory-capacity task for echo state networks (``(T, I)`` series).
- :mod:`rnnjax.tasks.language`: a Markov language source with a known entropy rate and a
  character corpus from a string or a text file.
- :mod:`rnnjax.tasks.seq2seq_tasks`: reversal, sorting and date formats for
  sequence-to-sequence models, with their accuracy measures.
- :mod:`rnnjax.tasks.tagging`: future-dependent tagging (what a causal tagger cannot do).
- :mod:`rnnjax.tasks.digits`: scikit-learn's digits as row or pixel sequences (needs the
  ``digits`` extra).

The submodules are imported with the package (``rnnjax.tasks.mackey_glass.mackey_glass``
works after ``import rnnjax``; ``digits`` on first use). Every generator takes a ``seed`` and returns NumPy arrays (a dict of ``"inputs"`` and
``"targets"``, or a NamedTuple); shapes use ``B`` batch and ``T`` time.

Example:
  >>> from rnnjax.tasks import long_range
  >>> batch = long_range.adding_problem(2, 8, seed=0)
  >>> sorted(batch), batch["inputs"].shape
  (['inputs', 'targets'], (2, 8, 2))
"""

import importlib as _importlib

from rnnjax.tasks import (
    chaos,
    language,
    long_range,
    lorenz,
    mackey_glass,
    memory,
    narma,
    seq2seq_tasks,
    tagging,
)

__all__ = [
    "chaos",
    "digits",
    "language",
    "long_range",
    "lorenz",
    "mackey_glass",
    "memory",
    "narma",
    "seq2seq_tasks",
    "tagging",
]


def __getattr__(name):
    if name == "digits":  # scikit-learn's digits: imported on first use (the digits extra)
        return _importlib.import_module("rnnjax.tasks.digits")
    raise AttributeError(f"module 'rnnjax.tasks' has no attribute {name!r}")
