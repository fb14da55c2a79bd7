"""Progress of a training run: a rich progress bar or plain lines, a JSONL log, and
metric writers (CSV, TensorBoard).

Both are optional and independent: ``ProgressLog(total, enabled=False,
jsonl_path="run.jsonl")`` only writes the log. On a terminal the display is a rich bar;
when standard output is not a terminal (a log file, a pipe, a batch job) it is plain
text lines, printed and flushed as the run goes, so a log file sees progress at once.

A metric writer is any object with ``open(start)``, ``write(position, row)`` and
``close()``; :func:`rnnjax.fit` takes a list of them (``writers=``) and gives each one
row of scalar metrics per batch. :class:`CsvWriter` and :class:`TensorBoardWriter`
(``tensorboardX``, the optional extra ``rnnjax[tensorboard]``) are provided; both drop
what a run resumed at ``start`` will write again, so each position appears once.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
import time
from typing import Optional, Union

__all__ = ["ProgressLog", "format_metrics", "CsvWriter", "TensorBoardWriter"]

_SHOWN = ("loss", "lr")  # training metrics always shown; evaluation metrics are shown as they come


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN / Inf; a skipped step is flagged by "skipped"
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


def _scalar(v):
    if isinstance(v, list):
        v = [x for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
        return v[-1] if v else float("nan")
    return v


def format_metrics(metrics: dict, names=None) -> str:
    """``"name value"`` pairs of the scalar metrics in ``names`` (default: ``loss``,
    ``lr`` and every metric whose name starts with ``valid_`` or ``eval_``), four
    significant digits.

    Args:
      metrics: a dict of numbers (a list is shown by its last finite entry).
      names: the names to show, in order.

    Returns:
      The text.

    Example:
      >>> format_metrics({"loss": 1.23456, "valid_ppl": 3.5, "grad_norm": 0.1})
      'loss 1.235  valid_ppl 3.5'
    """
    if names is None:
        names = [k for k in metrics if k in _SHOWN or k.startswith(("valid_", "eval_"))]
    parts = []
    for k in names:
        if k not in metrics or k.endswith("tokens"):
            continue
        v = _scalar(metrics[k])
        if isinstance(v, bool):
            parts.append(f"{k} {v}")
        elif isinstance(v, (int, float)):
            parts.append(f"{k} {v:.4g}")
    return "  ".join(parts)


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "-:--:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class ProgressLog:
    """A context manager that shows and records training progress.

    Args:
      total: number of batches of the whole run.
      start: batches already done (a resumed run).
      enabled: ``True`` (a rich bar on a terminal, plain lines otherwise), ``"rich"``,
        ``"plain"``, or ``False`` for no display.
      jsonl_path: optional file; every :meth:`update` appends one JSON object per line
        (``{"position": ..., "time": ..., <metrics>}``; non-finite floats become ``null``).
      description: the label.
      every: plain mode prints a line after every this many batches (default: about 20
        lines over the run), after every update called with ``show=True`` (an
        evaluation) and after the last batch.
      stream: where plain lines go (default ``sys.stdout``).

    Evaluation metrics (``valid_*``, ``eval_*``) stay on display after the row that
    measured them, marked with the position they were measured at
    (``valid_loss 2.1 (at 40)``): a later line never passes an old value for a new one.

    Example:
      >>> import io
      >>> out = io.StringIO()
      >>> with ProgressLog(4, enabled="plain", every=2, stream=out) as log:
      ...     for p in range(1, 5):
      ...         log.update(p, {"loss": 1.0 / p})
      >>> [line.split("  ")[0] for line in out.getvalue().splitlines()]
      ['train 2/4', 'train 4/4']
    """

    def __init__(
        self,
        total: int,
        *,
        start: int = 0,
        enabled: Union[bool, str] = True,
        jsonl_path: Optional[str] = None,
        description: str = "train",
        every: Optional[int] = None,
        stream=None,
    ):
        if enabled not in (True, False, "rich", "plain", "auto"):
            raise ValueError(f"enabled must be True, False, 'rich' or 'plain'; got {enabled!r}")
        self.total, self.start = int(total), int(start)
        self.jsonl_path = None if jsonl_path is None else os.fspath(jsonl_path)
        self.description = description
        self.stream = stream
        if enabled in (True, "auto"):
            out = sys.stdout if stream is None else stream
            enabled = "rich" if getattr(out, "isatty", lambda: False)() else "plain"
        self.mode = enabled or None
        if every is not None and (
            isinstance(every, bool) or not isinstance(every, int) or every < 1
        ):
            raise ValueError(f"every must be None or an int >= 1; got {every!r}")
        self.every = every if every is not None else max(1, (self.total - self.start) // 20)
        self.enabled = self.mode is not None
        self._progress = None
        self._task = None
        self._file = None
        self._t0 = None
        self._shown = {}

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.jsonl_path is not None:
            d = os.path.dirname(os.path.abspath(self.jsonl_path))
            os.makedirs(d, exist_ok=True)
            self._file = open(self.jsonl_path, "a", encoding="utf-8")
        if self.mode == "rich":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
            )

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[metrics]}"),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.start, metrics="loss -", rate="-"
            )
        return self

    def update(self, position: int, metrics: dict, *, show: bool = False) -> None:
        """Record the metrics after batch ``position`` (1-based count of batches done).

        ``show=True`` (an evaluation, say) prints a plain line now whatever the interval.
        Evaluation metrics (``valid_*``, ``eval_*``) stay on display until replaced.
        """
        now = time.perf_counter()
        done = position - self.start
        elapsed = now - self._t0
        rate = done / elapsed if elapsed > 0 and done > 0 else float("nan")
        if self._file is not None:
            row = {"position": int(position), "time": elapsed}
            row.update({k: _jsonable(v) for k, v in metrics.items()})
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        fresh = {k: v for k, v in metrics.items() if k.startswith(("valid_", "eval_"))}
        self._shown.update({k: (v, int(position)) for k, v in fresh.items()})
        current = {k: metrics[k] for k in _SHOWN if k in metrics}
        current.update(fresh)
        text = format_metrics(current)
        stale = {k: v for k, (v, at) in self._shown.items() if at != int(position)}
        for at in sorted({a for _, a in self._shown.values() if a != int(position)}):
            old = format_metrics(
                {k: v for k, (v, a) in self._shown.items() if a == at and k in stale}
            )
            if old:
                text = f"{text}  {old} (at {at})" if text else f"{old} (at {at})"
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=position,
                metrics=text or "loss -",
                rate=f"{rate:.1f}",
            )
        elif self.mode == "plain" and (show or done % self.every == 0 or position >= self.total):
            eta = (self.total - position) / rate if rate > 0 else float("nan")
            line = (
                f"{self.description} {position}/{self.total}  {text}  "
                f"{rate:.3g} steps/s  elapsed {_clock(elapsed)}  eta {_clock(eta)}"
            )
            out = sys.stdout if self.stream is None else self.stream
            print(line, file=out, flush=True)

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        if self._file is not None:
            self._file.close()
        return False


def _number(v):
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)):
        return v
    return None


class CsvWriter:
    """Metrics as a CSV file: one row per batch, a column per metric.

    A metric first seen later in the run (a validation metric, say) adds a column: the
    file is rewritten with the wider header, earlier rows leaving it empty. Opened at
    ``start > 0`` (a resumed run) it keeps the rows up to ``start`` and drops the rest,
    which the run writes again. Non-finite values are written as ``nan``/``inf``.

    Args:
      path: the ``.csv`` file (its directory is created).

    Example:
      >>> import os, tempfile
      >>> path = os.path.join(tempfile.mkdtemp(), "run.csv")
      >>> w = CsvWriter(path)
      >>> w.open(0)
      >>> w.write(1, {"loss": 2.0})
      >>> w.write(2, {"loss": 1.5, "valid_loss": 1.7})
      >>> w.close()
      >>> print(open(path).read().strip())
      position,loss,valid_loss
      1,2.0,
      2,1.5,1.7
    """

    def __init__(self, path):
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path; got {type(path).__name__}")
        self.path = os.path.abspath(os.fspath(path))
        self._fields = ["position"]
        self._rows = []

    def open(self, start: int = 0) -> None:
        """Start writing; keep the rows of an earlier run up to position ``start``."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        self._fields, self._rows = ["position"], []
        if start > 0 and os.path.exists(self.path):
            with open(self.path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self._fields = list(reader.fieldnames or ["position"])
                for row in reader:
                    try:
                        if int(row["position"]) <= start:
                            self._rows.append(row)
                    except (KeyError, TypeError, ValueError):
                        continue  # a line cut short by a kill: written again
        self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, self._fields, restval="")
            w.writeheader()
            w.writerows(self._rows)
        os.replace(tmp, self.path)

    def write(self, position: int, row: dict) -> None:
        """Append the scalar metrics of batch ``position``."""
        out = {"position": int(position)}
        for k, v in row.items():
            v = _number(v)
            if v is not None and k != "position":
                out[k] = v
        self._rows.append(out)
        new = [k for k in out if k not in self._fields]
        if new:
            self._fields += new
            self._rewrite()
            return
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            csv.DictWriter(f, self._fields, restval="").writerow(out)

    def close(self) -> None:
        """Nothing is buffered: every row is on disk when :meth:`write` returns."""


