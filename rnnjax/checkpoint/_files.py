"""The files of a checkpoint directory: JSON records, digests, leaf specs and checks."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np

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


def _short(value, width: int = 60) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= width else text[: width - 3] + "..."


def config_diff(saved, got, where: str = "") -> list:
    """One line per field in which two JSON-clean configs differ (empty when equal).

    Example:
      >>> config_diff({"lr": 0.1, "model": {"H": 8}}, {"lr": 0.1, "model": {"H": 16}})
      ['model.H: saved 8, got 16']
    """
    if isinstance(saved, dict) and isinstance(got, dict):
        out = []
        for k in sorted(set(saved) | set(got), key=str):
            name = f"{where}.{k}" if where else str(k)
            if k not in saved:
                out.append(f"{name}: not in the saved config, got {_short(got[k])}")
            elif k not in got:
                out.append(f"{name}: saved {_short(saved[k])}, not in this config")
            else:
                out += config_diff(saved[k], got[k], name)
        return out
    if isinstance(saved, list) and isinstance(got, list) and len(saved) == len(got):
        return [
            line
            for i, (a, b) in enumerate(zip(saved, got))
            for line in config_diff(a, b, f"{where}[{i}]")
        ]
    if saved == got:
        return []
    return [f"{where or 'config'}: saved {_short(saved)}, got {_short(got)}"]


ANOTHER_RUN = (
    "use a new directory, resume the run saved there (Checkpointer.restore_or_init), or "
    "pass Checkpointer(..., overwrite=True) to delete its checkpoints first"
)


def config_mismatch(where: str, saved: dict, got: dict) -> ValueError:
    """The error for a config that differs from the one ``where``: the differing
    fields, one line each, and what to do."""
    lines = config_diff(saved, got)
    shown = lines[:20] + ([f"... ({len(lines) - 20} more)"] if len(lines) > 20 else [])
    return ValueError(
        f"config differs from the one {where} in {len(lines)} field(s):\n  "
        + "\n  ".join(shown)
        + f"\nThat directory holds another run: {ANOTHER_RUN}"
    )


def clear_run(directory: str) -> None:
    """Delete what a :class:`Checkpointer` wrote in ``directory`` (the step directories,
    finished or not, ``config.json`` and ``ranking.json``); other files stay."""
    if _primary() and os.path.isdir(directory):
        for name in os.listdir(directory):
            path = os.path.join(directory, name)
            if name.split(".")[0].isdigit() and os.path.isdir(path):
                shutil.rmtree(path)
            elif name in (CONFIG_NAME, RANKING_NAME):
                os.remove(path)
    _barrier(f"rnnjax.checkpoint.overwrite:{directory}")
