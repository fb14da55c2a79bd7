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
- with several processes (``jax.distributed``) every process constructs the same
  ``Checkpointer`` and saves at the same steps: orbax writes the arrays with its own
  multi-process protocol, process 0 alone writes ``config.json`` and ``ranking.json``
  (the others wait at a barrier), so no two processes ever write one file.
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
    return _read_json(path, "a JSON object (the run's config)")


def _read_json(path: str, expected: str, kind=dict):
    """Read the JSON file ``path``; any failure to read or decode it, or a value that
    is not a ``kind``, is a :class:`CheckpointError` naming the path and ``expected``."""
    try:
        with open(path, encoding="utf-8") as f:
            value = json.load(f)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as err:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(
            f"{path} is damaged: expected {expected}; {type(err).__name__}: {err}"
        ) from err
    if not isinstance(value, kind):
        raise CheckpointError(
            f"{path} is damaged: expected {expected}; got a JSON {type(value).__name__}"
        )
    return value


def _primary() -> bool:
    """Whether this process writes the files every process shares (process 0)."""
    return jax.process_index() == 0


def _barrier(name: str) -> None:
    """With several processes, wait here until every process has arrived (a JAX
    collective, ``multihost_utils.sync_global_devices``); nothing with one process."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def _write_json(path: str, obj) -> None:
    """Write ``obj`` to ``path`` atomically (a temporary file of this process's own,
    then ``os.replace``)."""
    _write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def _write_text(path: str, text: str) -> None:
    tmp = f"{path}.{os.getpid()}.{jax.process_index()}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _leaf_specs(state) -> dict:
    """``{leaf path: [dtype, shape]}`` of every array leaf of ``state``."""
    out = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
            out[_leaf_name(path)] = [str(jnp.dtype(leaf.dtype)), list(leaf.shape)]
    return out


def _check_leaves(saved, path: str) -> None:
    """The integrity record's leaves must be ``{leaf: [dtype, shape]}``."""
    ok = isinstance(saved, dict) and all(
        isinstance(v, list)
        and len(v) == 2
        and isinstance(v[0], str)
        and isinstance(v[1], list)
        and all(isinstance(n, int) for n in v[1])
        for v in saved.values()
    )
    if not ok:
        raise CheckpointError(
            f"checkpoint at {path} is damaged: its integrity record's leaves are not "
            "{leaf: [dtype, shape]}"
        )


def _check_target(saved: Optional[dict], target, path: str) -> None:
    """Raise ``ValueError`` naming every leaf whose dtype or shape in ``target``
    differs from the saved one (a wrong target, not a damaged checkpoint)."""
    if not saved:
        return
    _check_leaves(saved, path)
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


def _step_arg(step) -> int:
    """``step`` must be a concrete integer ``>= 0`` (not a bool)."""
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an int (a checkpoint's data position) or None; got {step!r}")
    if step < 0:
        raise ValueError(f"step must be >= 0 (a checkpoint's data position); got {step}")
    return int(step)


def _check_integrity(rec, step: int, path: str) -> None:
    """The integrity record must be a dict with a digest and this directory's step (a
    step directory copied or renamed from another step is damaged, never restored as
    this step)."""
    if not isinstance(rec, dict) or "sha256" not in rec:
        raise CheckpointError(
            f"checkpoint at {path} is damaged: its integrity record is missing (expected a "
            "JSON object with the state's SHA-256 and step)"
        )
    if rec.get("step") != step:
        raise CheckpointError(
            f"checkpoint at {path} is damaged: its integrity record is of step "
            f"{rec.get('step')!r}, expected step {step} (a step directory copied or renamed?)"
        )


def _damaged_json(directory: str) -> str:
    """``"; damaged: <files>"`` naming the JSON files orbax reads when it opens a
    checkpoint directory (each step's metrics and metadata) that do not decode."""
    bad = []
    for name in sorted(os.listdir(directory)) if os.path.isdir(directory) else []:
        if not name.isdigit():
            continue
        for rel in (os.path.join("metrics", "metrics"), "_CHECKPOINT_METADATA"):
            path = os.path.join(directory, name, rel)
            if not os.path.isfile(path):
                continue
            try:
                with open(path, encoding="utf-8") as f:
                    json.load(f)
            except (OSError, ValueError):
                bad.append(path)
    if not bad:
        return ""
    return f"; damaged (expected the JSON written at save time): {', '.join(bad)}"


def _first_line(err) -> str:
    return str(err).splitlines()[0][:300] if str(err) else ""


def _directory(directory) -> str:
    """``directory`` as an absolute path; refuses what is not a path, or a file."""
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"directory must be a path (str or os.PathLike); got {type(directory).__name__}"
        )
    path = os.path.abspath(os.fspath(directory))
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(
            f"directory must be a checkpoint directory; {path} exists and is not a directory"
        )
    return path


def _abstract(target):
    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            sharding = getattr(x, "sharding", None) if isinstance(x, jax.Array) else None
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)
        return x

    return jax.tree_util.tree_map(leaf, target)


