"""Parallel in time: Newton iterations to tolerance against the spectral radius.

A tanh Elman network (``rj.SimpleRNN``, I=4, H=16) whose recurrent weights are an
orthogonal matrix times ``rho`` (the spectral radius), from contracting (``rho < 1``) to
chaotic (``rho > 1``), on one Gaussian input sequence of length T. For each radius:
iterations of the Newton solve (:mod:`rnnjax.parallel`) to ``max_t |h_t - f(h_{t-1})|
<= 1e-5`` with at most T iterations, for DEER (full Jacobians) and quasi-DEER (diagonal),
each undamped and damped (``damping=0``: Jacobians shrunk to norm <= 1), and whether it
converged (undamped Newton overflows in chaotic regimes; a non-converged solve falls back
to the sequential scan, which is what the library returns then).

The claim reproduced (Gonzalez et al. 2024, qualitatively): Newton converges in a few
iterations for contracting dynamics, fails for chaotic ones, and damping makes it
converge (here: at worst in T iterations, the bound every such scheme has).

Run (seed 0): ``python experiments/parallel_convergence.py`` (T = 1000; ``--quick``:
T = 100). Writes ``results/parallel_convergence[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import time
import warnings

import jax
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax import parallel

SEED, I, H, TOL = 0, 4, 16, 1e-5
RHOS = (0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0, 5.0)
VARIANTS = {
    "deer": ("full", None),
    "deer_damped": ("full", 0.0),
    "qdeer": ("diag", None),
    "qdeer_damped": ("diag", 0.0),
}


def main():
    args = rc.parse(__doc__)
    T = 100 if args.quick else 1000
    cell = rj.SimpleRNN(I, H)
    p0 = cell.init(jax.random.key(SEED))
    xs = jax.random.normal(jax.random.key(SEED + 1), (T, I))
    solvers = {
        name: jax.jit(
            lambda p, j=j, d=d: rj.parallel_solve(
                cell,
                p,
                xs,
                options=parallel.ParallelOptions(jacobian=j, damping=d, tol=TOL, max_iter=T),
            )
        )
        for name, (j, d) in VARIANTS.items()
    }
    rows = []
    for rho in RHOS:
        p = {**p0, "w_hh": rho * p0["w_hh"]}
        row = {"rho": rho}
        for name, f in solvers.items():
            t0 = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", parallel.NotConvergedWarning)
                _, _, info = jax.block_until_ready(f(p))
                jax.effects_barrier()
            row[name] = {
                "iterations": int(info.iterations),
                "converged": bool(info.converged),
                "residual": float(info.residual),
                "seconds": time.perf_counter() - t0,
            }
        rows.append(row)
        print(
            rho,
            {k: (v["iterations"], v["converged"]) for k, v in row.items() if k != "rho"},
            flush=True,
        )
    out = {"seed": SEED, "I": I, "H": H, "T": T, "tol": TOL, "rows": rows}
    fig = None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for name in VARIANTS:
            its = [r[name]["iterations"] if r[name]["converged"] else np.nan for r in rows]
            ax.semilogx(RHOS, its, marker="o", label=name)
            bad = [r["rho"] for r in rows if not r[name]["converged"]]
            ax.scatter(bad, [T] * len(bad), marker="x", c="k")
        ax.axhline(T, ls=":", c="gray", label=f"T = {T} (x: not converged)")
        ax.set_xlabel("spectral radius of W_hh"), ax.set_ylabel("Newton iterations to 1e-5")
        ax.set_yscale("log"), ax.legend(fontsize=7)
        ax.set_title(f"tanh RNN H={H}, T={T}: DEER vs damped")
    except ImportError:
        pass
    rc.save(args, "parallel_convergence", out, fig)


if __name__ == "__main__":
    main()