class TensorBoardWriter:
    """Metrics as TensorBoard event files (``tensorboardX``), one scalar per metric
    at the data position.

    Needs ``tensorboardX`` (``pip install rnnjax[tensorboard]``). Opened at ``start > 0``
    (a resumed run) it purges the events past ``start`` that the run writes again.

    Args:
      logdir: the TensorBoard log directory.

    Example:
      >>> import tempfile
      >>> w = TensorBoardWriter(tempfile.mkdtemp())  # doctest: +SKIP
      >>> w.open(0); w.write(1, {"loss": 2.0}); w.close()  # doctest: +SKIP
    """

    def __init__(self, logdir):
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a directory path; got {type(logdir).__name__}")
        try:
            import tensorboardX  # noqa: F401
        except ImportError as err:
            raise ImportError(
                "TensorBoardWriter needs tensorboardX: pip install 'rnnjax[tensorboard]'"
            ) from err
        self.logdir = os.path.abspath(os.fspath(logdir))
        self._writer = None

    def open(self, start: int = 0) -> None:
        """Start writing; events past position ``start`` from an earlier run are purged."""
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(self.logdir, purge_step=(start + 1) if start > 0 else None)

    def write(self, position: int, row: dict) -> None:
        """Write the scalar metrics of batch ``position``."""
        for k, v in row.items():
            v = _number(v)
            if v is not None and k != "position":
                self._writer.add_scalar(k, v, global_step=int(position))

    def close(self) -> None:
        """Flush and close the event file."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
