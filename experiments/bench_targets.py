"""The benchmark's performance targets, each judged only where it was set (see
``experiments/benchmark.py``)."""

from __future__ import annotations

from experiments import bench_core as core
from experiments import bench_peers as peers


def bench_regularised_shape():
    from experiments import bench_regularised

    return bench_regularised.SHAPE


def _ratio(ratios, shape, cell, peer, mode="train"):
    for q in ratios:
        if (
            q["shape"] == core.shape_dict(shape)
            and q["cell"] == cell
            and q["peer"] == peer
            and q["mode"] == mode
        ):
            return q["of_medians"]
    return None


def _row(target: str, value, met) -> dict:
    """A target's row: ``met(value)`` judges it, ``None`` where it was not measured."""
    return {"target": target, "value": value, "met": None if value is None else met(value)}


def _speed_rows(ratios, shapes) -> list:
    """Against PyTorch, the reference path, and the best of Flax and Equinox, at the
    default shapes measured."""
    defaults = [s for s in core.DEFAULT_SHAPES if s in shapes]
    rows = []
    for s in defaults:
        lim = 1.0
        r = _ratio(ratios, s, "lstm", "torch")
        rows.append(_row(f"LSTM <= {lim}x torch at {s.label()}", r, lambda v: v <= lim))
        r = _ratio(ratios, s, "gru", "torch")
        rows.append(_row(f"GRU <= 0.8x torch at {s.label()}", r, lambda v: v <= 0.8))
    for s in defaults:
        for cell in ("lstm", "gru", "rnn"):
            r = _ratio(ratios, s, cell, peers.alternative_name())
            rows.append(
                _row(
                    f"{cell.upper()} default <= 1.0x reference (same run) at {s.label()}",
                    r,
                    lambda v: v <= 1.0,
                )
            )
    for s in defaults[:2]:
        for cell in ("lstm", "gru"):
            rs = [x for x in (_ratio(ratios, s, cell, p) for p in ("flax", "equinox")) if x]
            r = max(rs) if rs else None  # against the best (fastest) peer: the largest ratio
            rows.append(
                _row(
                    f"{cell.upper()} <= 0.8x best Flax/Equinox at {s.label()}",
                    r,
                    lambda v: v <= 0.8,
                )
            )
    return rows


def _peak_rows(report, shapes) -> list:
    """The fraction of the matmul peak reached at the largest default shape."""
    big = core.DEFAULT_SHAPES[3]
    if big not in shapes:
        return []
    return [
        _row(
            f"{res['cell'].upper()} >= 85% of matmul peak at {big.label()}",
            res["peak_fraction"].get("train"),
            lambda v: v >= 0.85,
        )
        for res in report["results"]
        if res["impl"] == "rnnjax"
        and res["cell"] in ("lstm", "gru")
        and res["shape"] == core.shape_dict(big)
    ]


def _extra_rows(report) -> list:
    """Compile time, the Flax modules, dropout and bfloat16, the echo state sweep and
    the rematerialisation memory, each where it was measured at its set size."""
    rows = [
        _row(
            f"2-layer bidirectional LSTM compiles < 2 s at T={c['T']}",
            c["compile_s"],
            lambda v: v < 2.0,
        )
        for c in report.get("compile_bidirectional", [])
    ]
    fm = report.get("flax_modules")
    if fm:
        for name in ("linen", "nnx split", "nnx.jit"):
            rows.append(
                _row(
                    f"Flax {name} within 5% of the functional layer (2-layer BiLSTM)",
                    fm["ratio_to_functional"][name],
                    lambda v: v <= 1.05,
                )
            )
    reg = report.get("regularised")
    if reg and tuple(reg["shape"].values()) == bench_regularised_shape():
        for k, v in reg["ratios"].items():
            if "target <=" in k:
                lim = float(k.split("target <=")[1].strip(" )"))
                rows.append(
                    _row(k.split(" (target")[0] + f" <= {lim}", v, lambda v, lim=lim: v <= lim)
                )
    sw = report.get("esn_sweep")
    if sw and sw["N"] == 500:
        rows.append(
            _row(
                "ESN sweep (64 models, N=500) <= 2x the dense-matmul floor",
                sw["sweep_over_floor"],
                lambda v: v <= 2.0,
            )
        )
        rows.append(
            _row(
                "ReservoirPy loop >= 5x the ESN sweep's time",
                sw.get("reservoirpy_over_sweep"),
                lambda v: v >= 5.0,
            )
        )
    rm = report.get("remat")
    if rm and rm["T"] == 10000:
        rows.append(
            _row(
                f"remat peak memory <= 1/4 of default at T={rm['T']}",
                rm["peak_ratio"],
                lambda v: v <= 0.25,
            )
        )
    return rows


def targets(report) -> list:
    """The project's performance targets, each with its measured figure and whether it is
    met. Targets are judged only where they were set: at the default shapes (none for the
    ``--quick`` preset, whose tiny shapes say nothing about them), the compile times at
    their two lengths, the rematerialisation memory at ``T = 10000``."""
    if report["config"].get("preset") == "quick":
        return []
    shapes = [core.Shape(**s) for s in report["config"]["shapes"]]
    return _speed_rows(report["ratios"], shapes) + _peak_rows(report, shapes) + _extra_rows(report)
