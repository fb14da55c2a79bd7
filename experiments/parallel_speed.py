"""Parallel in time: speed against sequence length, and the targets.

Times (forward and training step = value and gradient of a sum of squares of the
outputs) of, in one run on one machine:

- ``gru``: rnnjax's sequential GRU (the default engine path);
- ``mingru``, ``lru``: the linear cells with ``ScanConfig(method="parallel")`` (the
  backend's default linear scan, :func:`rnnjax.parallel.default_scan`);
- ``gru_deer``, ``gru_qdeer``, ``lstm_deer``, ``lstm_qdeer``: the GRU and LSTM by Newton
  iterations with full (DEER) and diagonal (quasi-DEER) Jacobians, tolerance 1e-5, with
  the iterations taken and the largest deviation from the sequential result (full
  Jacobians only up to H = 64 and T = 4096: ``O(T H^2)`` memory, ``O(T H^3)`` work);

with peak memory as XLA's compiled temporary buffer size. Each entry is the median of
repeated calls after a warm-up call (compile time reported apart). Trained-looking
weights: ``init`` defaults (orthogonal recurrent weights).

Targets (``targets`` in the JSON): minGRU training step at B=1, T=16384, I=32, H=64 against
the sequential GRU; the quasi-DEER GRU's deviation and crossover length at B=1, H=64;
the DEER/quasi-DEER LSTM at B=1, T=1000, I=32, H=64 against PyTorch's ``nn.LSTM``
training step (if torch is installed).

Run (seed 0): ``python experiments/parallel_speed.py`` (moderate preset: B=1, H=64,
T = 256 ... 16384, and the targets); ``--full`` (B = 1 and 16, H = 32 ... 256,
T = 256 ... 65536: hours on two CPU cores); ``--quick`` (T = 256, H = 32, targets at
T = 512 and, for the LSTM, T = 100). Writes ``results/parallel_speed[_quick|_full].json`` and ``.png``.
"""

from __future__ import annotations

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax import parallel

SEED, I, TOL = 0, 32, 1e-5


def configs(kind):
    seq = rj.ScanConfig()
    par = lambda j: rj.ScanConfig(
        method="parallel",  # noqa: E731
        parallel=parallel.ParallelOptions(jacobian=j, tol=TOL),
    )
    return {
        "gru": (rj.GRU, seq),
        "mingru": (rj.MinGRU, par("auto")),
        "lru": (rj.LRU, par("auto")),
        "gru_deer": (rj.GRU, par("full")),
        "gru_qdeer": (rj.GRU, par("diag")),
        "lstm_deer": (rj.LSTM, par("full")),
        "lstm_qdeer": (rj.LSTM, par("diag")),
    }[kind]


def timed(f, *args, reps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(*args))
    compile_s = time.perf_counter() - t0
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), compile_s


def memory(f, *args):
    try:
        return int(f.lower(*args).compile().memory_analysis().temp_size_in_bytes)
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None


def measure(kind, B, T, H, reps):
    cls, cfg = configs(kind)
    cell = cls(I, H)
    p = cell.init(jax.random.key(SEED))
    xs = jax.random.normal(jax.random.key(SEED + 1), (B, T, I))
    fwd = jax.jit(lambda p, x: rj.unroll_batch(cell, p, x, config=cfg)[1])
    step = jax.jit(
        jax.value_and_grad(lambda p, x: jnp.sum(rj.unroll_batch(cell, p, x, config=cfg)[1] ** 2))
    )
    out = {"kind": kind, "B": B, "T": T, "H": H}
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out["forward_s"], out["forward_compile_s"] = timed(fwd, p, xs, reps=reps)
        out["train_s"], out["train_compile_s"] = timed(step, p, xs, reps=reps)
        jax.effects_barrier()
        out["fell_back"] = any(isinstance(x.message, parallel.NotConvergedWarning) for x in w)
    out["train_temp_bytes"] = memory(step, p, xs)
    if kind.endswith("deer"):
        _, ys, info = rj.parallel_solve(cell, p, xs, options=cfg.parallel)
        ref = rj.unroll_batch(cell, p, xs)[1]
        out.update(
            iterations=int(info.iterations),
            residual=float(info.residual),
            max_dev_from_sequential=float(jnp.max(jnp.abs(ys - ref))),
        )
    print({k: (round(v, 5) if isinstance(v, float) else v) for k, v in out.items()}, flush=True)
    return out


