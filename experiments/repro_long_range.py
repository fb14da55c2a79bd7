"""Claim 3: long-range dependencies: the adding problem and the copy task.

Hochreiter & Schmidhuber (1997) and Arjovsky et al. (2016): gated networks (LSTM, GRU)
learn the adding problem and the copy task, where a tanh RNN stays at the baseline of
a memoryless predictor (MSE 1/6 ~ 0.167 for adding; cross-entropy ``10 log 8 / (T + 20)``
for copying).

Settings (seed 0): hidden size 64 for every model; Adam, learning rate 3e-3, global-norm
clipping 1.0 (``rnnjax.train.Trainer``); batch 32, fresh batches at every step; test on
500 held-out sequences every 100 steps.

- Adding problem, T in ``ADD_T``: final-state linear readout, MSE. Solved = test MSE
  below 0.01 (6% of the baseline).
- Copy task (8 symbols, copy 10, delay ``COPY_T``): embedding 16, per-step softmax head,
  mean cross-entropy over all ``T + 20`` steps. Solved = test cross-entropy below 10% of
  the baseline. Also the accuracy on the 10 recall positions (chance 1/8).
- ESN row: an ``EchoState`` reservoir (N = 400, spectral radius 0.95, input scaling 1,
  density 0.1, leak 1) with a ridge readout (float64 least squares on
  ``[states, 1]``, ridge 1e-4) fitted on 4000 training sequences: the final state
  for adding, every state (one-hot targets, argmax) for copying; no gradient steps.

"Steps to solve" is the first evaluation step at which the criterion held (None: not
within the budget).

Run (seed 0): ``python experiments/repro_long_range.py`` (adding T = 100 and 200, copy
T = 50; ``--quick``: T = 20, 60 steps). ``python experiments/repro_long_range.py --t400``
runs the adding problem at T = 400 alone (same settings, another ~9 minutes), written to
``results/repro_long_range_t400.json``.
Writes ``results/repro_long_range.json`` and ``.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.reservoir import EchoState
from rnnjax.tasks.long_range import ADDING_BASELINE_MSE, adding_problem, copy_baseline, copy_task
from rnnjax.train import Trainer

SEED = 0
H, BATCH, LR, CLIP, N_TEST, EMBED = 64, 32, 3e-3, 1.0, 500, 16
N_SYM, N_COPY = 8, 10
ESN_N, ESN_TRAIN, RIDGE = 400, 4000, 1e-4


def cells(I):
    return {"lstm": rj.LSTM(I, H), "gru": rj.GRU(I, H), "rnn": rj.SimpleRNN(I, H)}


def esn_states(cell, params, xs, final_only=False):
    """``(final state, all states)`` of the reservoir over ``xs`` ``(B, T, I)``; with
    ``final_only`` only the final state (the ``(B, T, N)`` states are never stored)."""
    if final_only:
        return jax.jit(lambda x: rj.unroll_batch(cell, params, x)[0])(jnp.asarray(xs))
    return jax.jit(lambda x: rj.unroll_batch(cell, params, x))(jnp.asarray(xs))


def _adding(T, steps, eval_every, esn_train, key) -> dict:
    """The gradient-trained cells and the ridge-fitted reservoir on the adding problem."""
    test = rc.to_jnp(adding_problem(N_TEST, T, seed=(SEED + 1, T)))
    res = {"T": T, "baseline_mse": ADDING_BASELINE_MSE}
    for name, cell in cells(2).items():
        _, log = rc.train_adding(
            SequenceModel(cell, output_size=1, head="final"),
            key,
            T,
            steps,
            test=test,
            eval_every=eval_every,
            learning_rate=LR,
            batch=BATCH,
            seed=SEED,
        )
        res[name] = rc.eval_record(log)
        print(
            f"adding T={T} {name}: solve step {log['steps_to_solve']}, final test MSE "
            f"{log['eval'][-1]['loss']:.4f} ({log['seconds']:.0f} s)",
            flush=True,
        )
    esn = EchoState(2, ESN_N, spectral_radius=0.95, input_scaling=1.0, density=0.1)
    p = esn.init(key)
    t0 = time.perf_counter()
    tr = adding_problem(esn_train, T, seed=(SEED + 2, T))
    s_tr = esn_states(esn, p, tr["inputs"], final_only=True)
    W = rc.ridge_fit(np.asarray(s_tr.h), tr["targets"], RIDGE)
    s_te = esn_states(esn, p, test["inputs"], final_only=True)
    mse = float(np.mean((rc.ridge_apply(W, np.asarray(s_te.h)) - np.asarray(test["targets"])) ** 2))
    res["esn"] = {
        "test_mse": mse,
        "solved": mse < 0.01,
        "N": ESN_N,
        "train_sequences": esn_train,
        "seconds": time.perf_counter() - t0,
    }
    print(f"adding T={T} esn: test MSE {mse:.4f}", flush=True)
    return res


def _copy_esn(T, test, esn_train, key) -> dict:
    """A ridge-fitted reservoir on the copy task: its recall accuracy."""
    V, L = N_SYM + 2, T + 2 * N_COPY
    esn = EchoState(V, ESN_N, spectral_radius=0.95, input_scaling=1.0, density=0.1)
    p = esn.init(key)
    tr = copy_task(esn_train // 4, T, n_symbols=N_SYM, n_copy=N_COPY, seed=(SEED + 2, T))
    onehot = np.eye(V, dtype=np.float32)
    s_tr = esn_states(esn, p, onehot[tr["inputs"]])[1]
    W = rc.ridge_fit(
        np.asarray(s_tr).reshape(-1, ESN_N), onehot[tr["targets"]].reshape(-1, V), RIDGE
    )
    s_te = np.asarray(esn_states(esn, p, onehot[np.asarray(test["inputs"])])[1])
    pred = rc.ridge_apply(W, s_te.reshape(-1, ESN_N)).reshape(N_TEST, L, V).argmax(-1)[:, -N_COPY:]
    recall = float(np.mean(pred == np.asarray(test["targets"])[:, -N_COPY:]))
    print(f"copy T={T} esn: recall acc {recall:.3f}", flush=True)
    return {
        "recall_accuracy": recall,
        "N": ESN_N,
        "train_sequences": esn_train // 4,
        "note": "ridge readout: no probabilities, so no cross-entropy; recall accuracy only",
    }


def _copy(T, steps, eval_every, esn_train, key) -> dict:
    """The gradient-trained cells and the ridge-fitted reservoir on the copy task."""
    base = copy_baseline(T, n_symbols=N_SYM, n_copy=N_COPY)
    test = rc.to_jnp(copy_task(N_TEST, T, n_symbols=N_SYM, n_copy=N_COPY, seed=(SEED + 1, T)))
    res = {"T": T, "baseline_ce": base, "chance_recall_accuracy": 1 / N_SYM}
    V = N_SYM + 2
    for name, cell in cells(EMBED).items():
        model = SequenceModel(cell, output_size=V, vocab_size=V, head="per_step")
        trainer = Trainer(model, loss="cross_entropy", learning_rate=LR, clip_norm=CLIP)
        state, log = rc.train(
            trainer,
            key,
            lambda i: copy_task(BATCH, T, n_symbols=N_SYM, n_copy=N_COPY, seed=(SEED, T, i)),
            steps,
            eval_batch=test,
            eval_every=eval_every,
            solved=lambda m: m["loss"] < 0.1 * base,
        )
        _, logits = jax.jit(model.apply_batch)(state.params, test["inputs"])
        pred = np.asarray(jnp.argmax(logits, -1))[:, -N_COPY:]
        recall = float(np.mean(pred == np.asarray(test["targets"])[:, -N_COPY:]))
        res[name] = dict(rc.eval_record(log, "test_ce"), recall_accuracy=recall)
        print(
            f"copy T={T} {name}: solve step {log['steps_to_solve']}, final CE "
            f"{log['eval'][-1]['loss']:.4f} (baseline {base:.4f}), recall acc {recall:.3f}",
            flush=True,
        )
    res["esn"] = _copy_esn(T, test, esn_train, key)
    return res


def _plot(out, add_T, copy_T):
    """Test curves of the adding problems and the copy task (``None`` without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    n = len(add_T) + 1
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4))
    for ax, T in zip(axes, add_T):
        r = out["adding"][str(T)]
        for name in ("lstm", "gru", "rnn"):
            ax.semilogy(r[name]["eval_steps"], r[name]["test_mse_curve"], label=name)
        ax.axhline(ADDING_BASELINE_MSE, ls="--", c="k", label="baseline 1/6")
        ax.axhline(r["esn"]["test_mse"], ls=":", c="gray", label="ESN (ridge)")
        ax.set_title(f"adding problem T={T}: test MSE"), ax.set_xlabel("step"), ax.legend()
    r = out["copy"][str(copy_T)]
    for name in ("lstm", "gru", "rnn"):
        axes[-1].semilogy(r[name]["eval_steps"], r[name]["test_ce_curve"], label=name)
    axes[-1].axhline(r["baseline_ce"], ls="--", c="k", label="baseline 10 log 8/(T+20)")
    axes[-1].set_title(f"copy task T={copy_T}: test cross-entropy"), axes[-1].set_xlabel("step")
    axes[-1].legend()
    return fig


def main():
    args = rc.parse(__doc__, {"--t400": "the adding problem at T = 400 only"})
    t400 = args.t400
    add_T, copy_T, steps = (
        ((20,), 10, 60) if args.quick else ((400,) if t400 else (100, 200), 50, 1500)
    )
    eval_every = 20 if args.quick else 100
    esn_train = 200 if args.quick else ESN_TRAIN
    out = {
        "seed": SEED,
        "H": H,
        "batch": BATCH,
        "lr": LR,
        "clip": CLIP,
        "steps": steps,
        "adding": {},
        "copy": {},
    }
    key = jax.random.key(SEED)
    for T in add_T:
        out["adding"][str(T)] = _adding(T, steps, eval_every, esn_train, key)
    if t400:
        rc.save(args, "repro_long_range_t400", out)
        return
    out["copy"][str(copy_T)] = _copy(copy_T, steps, eval_every, esn_train, key)
    rc.save(args, "repro_long_range", out, _plot(out, add_T, copy_T))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
