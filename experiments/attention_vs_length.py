"""Accuracy against source length, with and without attention (Bahdanau et al. 2015, Fig. 2).

Task: sequence reversal (:func:`rnnjax.tasks.seq2seq_tasks.reversal`) over 10 symbols,
source lengths drawn uniformly from ``[1, L]``. Two encoder-decoders are trained on the
SAME batches, initialised from the same seed: a GRU encoder-decoder whose
decoder sees only the fixed context vector (the encoder's final state; RNNencdec) and
the same model with additive attention over the encoder outputs (RNNsearch). Both use
embedding 16, hidden 64, a unidirectional encoder, teacher forcing, Adam 3e-3 with
global-norm clipping 1.0, batch 64.

Evaluation: greedy decoding (:func:`rnnjax.decoding.greedy_decode`) of held-out
sources (a seed never trained on), ``N_EVAL`` per length for every length ``1..L``;
token accuracy (over target positions, end token included) and sequence accuracy
(exact match) per length. Preprocessing: none (symbols are token ids).

Run (one seeded command each):

    python experiments/attention_vs_length.py            # L = 20, 2000 steps
    python experiments/attention_vs_length.py --quick    # L = 10, 300 steps, < 1 min

Writes ``results/attention_vs_length[_quick].json`` and ``.png``.

References:
  Bahdanau, Cho & Bengio (2015). Neural machine translation by jointly learning to
  align and translate. ICLR. Figure 2.
  Cho et al. (2014). On the properties of neural machine translation: encoder-decoder
  approaches. (the decay with length of the fixed-vector encoder-decoder)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import seq2seq_common as sc

from rnnjax.decoding import greedy_decode
from rnnjax.tasks import seq2seq_tasks as tasks

SEED = 0
PRESETS = {
    "default": dict(max_len=20, steps=2000, n_eval=100),
    "quick": dict(max_len=10, steps=300, n_eval=40),
}


def train(model, cfg, log_every=100):
    """Train with teacher forcing on fresh batches from a fixed seed; returns params, log
    and seconds (:func:`seq2seq_common.train`)."""
    L = cfg["max_len"]
    return sc.train(
        model,
        cfg["steps"],
        lambda rng: tasks.reversal(sc.BATCH, 1, L, sc.N_SYMBOLS, seed=rng),
        seed=SEED,
        log_every=log_every,
    )


def evaluate(model, params, cfg):
    L, n = cfg["max_len"], cfg["n_eval"]
    rng = np.random.default_rng(SEED + 12345)  # held out: never used for training
    rows = []
    for length in range(1, L + 1):
        d = tasks.reversal(n, length, length, sc.N_SYMBOLS, seed=rng, pad_to=L)
        out = greedy_decode(
            model, params, jnp.asarray(d.src), jnp.asarray(d.src_len), max_len=L + 1
        )
        rows.append(
            {
                "length": length,
                "token_acc": float(tasks.token_accuracy(out.tokens, d.tgt, d.tgt_len)),
                "seq_acc": float(tasks.sequence_accuracy(out.tokens, d.tgt, d.tgt_len)),
            }
        )
    return rows


def _print_table(results, cfg):
    print(f"\nreversal, greedy decoding, {cfg['n_eval']} held-out sources per length")
    print(
        f"{'length':>6} | {'tok acc (none)':>14} {'seq acc (none)':>14} | "
        f"{'tok acc (attn)':>14} {'seq acc (attn)':>14}"
    )
    a, b = (
        results["models"]["no_attention"]["by_length"],
        results["models"]["additive_attention"]["by_length"],
    )
    for ra, rb in zip(a, b):
        print(
            f"{ra['length']:>6} | {ra['token_acc']:>14.3f} {ra['seq_acc']:>14.3f} | "
            f"{rb['token_acc']:>14.3f} {rb['seq_acc']:>14.3f}"
        )


def main():
    args = sc.parser(__doc__).parse_args()
    preset = "quick" if args.quick else "default"
    cfg = PRESETS[preset]
    results = {
        "config": sc.config(cfg, preset, SEED, task="reversal", decoding="greedy"),
        "models": {},
    }
    for name, attention in [("no_attention", None), ("additive_attention", "additive")]:
        model = sc.build(attention)
        params, log, secs = train(model, cfg)
        rows = evaluate(model, params, cfg)
        results["models"][name] = {"train_log": log, "train_time_s": secs, "by_length": rows}
        print(
            f"{name}: trained {cfg['steps']} steps in {secs:.1f} s, final loss "
            f"{log[-1]['loss']:.4f}"
        )
    _print_table(results, cfg)
    sc.save(results, "attention_vs_length" + ("_quick" if args.quick else ""), plot)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    labels = {
        "no_attention": "encoder-decoder (fixed context)",
        "additive_attention": "encoder-decoder + additive attention",
    }
    for name, res in results["models"].items():
        x = [r["length"] for r in res["by_length"]]
        axes[0].plot(x, [r["token_acc"] for r in res["by_length"]], "o-", ms=3, label=labels[name])
        axes[1].plot(x, [r["seq_acc"] for r in res["by_length"]], "o-", ms=3, label=labels[name])
    for ax, title in zip(axes, ["token accuracy", "sequence accuracy (exact match)"]):
        ax.set_xlabel("source length")
        ax.set_ylabel(title)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
    axes[0].legend(loc="lower left", fontsize=8)
    c = results["config"]
    sc.finish(
        fig,
        f"Reversal, trained on lengths 1..{c['max_len']} ({c['steps']} steps, "
        f"GRU H={c['hidden']}); greedy decoding of held-out sources",
        path,
    )


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