def torch_lstm_train(B, T, H, reps):
    try:
        import torch
    except ImportError:
        return None
    torch.manual_seed(SEED)
    lstm = torch.nn.LSTM(I, H)
    x = torch.randn(T, B, I)

    def step():
        lstm.zero_grad()
        (lstm(x)[0] ** 2).sum().backward()

    step()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        step()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def main():
    args = rc.parse(__doc__, {"--full": "the full sweep (hours on two CPU cores)"})
    if args.quick:
        grid, kinds, reps = [(1, 256, 32)], list(KINDS), 2
    elif args.full:
        grid = [
            (B, T, H)
            for B in (1, 16)
            for H in (32, 64, 128, 256)
            for T in (256, 1024, 4096, 16384, 65536)
        ]
        kinds, reps = list(KINDS), 3
    else:
        grid, kinds, reps = [(1, T, 64) for T in (256, 1024, 4096, 16384)], list(KINDS), 3
    rows = []
    for B, T, H in grid:
        for kind in kinds:
            if kind.endswith("_deer") and (H > 64 or T > 4096):
                continue  # full Jacobians: O(T H^2) memory, O(T H^3) work
            rows.append(measure(kind, B, T, H, reps))
    out = {"seed": SEED, "I": I, "tol": TOL, "rows": rows, "targets": {}}
    by = {(r["kind"], r["B"], r["T"], r["H"]): r for r in rows}
    # targets
    tT, tH = (512, 32) if args.quick else (16384, 64)
    g = by.get(("gru", 1, tT, tH)) or measure("gru", 1, tT, tH, reps)
    m = by.get(("mingru", 1, tT, tH)) or measure("mingru", 1, tT, tH, reps)
    out["targets"]["mingru_vs_gru_train"] = {
        "B": 1,
        "T": tT,
        "H": tH,
        "gru_s": g["train_s"],
        "mingru_s": m["train_s"],
        "speedup": g["train_s"] / m["train_s"],
    }
    cross = None
    for T in sorted({r["T"] for r in rows if r["B"] == 1 and r["H"] == tH}):
        q, s = by.get(("gru_qdeer", 1, T, tH)), by.get(("gru", 1, T, tH))
        if q and s and q["train_s"] < s["train_s"] and cross is None:
            cross = T
    out["targets"]["gru_qdeer_crossover_T"] = cross
    out["targets"]["gru_qdeer_max_dev"] = max(
        (r["max_dev_from_sequential"] for r in rows if r["kind"] == "gru_qdeer"), default=None
    )
    lT = 100 if args.quick else 1000
    torch_s = torch_lstm_train(1, lT, 64, reps)
    lstm = {k: measure(k, 1, lT, 64, reps) for k in ("lstm_deer", "lstm_qdeer")}
    lstm_seq = measure_lstm_seq(1, lT, 64, reps)
    out["targets"]["lstm_B1_T%d" % lT] = {
        "torch_train_s": torch_s,
        "sequential_train_s": lstm_seq,
        **{f"{k}_train_s": v["train_s"] for k, v in lstm.items()},
        **{f"{k}_iterations": v["iterations"] for k, v in lstm.items()},
        **({f"{k}_vs_torch": v["train_s"] / torch_s for k, v in lstm.items()} if torch_s else {}),
        **({"sequential_vs_torch": lstm_seq / torch_s} if torch_s else {}),
    }
    fig = None
    plt = rc.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 4))
        for ax, key in zip(axes, ("forward_s", "train_s")):
            for kind in kinds:
                pts = sorted(
                    (r["T"], r[key])
                    for r in rows
                    if r["kind"] == kind and r["B"] == 1 and r["H"] == grid[0][2]
                )
                if pts:
                    ax.loglog(*zip(*pts), marker="o", label=kind)
            ax.set_xlabel("T"), ax.set_ylabel("seconds"), ax.legend(fontsize=7)
            ax.set_title(f"{key[:-2]} at B=1, H={grid[0][2]} ({jax.default_backend()})")
    name = "parallel_speed" + ("_full" if args.full else "")
    rc.save(args, name, out, fig)


def measure_lstm_seq(B, T, H, reps):
    cell = rj.LSTM(I, H)
    p = cell.init(jax.random.key(SEED))
    xs = jax.random.normal(jax.random.key(SEED + 1), (B, T, I))
    step = jax.jit(jax.value_and_grad(lambda p, x: jnp.sum(rj.unroll_batch(cell, p, x)[1] ** 2)))
    return timed(step, p, xs, reps=reps)[0]


KINDS = ("gru", "mingru", "lru", "gru_deer", "gru_qdeer", "lstm_deer", "lstm_qdeer")

if __name__ == "__main__":
    from entry import run_main

    run_main(main)
