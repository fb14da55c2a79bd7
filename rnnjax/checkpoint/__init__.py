"""Checkpoints of the whole train state with orbax: save, restore, resume exactly.

:class:`Checkpointer` wraps an orbax ``CheckpointManager``:

- it saves the whole :class:`rnnjax.train.TrainState` (step, data position, params,
  optimiser state, RNG key, carry) every ``save_every`` batches (default 100) or when
  ``save_interval_s`` seconds (default 300) have passed since the last save, whichever
  comes first (and when forced, e.g. after an evaluation and at the end of a run),
  asynchronously where orbax allows;
- it keeps the last ``keep_last`` checkpoints and the best one by a metric
  (``LatestN`` and ``BestN`` preservation policies);
- it writes the run's config as ``config.json`` beside the checkpoints, with the
  trainer's record (the model's architecture and the training settings, see
  :meth:`rnnjax.train.Trainer.config`) when given ``trainer=``, so that
  :func:`load_run` rebuilds model, params and trainer from the directory alone; the
  config is also kept in every checkpoint's integrity record and checked on resume;
- a metric that is NaN or Inf never ranks a checkpoint (it is never the best);
- it restores with an abstract target (``jax.eval_shape`` of the state, via
  ``ocp.args.StandardRestore``) so NamedTuples come back as NamedTuples;
- it refuses to save a state with NaN or Inf in it, and it never starts fresh silently:
  a missing directory or step is a ``FileNotFoundError``, a damaged checkpoint (a file
  truncated, changed or deleted) a :class:`CheckpointError`, both naming the path. Every
  checkpoint carries a SHA-256 digest of the state that is checked on restore, and the
  dtype and shape of every leaf: a restore target of another dtype (bfloat16 params, say)
  is a ``ValueError`` naming the leaves, not a damaged checkpoint. Every file a
  reader opens (config, ranking, metrics, integrity record) that does not decode is a
  :class:`CheckpointError` naming the file, and a step directory whose integrity
  record is of another step (copied or renamed) is damaged, never restored as that step;
- a directory holds one run: a run that would not continue the one saved there (a
  fresh state, or one older than the newest checkpoint) is refused before its first
  step, and a checkpoint of another state is never replaced; a config that differs
  from the saved one is an error listing the fields that differ.
  :meth:`Checkpointer.restore_or_init` resumes or starts in one call, and
  ``overwrite=True`` deletes the run saved there first;
- with several processes (``jax.distributed``) every process constructs the same
  ``Checkpointer`` and saves at the same steps: orbax writes the arrays with its own
  multi-process protocol, process 0 alone writes ``config.json`` and ``ranking.json``
  (the others wait at a barrier), so no two processes ever write one file.
"""

from __future__ import annotations

from rnnjax.checkpoint._checkpointer import Checkpointer
from rnnjax.checkpoint._files import CheckpointError, check_finite, load_config, state_digest
from rnnjax.checkpoint._options import CheckpointOptions
from rnnjax.checkpoint._run import Run, load_run

__all__ = [
    "Checkpointer",
    "CheckpointOptions",
    "CheckpointError",
    "Run",
    "load_run",
    "load_config",
    "state_digest",
    "check_finite",
]
