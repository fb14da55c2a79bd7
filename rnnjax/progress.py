"""Progress of a training run: a rich progress bar or plain lines, and a JSONL log.

Both are optional and independent: ``ProgressLog(total, enabled=False,
jsonl_path="run.jsonl")`` only writes the log. On a terminal the display is a rich bar;
when standard output is not a terminal (a log file, a pipe, a batch job) it is plain
text lines, printed and flushed as the run goes, so a log file sees progress at once.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from typing import Optional, Union

__all__ = ["ProgressLog", "format_metrics"]

_SHOWN = ("loss",)  # training metrics always shown; evaluation metrics are shown as they come


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
    """``"name value"`` pairs of the scalar metrics in ``names`` (default: ``loss`` and
    every metric whose name starts with ``valid_`` or ``eval_``), four significant digits.

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
        self._shown.update({k: v for k, v in metrics.items() if k.startswith(("valid_", "eval_"))})
        shown = {"loss": metrics.get("loss"), **self._shown}
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=position,
                metrics=format_metrics(shown) or "loss -",
                rate=f"{rate:.1f}",
            )
        elif self.mode == "plain" and (show or done % self.every == 0 or position >= self.total):
            eta = (self.total - position) / rate if rate > 0 else float("nan")
            line = (
                f"{self.description} {position}/{self.total}  {format_metrics(shown)}  "
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
