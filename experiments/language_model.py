"""Character-level language modelling on a source with a known entropy rate.

The source is a random order-2 Markov chain over 30 symbols (Dirichlet(0.1) transition
rows, seed 0): its entropy rate H is computed exactly from the stationary distribution
over the 900 contexts, so exp(H) is the lowest perplexity any model can reach. An LSTM
and a GRU (embedding 32, hidden 128, dense head) are trained with Adam (warm-up cosine
schedule, global-norm clipping 1.0) on fresh sampled sequences, and evaluated on
held-out sequences: the script prints each model's perplexity next to exp(H), and the
empirical perplexity of the true source on the same held-out tokens.

Preprocessing: none (symbols are token ids). Evaluation counts every prediction that
has its full order-2 context (targets from position 1 on: the first target has only one
symbol of context, and the bound does not apply to it).

Run (one seeded command):

    python experiments/language_model.py

Writes ``results/language_model.json`` (numbers), ``results/language_model.png`` (loss
curves against the entropy-rate bound) and per-model JSONL training logs.
"""

from __future__ import annotations

import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.language import MarkovSource
from rnnjax.train import Trainer, fit

SEED = 0
VOCAB, ORDER, ALPHA = 30, 2, 0.1
EMBED, HIDDEN = 32, 128
BATCH, SEQ_LEN = 32, 64
STEPS = 4000
LR = 1e-2
EVAL_BATCHES, EVAL_LEN = 8, 256
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")


def evaluate(model, params, source: MarkovSource):
    """Perplexity of the model and of the true source on held-out sequences."""

    @jax.jit
    def token_ce(params, inputs, targets):
        _, logits = model.apply_batch(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets)

    model_nll, true_nll = [], []
    for i in range(EVAL_BATCHES):
        b = source.batch(i, BATCH, EVAL_LEN, seed=SEED + 1000)  # a seed never trained on
        ce = np.asarray(token_ce(params, jnp.asarray(b["inputs"]), jnp.asarray(b["targets"])))
        model_nll.append(ce[:, 1:].ravel())  # targets with a full order-2 context
        seqs = np.concatenate([b["inputs"][:, :1], b["targets"]], axis=1)
        true_nll.append(-source.log_prob(seqs).ravel())
    model_nll, true_nll = np.concatenate(model_nll), np.concatenate(true_nll)
    return {
        "model_ce_nats": float(model_nll.mean()),
        "model_perplexity": float(np.exp(model_nll.mean())),
        "source_empirical_perplexity": float(np.exp(true_nll.mean())),
        "eval_tokens": int(model_nll.size),
    }


def _setup(source) -> dict:
    """What the JSON records of the source and the training."""
    return {
        "source": {
            "vocab_size": VOCAB,
            "order": ORDER,
            "concentration": ALPHA,
            "seed": SEED,
            "entropy_rate_nats": source.entropy_rate,
            "perplexity_bound": source.perplexity_bound,
        },
        "setup": {
            "embed": EMBED,
            "hidden": HIDDEN,
            "batch": BATCH,
            "seq_len": SEQ_LEN,
            "steps": STEPS,
            "optimizer": "adam",
            "peak_lr": LR,
            "schedule": "warmup_cosine_decay(100)",
            "clip_norm": 1.0,
            "backend": jax.default_backend(),
            "seed": SEED,
        },
        "models": {},
    }


def _train(name, cell, source, schedule):
    """Fit one model (its JSONL log under ``results/``) and evaluate it held out; returns
    ``(figures, training losses)``."""
    model = SequenceModel(cell, output_size=VOCAB, vocab_size=VOCAB)
    trainer = Trainer(model, optimizer="adam", learning_rate=schedule, clip_norm=1.0)
    log = os.path.join(RESULTS, f"language_model_{name.lower()}.jsonl")
    if os.path.exists(log):
        os.remove(log)

    def data(p):
        return {k: jnp.asarray(v) for k, v in source.batch(p, BATCH, SEQ_LEN, seed=SEED).items()}

    t0 = time.perf_counter()
    state, hist = fit(
        trainer, trainer.init(jax.random.key(SEED)), data, STEPS, log_path=log, progress=True
    )
    seconds = time.perf_counter() - t0
    ev = evaluate(model, state.params, source)
    ev.update(
        {
            "train_seconds": seconds,
            "steps_per_second": STEPS / seconds,
            "final_train_loss": float(np.mean([h["loss"] for h in hist[-50:]])),
            "clipped_fraction": float(np.mean([h["clipped"] for h in hist])),
            "skipped_steps": int(hist[-1]["nonfinite_total"]),
            "excess_nats": ev["model_ce_nats"] - source.entropy_rate,
        }
    )
    print(
        f"{name}: held-out perplexity {ev['model_perplexity']:.4f} vs bound exp(H) = "
        f"{source.perplexity_bound:.4f} "
        f"(true source on the same tokens: {ev['source_empirical_perplexity']:.4f}); "
        f"{ev['excess_nats']:.4f} nats/symbol above H; {seconds:.1f} s"
    )
    return ev, [h["loss"] for h in hist]


def _plot(curves, H, bound):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, c in curves.items():
        c = np.asarray(c)
        w = 25
        smooth = np.convolve(c, np.ones(w) / w, mode="valid")
        ax.plot(np.arange(w, len(c) + 1), smooth, label=f"{name} (train, {w}-step mean)")
    ax.axhline(H, color="k", ls="--", label=f"entropy rate H = {H:.3f} nats")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / symbol)")
    ax.set_ylim(H - 0.2, np.log(VOCAB) + 0.1)
    ax.set_title(f"Order-{ORDER} Markov source, {VOCAB} symbols: perplexity bound {bound:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "language_model.png"), dpi=120)


def main():
    os.makedirs(RESULTS, exist_ok=True)
    source = MarkovSource(vocab_size=VOCAB, order=ORDER, concentration=ALPHA, seed=SEED)
    H = source.entropy_rate
    bound = source.perplexity_bound
    print(
        f"source: order-{ORDER} Markov chain over {VOCAB} symbols, Dirichlet({ALPHA}); "
        f"entropy rate {H:.4f} nats/symbol, perplexity bound exp(H) = {bound:.4f}"
    )
    schedule = optax.schedules.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=LR, warmup_steps=100, decay_steps=STEPS, end_value=LR / 10
    )
    results = _setup(source)
    curves = {}
    for name, cell in (("LSTM", rj.LSTM(EMBED, HIDDEN)), ("GRU", rj.GRU(EMBED, HIDDEN))):
        results["models"][name], curves[name] = _train(name, cell, source, schedule)
    with open(os.path.join(RESULTS, "language_model.json"), "w") as f:
        json.dump(results, f, indent=2)
    _plot(curves, H, bound)
    print(f"wrote {os.path.join(RESULTS, 'language_model.json')} and language_model.png")


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
