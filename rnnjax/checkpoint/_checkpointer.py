"""The :class:`Checkpointer`: orbax checkpoints of the whole train state."""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

import rnnjax.checkpoint._files as _files
from rnnjax import checks
from rnnjax.checkpoint._files import (
    ANOTHER_RUN,
    CheckpointError,
    _abstract,
    _barrier,
    _check_integrity,
    _check_target,
    _damaged_json,
    _directory,
    _first_line,
    _leaf_specs,
    _metric_values,
    _step_arg,
    check_finite,
    clear_run,
    config_mismatch,
    load_config,
    state_digest,
)
from rnnjax.checkpoint._options import (
    CheckpointOptions,
    check_saved_config,
    open_manager,
    run_record,
    write_shared_files,
)

_OPTION_NAMES = frozenset(f.name for f in dataclasses.fields(CheckpointOptions))


class Checkpointer:
    """Save and restore a :class:`rnnjax.train.TrainState` with an orbax ``CheckpointManager``.

    Checkpoint steps are data positions (``state.position``, batches consumed).

    Args:
      directory: where the checkpoints go (created when ``create=True``).
      save_every: save when the position is a multiple of this (default 100;
        ``save(force=True)`` always saves).
      save_interval_s: also save when this many seconds have passed since the last save
        (or since the checkpointer was made), whatever the position; default 300 (five
        minutes); ``None`` for batch counts only. With several processes, process 0's
        clock decides for all.
      keep_last: keep the last this many checkpoints.
      best_metric: optional name of a metric passed to :meth:`save`; the best checkpoint
        by it is kept as well (see :meth:`best_step`).
      best_mode: ``"min"`` (default) or ``"max"``.
      config: optional JSON-serialisable dict, written as ``config.json`` beside the
        checkpoints. An existing different config is an error listing the fields that
        differ (a resumed run must be the same run); the copy in every checkpoint's
        integrity record is checked too, so deleting ``config.json`` does not bypass
        the check.
      trainer: optional :class:`rnnjax.train.Trainer`; its :meth:`~rnnjax.train.Trainer.config`
        (the model's architecture and the training settings) is stored as the config's
        ``"trainer"`` entry, so :func:`load_run` can rebuild the run from the directory
        alone.
      async_save: write in a background thread where orbax allows (call :meth:`wait`
        or :meth:`close` before reading the files).
      create: create ``directory`` if missing; with ``False`` a missing directory is a
        ``FileNotFoundError`` (use this when resuming).
      data: optional data source whose ``config()`` is a JSON-clean dict recording what
        encoding and decoding need (a :class:`rnnjax.tasks.language.TextCorpus` records
        its vocabulary), stored as the config's ``"data"`` entry; :func:`load_run` gives
        it back as :attr:`Run.vocabulary`.
      overwrite: delete the checkpoints, ``config.json`` and ``ranking.json`` already in
        ``directory`` first (other files stay), so that a new run replaces the one saved
        there. Default ``False``: a run never drops another one silently (see
        :meth:`check_start`).

    The settings are kept as ``options`` (a frozen :class:`rnnjax.checkpoint.CheckpointOptions`).

    A directory holds one run. A run that would not continue the one saved there (a
    fresh state, or a state older than the newest checkpoint) is refused by
    :func:`rnnjax.fit` before its first step (:meth:`check_start`), and :meth:`save`
    never replaces a checkpoint of another state: start a new directory, resume with
    :meth:`restore_or_init`, or pass ``overwrite=True``.

    Example:
      >>> ckpt = Checkpointer("/tmp/run", save_every=100, keep_last=2, best_metric="loss",
      ...                     config={"lr": 1e-3})  # doctest: +SKIP
      >>> ckpt.save(state, metrics={"loss": 0.5})  # doctest: +SKIP
      >>> state = ckpt.restore(trainer.abstract_state())  # doctest: +SKIP
    """

    def __init__(
        self,
        directory,
        *,
        save_every: int = 100,
        save_interval_s: Optional[float] = 300.0,
        keep_last: int = 3,
        best_metric: Optional[str] = None,
        best_mode: str = "min",
        config: Optional[dict] = None,
        trainer=None,
        async_save: bool = True,
        create: bool = True,
        data=None,
        overwrite: bool = False,
    ):
        self.options = CheckpointOptions(
            save_every, save_interval_s, keep_last, best_metric, best_mode, async_save
        )
        self.config = run_record(config, trainer, data)
        create = checks.boolean("create", create)
        overwrite = checks.boolean("overwrite", overwrite)
        self.directory = _directory(directory)
        if not create and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        if _files._primary():
            os.makedirs(self.directory, exist_ok=True)
        _barrier(f"rnnjax.checkpoint.mkdir:{self.directory}")
        if overwrite:
            clear_run(self.directory)
        self._last_save = time.monotonic()
        self._saved = set()  # the steps this checkpointer wrote
        self._manager = open_manager(self.directory, self.options)
        # Every process checks; only process 0 writes the shared files, and the others
        # wait for it (no two processes ever write one file).
        if self.config is not None:
            self._guard_config(self.config)
            check_saved_config(self.directory, self.config)
        if _files._primary():
            write_shared_files(self.directory, self.config, self.options)
        _barrier(f"rnnjax.checkpoint.config:{self.directory}")

    def __getattr__(self, name):
        # the settings were attributes before they were options: aliases for one release
        if name in _OPTION_NAMES:
            warnings.warn(
                f"Checkpointer.{name} is deprecated; use Checkpointer.options.{name}",
                DeprecationWarning,
                stacklevel=2,
            )
            return getattr(self.options, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # ------------------------------------------------------------------ config
    def _integrity(self, step: int) -> dict:
        """The integrity record of checkpoint ``step`` (digest, config, leaf dtypes)."""
        path = self.step_path(step)
        try:
            rec = self._manager.restore(
                step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())
            ).integrity
        except Exception as err:
            raise CheckpointError(
                f"checkpoint at {path} is damaged: its integrity record cannot be read "
                f"(expected the JSON record written at save time): "
                f"{type(err).__name__}: {_first_line(err)}"
            ) from err
        _check_integrity(rec, step, path)
        return rec

    def _guard_config(self, config: dict) -> None:
        """A resumed run must be the same run: compare ``config`` with the copy in the
        newest checkpoint's integrity record (checked even when ``config.json`` is gone)."""
        for step in reversed(self.all_steps()):
            try:
                rec = self._integrity(step)
            except CheckpointError:
                continue  # a damaged checkpoint is reported when it is restored
            self._check_recorded_config(rec, step, config)
            return

    def _check_recorded_config(self, rec: dict, step: int, config) -> None:
        recorded = rec.get("config")
        if config is not None and recorded is not None and config != recorded:
            where = f"recorded in the checkpoint at {self.step_path(step)}"
            raise config_mismatch(where, recorded, config)

    def _holds(self, step: int, state) -> bool:
        """Whether checkpoint ``step`` holds ``state`` (by the digests; taken as yes where
        a digest cannot be taken: arrays not all addressable from this process)."""
        want, got = self._integrity(step)["sha256"], state_digest(state)
        return want is None or got is None or got == want

    def check_start(self, state) -> None:
        """Refuse to train from ``state`` into this directory unless that continues the
        run saved here (:func:`rnnjax.fit` calls it before its first step).

        A run continues the saved one when no checkpoint is newer than
        ``state.position`` and a checkpoint at that position holds this very state
        (the one restored from it). Otherwise its saves would collide with the
        checkpoints already there, which a checkpointer never replaces.

        Raises:
          ValueError: the directory holds checkpoints at or past ``state.position`` of
            another state (another run, a fresh start, or an older checkpoint of this
            one); the message says what to do: a new directory, resuming
            (:meth:`restore_or_init`), or ``overwrite=True``.

        Example:
          >>> import tempfile, jax, rnnjax as rj
          >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5))
          >>> state = trainer.init(jax.random.key(0))
          >>> ckpt = Checkpointer(tempfile.mkdtemp(), async_save=False)
          >>> ckpt.save(state._replace(position=jax.numpy.asarray(2)), force=True)
          True
          >>> try:
          ...     ckpt.check_start(state)                 # a fresh state: not this run
          ... except ValueError as e:
          ...     print(str(e).split(":")[0])
          a run starting at position 0 would not continue the one in this directory
        """
        if not hasattr(state, "position"):
            raise TypeError(f"state must be an rnnjax.train.TrainState; got {type(state).__name__}")
        position = checks.step_position("state.position", state.position)
        steps = self.all_steps()
        if not steps or steps[-1] < position:
            return
        if steps[-1] == position and self._holds(position, state):
            return
        raise ValueError(
            f"a run starting at position {position} would not continue the one in this "
            f"directory: {self.directory} holds checkpoints at steps {steps}"
            + (f" (step {position} of another state)" if position in steps else "")
            + f", which its own saves would collide with. To go on with that run, restore "
            f"it (state = checkpointer.restore_or_init(trainer, key)); otherwise {ANOTHER_RUN}"
        )

    # ------------------------------------------------------------------ save
    def save(self, state, metrics: Optional[dict] = None, *, force: bool = False) -> bool:
        """Save ``state`` at step ``state.position`` if the interval says so (or ``force``).

        Args:
          state: a :class:`rnnjax.train.TrainState` (any pytree with ``position``).
          metrics: optional dict of floats recorded with the checkpoint (must contain
            ``best_metric`` when one is set).
          force: save regardless of the interval.

        Returns:
          Whether a checkpoint was started (``False`` too when this state is saved at
          its step already).

        Raises:
          TypeError: ``state`` has no ``position``; ``metrics`` is not a dict of real
            scalars.
          ValueError: the state has NaN/Inf, ``best_metric`` is missing, or a
            checkpoint of another state is saved at this step (never replaced).
        """
        if not hasattr(state, "position"):
            raise TypeError(
                "state must be an rnnjax.train.TrainState (a pytree with a data position, "
                f"state.position); got {type(state).__name__}"
            )
        step = checks.step_position("state.position", state.position)
        force = checks.boolean("force", force)
        if metrics is not None:
            # a non-finite value is kept as recorded; it never ranks (see best_step)
            metrics = _metric_values(metrics)
        if step in self._manager.all_steps():
            if step in self._saved or self._holds(step, state):
                return False
            raise ValueError(
                f"a checkpoint of another state is saved at step {step} in "
                f"{self.directory}; it is never replaced: {ANOTHER_RUN}"
            )
        if not force and not self._manager.should_save(step) and not self._time_to_save():
            return False
        check_finite(state)
        best = self.options.best_metric
        if best is not None and (metrics is None or best not in metrics):
            raise ValueError(
                f"metrics must contain best_metric {best!r}; got "
                f"{None if metrics is None else sorted(metrics)}"
            )
        integrity = {
            "sha256": state_digest(state),
            "step": step,
            "config": self.config,
            "leaves": _leaf_specs(state),
        }
        self._last_save = time.monotonic()
        started = self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), integrity=ocp.args.JsonSave(integrity)
            ),
            metrics=metrics,
            force=True,
        )
        self._saved.add(step)
        return started

    def _time_to_save(self) -> bool:
        """Whether ``save_interval_s`` has passed since the last save (process 0 decides
        for every process, so that all of them take part in the same saves)."""
        if self.options.save_interval_s is None:
            return False
        due = time.monotonic() - self._last_save >= self.options.save_interval_s
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
        return due

    # ------------------------------------------------------------------ restore
    def all_steps(self) -> list:
        """The steps (data positions) of the kept checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> Optional[int]:
        """The newest checkpoint's step, or ``None`` when there is none."""
        return self._manager.latest_step()

    def best_step(self) -> Optional[int]:
        """The step of the best checkpoint by ``best_metric`` (``None`` without one)."""
        metric = self.options.best_metric
        if metric is None:
            return None
        best = None
        for step in self.all_steps():
            m = self._metrics(step)
            if not isinstance(m, dict):  # a ranked checkpoint always has its metrics
                raise CheckpointError(
                    f"checkpoint metrics at {os.path.join(self.step_path(step), 'metrics')} "
                    f"are missing or damaged: expected the dict of metrics (with "
                    f"{metric!r}) written at save time; got {m!r:.80}"
                )
            v = float(m.get(metric, math.nan))
            if not math.isfinite(v):
                continue  # a NaN or Inf metric never ranks a checkpoint
            if best is None or self.options.better(v, best[0]):
                best = (v, step)
        return None if best is None else best[1]

    def _metrics(self, step: int):
        """The metrics recorded with checkpoint ``step`` (orbax's ``metrics`` file)."""
        try:
            return self._manager.metrics(step)
        except Exception as err:
            path = os.path.join(self.step_path(step), "metrics")
            raise CheckpointError(
                f"checkpoint metrics at {path} are damaged: expected the JSON dict of "
                f"metrics written at save time; {type(err).__name__}: {_first_line(err)}"
            ) from err

    def _reload(self) -> list:
        """Re-read the directory; the kept steps, ascending. A step directory that
        orbax does not recognise as a checkpoint, newer than every one it does, is a
        damaged checkpoint (never a silent fall back to an older step)."""
        try:
            self._manager.reload()
            steps = self.all_steps()
        except Exception as err:
            raise CheckpointError(
                f"checkpoint directory {self.directory} cannot be read by orbax: "
                f"{type(err).__name__}: {_first_line(err)}{_damaged_json(self.directory)}"
            ) from err
        dirs = [int(n) for n in os.listdir(self.directory) if n.isdigit()]
        newer = [d for d in dirs if not steps or d > steps[-1]]
        if newer:
            raise CheckpointError(
                f"checkpoint at {self.step_path(max(newer))} is damaged: orbax does not "
                f"recognise it as a finished checkpoint (its metadata is missing or "
                f"unreadable); the readable steps are {steps}"
            )
        return steps

    def step_path(self, step: int) -> str:
        """The directory of checkpoint ``step``.

        Example:
          >>> import tempfile
          >>> ckpt = Checkpointer(tempfile.mkdtemp(), async_save=False)
          >>> ckpt.step_path(3).endswith("3")
          True
        """
        return os.path.join(self.directory, str(step))

    def restore(self, target, step: Optional[int] = None):
        """Restore a checkpoint into the structure of ``target``.

        Args:
          target: the abstract state (``trainer.abstract_state()``, i.e.
            ``jax.eval_shape`` of the initial state; leaves may carry a sharding) or a
            concrete state of the same structure. A stateful run's ``carry`` must be in
            it with the saved shapes.
          step: which checkpoint; default the latest.

        Returns:
          The restored state, with the structure (NamedTuples included) of ``target``.

        Raises:
          TypeError: ``target`` has no arrays (e.g. ``None``), or ``step`` is not an int;
            ``ValueError``: ``step < 0``.
          FileNotFoundError: the directory has no checkpoint, or not ``step``.
          CheckpointError: the checkpoint is damaged (unreadable, or its digest differs).
        """
        if not jax.tree_util.tree_leaves(target):
            raise TypeError(
                "target must be the state to restore into, e.g. trainer.abstract_state() "
                f"(or use ckpt.restore_or_init(trainer, key)); got {checks.describe(target)}"
            )
        self.wait()
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        if step is not None:
            step = _step_arg(step)
        steps = self._reload()
        if step is None:
            if not steps:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
            step = steps[-1]
        path = self.step_path(step)
        if step not in steps or not os.path.isdir(path):
            raise FileNotFoundError(
                f"no checkpoint for step {step} at {path}; available steps: {steps}"
            )
        rec = self._integrity(step)
        self._check_recorded_config(rec, step, self.config)
        target = self._with_carry(target, rec, path)
        _check_target(rec.get("leaves"), target, path)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(_abstract(target)),
                    integrity=ocp.args.JsonRestore(),
                ),
            )
        except Exception as err:
            raise CheckpointError(
                f"checkpoint at {path} is damaged or does not match the target structure: "
                f"{type(err).__name__}: {_first_line(err)}"
            ) from err
        state, integrity = restored.state, restored.integrity
        _check_integrity(integrity, step, path)
        want = integrity["sha256"]
        if want is not None:
            got = state_digest(state)
            if got is not None and got != want:
                raise CheckpointError(
                    f"checkpoint at {path} is damaged: the restored state's SHA-256 {got} differs "
                    f"from the one recorded at save time {want}"
                )
        return state

    def restore_or_init(self, trainer, key, *, target=None):
        """Resume or start in one call: the latest checkpoint when the directory holds
        one, else a fresh ``trainer.init(key)``.

        The same script then serves a first start and every restart after a stop (the
        idiom of Lightning's ``ckpt_path="last"`` and Keras's ``BackupAndRestore``);
        :func:`rnnjax.fit` from the returned state continues at its position.

        Args:
          trainer: the :class:`rnnjax.train.Trainer` of the run.
          key: the ``jax.random.key`` of a fresh start (unused when resuming: the
            restored state holds its own).
          target: the restore target; default ``trainer.abstract_state()`` (a stateful
            run's carry is read from the checkpoint). With several processes pass
            :func:`rnnjax.distributed.abstract_state`.

        Returns:
          The restored :class:`rnnjax.train.TrainState`, or a fresh one at position 0.

        Raises:
          CheckpointError: the newest checkpoint is damaged (never a silent fresh start).

        Example:
          >>> import tempfile, jax, jax.numpy as jnp, rnnjax as rj
          >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5))
          >>> def data(i):
          ...     tokens = (jnp.arange(12).reshape(2, 6) + i) % 5
          ...     return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
          >>> directory = tempfile.mkdtemp()
          >>> for total in (2, 4):                          # the same script, run twice
          ...     with Checkpointer(directory, trainer=trainer, save_every=2) as ckpt:
          ...         state = ckpt.restore_or_init(trainer, jax.random.key(0))
          ...         print("starts at", int(state.position))
          ...         state, _ = rj.fit(trainer, state, data, total, checkpointer=ckpt,
          ...                           progress=False)
          starts at 0
          starts at 2
        """
        if not all(callable(getattr(trainer, a, None)) for a in ("init", "abstract_state")):
            raise TypeError(
                f"trainer must be an rnnjax.train.Trainer; got {type(trainer).__name__}"
            )
        self.wait()
        if os.path.isdir(self.directory) and self._reload():
            return self.restore(trainer.abstract_state() if target is None else target)
        return trainer.init(key)

    def _with_carry(self, target, rec: dict, path: str):
        """A target with ``carry=None`` for a checkpoint that holds a carry (a stateful
        run): the carry's shapes come from the checkpoint (its batch size) and its
        structure from the trainer recorded in the config."""
        if getattr(target, "carry", 0) is not None or not hasattr(target, "_replace"):
            return target
        sizes = sorted(
            {
                shape[0]
                for name, (_, shape) in (rec.get("leaves") or {}).items()
                if name.startswith(".carry") and shape
            }
        )
        if not sizes:
            return target
        try:
            from rnnjax.train import Trainer

            config = self.config if self.config is not None else load_config(self.directory)
            trainer = Trainer.from_config(config["trainer"])
            return target._replace(carry=trainer.abstract_state(batch_size=sizes[0]).carry)
        except Exception as err:
            raise ValueError(
                f"the checkpoint at {path} holds the recurrent carry of a stateful run "
                f"(batch size {sizes[0]}) and the restore target has carry=None, and no "
                "trainer is recorded with it to rebuild the carry; restore into "
                f"trainer.abstract_state(batch_size={sizes[0]})"
            ) from err

    # ------------------------------------------------------------------ lifecycle
    def wait(self) -> None:
        """Block until asynchronous saves have finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Finish pending saves and release the manager."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
