"""The fit loop: an argument check, one step, and the sinks each step's row goes to
(the progress display and the JSONL log, metric writers, the checkpointer, the callback),
with validation and early stopping between the step and the sinks."""

from __future__ import annotations

import dataclasses
import math
import os
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
        that checkpoint never ranks. Before the first step the run must continue the one
        saved in its directory (:meth:`~rnnjax.checkpoint.Checkpointer.check_start`): a
        fresh state into a directory that holds another run's checkpoints is a
        ``ValueError`` (resume with :meth:`~rnnjax.checkpoint.Checkpointer.restore_or_init`,
        use a new directory, or ``Checkpointer(..., overwrite=True)``).
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
    being written to finish, closes the writers, prints one line saying the last saved
    position and how to resume, and raises the ``KeyboardInterrupt`` again, so that a
    notebook or a sweep driver decides what comes next (a script ends with exit status
    130, the shell's code for an interrupt, with ``except KeyboardInterrupt:
    sys.exit(130)`` around its entry point). The directory then restores exactly.

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
    plan = _check_args(
        trainer,
        state,
        data,
        num_batches,
        tbptt=tbptt,
        stateful=stateful,
        reset_every=reset_every,
        checkpointer=checkpointer,
        evaluate=evaluate,
        eval_every=eval_every,
        early_stopping=early_stopping,
        writers=writers,
    )
    if log_path is not None and not isinstance(log_path, (str, os.PathLike)):
        raise TypeError(f"log_path must be a file path or None; got {checks.describe(log_path)}")
    start = int(state.position)
    if checkpointer is not None:  # before anything is written: never drop another run
        checkpointer.check_start(state)
    monitor = _Monitor(plan, checkpointer, _read_log(log_path, start))
    sinks = [_Progress(plan.num_batches, start, progress, log_path), _Writers(plan.writers)]
    if checkpointer is not None:
        sinks.append(_Checkpoints(checkpointer))
    if callback is not None:
        sinks.append(_Callback(callback))
    history = []
    try:
        for sink in sinks:
            sink.open(start)
        for pos in range(start, plan.num_batches):
            if monitor.stop:
                break
            state, row = _step(trainer, plan, state, data(pos), pos)
            important = monitor.after(state, row)
            history.append(row)
            for sink in sinks:
                sink(state, row, important)
        for sink in sinks:
            sink.finish(state, history)
    except KeyboardInterrupt:
        for sink in sinks:
            sink.close()
        _interrupted(checkpointer, history[-1]["position"] if history else start)
        raise
    finally:
        for sink in sinks:
            sink.close()
    return state, history


@dataclasses.dataclass(frozen=True)
class _Plan:
    """The checked arguments of one :func:`fit` call."""

    num_batches: int
    tbptt: Optional[int]
    stateful: bool
    reset_every: Optional[int]
    evaluate: Optional[Callable]
    eval_every: Optional[int]
    early_stopping: Optional[EarlyStopping]
    writers: tuple


def _check_args(
    trainer,
    state,
    data,
    num_batches,
    *,
    tbptt,
    stateful,
    reset_every,
    checkpointer,
    evaluate,
    eval_every,
    early_stopping,
    writers,
) -> _Plan:
    """Every argument of :func:`fit` checked, before anything runs."""
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
    if checkpointer is not None:  # (rnnjax.checkpoint imports this package: no isinstance)
        if not all(
            callable(getattr(checkpointer, a, None)) for a in ("check_start", "save", "wait")
        ):
            raise TypeError(
                "checkpointer must be an rnnjax.checkpoint.Checkpointer or None; got "
                f"{type(checkpointer).__name__}"
            )
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
    writers = () if writers is None else writers
    writers = tuple(writers) if isinstance(writers, (list, tuple)) else (writers,)
    for i, w in enumerate(writers):
        if not all(callable(getattr(w, a, None)) for a in ("open", "write", "close")):
            raise TypeError(
                f"writers[{i}] must have open(start), write(position, row) and close() "
                f"(e.g. rnnjax.progress.CsvWriter); got {type(w).__name__}"
            )
    return _Plan(
        num_batches, tbptt, stateful, reset_every, evaluate, eval_every, early_stopping, writers
    )


def _step(trainer: Trainer, plan: _Plan, state: TrainState, batch, pos: int):
    """One batch: the update (full or truncated BPTT), and its row of host metrics."""
    if plan.tbptt is None:
        state, m = trainer.train_step(state, batch)
    else:
        if plan.stateful and plan.reset_every is not None and pos % plan.reset_every == 0:
            state = trainer.reset_carry(state)
        state, m = trainer.tbptt_step(state, batch, plan.tbptt, stateful=plan.stateful)
    row = _host_metrics(m)
    row["position"] = pos + 1
    lr = trainer.learning_rate_at(state)
    if lr is not None:
        row["lr"] = lr
    _warn_about(pos, row)
    return state, row


