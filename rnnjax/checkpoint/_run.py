"""A run rebuilt from its checkpoint directory alone: :class:`Run` and :func:`load_run`."""

from __future__ import annotations

import os
from typing import Any, NamedTuple, Optional

import numpy as np

from rnnjax.checkpoint._checkpointer import Checkpointer
from rnnjax.checkpoint._files import (
    CONFIG_NAME,
    RANKING_NAME,
    CheckpointError,
    _check_leaves,
    _directory,
    _first_line,
    _read_json,
    _step_arg,
    load_config,
)
from rnnjax.checkpoint._options import BEST_MODES


class Run(NamedTuple):
    """A run rebuilt from its checkpoint directory by :func:`load_run`.

    Attributes:
      trainer: the :class:`rnnjax.train.Trainer` (its ``model`` is the architecture).
      state: the restored :class:`rnnjax.train.TrainState` (``state.params``).
      step: the checkpoint step (data position) restored.
      config: the whole config saved with the run.

    Example:
      >>> from rnnjax.checkpoint import Run
      >>> Run._fields
      ('trainer', 'state', 'step', 'config')
      >>> run = load_run("/tmp/char_lm")  # doctest: +SKIP
      >>> run.step, run.trainer.model  # doctest: +SKIP
    """

    trainer: Any
    state: Any
    step: int
    config: dict

    @property
    def vocabulary(self):
        """The vocabulary recorded with ``Checkpointer(data=corpus)`` (a
        :class:`rnnjax.tasks.language.Vocabulary`: ``encode``, ``decode``), or ``None``."""
        from rnnjax.tasks.language import Vocabulary

        data = self.config.get("data") if isinstance(self.config, dict) else None
        if not isinstance(data, dict) or "vocab" not in data:
            return None
        return Vocabulary.from_config(data)


def load_run(directory, step: Optional[int] = None, *, best: bool = False) -> Run:
    """Rebuild a run from its checkpoint directory alone: model, params, trainer, state.

    The directory must have been written by a :class:`Checkpointer` given the trainer
    (``Checkpointer(directory, trainer=trainer)``), which records the model's
    architecture and the training settings. Nothing about the run is needed in code.

    Args:
      directory: the checkpoint directory.
      step: which checkpoint; default the latest (or the best with ``best=True``).
      best: restore the best checkpoint by the metric it was ranked by.

    Returns:
      A :class:`Run` ``(trainer, state, step, config)``; ``trainer.model`` and
      ``state.params`` are the model and its parameters. Resuming with
      ``fit(run.trainer, run.state, ...)`` continues the run exactly.

    Raises:
      FileNotFoundError: no directory, config or checkpoint, or no checkpoint ``step``.
      TypeError: ``step`` is not an int, ``best`` not a bool.
      ValueError: ``step < 0``, ``step`` together with ``best=True``, ``best=True`` for
        checkpoints never ranked, or the config holds no trainer record.
      CheckpointError: a file of the directory (config, ranking, metrics, integrity
        record, arrays) cannot be read as written; the message names the file.

    Example:
      >>> run = load_run("/tmp/char_lm")  # doctest: +SKIP
      >>> logits = run.trainer.model.apply(run.state.params, tokens)[1]  # doctest: +SKIP
    """
    from rnnjax.train import Trainer

    if step is not None:
        step = _step_arg(step)
    if not isinstance(best, (bool, np.bool_)):
        raise TypeError(f"best must be a bool (True: the best checkpoint); got {best!r}")
    if best and step is not None:
        raise ValueError(f"pass step or best=True, not both; got step={step} and best=True")
    directory = _directory(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory {directory} does not exist")
    config = load_config(directory)
    config_path = os.path.join(directory, CONFIG_NAME)
    if "trainer" not in config:
        raise ValueError(
            f"the config at {config_path} holds no trainer record; "
            "write checkpoints with Checkpointer(directory, trainer=trainer)"
        )
    try:
        trainer = Trainer.from_config(config["trainer"])
    except CheckpointError:
        raise
    except Exception as err:
        raise CheckpointError(
            f"the trainer record in {config_path} cannot be rebuilt (expected the record "
            f"of Trainer.config()): {type(err).__name__}: {_first_line(err)}"
        ) from err
    best_metric, best_mode = None, "min"
    if best:
        metrics = _ranking_metric(directory)
        if metrics is None:
            raise ValueError(
                f"best=True but the checkpoints in {directory} were not ranked by a metric"
            )
        best_metric, best_mode = metrics
    with Checkpointer(
        directory,
        config=config,
        create=False,
        best_metric=best_metric,
        best_mode=best_mode,
    ) as ckpt:
        steps = ckpt._reload()
        if step is None:
            step = ckpt.best_step() if best else (steps[-1] if steps else None)
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint in {directory}" + (" ranked by a finite metric" if best else "")
                )
        elif step not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} at {ckpt.step_path(step)}; available steps: {steps}"
            )
        leaves = ckpt._integrity(step).get("leaves") or {}
        _check_leaves(leaves, ckpt.step_path(step))
        carry_b = [
            shape[0] for name, (_, shape) in leaves.items() if name.startswith(".carry") and shape
        ]
        target = trainer.abstract_state(batch_size=carry_b[0] if carry_b else None)
        state = ckpt.restore(target, step)
    return Run(trainer, state, int(step), config)


def _ranking_metric(directory):
    path = os.path.join(directory, RANKING_NAME)
    if not os.path.exists(path):
        return None
    expected = 'a JSON object {"best_metric": <name>, "best_mode": "min" or "max"}'
    rec = _read_json(path, expected)
    metric, mode = rec.get("best_metric"), rec.get("best_mode")
    if not isinstance(metric, str) or mode not in BEST_MODES:
        raise CheckpointError(f"{path} is damaged: expected {expected}; got {rec}")
    return metric, mode
