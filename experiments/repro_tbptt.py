"""Claim 6: truncated backpropagation through time (Williams & Peng 1990).

TBPTT with truncation ``k`` cuts every sequence into chunks of ``k`` steps, carries the
state across chunks (``jax.lax.stop_gradient``: no gradient crosses a boundary) and makes
one update per chunk (``rnnjax.train.Trainer.tbptt_step``). Claims: (a) a short ``k``
costs little on a language model whose dependencies are short, at a different time per
epoch; (b) a dependency longer than ``k`` cannot be learnt, since no gradient links the
target to its cause.

(a) Language model: the order-2 Markov source of ``rnnjax.tasks.language`` (V = 30,
Dirichlet 0.1, exact entropy rate), embedding 32, LSTM H = 128, batch 16 sequences of
T = 128, Adam 3e-3, clipping 1.0; one epoch = ``EPOCH`` batches (the same batches for
every ``k``); ``k`` in (4, 16, 32, 128) (``k = T`` is full BPTT). Reported: held-out
perplexity (full sequences, 64 of them) and wall time per epoch (compilation excluded,
measured as a separate first call), next to ``exp(entropy rate)``.

(b) Dependency length: a delayed-copy stream (V = 4 uniform tokens, target at step t is
``x_{t-d}``, 0 for t < d), GRU H = 64, batch 16 x T = 64, Adam 1e-2, ``LAG_STEPS`` batches;
lags d in (2, 6, 12, 24) against k in (4, 8, 16, 64). Reported: held-out accuracy on the
steps t >= d (chance 1/4). A lag counts as learnt at accuracy > 0.9.

Run (seed 0): ``python experiments/repro_tbptt.py`` (``--quick``: tiny sizes).
Writes ``results/repro_tbptt.json`` and ``.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.language import MarkovSource
from rnnjax.train import Trainer

SEED = 0
EPOCH, LAG_STEPS = 150, 300


def lag_batch(n, T, d, seed):
    x = np.random.default_rng(seed).integers(0, 4, size=(n, T)).astype(np.int32)
    y = np.concatenate([np.zeros((n, d), np.int32), x[:, :-d]], 1)
    return {"inputs": x, "targets": y}


def _presets(quick: bool):
    """``T, B, epoch, ks, lag_T, lags, lag_ks, lag_steps``."""
    if quick:
        return 32, 8, 10, (4, 32), 16, (6,), (4, 16), 20
    return 128, 16, EPOCH, (4, 16, 32, 128), 64, (2, 6, 12, 24), (4, 8, 16, 64), LAG_STEPS


def _language_model(src, T, B, epoch, ks, key) -> dict:
    """(a) Held-out perplexity and time per epoch of an LSTM language model per truncation
    length ``k``."""
    out = {"perplexity_bound": src.perplexity_bound, "T": T, "batches_per_epoch": epoch}
    test = rc.to_jnp(src.batch(0, 64, T, seed=SEED + 1000))
    data = [rc.to_jnp(src.batch(i, B, T, seed=SEED)) for i in range(epoch + 1)]
    for k in ks:
        trainer = Trainer(
            SequenceModel(rj.LSTM(32, 128), output_size=30, vocab_size=30),
            learning_rate=3e-3,
            clip_norm=1.0,
        )
        state = trainer.init(key)
        t0 = time.perf_counter()
        warm, _ = trainer.tbptt_step(state, data[-1], k)  # compile (discarded update)
        jax.block_until_ready(warm.params)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(epoch):
            state, m = trainer.tbptt_step(state, data[i], k)
        jax.block_until_ready(state.params)
        epoch_s = time.perf_counter() - t0
        ppl = float(trainer.evaluate(state.params, test)["perplexity"])
        out[f"k={k}"] = {
            "k": k,
            "heldout_perplexity": ppl,
            "seconds_per_epoch": epoch_s,
            "compile_seconds": compile_s,
            "updates": epoch * (T // k),
        }
        print(
            f"LM k={k}: perplexity {ppl:.3f} (bound {src.perplexity_bound:.3f}), epoch {epoch_s:.1f} s",
            flush=True,
        )
    return out


def _dependency_length(lag_T, lags, lag_ks, lag_steps, key) -> dict:
    """(b) Held-out accuracy of a GRU copying its input ``d`` steps late, per lag ``d``
    and truncation length ``k``."""
    out = {}
    for d in lags:
        test_np = lag_batch(500, lag_T, d, (SEED + 1, d))
        for k in lag_ks:
            model = SequenceModel(rj.GRU(16, 64), output_size=4, vocab_size=4)
            trainer = Trainer(model, learning_rate=1e-2, clip_norm=1.0)
            state = trainer.init(key)
            report = rc.progress(f"lag d={d} k={k}", lag_steps)
            for i in range(lag_steps):
                state, m = trainer.tbptt_step(
                    state, rc.to_jnp(lag_batch(16, lag_T, d, (SEED, d, i))), k
                )
                report(i + 1, loss=m["loss"][-1])
            _, logits = jax.jit(model.apply_batch)(state.params, jnp.asarray(test_np["inputs"]))
            acc = float(
                np.mean(np.asarray(jnp.argmax(logits, -1))[:, d:] == test_np["targets"][:, d:])
            )
            out[f"d={d},k={k}"] = {"lag": d, "k": k, "heldout_accuracy": acc, "learnt": acc > 0.9}
            print(f"lag d={d} k={k}: accuracy {acc:.3f}", flush=True)
    return out


def _plot(plt, out, ks, lags, lag_ks):
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4))
    lm = [out["language_model"][f"k={k}"] for k in ks]
    a1.plot(ks, [r["heldout_perplexity"] for r in lm], "o-", label="held-out perplexity")
    a1.axhline(out["language_model"]["perplexity_bound"], ls="--", c="k", label="exp(entropy rate)")
    a1.set_xscale("log", base=2), a1.set_xlabel("truncation k"), a1.legend()
    a1b = a1.twinx()
    a1b.plot(ks, [r["seconds_per_epoch"] for r in lm], "s:", c="C1")
    a1b.set_ylabel("seconds per epoch", color="C1")
    a1.set_title("language model: perplexity and time vs k")
    dl = out["dependency_length"]
    for d in lags:
        a2.plot(
            lag_ks, [dl[f"d={d},k={k}"]["heldout_accuracy"] for k in lag_ks], "o-", label=f"lag {d}"
        )
    a2.axhline(0.25, ls="--", c="k", label="chance")
    a2.set_xscale("log", base=2), a2.set_xlabel("truncation k"), a2.set_ylabel("held-out accuracy")
    a2.set_title("delayed copy: lag vs truncation"), a2.legend()
    return fig


def main():
    args = rc.parse(__doc__)
    T, B, epoch, ks, lag_T, lags, lag_ks, lag_steps = _presets(args.quick)
    key = jax.random.key(SEED)
    src = MarkovSource(vocab_size=30, order=2, concentration=0.1, seed=SEED)
    out = {"seed": SEED}
    out["language_model"] = _language_model(src, T, B, epoch, ks, key)
    out["dependency_length"] = dl = _dependency_length(lag_T, lags, lag_ks, lag_steps, key)
    out["claims"] = {
        # (b): lags >= k stay near chance, lags well below k are learnt
        "lags_at_least_k_not_learnt": all(
            not v["learnt"] for v in dl.values() if v["lag"] >= v["k"]
        ),
        "lags_below_k_learnt": {key_: v["learnt"] for key_, v in dl.items() if v["lag"] < v["k"]},
    }
    plt = rc.pyplot()
    rc.save(args, "repro_tbptt", out, plt and _plot(plt, out, ks, lags, lag_ks))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
