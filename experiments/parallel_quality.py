"""Parallel in time: do the parallel cells learn? minGRU, minLSTM and LRU against GRU and LSTM.

Two tasks, one layer of each cell (hidden size 64; LRU: 32 complex units, so 64 real
outputs), the same model head, optimiser and data for every cell; the linear cells run
with ``ScanConfig(method="parallel")``, the GRU and LSTM with the default sequential
engine:

- Adding problem (Hochreiter & Schmidhuber 1997), T = 200: final-state linear readout,
  MSE; Adam 3e-3, global-norm clipping 1.0, batch 32, fresh batches every step, test on
  500 held-out sequences every 100 steps. Solved = test MSE below 0.01 (baseline 1/6).
- Markov language model (:class:`rnnjax.tasks.language.MarkovSource`: order 2, 30
  symbols, Dirichlet(0.1)): embedding 32, per-step softmax head, Adam 1e-2 with a
  100-step warm-up and cosine decay, clipping 1.0, batch 32, windows of 64 tokens;
  held-out perplexity (8 x 32 sequences of 256 tokens) against the source's bound
  exp(H).

Reported per cell: steps to solve (adding), final test MSE, final perplexity, wall time
of the training loop (first-call compilation included), parameter count.

Run (seed 0): ``python experiments/parallel_quality.py`` (adding 1000 steps, language model
600 steps); ``--quick`` (adding T = 20, 60 steps; language model 30 steps). Writes
``results/parallel_quality[_quick].json`` and ``.png``.
"""

from __future__ import annotations

import jax
import numpy as np
import optax
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.language import MarkovSource
from rnnjax.tasks.long_range import ADDING_BASELINE_MSE, adding_problem
from rnnjax.train import Trainer

SEED, H, BATCH, N_TEST = 0, 64, 32, 500
VOCAB, EMBED, SEQ_LEN, EVAL_BATCHES, EVAL_LEN = 30, 32, 64, 8, 256
PAR = rj.ScanConfig(method="parallel")


def layers(I):
    return {
        "mingru": rj.Recurrent(rj.MinGRU(I, H), config=PAR),
        "minlstm": rj.Recurrent(rj.MinLSTM(I, H), config=PAR),
        "lru": rj.Recurrent(rj.LRU(I, H // 2), config=PAR),
        "gru": rj.Recurrent(rj.GRU(I, H)),
        "lstm": rj.Recurrent(rj.LSTM(I, H)),
    }


def _adding(add_T, add_steps, eval_every, key) -> dict:
    """Every layer on the adding problem of length ``add_T``."""
    out = {"T": add_T, "steps": add_steps, "baseline_mse": ADDING_BASELINE_MSE}
    test = rc.to_jnp(adding_problem(N_TEST, add_T, seed=(SEED + 1, add_T)))
    for name, layer in layers(2).items():
        state, log = rc.train_adding(
            SequenceModel(layer, output_size=1, head="final"),
            key,
            add_T,
            add_steps,
            test=test,
            eval_every=eval_every,
            batch=BATCH,
            seed=SEED,
        )
        out[name] = dict(rc.eval_record(log, best=False), params=rc.param_count(state.params))
        print(
            f"adding T={add_T} {name}: solved at {log['steps_to_solve']}, final MSE "
            f"{log['eval'][-1]['loss']:.4f}, {log['seconds']:.1f} s",
            flush=True,
        )
    return out


def _language_model(lm_steps, key) -> dict:
    """Every layer as a language model of a Markov source: held-out perplexity."""
    out = {"steps": lm_steps}
    source = MarkovSource(vocab_size=VOCAB, order=2, concentration=0.1, seed=SEED)
    out["perplexity_bound"] = source.perplexity_bound
    schedule = optax.schedules.warmup_cosine_decay_schedule(
        0.0, 1e-2, warmup_steps=min(100, lm_steps // 3), decay_steps=lm_steps, end_value=1e-3
    )
    for name, layer in layers(EMBED).items():
        model = SequenceModel(layer, output_size=VOCAB, vocab_size=VOCAB)
        trainer = Trainer(model, optimizer="adam", learning_rate=schedule, clip_norm=1.0)
        state, log = rc.train(
            trainer, key, lambda i: source.batch(i, BATCH, SEQ_LEN, seed=SEED), lm_steps
        )
        ppl = rc.perplexity(model, state.params, source, BATCH, EVAL_LEN, EVAL_BATCHES, SEED + 1000)
        out[name] = {
            "perplexity": ppl,
            "seconds": log["seconds"],
            "train_loss_curve": log["train_loss"][:: max(1, lm_steps // 100)],
            "params": rc.param_count(state.params),
        }
        print(
            f"language model {name}: perplexity {ppl:.3f} (bound {source.perplexity_bound:.3f}), "
            f"{log['seconds']:.1f} s",
            flush=True,
        )
    return out


def _plot(plt, out, add_T, lm_steps):
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name in layers(2):
        r = out["adding"][name]
        axes[0].semilogy(r["eval_steps"], r["test_mse_curve"], label=name)
        axes[1].plot(np.exp(out["language_model"][name]["train_loss_curve"]), label=name)
    axes[0].axhline(ADDING_BASELINE_MSE, ls="--", c="k", label="baseline 1/6")
    axes[0].set_title(f"adding problem T={add_T}: test MSE"), axes[0].set_xlabel("step")
    bound = out["language_model"]["perplexity_bound"]
    axes[1].axhline(bound, ls="--", c="k", label="bound exp(H)")
    axes[1].set_title("Markov language model: training perplexity")
    axes[1].set_xlabel(f"step / {max(1, lm_steps // 100)}")
    for ax in axes:
        ax.legend(fontsize=7)
    return fig


def main():
    args = rc.parse(__doc__)
    add_T, add_steps, lm_steps = (20, 60, 30) if args.quick else (200, 1000, 600)
    eval_every = 20 if args.quick else 100
    key = jax.random.key(SEED)
    out = {"seed": SEED, "H": H, "batch": BATCH}
    out["adding"] = _adding(add_T, add_steps, eval_every, key)
    out["language_model"] = _language_model(lm_steps, key)
    plt = rc.pyplot()
    rc.save(args, "parallel_quality", out, plt and _plot(plt, out, add_T, lm_steps))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
