"""Sweep at the floor: rnnjax's 64-model sweep against a loop of ReservoirPy models and the
dense-matmul floor of the same work, all measured in one run.

Task: NARMA-10 (input U(0, 0.5)), N = 500 (density 0.1), 2400 training steps (washout
100) and 600 test steps; 64 models = 4 spectral radii x 4 leak rates x 2 ridges x 2
seeds. The same grid is fitted and scored by

- ``esn.sweep`` (one compiled call; compile time reported apart),
- a loop of ReservoirPy 0.4.2 models (``Reservoir >> Ridge``, sparse W, float64),
- the floor: the dense float32 state update of all models over the series,
  ``2 N^2 M (T + T')`` FLOP, at the rate this machine's float32 matmul reaches on a
  ``(N, N) @ (N, 4096)`` product, plus the float64 readout statistics
  ``2 N^2 T M`` FLOP at the float64 matmul rate.

Each time is the median of ``--reps`` runs (7 by default). The printed ratios
(sweep / floor, ReservoirPy / sweep) are what to report; absolute times depend on the
machine. JSON goes to ``--out``.

    python experiments/esn_sweep_floor.py                  # full (several minutes)
    python experiments/esn_sweep_floor.py --quick          # smoke test, seconds
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import reservoir as esn
from rnnjax.tasks.narma import narma


def _median_time(fn, reps):
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _matmul_rate(N, dtype, reps):
    """FLOP/s of a jitted ``(N, N) @ (N, 4096)`` product in ``dtype``."""
    K = 4096
    with jax.enable_x64(dtype == jnp.float64):
        a = jnp.ones((N, N), dtype)
        b = jnp.ones((N, K), dtype)
        f = jax.jit(lambda a, b: a @ b)
        f(a, b).block_until_ready()
        t = _median_time(lambda: f(a, b).block_until_ready(), reps)
    return 2.0 * N * N * K / t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes, 2 repetitions")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--no-reservoirpy", action="store_true")
    ap.add_argument("--out", default="esn_sweep_floor.json")
    a = ap.parse_args(argv)
    N, T, Tt, wash = (60, 300, 100, 20) if a.quick else (500, 2400, 600, 100)
    reps = 2 if a.quick else a.reps
    srs, lrs, ridges, seeds = [0.7, 0.9, 1.0, 1.1], [0.3, 0.5, 0.7, 1.0], [1e-7, 1e-5], [0, 1]
    M = len(srs) * len(lrs) * len(ridges) * len(seeds)
    u, y = narma(T + Tt, 10, seed=0)
    u, y = u[:, None].astype(np.float32), y[:, None].astype(np.float32)
    cell = esn.EchoState(1, N, density=0.1, input_scaling=1.0)
    args = (cell, u[:T], y[:T], u[T:], y[T:])
    kw = dict(spectral_radius=srs, leak_rate=lrs, ridge=ridges, seeds=seeds, washout=wash)

    def run_sweep():
        return esn.sweep(*args, **kw)["nrmse"]

    print(f"sweep of {M} models, N={N}, T={T}+{Tt} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    table = run_sweep()
    first = time.perf_counter() - t0
    t_sweep = _median_time(run_sweep, reps)
    print(f"  sweep {t_sweep:.3f} s (first call {first:.2f} s)", file=sys.stderr, flush=True)

    t_rpy = None
    if not a.no_reservoirpy:
        try:
            from reservoirpy.nodes import Reservoir, Ridge

            def run_rpy():
                out = []
                for seed, sr, lr, rg in itertools.product(seeds, srs, lrs, ridges):
                    res = Reservoir(N, sr=sr, lr=lr, rc_connectivity=0.1, input_connectivity=1.0,
                                    seed=seed)  # fmt: skip
                    model = res >> Ridge(ridge=rg)
                    model.fit(u[:T].astype(np.float64), y[:T].astype(np.float64), warmup=wash)
                    p = model.run(u[T:].astype(np.float64))
                    out.append(float(np.sqrt(np.mean((p - y[T:]) ** 2)) / np.std(y[T:])))
                return out

            t_rpy = _median_time(run_rpy, max(1, reps // 3 if not a.quick else 1))
            print(f"  ReservoirPy loop {t_rpy:.3f} s", file=sys.stderr, flush=True)
        except ImportError:
            print("  ReservoirPy not installed: loop skipped", file=sys.stderr)

    f32 = _matmul_rate(N, jnp.float32, reps)
    f64 = _matmul_rate(N, jnp.float64, reps)
    flop_state = 2.0 * N * N * M * (T + Tt)
    flop_stats = 2.0 * N * N * (T - wash) * M
    floor = flop_state / f32 + flop_stats / f64
    res = {
        "N": N, "T": T, "T_test": Tt, "models": M, "reps": reps,
        "sweep_s": t_sweep, "sweep_first_call_s": first, "reservoirpy_loop_s": t_rpy,
        "floor_s": floor, "float32_matmul_gflops": f32 / 1e9, "float64_matmul_gflops": f64 / 1e9,
        "sweep_over_floor": t_sweep / floor,
        "reservoirpy_over_sweep": None if t_rpy is None else t_rpy / t_sweep,
        "best_nrmse": float(np.min(table)),
    }  # fmt: skip
    print(json.dumps(res, indent=1))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
