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
  is a ``ValueError`` naming the leaves, not a damaged checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from rnnjax import checks

__all__ = [
    "Checkpointer",
    "CheckpointError",
    "Run",
    "load_run",
    "load_config",
    "state_digest",
    "check_finite",
]

CONFIG_NAME = "config.json"
RANKING_NAME = "ranking.json"


class CheckpointError(ValueError):
    """A checkpoint exists but cannot be read back as it was written.

    Example:
      >>> from rnnjax.checkpoint import CheckpointError
      >>> issubclass(CheckpointError, Exception)
      True
    """


def _leaf_name(path) -> str:
    return jax.tree_util.keystr(path)


def check_finite(state, name: str = "state") -> None:
    """Raise ``ValueError`` naming every floating leaf of ``state`` with a NaN or Inf.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.checkpoint import check_finite
      >>> check_finite({"w": jnp.ones(2)})                 # fine: returns None
      >>> try:
      ...     check_finite({"w": jnp.array([1.0, jnp.nan])})
      ... except ValueError as e:
      ...     print("ValueError")
      ValueError
    """
    bad = []
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if hasattr(leaf, "dtype") and jnp.issubdtype(leaf.dtype, jnp.inexact):
            if not bool(jnp.all(jnp.isfinite(leaf))):
                bad.append(_leaf_name(path))
    if bad:
        raise ValueError(
            f"{name} has non-finite values (NaN or Inf) in {', '.join(bad)}; refusing to "
            "write it into a checkpoint"
        )


