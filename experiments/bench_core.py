"""Benchmark harness logic without any framework: shapes, FLOP counts, timing statistics,
ratios and the JSON report's schema. Tested on its own in ``tests/test_benchmark.py``.

Shapes: ``B`` batch, ``T`` time, ``I`` input, ``H`` hidden (``N`` for a reservoir).
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
import threading
import time
from typing import Callable, Iterable, NamedTuple, Sequence

__all__ = [
    "Shape",
    "parse_shape",
    "DEFAULT_SHAPES",
    "QUICK_SHAPES",
    "FULL_SHAPES",
    "GATES",
    "flops",
    "summarize",
    "paired_ratios",
    "adaptive_reps",
    "time_call",
    "RSSPeak",
    "validate_report",
    "REPORT_SCHEMA",
]


class Shape(NamedTuple):
    """A benchmark shape: batch ``B``, time ``T``, input ``I``, hidden ``H``."""

    B: int
    T: int
    I: int
    H: int

    def label(self) -> str:
        return f"B={self.B},T={self.T},I={self.I},H={self.H}"


def parse_shape(text: str) -> Shape:
    """Parse ``"B,T,I,H"`` (four positive integers) into a :class:`Shape`.

    Raises:
      ValueError: naming the argument, what it got and what was expected.
    """
    parts = str(text).replace(" ", "").split(",")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = None
    if values is None or len(values) != 4 or min(values) < 1:
        raise ValueError(f"--shape must be four positive integers B,T,I,H; got {text!r}")
    return Shape(*values)


DEFAULT_SHAPES = (
    Shape(32, 128, 64, 128),
    Shape(64, 256, 128, 256),
    Shape(1, 1000, 32, 64),
    Shape(256, 64, 256, 512),
)
QUICK_SHAPES = (Shape(4, 16, 8, 16),)
FULL_SHAPES = DEFAULT_SHAPES + (Shape(16, 512, 64, 128), Shape(128, 128, 512, 1024))

# Fused gate blocks per cell: LSTM (i, f, g, o), GRU (r, z, n), Elman RNN and ESN one.
GATES = {"lstm": 4, "gru": 3, "rnn": 1, "esn": 1}


def flops(cell: str, shape: Shape, train: bool) -> int:
    """Matrix-multiply FLOPs (2 per multiply-add) of one call, elementwise work left out.

    Forward: per example and step ``x @ W_ih`` (``I x GH``) and ``h @ W_hh``
    (``H x GH``), so ``2 B T GH (I + H)``. A training step (gradient w.r.t. the
    parameters, not the inputs) adds ``dW_ih = X^T dZ`` (``2 B T I GH``),
    ``dW_hh = H^T dZ`` and ``dH = dZ W_hh^T`` (``2 B T H GH`` each):
    ``2 B T GH (2 I + 3 H)`` in all. The ESN is never trained by gradient; its
    "train" count is its forward count (the ridge fit is timed separately).

    Args:
      cell: ``"lstm"``, ``"gru"``, ``"rnn"`` or ``"esn"``.
      shape: the :class:`Shape`.
      train: forward only (False) or forward + backward (True).

    Returns:
      The FLOP count as an int.
    """
    if cell not in GATES:
        raise ValueError(f"cell must be one of {sorted(GATES)}; got {cell!r}")
    B, T, I, H = shape
    gh = GATES[cell] * H
    if not train or cell == "esn":
        return 2 * B * T * gh * (I + H)
    return 2 * B * T * gh * (2 * I + 3 * H)


def summarize(values: Sequence[float]) -> dict:
    """Median and spread of repeated measurements.

    Returns:
      ``{"median", "min", "max", "q1", "q3", "n"}`` (quartiles by linear interpolation,
      numpy's default; equal to the median for fewer than 2 values).
    """
    xs = sorted(float(v) for v in values)
    if not xs:
        raise ValueError("values must hold at least one measurement; got none")

    def quantile(q):
        pos = q * (len(xs) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)

    return {
        "median": statistics.median(xs),
        "min": xs[0],
        "max": xs[-1],
        "q1": quantile(0.25),
        "q3": quantile(0.75),
        "n": len(xs),
    }


def paired_ratios(ours: Sequence[float], theirs: Sequence[float]) -> dict:
    """Time ratios ``ours / theirs`` of alternated runs (round ``k`` against round ``k``).

    Runs are alternated so that drift in the machine's load hits both sides of a pair;
    the per-pair ratios then carry the spread. Below 1: ours is faster.

    Returns:
      :func:`summarize` of the per-pair ratios plus ``"of_medians"``, the ratio of the
      two medians.
    """
    if len(ours) != len(theirs) or not ours:
        raise ValueError(
            f"ours and theirs must be equally long, non-empty; got {len(ours)} and {len(theirs)}"
        )
    if min(theirs) <= 0 or min(ours) <= 0:
        raise ValueError("times must be positive")
    out = summarize([a / b for a, b in zip(ours, theirs)])
    out["of_medians"] = statistics.median(ours) / statistics.median(theirs)
    return out


def adaptive_reps(first_times: Iterable[float], budget_s: float, lo: int, hi: int) -> int:
    """How many alternated rounds fit in ``budget_s``, given one round's call times,
    clipped to ``[lo, hi]``."""
    total = sum(first_times)
    if total <= 0:
        return hi
    return int(min(hi, max(lo, budget_s // total)))


def time_call(fn: Callable[[], object]) -> float:
    """Wall-clock seconds of one ``fn()``; ``fn`` must block until its result is ready."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


class RSSPeak:
    """Peak resident memory above the level at entry, sampled every ``interval_s`` in a
    thread (Linux ``/proc/self/statm``; 0 elsewhere). The CPU stand-in for device memory
    statistics; coarse, and blind to memory the allocator had cached before entry."""

    def __init__(self, interval_s: float = 0.001):
        self.interval_s = interval_s
        self.peak_bytes = 0

    @staticmethod
    def rss() -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def __enter__(self):
        self._base = self.rss()
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, self.rss())
                time.sleep(self.interval_s)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._peak = max(self._peak, self.rss())
        self.peak_bytes = max(0, self._peak - self._base)
        return False