class _Monitor:
    """Evaluation and early stopping after each step: what joins the row, and whether
    the run stops. A resumed run replays the rows of its log first, so that it stops
    where an uninterrupted one would."""

    def __init__(self, plan: _Plan, checkpointer, past: list):
        self.plan = plan
        self.best_metric = None if checkpointer is None else checkpointer.options.best_metric
        stopping = plan.early_stopping
        self.tracker = None if stopping is None else stopping.init()
        self.stop = False
        self.checked = False
        for row in past if stopping is not None else ():
            if stopping.metric in row:
                self.stop = stopping.update(self.tracker, row[stopping.metric])

    def after(self, state: TrainState, row: dict) -> bool:
        """Evaluate when due and update early stopping; whether the row matters (an
        evaluation or the stop: shown, and a checkpoint forced)."""
        plan, position = self.plan, row["position"]
        evaluated = plan.evaluate is not None and (
            position == plan.num_batches
            or (plan.eval_every is not None and position % plan.eval_every == 0)
        )
        if evaluated:
            ev = plan.evaluate(state.params)
            if not isinstance(ev, dict):
                raise TypeError(f"evaluate must return a dict of metrics; got {type(ev).__name__}")
            row.update({k: _host_number(k, v) for k, v in ev.items()})
            if not self.checked:
                self.checked = True
                _warn_unlogged(plan.early_stopping, self.best_metric, row)
        stopping = plan.early_stopping
        if stopping is not None and stopping.metric in row:
            self.stop = stopping.update(self.tracker, row[stopping.metric])
            if self.stop:
                row["stopped_early"] = True  # the last row of a run stopped early
        return evaluated or self.stop


class _Sink:
    """Where each step's row goes after the step: ``open(start)`` before the first,
    ``sink(state, row, important)`` after each, ``finish(state, history)`` after the
    last, ``close()`` always (once or more)."""

    def open(self, start: int) -> None:
        pass

    def __call__(self, state, row: dict, important: bool) -> None:
        pass

    def finish(self, state, history: list) -> None:
        pass

    def close(self) -> None:
        pass


class _Progress(_Sink):
    """The progress display and the JSONL log (:class:`rnnjax.progress.ProgressLog`)."""

    def __init__(self, num_batches: int, start: int, progress, log_path):
        from rnnjax.progress import ProgressLog

        self.log = ProgressLog(num_batches, start=start, enabled=progress, jsonl_path=log_path)
        self.entered = False

    def open(self, start):
        self.log.__enter__()
        self.entered = True

    def __call__(self, state, row, important):
        self.log.update(row["position"], row, show=important)

    def close(self):
        if self.entered:
            self.entered = False
            self.log.__exit__(None, None, None)


class _Writers(_Sink):
    """The metric writers, given one row of scalars per batch (process 0 only)."""

    def __init__(self, writers: tuple):
        self.writers, self.opened = writers, []

    def open(self, start):
        for w in self.writers if jax.process_index() == 0 else ():
            w.open(start)
            self.opened.append(w)

    def __call__(self, state, row, important):
        if self.opened:
            scalars = _scalar_metrics(row)
            for w in self.opened:
                w.write(row["position"], scalars)

    def close(self):
        opened, self.opened = self.opened, []
        for w in opened:
            w.close()


class _Checkpoints(_Sink):
    """Saves at the checkpointer's interval, after an evaluation or a stop, and at the end."""

    def __init__(self, checkpointer):
        self.checkpointer = checkpointer
        self.best_metric = checkpointer.options.best_metric

    def _metrics(self, row: dict) -> dict:
        scalars = _scalar_metrics(row)
        if self.best_metric is not None and self.best_metric not in scalars:
            scalars[self.best_metric] = math.nan  # not measured at this state: never ranks
        return scalars

    def __call__(self, state, row, important):
        self.checkpointer.save(state, metrics=self._metrics(row), force=important)

    def finish(self, state, history):
        if history:  # nothing new to save when the run was already complete
            self.checkpointer.save(state, metrics=self._metrics(history[-1]), force=True)
        self.checkpointer.wait()


class _Callback(_Sink):
    """The user's ``callback(state, row)``."""

    def __init__(self, callback):
        self.callback = callback

    def __call__(self, state, row, important):
        self.callback(state, row)


def _interrupted(checkpointer, position: int) -> None:
    """Ctrl-C: let a checkpoint being written finish, then say where the run stands."""
    import sys

    if checkpointer is None:
        where = "nothing was saved (pass checkpointer= to be able to resume)"
    else:
        try:
            checkpointer.wait()
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
                stacklevel=4,  # the caller of fit
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
            stacklevel=4,  # the caller of fit
        )
    tokens = m.get("tokens")
    if tokens is not None and (sum(tokens) if isinstance(tokens, list) else tokens) == 0:
        warnings.warn(
            f"batch {pos} has no real step (all padding): no update was made",
            RuntimeWarning,
            stacklevel=4,  # the caller of fit
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