def state_digest(state) -> Optional[str]:
    """SHA-256 over the bytes, shapes and dtypes of every leaf (``None`` for arrays that
    are not fully addressable from this process).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.checkpoint import state_digest
      >>> a = state_digest({"w": jnp.ones(3)})
      >>> a == state_digest({"w": jnp.ones(3)}), a == state_digest({"w": jnp.zeros(3)}), len(a)
      (True, False, 64)
    """
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return None
        a = np.asarray(jax.device_get(leaf))
        h.update(_leaf_name(path).encode())
        h.update(str(a.dtype).encode())
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def load_config(directory) -> dict:
    """The config saved beside the checkpoints in ``directory`` (``config.json``).

    Example:
      >>> import json, pathlib, tempfile
      >>> from rnnjax.checkpoint import load_config
      >>> directory = tempfile.mkdtemp()
      >>> _ = (pathlib.Path(directory) / "config.json").write_text(json.dumps({"lr": 0.001}))
      >>> load_config(directory)
      {'lr': 0.001}
    """
    path = os.path.join(os.path.abspath(os.fspath(directory)), CONFIG_NAME)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no checkpoint config at {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint config {path} is damaged: {err}") from err


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(tmp, path)


def _leaf_specs(state) -> dict:
    """``{leaf path: [dtype, shape]}`` of every array leaf of ``state``."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            out[_leaf_name(path)] = [str(jnp.dtype(leaf.dtype)), list(leaf.shape)]
    return out


def _check_target(saved: Optional[dict], target, path: str) -> None:
    """Raise ``ValueError`` naming every leaf whose dtype or shape in ``target``
    differs from the saved one (a wrong target, not a damaged checkpoint)."""
    if not saved:
        return
    bad = []
    for name, (dtype, shape) in _leaf_specs(_abstract(target)).items():
        if name in saved and (saved[name][0] != dtype or list(saved[name][1]) != shape):
            bad.append(
                f"{name}: saved {saved[name][0]}{tuple(saved[name][1])}, "
                f"target {dtype}{tuple(shape)}"
            )
    if bad:
        shown = "; ".join(bad[:6]) + (f"; ... ({len(bad)} leaves)" if len(bad) > 6 else "")
        raise ValueError(
            f"the restore target does not match the checkpoint at {path} in dtype or shape: "
            f"{shown}. Restore into the saved dtypes (e.g. trainer.abstract_state()) and cast after"
        )


def _abstract(target):
    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        return x

    return jax.tree_util.tree_map(leaf, target)


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
        checkpoints. An existing different config is an error (a resumed run must be
        the same run); the copy in every checkpoint's integrity record is checked too,
        so deleting ``config.json`` does not bypass the check.
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
    ):
        save_every = checks.integer("save_every", save_every, 1)
        if save_interval_s is not None:
            save_interval_s = checks.number("save_interval_s", save_interval_s, 0.0, min_open=True)
        self.save_interval_s = save_interval_s
        self._last_save = time.monotonic()
        if data is not None:
            if not callable(getattr(data, "config", None)):
                raise TypeError(
                    "data must have a config() method returning a JSON-clean dict (a "
                    f"TextCorpus); got {type(data).__name__}"
                )
            if config is not None and not isinstance(config, dict):
                raise TypeError(f"config must be a dict; got {type(config).__name__}")
            config = dict(config or {}, data=data.config())
        keep_last = checks.integer("keep_last", keep_last, 1)
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max'; got {best_mode!r}")
        if best_metric is not None and not isinstance(best_metric, str):
            raise TypeError(f"best_metric must be a metric name (str) or None; got {best_metric!r}")
        if trainer is not None:
            if not hasattr(trainer, "config") or not callable(trainer.config):
                raise TypeError(
                    f"trainer must be an rnnjax.train.Trainer; got {type(trainer).__name__}"
                )
            if config is not None and not isinstance(config, dict):
                raise TypeError(f"config must be a dict; got {type(config).__name__}")
            recorded = trainer.config()
            if config is not None and "trainer" in config and config["trainer"] != recorded:
                raise ValueError(
                    "config['trainer'] differs from trainer.config(); pass one of them"
                )
            config = dict(config or {}, trainer=recorded)
        self.directory = os.path.abspath(os.fspath(directory))
        if not create and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        os.makedirs(self.directory, exist_ok=True)
        self.best_metric, self.best_mode = best_metric, best_mode
        self.config = config
        policies = [ocp.checkpoint_managers.LatestN(n=keep_last)]
        best_fn = None
        if best_metric is not None:
            worst = math.inf if best_mode == "min" else -math.inf

            def best_fn(m):  # a non-finite metric ranks last: it is never the best
                v = float(m.get(best_metric, math.nan)) if isinstance(m, dict) else math.nan
                return v if math.isfinite(v) else worst

            policies.append(
                ocp.checkpoint_managers.BestN(
                    get_metric_fn=best_fn, reverse=(best_mode == "min"), n=1
                )
            )
        options = ocp.CheckpointManagerOptions(
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(save_every),
            preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
            best_fn=best_fn,
            best_mode=best_mode,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        if config is not None:
            self._guard_config(config)
            self._write_config(config)
        if best_metric is not None:
            _write_json(
                os.path.join(self.directory, RANKING_NAME),
                {"best_metric": best_metric, "best_mode": best_mode},
            )

    # ------------------------------------------------------------------ config
    def _integrity(self, step: int) -> dict:
        """The integrity record of checkpoint ``step`` (digest, config, leaf dtypes)."""
        path = self.step_path(step)
        try:
            rec = self._manager.restore(
                step, args=ocp.args.Composite(integrity=ocp.args.JsonRestore())
            ).integrity
        except Exception as err:
            detail = str(err).splitlines()[0][:300] if str(err) else ""
            raise CheckpointError(
                f"checkpoint at {path} is damaged: its integrity record cannot be read: "
                f"{type(err).__name__}: {detail}"
            ) from err
        if not isinstance(rec, dict) or "sha256" not in rec:
            raise CheckpointError(
                f"checkpoint at {path} is damaged: its integrity record is missing"
            )
        return rec

    def _guard_config(self, config: dict) -> None:
        """A resumed run must be the same run: compare ``config`` with the copy in the
        newest checkpoint's integrity record (checked even when ``config.json`` is gone)."""
        steps = self.all_steps()
        if not steps:
            return
        self._check_recorded_config(self._integrity(steps[-1]), steps[-1], config)

    def _check_recorded_config(self, rec: dict, step: int, config) -> None:
        recorded = rec.get("config")
        if config is None or recorded is None:
            return
        if json.loads(json.dumps(config, sort_keys=True)) != recorded:
            raise ValueError(
                f"config differs from the one recorded in the checkpoint at "
                f"{self.step_path(step)}: recorded {recorded}, got {config}; use a new "
                "directory for a different run"
            )

    def _write_config(self, config: dict) -> None:
        path = os.path.join(self.directory, CONFIG_NAME)
        try:
            text = json.dumps(config, indent=2, sort_keys=True)
        except TypeError as err:
            raise TypeError(f"config must be JSON-serialisable; got {config!r}: {err}") from err
        if os.path.exists(path):
            existing = load_config(self.directory)
            if existing != json.loads(text):
                raise ValueError(
                    f"config differs from the one saved at {path}: saved {existing}, got "
                    f"{json.loads(text)}; use a new directory for a different run"
                )
            return
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ save
    def save(self, state, metrics: Optional[dict] = None, *, force: bool = False) -> bool:
        """Save ``state`` at step ``state.position`` if the interval says so (or ``force``).

        Args:
          state: a :class:`rnnjax.train.TrainState` (any pytree with ``position``).
          metrics: optional dict of floats recorded with the checkpoint (must contain
            ``best_metric`` when one is set).
          force: save regardless of the interval.

        Returns:
          Whether a checkpoint was started.

        Raises:
          ValueError: the state has NaN/Inf, or ``best_metric`` is missing.
        """
        step = checks.step_position("state.position", state.position)
        if step in self._manager.all_steps():
            return False
        if not force and not self._manager.should_save(step) and not self._time_to_save():
            return False
        check_finite(state)
        if metrics is not None:
            # a non-finite value is kept as recorded; it never ranks (see best_step)
            metrics = {k: float(v) for k, v in metrics.items()}
        if self.best_metric is not None and (metrics is None or self.best_metric not in metrics):
            raise ValueError(
                f"metrics must contain best_metric {self.best_metric!r}; got "
                f"{None if metrics is None else sorted(metrics)}"
            )
        integrity = {
            "sha256": state_digest(state),
            "step": step,
            "config": None if self.config is None else json.loads(json.dumps(self.config)),
            "leaves": _leaf_specs(state),
        }
        self._last_save = time.monotonic()
        return self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state), integrity=ocp.args.JsonSave(integrity)
            ),
            metrics=metrics,
            force=True,
        )

    def _time_to_save(self) -> bool:
        """Whether ``save_interval_s`` has passed since the last save (process 0 decides
        for every process, so that all of them take part in the same saves)."""
        if self.save_interval_s is None:
            return False
        due = time.monotonic() - self._last_save >= self.save_interval_s
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
        if self.best_metric is None:
            return None
        best = None
        for step in self.all_steps():
            m = self._manager.metrics(step)
            v = float(m.get(self.best_metric, math.nan)) if isinstance(m, dict) else math.nan
            if not math.isfinite(v):
                continue  # a NaN or Inf metric never ranks a checkpoint
            if best is None or (v < best[0] if self.best_mode == "min" else v > best[0]):
                best = (v, step)
        return None if best is None else best[1]

    def step_path(self, step: int) -> str:
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
          FileNotFoundError: the directory has no checkpoint, or not ``step``.
          CheckpointError: the checkpoint is damaged (unreadable, or its digest differs).
        """
        self.wait()
        if not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        self._manager.reload()
        steps = self.all_steps()
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
            detail = str(err).splitlines()[0][:300] if str(err) else ""
            raise CheckpointError(
                f"checkpoint at {path} is damaged or does not match the target structure: "
                f"{type(err).__name__}: {detail}"
            ) from err
        state, integrity = restored.state, restored.integrity
        if not isinstance(integrity, dict) or "sha256" not in integrity:
            raise CheckpointError(
                f"checkpoint at {path} is damaged: its integrity record is missing"
            )
        want = integrity["sha256"]
        if want is not None:
            got = state_digest(state)
            if got is not None and got != want:
                raise CheckpointError(
                    f"checkpoint at {path} is damaged: the restored state's SHA-256 {got} differs "
                    f"from the one recorded at save time {want}"
                )
        return state

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
      FileNotFoundError: no directory, config or checkpoint.
      ValueError: the config holds no trainer record, or a class it names is unknown.

    Example:
      >>> run = load_run("/tmp/char_lm")  # doctest: +SKIP
      >>> logits = run.trainer.model.apply(run.state.params, tokens)[1]  # doctest: +SKIP
    """
    from rnnjax.train import Trainer

    directory = os.path.abspath(os.fspath(directory))
    config = load_config(directory)
    if not isinstance(config, dict) or "trainer" not in config:
        raise ValueError(
            f"the config at {os.path.join(directory, CONFIG_NAME)} holds no trainer record; "
            "write checkpoints with Checkpointer(directory, trainer=trainer)"
        )
    trainer = Trainer.from_config(config["trainer"])
    meta = json.loads(json.dumps(config))  # the config as the checkpoints record it
    best_metric = None
    if best:
        metrics = _ranking_metric(directory)
        if metrics is None:
            raise ValueError(
                f"best=True but the checkpoints in {directory} were not ranked by a metric"
            )
        best_metric, best_mode = metrics
    with Checkpointer(
        directory,
        config=meta,
        create=False,
        best_metric=best_metric,
        best_mode=best_mode if best else "min",
    ) as ckpt:
        if step is None:
            step = ckpt.best_step() if best else ckpt.latest_step()
            if step is None:
                raise FileNotFoundError(
                    f"no checkpoint in {directory}" + (" ranked by a finite metric" if best else "")
                )
        leaves = ckpt._integrity(step).get("leaves") or {}
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
    with open(path, encoding="utf-8") as f:
        rec = json.load(f)
    return rec["best_metric"], rec["best_mode"]
