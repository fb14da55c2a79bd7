"""Claim 8: dropout in recurrent networks, on a task small enough to overfit.

Zaremba et al. (2014): dropout between layers (not on the recurrent connections)
regularises LSTMs; Gal & Ghahramani (2016): recurrent dropout works when the same mask is
used at every step (variational), while a fresh mask at every step (naive) hurts.

Task: the order-2 Markov source of ``rnnjax.tasks.language`` (V = 30, Dirichlet 0.1,
known entropy rate) with a FIXED training set of 16 sequences of 64 tokens (about 1000
tokens for 900 contexts: easy to memorise), held-out loss on 64 fresh sequences.
Model: embedding 32, two stacked LSTMs (H = 128), per-step head; Adam 3e-3, clipping 1.0,
full-batch steps (the 16 sequences), seed 0. Four variants:

- ``none``: no dropout;
- ``between_layers``: ``rj.Stacked(..., dropout=0.5)`` (outputs of layer 1);
- ``variational_recurrent``: ``recurrent_dropout=0.25``, one mask per sequence, in both
  layers, plus ``dropout=0.5`` between the layers (Gal & Ghahramani's recipe);
- ``naive_per_step_recurrent``: the same with ``recurrent_dropout_mode="per_step"``.

Reported: training loss (evaluated without dropout) and held-out loss (nats per token)
at the end and the best held-out loss, next to the source's entropy rate.

Run (seed 0): ``python experiments/repro_dropout.py`` (``--quick``: 30 steps).
Writes ``results/repro_dropout.json`` and ``.png``.
"""

from __future__ import annotations

import jax
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.language import MarkovSource
from rnnjax.train import Trainer

SEED = 0
E, H, N_TRAIN, N_TEST, L, LR = 32, 128, 16, 64, 64, 3e-3


def layer(recurrent=0.0, mode="variational", between=0.0):
    return rj.Stacked(
        [
            rj.Recurrent(rj.LSTM(E, H), recurrent_dropout=recurrent, recurrent_dropout_mode=mode),
            rj.Recurrent(rj.LSTM(H, H), recurrent_dropout=recurrent, recurrent_dropout_mode=mode),
        ],
        dropout=between,
    )


VARIANTS = {
    "none": layer(),
    "between_layers": layer(between=0.5),
    "variational_recurrent": layer(0.25, "variational", 0.5),
    "naive_per_step_recurrent": layer(0.25, "per_step", 0.5),
}


def main():
    args = rc.parse(__doc__)
    steps = 30 if args.quick else 600
    eval_every = 10 if args.quick else 50
    src = MarkovSource(vocab_size=30, order=2, concentration=0.1, seed=SEED)
    train_np = src.batch(0, N_TRAIN, L, seed=SEED)
    train = rc.to_jnp(train_np)
    test = rc.to_jnp(src.batch(0, N_TEST, L, seed=SEED + 1000))
    out = {
        "seed": SEED,
        "steps": steps,
        "train_tokens": N_TRAIN * L,
        "entropy_rate_nats": src.entropy_rate,
        "runs": {},
    }
    curves = {}
    for name, lay in VARIANTS.items():
        trainer = Trainer(
            SequenceModel(lay, output_size=30, vocab_size=30), learning_rate=LR, clip_norm=1.0
        )

        state, log = rc.train(
            trainer,
            jax.random.key(SEED),
            lambda i: train_np,
            steps,
            eval_batch=test,
            eval_every=eval_every,
        )
        # training loss without dropout at each evaluation point is costly; take the final one
        tr = float(trainer.evaluate(state.params, train)["loss"])
        held = [e["loss"] for e in log["eval"]]
        out["runs"][name] = {
            "final_train_loss": tr,
            "final_heldout_loss": held[-1],
            "best_heldout_loss": min(held),
            "best_heldout_step": log["eval_steps"][int(np.argmin(held))],
            "generalisation_gap": held[-1] - tr,
            "seconds": log["seconds"],
        }
        curves[name] = (log["eval_steps"], held, log["train_loss"])
        print(name, out["runs"][name], flush=True)
    r = out["runs"]
    out["claims"] = {
        "between_layers_beats_none_heldout": r["between_layers"]["final_heldout_loss"]
        < r["none"]["final_heldout_loss"],
        "variational_beats_naive_heldout": r["variational_recurrent"]["final_heldout_loss"]
        < r["naive_per_step_recurrent"]["final_heldout_loss"],
    }
    fig = None
    plt = rc.pyplot()
    if plt is not None:
        fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
        for name, (s, held, trl) in curves.items():
            a1.plot(s, held, label=name)
            a2.plot(np.arange(1, len(trl) + 1), trl, label=name, lw=0.8)
        for a in (a1, a2):
            a.axhline(src.entropy_rate, ls="--", c="k", label="entropy rate")
            a.set_xlabel("step"), a.legend(fontsize=8)
        a1.set_title("held-out loss (nats/token)"), a2.set_title("training loss (with dropout)")
    rc.save(args, "repro_dropout", out, fig)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
