"""Deep ESN against a single reservoir, and against ReservoirPy's equivalent model graph.

Tasks: Mackey-Glass (tau 17, centred: minus its training mean) one-step prediction and
NARMA-10. Models, all with leak 0.3 (MG) / 1.0 (NARMA), spectral radius 0.9, density 0.1,
ridge 1e-7, washout 100:

- single: one reservoir of N = 2 n units;
- deep: two reservoirs of n units in series (the second reads the first's states), the
  readout reading both (ReservoirPy: ``[r1, r1 >> r2] >> Ridge``).

The same weights run in rnnjax (float64) and in ReservoirPy 0.4.2; the script prints the
test NRMSE (RMSE / std of the targets) of each and the largest difference between the two
libraries' predictions. One seeded command per result; JSON to ``--out``.

    PYTHONPATH=. python experiments/esn_deep.py                # n = 200, a few minutes
    PYTHONPATH=. python experiments/esn_deep.py --quick        # n = 30, smoke test
"""

from __future__ import annotations

import argparse
import json
import sys

import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from rnnjax import reservoir as esn  # noqa: E402
from rnnjax.tasks.mackey_glass import mackey_glass  # noqa: E402
from rnnjax.tasks.narma import narma  # noqa: E402

RIDGE, WASH = 1e-7, 100


def _tasks(T, Tt):
    mg = np.asarray(mackey_glass(T + Tt + 1, seed=0), np.float64).reshape(-1, 1)
    mg = mg - mg[:T].mean()
    u, y = narma(T + Tt, 10, seed=0)
    return {
        "mackey_glass": (mg[:-1], mg[1:], 0.3),
        "narma10": (u[:, None] - 0.25, y[:, None], 1.0),
    }


def _nrmse(p, y):
    return float(np.sqrt(np.mean((p - y) ** 2)) / np.std(y))


def _rpy(params, leaks):
    from reservoirpy.nodes import Reservoir

    return [
        Reservoir(W=np.asarray(p["w"]), Win=np.asarray(p["w_in"]).T, bias=np.asarray(p["b"]), lr=a)
        for p, a in zip(params, leaks)
    ]


def run(n, T, Tt, seed, log):
    out = {}
    for name, (u, y, leak) in _tasks(T, Tt).items():
        ut, yt, us, ys = u[:T], y[:T], u[T:], y[T:]
        I = u.shape[1]  # noqa: E741
        kw = dict(spectral_radius=0.9, leak_rate=leak, density=0.1, bias_scaling=0.1,
                  param_dtype=jnp.float64)  # fmt: skip
        single = [esn.EchoState(I, 2 * n, **kw)]
        deep = [esn.EchoState(I, n, **kw), esn.EchoState(n, n, **kw)]
        row = {}
        for label, cells in (("single", single), ("deep", deep)):
            keys = jax.random.split(jax.random.key(seed), len(cells))
            ps = [c.init(k) for c, k in zip(cells, keys)]
            hs = esn.compose.harvest_stack(cells, ps, u)
            Z = jnp.concatenate(hs, axis=1)
            r = esn.compose.fit_states(Z[:T], yt, ridge=RIDGE, washout=WASH)
            pred = np.asarray(esn.readout_apply(r, Z[T:]))
            res = {"nrmse": _nrmse(pred, ys)}
            try:
                from reservoirpy.nodes import Ridge

                nodes = _rpy(ps, [leak] * len(cells))
                model = (
                    nodes[0] if len(nodes) == 1 else [nodes[0], nodes[0] >> nodes[1]]
                ) >> Ridge(ridge=RIDGE)
                model.fit(ut, yt, warmup=WASH)
                ref = model.run(us)  # continues from the training's last state, as rnnjax
                res["reservoirpy_nrmse"] = _nrmse(ref, ys)
                res["max_abs_diff"] = float(np.max(np.abs(ref - pred)))
            except ImportError:
                pass
            row[label] = res
            log(f"{name} {label}: {res}")
        out[name] = row
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="esn_deep.json")
    a = ap.parse_args(argv)
    n, T, Tt = (30, 400, 200) if a.quick else (200, 2000, 1000)
    res = {"n": n, "T": T, "T_test": Tt, "seed": a.seed,
           "results": run(n, T, Tt, a.seed, lambda s: print(s, file=sys.stderr, flush=True))}  # fmt: skip
    print(json.dumps(res, indent=1))
    with open(a.out, "w") as f:
        json.dump(res, f, indent=1)
    return res


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
