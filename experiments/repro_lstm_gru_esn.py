"""Claim 9: LSTM vs GRU vs echo state network on the same tasks: accuracy, parameters, time.

The usual picture: gated networks trained by BPTT reach the best accuracy; an ESN
(fixed random reservoir, only a linear readout fitted in closed form) is much cheaper
to train and competitive on tasks that need only a fading memory of the input.

Tasks (seed 0):
- ``digits_rows``: scikit-learn's 8x8 digits as 8 rows of 8 pixels (as
  ``repro_pixel.py``), classification from the final state; test accuracy.
- ``markov_lm``: next-symbol prediction on the order-2 Markov source (V = 30, Dirichlet
  0.1; ``rnnjax.tasks.language``): LSTM and GRU train on fresh batches of 32 sequences
  of 64 (a first version trained on a fixed set of 256 sequences and overfitted at once:
  held-out accuracy 0.08 (LSTM) / 0.14 (GRU) against 0.23 for the ESN); the ESN's
  readout is fitted on 512 sequences of 64. Held-out next-symbol accuracy on 64
  sequences (all 64 positions), and the true source's accuracy (the most likely next
  symbol under the real transition table, positions 1..63) as the ceiling.

Models: LSTM and GRU with H = 64 (Adam 3e-3, clipping 1.0, batch 64 / 32, ``STEPS``
updates), an ESN with N = 500 (spectral radius 0.9, input scaling 1, density 0.1, leak
1 for digits and 0.5 for the language model; one-hot tokens as input) with a ridge readout
(float64 normal equations, ridge 1e-3) on one-hot targets, argmax. Parameters: trained
parameters (the ESN's readout) and all parameters. Time: wall seconds of the whole
training (first call's compilation included, on the shared 2-core CPU).

Run (seed 0): ``python experiments/repro_lstm_gru_esn.py`` (``--quick``: 30 steps).
Writes ``results/repro_lstm_gru_esn.json``.
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
from rnnjax.tasks.digits import load_digit_sequences
from rnnjax.tasks.language import MarkovSource
from rnnjax.train import Trainer

SEED = 0
H, N, RIDGE, STEPS = 64, 500, 1e-3, 1000


def sample_batches(train, batch, seed):
    n = len(train["targets"])

    def fn(i):
        idx = np.random.default_rng((seed, i)).choice(n, batch, replace=False)
        return {k: v[idx] for k, v in train.items()}

    return fn


def _tasks(src):
    """The two tasks: digit rows classified at the last step, and next-symbol prediction
    of a Markov source (with the accuracy ceiling of its true transitions)."""
    lm_train = src.batch(0, 512, 64, seed=SEED)  # the ESN's readout data
    lm_test = src.batch(0, 64, 64, seed=SEED + 1000)
    # ceiling: the most likely next symbol under the true transitions (targets from t >= 1)
    x = np.concatenate([lm_test["inputs"], lm_test["targets"][:, -1:]], 1)
    ctx = x[:, :-2] * 30 + x[:, 1:-1]
    best = np.argmax(src.transitions[ctx], -1)
    ceiling = float(np.mean(best == x[:, 2:]))
    digits = load_digit_sequences("rows", seed=SEED)
    return {
        "digits_rows": dict(
            train=digits["train"],
            test=digits["test"],
            head="final",
            vocab=None,
            I=8,
            O=10,
            batch=64,
            leak=1.0,
        ),
        "markov_lm": dict(
            train=lm_train,
            test=lm_test,
            head="per_step",
            vocab=30,
            I=16,
            O=30,
            batch=32,
            leak=0.5,
            ceiling=ceiling,
            fresh=lambda i: src.batch(i + 1, 32, 64, seed=SEED),
        ),
    }


def _gradient(tname, t, steps, key) -> dict:
    """The LSTM and the GRU trained by gradient on task ``t``."""
    res = {}
    test = rc.to_jnp(t["test"])
    for name, cell in (("lstm", rj.LSTM(t["I"], H)), ("gru", rj.GRU(t["I"], H))):
        model = SequenceModel(cell, output_size=t["O"], vocab_size=t["vocab"], head=t["head"])
        trainer = Trainer(model, learning_rate=3e-3, clip_norm=1.0)
        batch_fn = t.get("fresh") or sample_batches(t["train"], t["batch"], SEED)
        state, log = rc.train(
            trainer,
            key,
            batch_fn,
            steps,
            eval_batch=test,
            eval_every=steps,
            label=f"{tname} {name}",
        )
        res[name] = {
            "test_accuracy": log["eval"][-1]["accuracy"],
            "trained_params": rc.param_count(state.params),
            "all_params": rc.param_count(state.params),
            "train_seconds": log["seconds"],
        }
        print(tname, name, res[name], flush=True)
    return res


def _esn(t, key) -> dict:
    """An echo state network with a ridge readout on task ``t``."""
    onehot = np.eye(30, dtype=np.float32)
    esn = EchoState(
        t["O"] if t["vocab"] else t["I"],
        N,
        spectral_radius=0.9,
        leak_rate=t["leak"],
        input_scaling=1.0,
        density=0.1,
    )
    t0 = time.perf_counter()
    p = esn.init(key)
    run = jax.jit(lambda x: rj.unroll_batch(esn, p, x))

    def feats(inputs):
        xin = onehot[inputs] if t["vocab"] else inputs
        s, hs = run(jnp.asarray(xin))
        return np.asarray(s.h) if t["head"] == "final" else np.asarray(hs).reshape(-1, N)

    Z = feats(t["train"]["inputs"])
    Y = np.eye(t["O"])[np.asarray(t["train"]["targets"]).reshape(-1)]
    W = rc.ridge_fit(Z, Y, RIDGE)
    fit_s = time.perf_counter() - t0
    pred = rc.ridge_apply(W, feats(t["test"]["inputs"])).argmax(-1)
    acc = float(np.mean(pred == np.asarray(t["test"]["targets"]).reshape(-1)))
    return {
        "test_accuracy": acc,
        "trained_params": int(W.size),
        "all_params": int(W.size + rc.param_count(p)),
        "train_seconds": fit_s,
    }


def main():
    args = rc.parse(__doc__)
    steps = 30 if args.quick else STEPS
    key = jax.random.key(SEED)
    out = {"seed": SEED, "steps": steps, "H": H, "N": N, "tasks": {}}
    src = MarkovSource(vocab_size=30, order=2, concentration=0.1, seed=SEED)
    for tname, t in _tasks(src).items():
        res = {"ceiling_accuracy": t.get("ceiling"), **_gradient(tname, t, steps, key)}
        res["esn"] = _esn(t, key)
        print(tname, "esn", res["esn"], flush=True)
        out["tasks"][tname] = res
    rc.save(args, "repro_lstm_gru_esn", out)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
