"""Benchmark rows of the modern cells: a training step (forward, backward, Adam update) at
B=1 and B=32, T=4096, I=H=64, float32, against the GRU in the same run; and the mLSTM's
parallel forms (whole sequence, chunkwise) against its recurrent form.

Each row is the median of ``--reps`` (default 7) timed calls after one warm-up call
(compilation excluded, reported separately); ratios are against the GRU (cells) or the
recurrent mLSTM (forms) measured in the same process. Measure on an idle machine (load
below 1, nothing else running): on a shared CPU the ratios are noise.

Run: ``python experiments/bench_modern.py`` (``--quick``: T=64, 2 repetitions, a smoke
test). Writes ``results/bench_modern.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import optax

import rnnjax as rj

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")
PAR = rj.ScanConfig(method="parallel")


def chunked(L):
    return rj.ScanConfig(method="parallel", parallel=rj.parallel.ParallelOptions(chunk=L))


def timed_train_step(cell, cfg, B, T, reps):
    """``(compile seconds, median step seconds)`` of a jitted training step."""
    I = cell.input_size
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    opt = optax.adam(1e-3)
    state = opt.init(params)

    @jax.jit
    def step(p, o, xs):
        def loss(p):
            _, ys = rj.unroll_batch(cell, p, xs, config=cfg)
            return jnp.mean(ys**2)

        val, g = jax.value_and_grad(loss)(p)
        upd, o = opt.update(g, o, p)
        return optax.apply_updates(p, upd), o, val

    t0 = time.perf_counter()
    jax.block_until_ready(step(params, state, xs))
    compile_s = time.perf_counter() - t0
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(step(params, state, xs))
        times.append(time.perf_counter() - t0)
    return compile_s, statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T=64, 2 repetitions")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--out", default=RESULTS)
    args = ap.parse_args()
    T = 64 if args.quick else 4096
    reps = 2 if args.quick else args.reps
    H = 64
    cells = {
        "GRU": (rj.GRU(H, H), None),
        "sLSTM (4 heads)": (rj.SLSTM(H, H, num_heads=4), None),
        "mLSTM (4 heads, recurrent)": (rj.MLSTM(H, H, num_heads=4), None),
        "mLSTM (4 heads, chunkwise 64)": (rj.MLSTM(H, H, num_heads=4), chunked(64)),
        "RG-LRU (step)": (rj.RGLRU(H, H, num_heads=4), None),
        "RG-LRU (parallel scan)": (rj.RGLRU(H, H, num_heads=4), PAR),
        "S6 N=16 (step)": (rj.S6(H, H, state_dim=16), None),
        "S6 N=16 (parallel scan)": (rj.S6(H, H, state_dim=16), PAR),
    }
    rows = []
    for B in (1, 32):
        base = None
        for name, (cell, cfg) in cells.items():
            c, s = timed_train_step(cell, cfg, B, T, reps)
            base = s if name == "GRU" else base
            rows.append(
                {
                    "table": "cells",
                    "name": name,
                    "B": B,
                    "T": T,
                    "compile_s": c,
                    "step_s": s,
                    "vs_gru": s / base,
                }
            )
            print(
                f"B={B:3d} T={T} {name:32s} step {s * 1e3:9.2f} ms  x GRU {s / base:6.2f}"
                f"  compile {c:6.1f} s",
                flush=True,
            )
    forms = [("recurrent", None), ("chunkwise 64", chunked(64)), ("chunkwise 256", chunked(256))]
    forms_b1 = forms + [("whole sequence", PAR)]  # T x T per head: B=1 only at T=4096
    for B, fs in ((1, forms_b1), (32, forms)):
        base = None
        for name, cfg in fs:
            c, s = timed_train_step(rj.MLSTM(H, H, num_heads=4), cfg, B, T, reps)
            base = s if name == "recurrent" else base
            rows.append(
                {
                    "table": "mlstm_forms",
                    "name": name,
                    "B": B,
                    "T": T,
                    "compile_s": c,
                    "step_s": s,
                    "vs_recurrent": s / base,
                }
            )
            print(
                f"B={B:3d} T={T} mLSTM {name:18s} step {s * 1e3:9.2f} ms  x recurrent "
                f"{s / base:6.2f}  compile {c:6.1f} s",
                flush=True,
            )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "bench_modern" + ("_quick" if args.quick else "") + ".json")
    with open(path, "w") as f:
        json.dump(
            {
                "rows": rows,
                "reps": reps,
                "backend": jax.default_backend(),
                "jax_version": jax.__version__,
            },
            f,
            indent=2,
        )
    print("wrote", path)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
