"""MinGRU and LRU against the GRU: training-step times and ratios, in one run.

The training step is the value and gradient (all parameters) of the sum of squares of the
outputs, jitted, on Gaussian inputs, I=32, H=64 (the LRU: 32 complex units, a state of 64
reals), at (B, T) = (1, 16384) and (16, 4096):

- ``gru``: the sequential GRU (the default engine path);
- ``mingru``, ``lru``: ``ScanConfig(method="auto")`` (their linear form, the backend's
  default linear scan);
- ``scan``: :func:`rnnjax.parallel.linear_scan` alone on coefficients of the minGRU's
  shape (value and gradient of the same loss with respect to ``a`` and ``b``): the bound
  a minGRU step cannot beat with this scan;
- ``proj``: the minGRU's input product alone (value and gradient of the sum of squares of
  ``x @ W + b``, on the ``(T * B, I)`` rows the engine uses). ``mingru / (scan + proj)``
  is what the coefficient maths and the passes between the parts add.

Each row is the median of ``--reps`` (default 7) rounds; a round calls every function
once, in turn, so a load change on the machine touches all of them alike. Ratios are
``gru / mingru``, ``gru / lru`` and ``mingru / scan`` (the targets: ``gru / mingru >= 10``
at B=1, T=16384 and ``>= 5`` at B=16, T=4096, on an idle machine).

Run: ``python experiments/parallel_speed_table.py`` (about 2 minutes on an idle two-core
CPU, compiles included); ``--quick``: T divided by 16 (a smoke test). Prints the table
and writes ``results/parallel_speed_table[_quick].json``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from rnnjax import parallel

I, H = 32, 64
SHAPES = ((1, 16384), (16, 4096))


def _steps(B, T):
    auto = rj.ScanConfig(method="auto")
    cells = {
        "gru": (rj.GRU(I, H), None),
        "mingru": (rj.MinGRU(I, H), auto),
        "lru": (rj.LRU(I, H // 2), auto),
    }
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    fns = {}
    for name, (cell, cfg) in cells.items():
        p = cell.init(jax.random.key(0))

        def loss(p, cell=cell, cfg=cfg):
            return jnp.sum(rj.unroll_batch(cell, p, xs, config=cfg)[1] ** 2)

        fns[name] = (jax.jit(jax.value_and_grad(loss)), p)
    a = jax.nn.sigmoid(jax.random.normal(jax.random.key(2), (T, B, H)))
    b = jax.random.normal(jax.random.key(3), (T, B, H))

    def scan_loss(ab):
        return jnp.sum(parallel.linear_scan(ab[0], ab[1], jnp.zeros((B, H))) ** 2)

    fns["scan"] = (jax.jit(jax.value_and_grad(scan_loss)), (a, b))
    # the minGRU's input product alone (value and gradient, on the (T * B, I) rows the
    # engine uses): with "scan", the two parts of a minGRU step no fusion can remove
    mingru, p = cells["mingru"][0], fns["mingru"][1]

    def proj_loss(p):
        return jnp.sum(parallel.project_rows(mingru, p, jnp.swapaxes(xs, 0, 1)) ** 2)

    fns["proj"] = (jax.jit(jax.value_and_grad(proj_loss)), p)
    return fns


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T / 16: a smoke test")
    ap.add_argument("--reps", type=int, default=7, help="rounds (median)")
    ap.add_argument("--out", default="results", help="directory of the JSON")
    args = ap.parse_args()
    rows = []
    for B, T in SHAPES:
        T = T // 16 if args.quick else T
        fns = _steps(B, T)
        compile_s = {}
        for name, (f, p) in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(p))
            compile_s[name] = time.perf_counter() - t0
        times = {name: [] for name in fns}
        for _ in range(args.reps):
            for name, (f, p) in fns.items():
                t0 = time.perf_counter()
                jax.block_until_ready(f(p))
                times[name].append(time.perf_counter() - t0)
        med = {k: float(np.median(v)) for k, v in times.items()}
        row = {
            "B": B,
            "T": T,
            "ms": {k: 1e3 * v for k, v in med.items()},
            "first_call_s": compile_s,
            "gru/mingru": med["gru"] / med["mingru"],
            "gru/lru": med["gru"] / med["lru"],
            "mingru/scan": med["mingru"] / med["scan"],
            "mingru/(scan+proj)": med["mingru"] / (med["scan"] + med["proj"]),
        }
        rows.append(row)
        print(
            f"B={B:3d} T={T:6d} | "
            + " ".join(f"{k} {v:8.2f} ms" for k, v in row["ms"].items())
            + f" | gru/mingru {row['gru/mingru']:.2f}x gru/lru {row['gru/lru']:.2f}x"
            f" mingru/scan {row['mingru/scan']:.2f}x"
            f" mingru/(scan+proj) {row['mingru/(scan+proj)']:.2f}x",
            flush=True,
        )
    out = pathlib.Path(args.out)
    out.mkdir(exist_ok=True)
    path = out / f"parallel_speed_table{'_quick' if args.quick else ''}.json"
    path.write_text(
        json.dumps(
            {"I": I, "H": H, "reps": args.reps, "device": str(jax.devices()[0]), "rows": rows},
            indent=1,
        )
    )
    print("wrote", path)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