def _metric_values(metrics) -> dict:
    """``metrics`` as ``{name: float}``; refuses what is not a dict of real scalars."""
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict of numbers or None; got {type(metrics).__name__}")
    out = {}
    for k, v in metrics.items():
        if not isinstance(k, str):
            raise TypeError(f"metrics keys must be metric names (str); got {k!r}")
        a = v if isinstance(v, (bool, int, float)) else None
        if a is None:
            try:
                arr = np.asarray(jax.device_get(v))
            except Exception:  # noqa: BLE001 - anything that is not an array
                arr = None
            ok = (
                arr is not None
                and arr.shape == ()
                and (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_)
            )
            if not ok or np.iscomplexobj(arr):
                raise TypeError(
                    f"metrics[{k!r}] must be a real number (a Python, NumPy or 0-d JAX "
                    f"scalar); got {v!r}"
                )
            a = arr.item()
        out[k] = float(a)
    return out


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
        if config is not None and not isinstance(config, dict):
            raise TypeError(f"config must be a dict or None; got {type(config).__name__}")
        self.directory = _directory(directory)
        if not create and not os.path.isdir(self.directory):
            raise FileNotFoundError(f"checkpoint directory {self.directory} does not exist")
        if _primary():
            os.makedirs(self.directory, exist_ok=True)
        _barrier(f"rnnjax.checkpoint.mkdir:{self.directory}")
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
        try:
            self._manager = ocp.CheckpointManager(self.directory, options=options)
        except Exception as err:
            raise CheckpointError(
                f"checkpoint directory {self.directory} cannot be opened by orbax: "
                f"{type(err).__name__}: {_first_line(err)}{_damaged_json(self.directory)}"
            ) from err
        # Every process checks; only process 0 writes the shared files, and the others
        # wait for it (no two processes ever write one file).
        text = None
        if config is not None:
            self._guard_config(config)
            text = self._check_config(config)
        if _primary():
            if text is not None:
                path = os.path.join(self.directory, CONFIG_NAME)
                if not os.path.exists(path):
                    _write_text(path, text)
            if best_metric is not None:
                _write_json(
                    os.path.join(self.directory, RANKING_NAME),
                    {"best_metric": best_metric, "best_mode": best_mode},
                )
        _barrier(f"rnnjax.checkpoint.config:{self.directory}")

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
        if config is None or recorded is None:
            return
        if json.loads(json.dumps(config, sort_keys=True)) != recorded:
            raise ValueError(
                f"config differs from the one recorded in the checkpoint at "
                f"{self.step_path(step)}: recorded {recorded}, got {config}; use a new "
                "directory for a different run"
            )

    def _check_config(self, config: dict) -> str:
        """``config`` as JSON text; an existing different ``config.json`` is an error."""
        path = os.path.join(self.directory, CONFIG_NAME)
        try:
            text = json.dumps(config, indent=2, sort_keys=True)
        except (TypeError, ValueError) as err:
            raise TypeError(f"config must be JSON-serialisable; got {config!r}: {err}") from err
        if os.path.exists(path):
            existing = load_config(self.directory)
            if existing != json.loads(text):
                raise ValueError(
                    f"config differs from the one saved at {path}: saved {existing}, got "
                    f"{json.loads(text)}; use a new directory for a different run"
                )
        return text

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
          TypeError: ``state`` has no ``position``; ``metrics`` is not a dict of real
            scalars.
          ValueError: the state has NaN/Inf, or ``best_metric`` is missing.
        """
        if not hasattr(state, "position"):
            raise TypeError(
                "state must be an rnnjax.train.TrainState (a pytree with a data position, "
                f"state.position); got {type(state).__name__}"
            )
        step = checks.step_position("state.position", state.position)
        if not isinstance(force, (bool, np.bool_)):
            raise TypeError(f"force must be a bool; got {force!r}")
        if metrics is not None:
            # a non-finite value is kept as recorded; it never ranks (see best_step)
            metrics = _metric_values(metrics)
        if step in self._manager.all_steps():
            return False
        if not force and not self._manager.should_save(step) and not self._time_to_save():
            return False
        check_finite(state)
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
            m = self._metrics(step)
            if not isinstance(m, dict):  # a ranked checkpoint always has its metrics
                raise CheckpointError(
                    f"checkpoint metrics at {os.path.join(self.step_path(step), 'metrics')} "
                    f"are missing or damaged: expected the dict of metrics (with "
                    f"{self.best_metric!r}) written at save time; got {m!r:.80}"
                )
            v = float(m.get(self.best_metric, math.nan)) if isinstance(m, dict) else math.nan
            if not math.isfinite(v):
                continue  # a NaN or Inf metric never ranks a checkpoint
            if best is None or (v < best[0] if self.best_mode == "min" else v > best[0]):
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
          TypeError: ``step`` is not an int; ``ValueError``: ``step < 0``.
          FileNotFoundError: the directory has no checkpoint, or not ``step``.
          CheckpointError: the checkpoint is damaged (unreadable, or its digest differs).
        """
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
    meta = json.loads(json.dumps(config))  # the config as the checkpoints record it
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
        config=meta,
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
    if not isinstance(metric, str) or mode not in ("min", "max"):
        raise CheckpointError(f"{path} is damaged: expected {expected}; got {rec}")
    return metric, mode
