"""Claim 7: pixel RNN: images classified as sequences of rows or of pixels.

Le et al. (2015) and others classify MNIST pixel by pixel (T = 784); here the same idea
on scikit-learn's 8x8 digits (``load_digits``, shipped inside scikit-learn: the optional
extra ``rnnjax[digits]``): row-wise (T = 8 steps of 8 pixels) and pixel-wise (T = 64
steps of 1 pixel), LSTM vs GRU vs tanh RNN, H = 64, final-state classifier (many-to-one).
Inputs scaled to [0, 1]; seeded 75/25 split (1348 train, 449 test images).
Adam 3e-3, clipping 1.0, minibatches of 64 drawn with a seeded permutation per epoch,
``STEPS`` updates, seed 0. Reported: test accuracy (final and best over evaluations
every 100 steps) and training time.

Run (seed 0): ``python experiments/repro_pixel.py`` (``--quick``: 30 steps, rows only).
Writes ``results/repro_pixel.json`` and ``.png``.
"""

from __future__ import annotations

import jax
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.digits import load_digit_sequences
from rnnjax.train import Trainer

SEED = 0
H, BATCH, LR, STEPS = 64, 64, 3e-3, 1000


def batches(train, seed):
    n = len(train["targets"])
    per_epoch = n // BATCH

    def fn(i):
        perm = np.random.default_rng((seed, i // per_epoch)).permutation(n)
        idx = perm[(i % per_epoch) * BATCH : (i % per_epoch + 1) * BATCH]
        return {"inputs": train["inputs"][idx], "targets": train["targets"][idx]}

    return fn


def main():
    args = rc.parse(__doc__)
    steps, modes = (30, ("rows",)) if args.quick else (STEPS, ("rows", "pixels"))
    eval_every = 10 if args.quick else 100
    out = {"seed": SEED, "H": H, "lr": LR, "steps": steps, "batch": BATCH, "runs": {}}
    for mode in modes:
        data = load_digit_sequences(mode, seed=SEED)
        I = data["train"]["inputs"].shape[-1]
        test = rc.to_jnp(data["test"])
        for name, cell in (
            ("lstm", rj.LSTM(I, H)),
            ("gru", rj.GRU(I, H)),
            ("rnn", rj.SimpleRNN(I, H)),
        ):
            trainer = Trainer(
                SequenceModel(cell, output_size=10, head="final"), learning_rate=LR, clip_norm=1.0
            )
            _, log = rc.train(
                trainer,
                jax.random.key(SEED),
                batches(data["train"], SEED),
                steps,
                eval_batch=test,
                eval_every=eval_every,
            )
            accs = [e["accuracy"] for e in log["eval"]]
            out["runs"][f"{mode}/{name}"] = {
                "T": int(data["train"]["inputs"].shape[1]),
                "test_accuracy": accs[-1],
                "best_test_accuracy": max(accs),
                "eval_steps": log["eval_steps"],
                "accuracy_curve": accs,
                "seconds": log["seconds"],
            }
            print(
                f"{mode}/{name}: test accuracy {accs[-1]:.4f} (best {max(accs):.4f}, {log['seconds']:.0f} s)",
                flush=True,
            )
    fig = None
    plt = rc.pyplot()
    if plt is not None:
        fig, axes = plt.subplots(1, len(modes), figsize=(6 * len(modes), 4), squeeze=False)
        for ax, mode in zip(axes[0], modes):
            for name in ("lstm", "gru", "rnn"):
                r = out["runs"][f"{mode}/{name}"]
                ax.plot(r["eval_steps"], r["accuracy_curve"], label=name)
            ax.set_title(f"digits, {mode} (T={out['runs'][f'{mode}/lstm']['T']})")
            ax.set_xlabel("step"), ax.set_ylabel("test accuracy"), ax.legend()
    rc.save(args, "repro_pixel", out, fig)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
