"""Progress of a training run: a rich progress bar (loss, steps per second) and a JSONL log.

Both are optional and independent: ``ProgressLog(total, enabled=False,
jsonl_path="run.jsonl")`` only writes the log.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Optional

__all__ = ["ProgressLog"]


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None  # JSON has no NaN / Inf; a skipped step is flagged by "skipped"
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    return v


class ProgressLog:
    """A context manager that shows and records training progress.

    Args:
      total: number of batches of the whole run.
      start: batches already done (a resumed run).
      enabled: show the progress bar (rich); ``False`` for none.
      jsonl_path: optional file; every :meth:`update` appends one JSON object per line
        (``{"position": ..., "time": ..., <metrics>}``; non-finite floats become ``null``).
      description: the bar's label.

    Example:
      >>> with ProgressLog(10, enabled=False) as log:  # doctest: +SKIP
      ...     log.update(1, {"loss": 2.3})
    """

    def __init__(self, total: int, *, start: int = 0, enabled: bool = True,
                 jsonl_path: Optional[str] = None, description: str = "train"):
        self.total, self.start, self.enabled = int(total), int(start), bool(enabled)
        self.jsonl_path = None if jsonl_path is None else os.fspath(jsonl_path)
        self.description = description
        self._progress = None
        self._task = None
        self._file = None
        self._t0 = None

    def __enter__(self):
        self._t0 = time.perf_counter()
        if self.jsonl_path is not None:
            d = os.path.dirname(os.path.abspath(self.jsonl_path))
            os.makedirs(d, exist_ok=True)
            self._file = open(self.jsonl_path, "a", encoding="utf-8")
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TextColumn("{task.fields[rate]} steps/s"),
                TimeRemainingColumn(),
            )
            self._progress.start()
            self._task = self._progress.add_task(
                self.description, total=self.total, completed=self.start, loss="-", rate="-"
            )
        return self

    def update(self, position: int, metrics: dict) -> None:
        """Record the metrics after batch ``position`` (1-based count of batches done)."""
        now = time.perf_counter()
        done = position - self.start
        rate = done / (now - self._t0) if now > self._t0 and done > 0 else float("nan")
        if self._file is not None:
            row = {"position": int(position), "time": now - self._t0}
            row.update({k: _jsonable(v) for k, v in metrics.items()})
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        if self._progress is not None:
            loss = metrics.get("loss")
            if isinstance(loss, list):
                loss = loss[-1] if loss else float("nan")
            self._progress.update(
                self._task, completed=position,
                loss="-" if loss is None else f"{loss:.4f}", rate=f"{rate:.1f}",
            )

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.stop()
        if self._file is not None:
            self._file.close()
        return False
