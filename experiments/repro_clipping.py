"""Claim 2: exploding gradients, and ``optax.clip_by_global_norm`` as the cure.

Pascanu, Mikolov & Bengio (2013): when the recurrent Jacobians are large, the gradient of
a long sequence occasionally explodes, and a plain SGD step then throws the parameters
far away (the loss blows up or becomes NaN); rescaling the gradient to a maximum global
norm keeps training stable.

Setting: a tanh RNN (H = 32) with orthogonal ``W_hh`` scaled by 1.5, 2 and 3 (towards the
exploding regime of ``repro_vanishing.py``; all three scales are run and reported), final-state linear readout, on the adding problem with
T = 50 (batch 32, fresh batches, seed 0), plain SGD with learning rate 0.05. Two runs
from the same initial parameters and the same batches: ``optax.sgd`` alone, and
``optax.chain(optax.clip_by_global_norm(1.0), optax.sgd)``. No non-finite update is
skipped (unlike ``rnnjax.train.make_optimizer``, which wraps ``optax.apply_if_finite``):
this script shows the raw failure. Diverged = a non-finite loss, or a training loss
above 10x the initial one, at any step. Trained = test MSE below the baseline 1/6.

Run (seed 0): ``python experiments/repro_clipping.py`` (``--quick``: 60 steps; about 40 s for the default).
Writes ``results/repro_clipping.json`` and ``.png`` (loss and gradient norm per step).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.long_range import ADDING_BASELINE_MSE, adding_problem

SEED = 0
H, T, BATCH, LR, SCALES, CLIP = 32, 50, 32, 0.05, (1.5, 2.0, 3.0), 1.0


def run(model, params, tx, steps):
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch):
        def loss_of(p):
            _, out = model.apply_batch(p, batch["inputs"])
            return jnp.mean((out - batch["targets"]) ** 2)

        loss, g = jax.value_and_grad(loss_of)(params)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, optax.tree.norm(g)

    losses, norms = [], []
    for i in range(steps):
        params, opt_state, loss, gn = step(
            params, opt_state, rc.to_jnp(adding_problem(BATCH, T, seed=(SEED, i)))
        )
        losses.append(loss)
        norms.append(gn)
    losses = np.asarray(jax.device_get(losses), np.float64)
    norms = np.asarray(jax.device_get(norms), np.float64)
    return params, losses, norms


def main():
    args = rc.parse(__doc__)
    steps = 60 if args.quick else 1500
    model = SequenceModel(rj.SimpleRNN(2, H), output_size=1, head="final")
    base = model.init(jax.random.key(SEED))
    test = rc.to_jnp(adding_problem(1000, T, seed=(SEED + 1, 0)))
    out = {
        "seed": SEED,
        "H": H,
        "T": T,
        "batch": BATCH,
        "lr": LR,
        "w_hh_scales": list(SCALES),
        "clip_norm": CLIP,
        "steps": steps,
        "baseline_mse": ADDING_BASELINE_MSE,
        "runs": {},
    }
    curves = {}
    runs = [(scale, clip) for scale in SCALES for clip in (False, True)]
    for scale, clip in runs:
        params = dict(base, layer=dict(base["layer"], w_hh=base["layer"]["w_hh"] * scale))
        name = f"{'clipped' if clip else 'unclipped'}@{scale}"
        tx = optax.chain(optax.clip_by_global_norm(CLIP), optax.sgd(LR)) if clip else optax.sgd(LR)
        p, losses, norms = run(model, params, tx, steps)
        _, pred = model.apply_batch(p, test["inputs"])
        test_mse = float(jnp.mean((pred - test["targets"]) ** 2))
        bad = np.nonzero(~np.isfinite(losses) | (losses > 10 * losses[0]))[0]
        finite = np.isfinite(losses)
        out["runs"][name] = {
            "diverged": bool(bad.size),
            "initial_loss": float(losses[0]),
            "first_divergent_step": int(bad[0]) + 1 if bad.size else None,
            "nonfinite_losses": int((~finite).sum()),
            "max_loss": float(np.max(losses[finite])) if finite.any() else None,
            "max_grad_norm": float(np.nanmax(norms)) if np.isfinite(norms).any() else None,
            "median_grad_norm": float(np.nanmedian(norms)),
            "final_train_loss_mean_last_100": float(np.mean(losses[-100:])),
            "test_mse": test_mse,
            "trained_below_baseline": bool(test_mse < ADDING_BASELINE_MSE),
        }
        curves[name] = (losses, norms)
        print(name, out["runs"][name])
    r = out["runs"]
    out["claims"] = {
        "unclipped_diverges": {s: r[f"unclipped@{s}"]["diverged"] for s in SCALES},
        "clipped_stays_stable": {s: not r[f"clipped@{s}"]["diverged"] for s in SCALES},
        "clipped_test_mse_below_baseline": {
            s: r[f"clipped@{s}"]["trained_below_baseline"] for s in SCALES
        },
    }
    fig = None
    plt = rc.pyplot()
    if plt is not None:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, 4))
        for name, (l, g) in curves.items():
            a1.semilogy(np.arange(1, steps + 1), l, label=name, lw=0.8)
            a2.semilogy(np.arange(1, steps + 1), g, label=name, lw=0.8)
        a1.axhline(ADDING_BASELINE_MSE, ls="--", c="k", label="baseline 1/6")
        a1.set_title("training loss (MSE)"), a1.set_xlabel("step"), a1.legend()
        a2.axhline(CLIP, ls=":", c="k", label="clip norm")
        a2.set_title("global gradient norm (before clipping)"), a2.set_xlabel("step"), a2.legend()
    rc.save(args, "repro_clipping", out, fig)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
