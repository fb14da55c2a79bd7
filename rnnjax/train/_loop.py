"""The fit loop: validation, early stopping, checkpoints, progress and the JSONL log."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional, Union

import jax
import numpy as np

from rnnjax import checks
from rnnjax.train._evaluation import EarlyStopping
from rnnjax.train._trainer import Trainer, TrainState


def _host_metrics(m: dict) -> dict:
    out = {}
    for name, v in jax.device_get(m).items():
        v = np.asarray(v)
        if v.ndim == 0:
            out[name] = v.item()
        else:
            out[name] = v.tolist()
    return out


def _read_log(path, upto: int) -> list:
    """The rows of a JSONL log with ``position <= upto``; the file is rewritten to hold
    just those, so a resumed run neither loses nor duplicates rows."""
    import json
    import os

    if path is None or not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: it is written again
            if (
                isinstance(row, dict)
                and isinstance(row.get("position"), int)
                and row["position"] <= upto
            ):
                rows.append(row)
    seen, kept = set(), []
    for row in rows:
        if row["position"] not in seen:
            seen.add(row["position"])
            kept.append(row)
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in kept:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return kept


def fit(
    trainer: Trainer,
    state: TrainState,
    data: Callable[[int], dict],
    num_batches: int,
    *,
    tbptt: Optional[int] = None,
    stateful: bool = False,
    reset_every: Optional[int] = None,
    checkpointer=None,
    log_path=None,
    progress: Union[bool, str] = True,
    callback: Optional[Callable[[TrainState, dict], None]] = None,
    evaluate: Optional[Callable[[Any], dict]] = None,
    eval_every: Optional[int] = None,
    early_stopping: Optional[EarlyStopping] = None,
):
    """Train until ``state.position == num_batches``, evaluating, saving, logging and
    showing progress.

    The data source is a function of the data position, ``data(position) -> batch``, so a
    run resumed from a checkpoint (which holds the position) sees exactly the batches an
    uninterrupted run would have seen.

    Args:
      trainer: the :class:`Trainer`.
      state: the state to continue from (fresh or restored).
      data: ``position -> batch``, deterministic.
      num_batches: total number of batches of the run (not the number still to do).
      tbptt: chunk length for :meth:`Trainer.tbptt_step`; ``None`` for full BPTT.
      stateful: carry the recurrent state from batch to batch (TBPTT only).
      reset_every: with ``stateful``, forget the carry before every batch whose position
        is a multiple of this (a new pass over the streams, e.g.
        ``StreamBatcher.num_windows``).
      checkpointer: an :class:`rnnjax.checkpoint.Checkpointer`; saves at its interval
        (checkpoint step = data position), after every evaluation (so that the best
        checkpoint can be chosen by a validation metric), and at the end. A metric the
        checkpointer ranks by that is absent or non-finite at a save is recorded as NaN:
        that checkpoint never ranks.
      log_path: a JSONL file that gets one row of metrics per batch. On resume the rows
        past ``state.position`` are dropped first, so the file holds each position once.
      progress: ``True`` (a rich bar on a terminal, plain lines otherwise, so a log file
        sees progress as it goes), ``"rich"``, ``"plain"`` or ``False``.
      callback: called as ``callback(state, metrics)`` after every batch.
      evaluate: ``params -> dict`` of metrics, e.g.
        ``lambda p: evaluate_batches(trainer, p, valid, prefix="valid_")`` or
        :func:`evaluate_stream`; its metrics join that batch's row in the log, the
        progress display and the checkpoint metrics.
      eval_every: evaluate after every this many batches (and after the last); default
        only after the last.
      early_stopping: an :class:`EarlyStopping`; checked whenever a row holds its metric.
        The row at which it stops holds ``"stopped_early": True``; the state is saved there.

    Returns:
      ``(state, history)``: the final state and the list of per-batch host metrics of
      this call (rows of evaluated batches hold the evaluation metrics too).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> def data(i):                                      # batch i: (B, T) tokens
      ...     tokens = (jnp.arange(14).reshape(2, 7) + i) % 5
      ...     return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
      >>> state, history = rj.fit(trainer, trainer.init(jax.random.key(0)), data, 3,
      ...                         progress=False)
      >>> int(state.position), len(history), history[-1]["loss"] < history[0]["loss"]
      (3, 3, True)
    """
    from rnnjax.progress import ProgressLog

    num_batches = checks.integer("num_batches", num_batches, 0)
    if tbptt is not None:
        tbptt = checks.integer("tbptt", tbptt, 1)
    stateful = checks.boolean("stateful", stateful)
    if stateful and tbptt is None:
        raise ValueError("stateful=True needs tbptt=k (stateful training is truncated BPTT)")
    if reset_every is not None:
        reset_every = checks.integer("reset_every", reset_every, 1)
    if reset_every is not None and not stateful:
        raise ValueError("reset_every applies to stateful training; got stateful=False")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(
            f"evaluate must be a callable params -> dict; got {type(evaluate).__name__}"
        )
    if eval_every is not None:
        eval_every = checks.integer("eval_every", eval_every, 1)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping must be an EarlyStopping; got {type(early_stopping).__name__}"
        )
    history = []
    start = int(state.position)
    past = _read_log(log_path, start) if log_path is not None else []
    tracker = early_stopping.init() if early_stopping is not None else None
    stop = False
    if tracker is not None:
        for row in past:
            if early_stopping.metric in row:
                stop = early_stopping.update(tracker, row[early_stopping.metric])
    best_metric = getattr(checkpointer, "best_metric", None)
    with ProgressLog(num_batches, start=start, enabled=progress, jsonl_path=log_path) as log:
        for pos in range(start, num_batches):
            if stop:
                break
            batch = data(pos)
            if tbptt is None:
                state, m = trainer.train_step(state, batch)
            else:
                if stateful and reset_every is not None and pos % reset_every == 0:
                    state = trainer.reset_carry(state)
                state, m = trainer.tbptt_step(state, batch, tbptt, stateful=stateful)
            m = _host_metrics(m)
            m["position"] = pos + 1
            _warn_about(pos, m)
            evaluated = evaluate is not None and (
                pos + 1 == num_batches or (eval_every is not None and (pos + 1) % eval_every == 0)
            )
            if evaluated:
                ev = evaluate(state.params)
                if not isinstance(ev, dict):
                    raise TypeError(
                        f"evaluate must return a dict of metrics; got {type(ev).__name__}"
                    )
                m.update({k: _host_number(k, v) for k, v in ev.items()})
            if tracker is not None and early_stopping.metric in m:
                stop = early_stopping.update(tracker, m[early_stopping.metric])
                if stop:
                    m["stopped_early"] = True  # the last row of a run stopped early
            history.append(m)
            log.update(pos + 1, m, show=evaluated or stop)
            if checkpointer is not None:
                sm = _scalar_metrics(m)
                if best_metric is not None and best_metric not in sm:
                    sm[best_metric] = math.nan  # not measured at this state: never ranks
                checkpointer.save(state, metrics=sm, force=evaluated or stop)
            if callback is not None:
                callback(state, m)
    if checkpointer is not None:
        if history:  # nothing new to save when the run was already complete
            sm = _scalar_metrics(history[-1])
            if best_metric is not None and best_metric not in sm:
                sm[best_metric] = math.nan
            checkpointer.save(state, metrics=sm, force=True)
        checkpointer.wait()
    return state, history


def _host_number(name, v):
    try:
        a = np.asarray(jax.device_get(v))
    except Exception as err:  # pragma: no cover - message only
        raise TypeError(f"evaluate returned a non-numeric metric {name!r}: {v!r}") from err
    if a.ndim != 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"evaluate must return scalar numbers; got {name!r} = {v!r}")
    return a.item()


def _warn_about(pos: int, m: dict) -> None:
    skipped = m["skipped"] if isinstance(m["skipped"], list) else [m["skipped"]]
    if any(skipped):
        total = m["nonfinite_total"]
        total = total[-1] if isinstance(total, list) else total
        warnings.warn(
            f"batch {pos}: non-finite gradient or loss in {sum(skipped)} update(s), not applied "
            f"({total} so far in this run)",
            RuntimeWarning,
            stacklevel=3,
        )
    tokens = m.get("tokens")
    if tokens is not None and (sum(tokens) if isinstance(tokens, list) else tokens) == 0:
        warnings.warn(
            f"batch {pos} has no real step (all padding): no update was made",
            RuntimeWarning,
            stacklevel=3,
        )


def _scalar_metrics(m: dict) -> dict:
    """One float per metric for the checkpoint: TBPTT's per-chunk ``loss`` becomes the
    token-weighted mean over the chunks that were applied (NaN when none was)."""
    out = {}
    for k, v in m.items():
        if isinstance(v, list):
            if k == "loss" and isinstance(m.get("tokens"), list):
                skipped = m.get("skipped") or [False] * len(v)
                pairs = [
                    (float(x), t)
                    for x, t, s in zip(v, m["tokens"], skipped)
                    if t > 0 and not s and math.isfinite(float(x))
                ]
                w = sum(t for _, t in pairs)
                v = sum(x * t for x, t in pairs) / w if w else math.nan
            elif k in ("tokens",):
                v = float(sum(v))
            elif k == "nonfinite_total":
                v = float(v[-1]) if v else math.nan
            else:
                v = float(np.mean(v)) if v else math.nan
        out[k] = float(v)
    return out