# --------------------------------------------------------------------------- schema

_NUM = (int, float)
REPORT_SCHEMA = {
    "environment": {
        "jax_version": str,
        "backend": str,
        "device_kind": str,
        "cpu_count": int,
        "python": str,
        "platform": str,
    },
    "config": {"preset": str, "dtype": str, "shapes": list},
    "matmul_peak": {"gflops": _NUM},
    "results": list,
    "ratios": list,
}
RESULT_KEYS = {
    "shape": dict,
    "cell": str,
    "impl": str,
    "dtype": str,
    "fwd_s": list,
    "train_s": list,
    "compile_s": dict,
    "memory": dict,
    "flops": dict,
    "gflops": dict,
    "peak_fraction": dict,
}
RATIO_KEYS = {
    "shape": dict,
    "cell": str,
    "impl": str,
    "peer": str,
    "mode": str,
    "median": _NUM,
    "min": _NUM,
    "max": _NUM,
    "of_medians": _NUM,
}


def _check_keys(where: str, obj, spec: dict) -> list:
    errors = []
    if not isinstance(obj, dict):
        return [f"{where} must be an object; got {type(obj).__name__}"]
    for key, typ in spec.items():
        if key not in obj:
            errors.append(f"{where}.{key} is missing")
        elif isinstance(typ, dict):
            errors += _check_keys(f"{where}.{key}", obj[key], typ)
        elif not isinstance(obj[key], typ) or isinstance(obj[key], bool):
            errors.append(f"{where}.{key} must be {typ}; got {type(obj[key]).__name__}")
    return errors


def _well_formed(errors: list, entries: list, name: str, spec: dict):
    """``(where, entry)`` for each entry of the list ``name`` whose keys and types match
    ``spec``; the problems of the others are appended to ``errors``."""
    for n, entry in enumerate(entries):
        where = f"{name}[{n}]"
        errs = _check_keys(where, entry, spec)
        errors += errs
        if not errs:
            yield where, entry


def validate_report(report: dict) -> list:
    """Check a benchmark report against :data:`REPORT_SCHEMA`.

    Returns:
      A list of problems (empty when the report is valid): missing keys, wrong types,
      empty or non-positive timing lists, ratios that do not match the times they were
      computed from.
    """
    errors = _check_keys("report", report, REPORT_SCHEMA)
    if (
        not isinstance(report, dict)
        or not isinstance(report.get("results"), list)
        or not isinstance(report.get("ratios"), list)
    ):
        return errors
    index = {}
    for where, r in _well_formed(errors, report["results"], "results", RESULT_KEYS):
        for k in ("fwd_s", "train_s"):
            if not all(isinstance(v, _NUM) and v > 0 for v in r[k]):
                errors.append(f"{where}.{k} must hold positive seconds; got {r[k]}")
        if not r["fwd_s"]:
            errors.append(f"{where}.fwd_s is empty")
        index[(tuple(sorted(r["shape"].items())), r["cell"], r["impl"])] = r
    for where, q in _well_formed(errors, report["ratios"], "ratios", RATIO_KEYS):
        key = tuple(sorted(q["shape"].items())), q["cell"]
        a, b = index.get(key + (q["impl"],)), index.get(key + (q["peer"],))
        if a is None or b is None:
            errors.append(f"{where} refers to results that are not in the report")
            continue
        times = "train_s" if q["mode"] == "train" else "fwd_s"
        try:
            expect = paired_ratios(a[times], b[times])
        except ValueError as e:
            errors.append(f"{where} cannot be recomputed from the times: {e}")
            continue
        if not math.isclose(expect["median"], q["median"], rel_tol=1e-9):
            errors.append(
                f"{where}.median {q['median']} does not match the times ({expect['median']})"
            )
    return errors


def shape_dict(shape: Shape) -> dict:
    """A :class:`Shape` as a JSON object."""
    return dict(zip(Shape._fields, map(int, shape)))


@dataclasses.dataclass
class Preset:
    """Run sizes of a preset: shapes, repetitions and the quality task's budget."""

    name: str
    shapes: tuple
    min_reps: int
    max_reps: int
    budget_s: float  # time for the alternated rounds of one (shape, cell)
    quality_budget_s: float
    quality_series: int
    remat_T: int
    cells: tuple = ("lstm", "gru", "rnn", "esn")
    esn_sizes: tuple = (100,)
    skip: tuple = ()  # (impl, cell) pairs left out to keep the preset's time


# The default preset must finish in a few minutes on 2 cores: it leaves out Flax's Elman
# cell. It keeps the rnnjax_autodiff rows (rnnjax's reference path, autodiff of the scan):
# the default training step is judged against them in the same run.
_DEFAULT_SKIP = (("flax", "rnn"),)


PRESETS = {
    "quick": Preset("quick", QUICK_SHAPES, 2, 3, 0.5, 0.5, 1500, 1000),
    "default": Preset("default", DEFAULT_SHAPES, 2, 5, 2.0, 3.0, 3000, 10000, skip=_DEFAULT_SKIP),
    "full": Preset("full", FULL_SHAPES, 5, 25, 20.0, 20.0, 8000, 10000, esn_sizes=(100, 500, 2000)),
}
