"""The benchmark's printed tables and its plot (see ``experiments/benchmark.py``)."""

from __future__ import annotations

import numpy as np

from experiments import bench_core as core
from experiments import bench_peers as peers


def _fmt_ms(summary):
    if not summary:
        return "-"
    return f"{summary['median'] * 1e3:.2f} [{summary['q1'] * 1e3:.2f}-{summary['q3'] * 1e3:.2f}]"


def _timings_table(report):
    from rich.table import Table

    t = Table(
        title=f"Timings ({report['config']['dtype']}, {report['environment']['backend']}, "
        f"matmul peak {report['matmul_peak']['gflops']:.1f} GFLOP/s), ms: median \\[q1-q3]"
    )
    for col in (
        "shape",
        "cell",
        "impl",
        "fwd ms",
        "train ms",
        "compile s (train)",
        "XLA MB (train)",
        "GFLOP/s (train)",
        "% peak",
    ):
        t.add_column(col, justify="right" if "ms" in col or "/" in col or "%" in col else "left")
    for r in report["results"]:
        mem = r["memory"].get("train_xla_bytes") or r["memory"].get("fwd_xla_bytes")
        gf = r["gflops"].get("train", r["gflops"]["fwd"])
        pf = r["peak_fraction"].get("train", r["peak_fraction"]["fwd"])
        comp = r["compile_s"].get("train", r["compile_s"].get("fwd"))
        t.add_row(
            core.Shape(**r["shape"]).label(),
            r["cell"],
            r["impl"],
            _fmt_ms(r["fwd_summary"]),
            _fmt_ms(r["train_summary"]),
            "-" if comp is None else f"{comp:.2f}",
            "-" if mem is None else f"{mem / 2**20:.1f}",
            f"{gf:.1f}",
            f"{100 * pf:.0f}%",
        )
    return t


def _ratio_table(rows, reference: bool):
    """Ratios against the peers, or (``reference``) against rnnjax's reference path."""
    from rich.table import Table

    if reference:
        title = (
            "default / reference (same run): rnnjax's default path against its reference "
            "path (not a peer: the scan differentiated by autodiff), median \\[min-max]; "
            "target <= 1.0"
        )
    else:
        title = (
            "rnnjax time / peer time (paired rounds): median \\[min-max]; < 1 means rnnjax is "
            "faster"
        )
    t = Table(title=title)
    for col in (
        "shape",
        "cell",
        "reference" if reference else "peer",
        "train (fwd+bwd)",
        "forward",
    ):
        t.add_column(col)
    seen = {}
    for q in rows:
        seen.setdefault((core.Shape(**q["shape"]).label(), q["cell"], impl_label(q["peer"])), {})[
            q["mode"]
        ] = q
    for (shape, cell, peer), modes in seen.items():
        cells = [
            f"{m['median']:.2f} [{m['min']:.2f}-{m['max']:.2f}]" if m else "-"
            for m in (modes.get("train"), modes.get("fwd"))
        ]
        t.add_row(shape, cell, peer, *cells)
    return t


def _sweep_table(sw):
    from rich.table import Table

    t = Table(
        title=f"Echo state sweep: {sw['models']} models, N={sw['N']}, NARMA-10, "
        f"{sw['T']}+{sw['T_test']} steps (median of {sw['reps']})"
    )
    for col in ("rnnjax sweep s", "ReservoirPy loop s", "matmul floor s", "sweep / floor"):
        t.add_column(col)
    rpy = sw.get("reservoirpy_loop_s")
    t.add_row(
        f"{sw['sweep_s']:.2f}",
        "-" if rpy is None else f"{rpy:.2f}",
        f"{sw['floor_s']:.2f}",
        f"{sw['sweep_over_floor']:.2f}",
    )
    return t


def _quality_table(q):
    from rich.table import Table

    t = Table(title=f"Mackey-Glass one-step test NRMSE within {q['budget_s']} s of training")
    for col in ("model", "train s", "steps", "compile s", "NRMSE"):
        t.add_column(col)
    for m in q["models"]:
        t.add_row(
            m["model"],
            f"{m['train_s']:.2f}",
            str(m["steps"]),
            f"{m['compile_s']:.2f}",
            f"{m['nrmse']:.3g}",
        )
    return t


def _targets_table(rows):
    from rich.table import Table

    t = Table(title="Performance targets (judged only where they were set)")
    for col in ("target", "measured", "met"):
        t.add_column(col)
    for row in rows:
        v = row["value"]
        t.add_row(
            row["target"],
            "-" if v is None else f"{v:.3g}",
            {True: "yes", False: "NO", None: "not measured"}[row["met"]],
        )
    return t


