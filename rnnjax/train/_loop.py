"""The fit loop: validation, early stopping, checkpoints, progress and the JSONL log."""

from __future__ import annotations

import math
import warnings
from typing import Any, Callable, Optional, Union

import jax
import numpy as np

from rnnjax import checks
from rnnjax.train._evaluation import EarlyStopping
from rnnjax.train._trainer import Trainer, TrainState, _check_state

# the metrics every training row holds: early stopping on one of them needs no evaluate
_TRAIN_METRICS = ("loss", "grad_norm", "clipped", "skipped", "nonfinite_total", "tokens", "lr")


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
    writers=None,
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
        Every row holds ``lr``, the learning rate of the batch's last update
        (:meth:`Trainer.learning_rate_at`), also shown in the progress line.
      progress: ``True`` (a rich bar on a terminal, plain lines otherwise, so a log file
        sees progress as it goes), ``"rich"``, ``"plain"`` or ``False``.
      callback: called as ``callback(state, metrics)`` after every batch (``metrics``
        is that batch's row: host numbers, lists for truncated BPTT's per-chunk values).
      evaluate: ``params -> dict`` of metrics, e.g.
        ``lambda p: evaluate_batches(trainer, p, valid, prefix="valid_")`` or
        :func:`evaluate_stream`; its metrics join that batch's row in the log, the
        progress display and the checkpoint metrics.
      eval_every: evaluate after every this many batches (and after the last); default
        only after the last.
      early_stopping: an :class:`EarlyStopping`; checked whenever a row holds its metric.
        The row at which it stops holds ``"stopped_early": True``; the state is saved there.
        A metric that only ``evaluate`` can log (anything but the training metrics
        ``loss``, ``grad_norm``, ...) needs ``evaluate``; one that the first evaluation
        does not return draws a warning (it would never stop the run).
      writers: metric writers, e.g. ``[rnnjax.progress.CsvWriter("run.csv"),
        rnnjax.progress.TensorBoardWriter("tb")]`` (one or a list); each gets one row of
        scalar metrics per batch (truncated BPTT's per-chunk losses as their
        token-weighted mean), and a resumed run's rows replace those past its start.
        With several processes only process 0 writes them.

    Ctrl-C (``KeyboardInterrupt``) stops a run cleanly: ``fit`` waits for a checkpoint
    being written to finish, prints one line saying the last saved position and how to
    resume, and exits with status 130 (``SystemExit``, the shell's code for an
    interrupt) instead of a traceback. The directory then restores exactly.

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

    if not isinstance(trainer, Trainer):
        raise TypeError(f"trainer must be an rnnjax.train.Trainer; got {type(trainer).__name__}")
    _check_state("state", state)
    if not callable(data):
        raise TypeError(f"data must be a callable position -> batch; got {type(data).__name__}")
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
    if evaluate is None and eval_every is not None:
        raise ValueError(
            f"eval_every={eval_every} needs evaluate= (a callable params -> dict of metrics); "
            "got evaluate=None"
        )
    if (
        evaluate is None
        and early_stopping is not None
        and early_stopping.metric not in _TRAIN_METRICS
    ):
        raise ValueError(
            f"early_stopping monitors {early_stopping.metric!r}, which only evaluate= can log "
            f"(the training rows hold {', '.join(_TRAIN_METRICS)}); got evaluate=None"
        )
    if writers is None:
        writers = []
    elif not isinstance(writers, (list, tuple)):
        writers = [writers]
    for i, w in enumerate(writers):
        if not all(callable(getattr(w, a, None)) for a in ("open", "write", "close")):
            raise TypeError(
                f"writers[{i}] must have open(start), write(position, row) and close() "
                f"(e.g. rnnjax.progress.CsvWriter); got {type(w).__name__}"
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
    checked_metrics = False
    opened = []
    try:
        for w in writers if jax.process_index() == 0 else ():  # one process writes the files
            w.open(start)
            opened.append(w)
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
                lr = trainer.learning_rate_at(state)
                if lr is not None:
                    m["lr"] = lr
                _warn_about(pos, m)
                evaluated = evaluate is not None and (
                    pos + 1 == num_batches
                    or (eval_every is not None and (pos + 1) % eval_every == 0)
                )
                if evaluated:
                    ev = evaluate(state.params)
                    if not isinstance(ev, dict):
                        raise TypeError(
                            f"evaluate must return a dict of metrics; got {type(ev).__name__}"
                        )
                    m.update({k: _host_number(k, v) for k, v in ev.items()})
                    if not checked_metrics:
                        checked_metrics = True
                        _warn_unlogged(early_stopping, best_metric, m)
                if tracker is not None and early_stopping.metric in m:
                    stop = early_stopping.update(tracker, m[early_stopping.metric])
                    if stop:
                        m["stopped_early"] = True  # the last row of a run stopped early
                history.append(m)
                log.update(pos + 1, m, show=evaluated or stop)
                sm = None
                if opened:
                    sm = _scalar_metrics(m)
                    for w in opened:
                        w.write(pos + 1, sm)
                if checkpointer is not None:
                    sm = dict(_scalar_metrics(m) if sm is None else sm)
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
    except KeyboardInterrupt:
        _interrupted(checkpointer, history[-1]["position"] if history else start)
        raise SystemExit(130) from None
    finally:
        for w in opened:
            w.close()
    return state, history


def _interrupted(checkpointer, position: int) -> None:
    """Ctrl-C: let a checkpoint being written finish, then say where the run stands."""
    import sys

    if checkpointer is None:
        where = "nothing was saved (pass checkpointer= to be able to resume)"
    else:
        try:
            checkpointer.wait()
            checkpointer._manager.reload()
            last = checkpointer.latest_step()
        except Exception as err:  # pragma: no cover - message only
            last = f"unknown ({type(err).__name__} while finishing the last save)"
        d = checkpointer.directory
        if last is None:
            where = f"no checkpoint in {d} yet"
        else:
            where = (
                f"last checkpoint at position {last} in {d}; resume with "
                f"state = Checkpointer({d!r}, create=False).restore(trainer.abstract_state()) "
                "and the same fit(...) call"
            )
    print(f"fit interrupted after batch {position}: {where}", file=sys.stderr, flush=True)


def _warn_unlogged(early_stopping, best_metric, m: dict) -> None:
    """After the first evaluation: warn about a monitored metric that is not logged."""
    for what, name in (
        ("early_stopping.metric", getattr(early_stopping, "metric", None)),
        ("the checkpointer's best_metric", best_metric),
    ):
        if name is not None and name not in m:
            shown = sorted(k for k in m if k != "position")
            warnings.warn(
                f"{what} {name!r} is not among the logged metrics {shown}: it will never "
                "be measured (a misspelt name?)",
                RuntimeWarning,
                stacklevel=3,
            )


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
