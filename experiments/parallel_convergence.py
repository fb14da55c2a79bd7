"""Parallel in time: Newton iterations to tolerance against the spectral radius.

A tanh Elman network (``rj.SimpleRNN``, I=4, H=16) whose recurrent weights are an
orthogonal matrix times ``rho`` (the spectral radius), from contracting (``rho < 1``) to
chaotic (``rho > 1``), on one Gaussian input sequence of length T. For each radius:
iterations of the Newton solve (:mod:`rnnjax.parallel`) to ``max_t |h_t - f(h_{t-1})|
<= 1e-5`` with at most T iterations, for DEER (full Jacobians) and quasi-DEER (diagonal),
each undamped and damped (``damping=0``: Jacobians shrunk to norm <= 1), and whether it
converged (undamped Newton overflows in chaotic regimes; a non-converged solve falls back
to the sequential scan, which is what the library returns then). The same for ELK and
quasi-ELK (``solver="elk"``: trust-region Newton steps as a Kalman smoother), and for
a GRU with ``w_hh`` scaled by 2.5 (I=3, H=4, T=512). Times: median of 7 calls after a
compile, against the sequential scan in the same run.

The claims (Gonzalez et al. 2024, qualitatively): Newton converges in a few iterations
for contracting dynamics, fails for chaotic ones; damping makes it converge (at worst in
T iterations, the bound every such scheme has), ELK in fewer iterations than damping.

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
RHOS = (0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 3.0, 5.0)  # the claim's rows: 0.9, 1.1, 1.5, 2.0
VARIANTS = {  # name: (jacobian, damping, solver)
    "deer": ("full", None, "deer"),
    "deer_damped": ("full", 0.0, "deer"),
    "elk": ("full", None, "elk"),
    "qdeer": ("diag", None, "deer"),
    "qdeer_damped": ("diag", 0.0, "deer"),
    "qelk": ("diag", None, "elk"),
}


REPS = [7]  # repetitions of a timing (1 with --quick)


def _time(f, *args):
    """Median seconds of ``REPS[0]`` calls after a warm-up (compile) call."""
    reps = REPS[0]
    jax.block_until_ready(f(*args))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(*args))
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def _row(solvers, seq, p, label):
    row = {"case": label, "sequential_seconds": _time(seq, p)}
    for name, f in solvers.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", parallel.NotConvergedWarning)
            _, _, info = jax.block_until_ready(f(p))
            jax.effects_barrier()
            secs = _time(f, p)
        row[name] = {
            "iterations": int(info.iterations),
            "converged": bool(info.converged),
            "residual": float(info.residual),
            "seconds": secs,
        }
    print(
        label,
        f"sequential {row['sequential_seconds'] * 1e3:.2f} ms;",
        "; ".join(
            f"{k} {v['iterations']} it {'ok' if v['converged'] else 'FELL BACK'} "
            f"{v['seconds'] * 1e3:.1f} ms"
            for k, v in row.items()
            if isinstance(v, dict)
        ),
        flush=True,
    )
    return row


def _solvers(cell, xs, T):
    return {
        name: jax.jit(
            lambda p, j=j, d=d, s=s: rj.parallel_solve(
                cell,
                p,
                xs,
                options=parallel.ParallelOptions(
                    jacobian=j, damping=d, solver=s, tol=TOL, max_iter=T
                ),
            )
        )
        for name, (j, d, s) in VARIANTS.items()
    }


def main():
    args = rc.parse(__doc__)
    T = 100 if args.quick else 1000
    REPS[0] = 1 if args.quick else 7
    cell = rj.SimpleRNN(I, H)
    p0 = cell.init(jax.random.key(SEED))
    xs = jax.random.normal(jax.random.key(SEED + 1), (T, I))
    solvers = _solvers(cell, xs, T)
    seq = jax.jit(lambda p: rj.unroll(cell, p, xs)[1])
    rows = []
    for rho in RHOS:
        p = {**p0, "w_hh": rho * p0["w_hh"]}
        rows.append({"rho": rho, **_row(solvers, seq, p, f"tanh RNN rho={rho}")})
    # the GRU case: w_hh scaled by 2.5, I=3, H=4, T=512
    gru = rj.GRU(3, 4)
    pg = gru.init(jax.random.key(0))
    pg = {**pg, "w_hh": 2.5 * pg["w_hh"]}
    xg = jax.random.normal(jax.random.key(3), (512, 3))
    gru_row = _row(
        _solvers(gru, xg, 512), jax.jit(lambda p: rj.unroll(gru, p, xg)[1]), pg, "GRU w_hh*2.5"
    )
    out = {"seed": SEED, "I": I, "H": H, "T": T, "tol": TOL, "rows": rows, "gru": gru_row}
    fig = None
    plt = rc.pyplot()
    if plt is not None:
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
    rc.save(args, "parallel_convergence", out, fig)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