def print_tables(report, console):
    """Print the report's tables on the ``rich`` ``console``: timings, ratios against the
    peers and against the reference path, the echo state sweep, quality per second and
    the performance targets."""
    console.print(_timings_table(report))
    for reference in (False, True):
        rows = [q for q in report["ratios"] if is_reference(q["peer"]) == reference]
        if rows:
            console.print(_ratio_table(rows, reference))
    if report.get("esn_sweep"):
        console.print(_sweep_table(report["esn_sweep"]))
    if report.get("quality"):
        console.print(_quality_table(report["quality"]))
    if not report["targets"]:
        console.print(
            "Performance targets: not judged (they were set for the default shapes; "
            "run without --quick and --shape to judge them)."
        )
        return
    console.print(_targets_table(report["targets"]))


def is_reference(impl: str) -> bool:
    """Whether ``impl`` is a reference row (rnnjax itself with its fast paths off), not a
    peer library."""
    return impl == peers.alternative_name()


def impl_label(impl: str) -> str:
    """How an implementation is named in tables and plots."""
    return "rnnjax autodiff (reference)" if is_reference(impl) else impl


def _ratio_axis(ax, rows, title, color_of, right):
    """Horizontal bars of the median ratio with its range, the axis limited to the medians:
    a range past the edge is drawn to the edge with its end written there."""
    labels = [
        f"{q['cell']} {core.Shape(**q['shape']).label()}  vs {impl_label(q['peer'])}" for q in rows
    ]
    y = np.arange(len(rows))
    med = np.array([q["median"] for q in rows], float)
    lo = np.array([q["min"] for q in rows], float)
    hi = np.array([q["max"] for q in rows], float)
    ax.barh(y, med, color=[color_of(m) for m in med], height=0.6)
    ax.hlines(y, np.minimum(lo, right), np.minimum(hi, right), color="k", lw=1.2)
    for yi, h in zip(y, hi):
        if h > right:
            ax.annotate(
                f"{h:.2g}",
                (right, yi),
                xytext=(-2, 3),
                textcoords="offset points",
                ha="right",
                va="bottom",
                fontsize=9,
            )
    ax.axvline(1.0, color="k", lw=1, ls="--")
    ax.set_xlim(0, right)
    ax.set_yticks(y, labels, fontsize=9)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=9)
    ax.set_title(title, fontsize=11)


def plot(report, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [q for q in report["ratios"] if q["mode"] == "train"]
    peer_rows = [q for q in train if not is_reference(q["peer"])]
    ref_rows = [q for q in train if is_reference(q["peer"])]
    n_left = len(peer_rows) + len(ref_rows)
    height = max(4.8, 0.32 * n_left + 1.8)
    fig = plt.figure(figsize=(15, height))
    grid = fig.add_gridspec(
        2 if ref_rows else 1,
        2,
        width_ratios=(1.15, 1),
        height_ratios=(max(len(peer_rows), 1), len(ref_rows)) if ref_rows else None,
    )
    ax = fig.add_subplot(grid[0, 0])
    # one x scale for peers and reference, set by the medians (not the ranges)
    right = max([1.3 * q["median"] for q in train] + [1.5])
    _ratio_axis(
        ax,
        peer_rows,
        "Speed against the peers, training step (< 1: rnnjax faster)",
        lambda m: "tab:green" if m <= 1 else "tab:orange",
        right,
    )
    if ref_rows:
        ax_r = fig.add_subplot(grid[1, 0])
        _ratio_axis(
            ax_r,
            ref_rows,
            "Reference, not a peer: rnnjax with its fast paths off (< 1: the fast path gains)",
            lambda m: "0.6",
            right,
        )
        ax_r.set_xlabel(
            "rnnjax time / other time (bar: median of paired rounds; line: range)", fontsize=9
        )
    else:
        ax.set_xlabel(
            "rnnjax time / peer time (bar: median of paired rounds; line: range)", fontsize=9
        )
    ax = fig.add_subplot(grid[:, 1])
    q = report.get("quality")
    if q:
        for m in q["models"]:
            c = np.array(m["curve"])
            ax.plot(c[:, 0], c[:, 1], marker="o", label=m["model"])
        ax.set_yscale("log")
        ax.set_xlabel("training wall-clock seconds (compile excluded)", fontsize=10)
        ax.set_ylabel("test one-step NRMSE", fontsize=10)
        ax.set_title("Mackey-Glass: error reached per second", fontsize=11)
        ax.tick_params(labelsize=9)
        ax.legend(fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
