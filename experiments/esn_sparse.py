"""Sparse (``jax.experimental.sparse`` BCOO) against dense recurrent products in the echo
state loop: the harvest (one model, ``W @ h`` per step) and the sweep (``M`` models of a
seed, ``W @ [h_1 ... h_M]`` per step), at ``N = 500`` and densities 0.1 down to 0.01.

Both variants run the same ``lax.scan`` (``h <- tanh(d_t + W h)``) in one process,
interleaved, best of ``--repeats``; the output is the ratio sparse/dense time (> 1: dense is
faster). Run: ``python experiments/esn_sparse.py`` (about a minute on two cores).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import sparse

from rnnjax import reservoir as esn


def _loop(w, d):
    """``h_t = tanh(d_t + W h_{t-1})`` over ``d (T, N)`` or ``d (T, N, M)``."""

    def step(h, dt):
        h = jnp.tanh(dt + w @ h)
        return h, h

    return jax.lax.scan(step, jnp.zeros(d.shape[1:], d.dtype), d)[1]


def _time(fn, *args, repeats):
    jax.block_until_ready(fn(*args))  # compile
    best = np.inf
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(fn(*args))
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--N", type=int, default=500)
    ap.add_argument("--T", type=int, default=2000)
    ap.add_argument("--M", type=int, default=16, help="models per seed in the sweep case")
    ap.add_argument("--densities", type=float, nargs="+", default=[0.1, 0.05, 0.02, 0.01])
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args(argv)
    run = jax.jit(_loop)
    print(f"backend {jax.default_backend()}, N={a.N}, T={a.T}, M={a.M}")
    print("density  nnz     harvest sparse/dense  sweep sparse/dense")
    for dens in a.densities:
        cell = esn.EchoState(1, a.N, spectral_radius=0.9, density=dens)
        w = cell.init(jax.random.key(0))["w"]
        ws = sparse.BCOO.fromdense(w)
        key = jax.random.key(1)
        d1 = 0.5 * jax.random.normal(key, (a.T, a.N))
        dm = 0.5 * jax.random.normal(key, (a.T, a.N, a.M))
        ratios = []
        for d in (d1, dm):
            t_dense = t_sparse = np.inf
            for _ in range(2):  # interleaved: load changes hit both
                t_dense = min(t_dense, _time(run, w, d, repeats=a.repeats))
                t_sparse = min(t_sparse, _time(run, ws, d, repeats=a.repeats))
            np.testing.assert_allclose(run(w, d), run(ws, d), atol=1e-4)
            ratios.append(t_sparse / t_dense)
        print(f"{dens:<8} {int(ws.nse):<7} {ratios[0]:<21.2f} {ratios[1]:.2f}")


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
