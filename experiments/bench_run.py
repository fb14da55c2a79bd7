"""The benchmark's run: measurements, tables, JSON and plot (see ``experiments/benchmark.py``).

The measurements are in :mod:`experiments.bench_measure` and
:mod:`experiments.bench_quality`, the performance targets in
:mod:`experiments.bench_targets`, the tables and the plot in :mod:`experiments.bench_tables`.
"""

from __future__ import annotations

import json
import os
import time
import traceback

import jax

import rnnjax as rj
from experiments import bench_core as core
from experiments import bench_measure as measure
from experiments import bench_peers as peers
from experiments import bench_quality, bench_tables, bench_targets


def _preset(args):
    if args.quick:
        return core.PRESETS["quick"]
    if args.full:
        return core.PRESETS["full"]
    return core.PRESETS["default"]


def _new_report(args, preset, shapes, cells, impls) -> dict:
    return {
        "environment": measure.environment(),
        "config": {
            "preset": preset.name,
            "dtype": args.dtype,
            "shapes": [core.shape_dict(s) for s in shapes],
            "cells": cells,
            "impls": impls,
            "min_reps": preset.min_reps,
            "max_reps": preset.max_reps,
            "round_budget_s": preset.budget_s,
            "seed": args.seed,
            "fused_projection": rj.engine.default_projection(),
        },
        "results": [],
        "errors": [],
    }


def _measure_shapes(report, args, preset, jobs, impls, progress, task, t_start):
    """Time every ``(shape, cell)`` job into ``report["results"]``; a job that fails is
    recorded under ``report["errors"]`` and the run goes on."""
    log = progress.console.print
    for n, (shape, cell) in enumerate(jobs):
        progress.update(task, description=f"{cell} {shape.label()}")
        if not progress.console.is_terminal:  # no live bar: one line per step
            log(
                f"[{n + 1}/{len(jobs)}] {cell} {shape.label()} ({time.perf_counter() - t_start:.0f} s)"
            )
        try:
            report["results"] += measure.measure_shape(
                shape, cell, impls, args.dtype, preset, report["matmul_peak"]["gflops"], log=log
            )
        except Exception as e:  # noqa: BLE001 - keep going, record it
            report["errors"].append(f"{cell} {shape.label()}: {traceback.format_exc(limit=3)}")
            log(f"  {cell} {shape.label()} failed: {type(e).__name__}: {e}")
        progress.advance(task)


def _measure_extras(report, args, preset, progress, task):
    """The rows after the timed shapes: quality per second, compile time, remat memory,
    the Flax modules, dropout and bfloat16, the echo state sweep."""
    quick = preset.name == "quick"
    log = progress.console.print
    extras = (
        (
            "quality",
            "quality per second (Mackey-Glass)",
            lambda: bench_quality.quality_task(preset, args.seed, log=log),
        ),
        (
            "compile_bidirectional",
            "compile time, 2-layer bidirectional LSTM",
            measure.bidirectional_compile,
        ),
        (
            "remat",
            f"rematerialisation memory, T={preset.remat_T}",
            lambda: measure.remat_memory(T=preset.remat_T),
        ),
        (
            "flax_modules",
            "Flax linen / NNX modules against the functional layer",
            lambda: measure.flax_modules(quick=quick),
        ),
        (
            "regularised",
            "dropout and bfloat16 rows (2-layer LSTM)",
            lambda: measure.regularised(quick=quick),
        ),
        (
            "esn_sweep",
            "echo state sweep: ReservoirPy loop and matmul floor",
            lambda: measure.esn_sweep(args.out, quick=quick),
        ),
    )
    for key, description, fn in extras:
        progress.update(task, description=description)
        report[key] = fn()
        progress.advance(task)


def _measure(report, args, preset, shapes, cells, impls, console, t_start):
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    jobs = [(s, c) for s in shapes for c in cells]
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("matmul peak", total=len(jobs) + 7)
        # a peak is the best the machine does: many repetitions, so that background load
        # on this shared machine is unlikely to hit them all
        report["matmul_peak"] = measure.matmul_peak(
            256 if args.quick else 1024, args.dtype, reps=5 if args.quick else 25
        )
        progress.advance(task)
        _measure_shapes(report, args, preset, jobs, impls, progress, task, t_start)
        _measure_extras(report, args, preset, progress, task)


def _finish(report, t_start):
    """Ratios, targets, wall time, the closing load average and the schema check."""
    report["ratios"] = measure.ratio_rows(report["results"])
    report["targets"] = bench_targets.targets(report)
    report["wall_s"] = time.perf_counter() - t_start
    try:
        with open("/proc/loadavg") as f:
            report["environment"]["loadavg_end"] = f.read().split()[:3]
    except OSError:
        pass
    problems = core.validate_report(report)
    if problems:
        report["errors"] += problems


def _write(report, args, console):
    """``benchmark.json``, ``benchmark.png`` and the printed tables."""
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "benchmark.json"), "w") as f:
        json.dump(report, f, indent=1)
    bench_tables.plot(report, os.path.join(args.out, "benchmark.png"))
    bench_tables.print_tables(report, console)
    if report.get("regularised"):
        from experiments import bench_regularised

        console.print(bench_regularised.report(report["regularised"]))
    console.print(
        f"wrote {args.out}/benchmark.json and {args.out}/benchmark.png in {report['wall_s']:.0f} s"
        + (
            f"; {len(report['errors'])} problem(s) recorded under 'errors'"
            if report["errors"]
            else ""
        )
    )


def run(args) -> dict:
    """Run the benchmark that ``args`` (``experiments/benchmark.py``'s flags) asks for:
    measure, judge the targets, write the JSON and the plot, print the tables.

    Returns:
      The report written to ``<out>/benchmark.json``.
    """
    from rich.console import Console

    console = Console(width=max(Console().width, 150))
    preset = _preset(args)
    shapes = tuple(args.shape) if args.shape else preset.shapes
    impls = peers.available(jax.default_backend())
    cells = [c for c in preset.cells if c != "esn" or peers.has_esn()]
    report = _new_report(args, preset, shapes, cells, impls)
    t_start = time.perf_counter()
    _measure(report, args, preset, shapes, cells, impls, console, t_start)
    _finish(report, t_start)
    _write(report, args, console)
    return report
