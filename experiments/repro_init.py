"""Claim 4: initialisation: LSTM forget bias 0 vs 1 vs chrono, orthogonal vs Gaussian W_hh.

Jozefowicz et al. (2015): a forget-gate bias of 1 helps the LSTM; Tallec & Ollivier
(2018): chrono initialisation (``b_f ~ log U(1, T_max - 1)``, ``b_i = -b_f``) helps on
long dependencies; Saxe et al. (2014), Le et al. (2015): orthogonal recurrent weights
train better than Gaussian ones.

Task: the adding problem, T = 100 (as ``repro_long_range.py``): LSTM H = 64, final-state
readout, MSE; Adam 3e-3, clipping 1.0, batch 32, fresh batches, up to ``STEPS`` updates,
test on 500 held-out sequences every 100 steps. Solved = test MSE below 0.01. Variants
(all else equal, same seed 0): forget bias 0, forget bias 1 (orthogonal ``W_hh``, the
default), chrono with ``T_max = 100``, and forget bias 1 with Gaussian ``W_hh``
(``N(0, 1/H)``, ``recurrent_init="gaussian"``).

Run (seed 0): ``python experiments/repro_init.py`` (``--quick``: T = 20, 40 steps).
Writes ``results/repro_init.json`` and ``.png``.
"""

from __future__ import annotations

import jax
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.long_range import ADDING_BASELINE_MSE, adding_problem

SEED = 0
H, BATCH, LR, STEPS = 64, 32, 3e-3, 2000


def _plot(plt, out, T):
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in out["runs"].items():
        ax.semilogy(r["eval_steps"], r["test_mse_curve"], label=name)
    ax.axhline(ADDING_BASELINE_MSE, ls="--", c="k", label="baseline 1/6")
    ax.axhline(0.01, ls=":", c="gray", label="solved (0.01)")
    (
        ax.set_xlabel("step"),
        ax.set_ylabel("test MSE"),
        ax.set_title(f"LSTM initialisation, adding T={T}"),
    )
    ax.legend(fontsize=8)
    return fig


def main():
    args = rc.parse(__doc__)
    T, steps, eval_every = (20, 40, 20) if args.quick else (100, STEPS, 100)
    variants = {
        "forget_bias_0": rj.LSTM(2, H, forget_bias=0.0),
        "forget_bias_1": rj.LSTM(2, H, forget_bias=1.0),
        "chrono": rj.LSTM(2, H, chrono_t_max=float(T)),
        "forget_bias_1_gaussian_w_hh": rj.LSTM(2, H, forget_bias=1.0, recurrent_init="gaussian"),
    }
    test = rc.to_jnp(adding_problem(500, T, seed=(SEED + 1, T)))
    out = {
        "seed": SEED,
        "T": T,
        "H": H,
        "lr": LR,
        "steps": steps,
        "baseline_mse": ADDING_BASELINE_MSE,
        "runs": {},
    }
    for name, cell in variants.items():
        _, log = rc.train_adding(
            SequenceModel(cell, output_size=1, head="final"),
            jax.random.key(SEED),
            T,
            steps,
            test=test,
            eval_every=eval_every,
            learning_rate=LR,
            batch=BATCH,
            seed=SEED,
        )
        out["runs"][name] = rc.eval_record(log)
        print(
            f"{name}: solve step {log['steps_to_solve']}, final test MSE {log['eval'][-1]['loss']:.4f} "
            f"({log['seconds']:.0f} s)",
            flush=True,
        )
    plt = rc.pyplot()
    rc.save(args, "repro_init", out, plt and _plot(plt, out, T))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
