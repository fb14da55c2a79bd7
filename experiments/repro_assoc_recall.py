"""Multi-query associative recall: matrix memory (mLSTM) against scalar memory (LSTM, GRU,
sLSTM, minGRU) at equal parameter count.

The task (Arora et al. 2023, "Zoology"; the xLSTM paper's Fig. 4 uses it): each sequence
lists ``P`` key-value pairs ``k_1 v_1 ... k_P v_P`` (distinct keys from 32 key tokens,
values from 32 value tokens), then ``P`` queries, each a key from the list; at each query
the model must output that key's value. Loss and accuracy count the query positions only
(chance 1/32). Claim (xLSTM paper): the mLSTM's matrix memory recalls far better than
scalar-memory recurrences of the same size, and the gap widens with the number of pairs.

Models: token embedding (32) -> one recurrent layer -> dense head, the layer's hidden size
chosen per cell so that every model has about the same number of parameters (printed);
Adam 3e-3, ``optax.clip_by_global_norm(1.0)``, batch 32, fresh batches every step, seed 0.
Each step sees its own token's embedding and the previous one's (a causal convolution of
width 2, the token mixing that the xLSTM block's convolution in front of the mLSTM gives):
without it, a key and its value never meet in one step, and one layer of a matrix memory
cannot bind them (``--no-shift`` shows this).

Run (seed 0): ``python experiments/repro_assoc_recall.py`` (P = 4, 8, 16; 1500 steps per
model; about 4 min on an idle 2-core CPU), ``--no-shift`` (the same without the previous
token), ``--short`` (P = 4, 8; 300 steps) or ``--quick`` (P = 4, 40 steps: a smoke test,
no verdict). Writes ``results/repro_assoc_recall[_short][_noshift].json``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import repro_common as rc

import rnnjax as rj

SEED = 0
NK = 32  # key tokens 0..31, value tokens 32..63
V = 2 * NK
EMBED, BATCH, LR = 32, 32, 3e-3
TARGET_LAYER_PARAMS = 20_000


def data(n, pairs, seed):
    """``inputs`` (n, 3P) tokens, ``targets`` (n, 3P) values at queries, ``mask`` queries."""
    rng = np.random.default_rng(seed)
    keys = np.argsort(rng.random((n, NK)), axis=1)[:, :pairs]
    vals = rng.integers(NK, V, size=(n, pairs))
    ctx = np.stack([keys, vals], axis=2).reshape(n, 2 * pairs)
    q = rng.integers(0, pairs, size=(n, pairs))
    queries = np.take_along_axis(keys, q, axis=1)
    inputs = np.concatenate([ctx, queries], axis=1).astype(np.int32)
    targets = np.zeros_like(inputs)
    targets[:, 2 * pairs :] = np.take_along_axis(vals, q, axis=1)
    mask = np.zeros(inputs.shape, bool)
    mask[:, 2 * pairs :] = True
    return inputs, targets, mask


def make_cell(name, H, I):
    return {
        "mLSTM": lambda: rj.MLSTM(I, H, num_heads=1),
        "sLSTM": lambda: rj.SLSTM(I, H, num_heads=1),
        "LSTM": lambda: rj.LSTM(I, H),
        "GRU": lambda: rj.GRU(I, H),
        "minGRU": lambda: rj.MinGRU(I, H),
    }[name]()


def sized(name, I):
    """The cell whose layer (cell + head) is closest to the parameter target."""
    best = None
    for H in range(4, 513, 4):
        cell = make_cell(name, H, I)
        n = rc.param_count(jax.eval_shape(cell.init, jax.random.key(0))) + (H + 1) * V
        if best is None or abs(n - TARGET_LAYER_PARAMS) < abs(best[1] - TARGET_LAYER_PARAMS):
            best = (cell, n)
    return best[0]


def shifted(e):
    """``[e_t, e_{t-1}]`` along features (zeros before the first step): a causal
    convolution of width 2, the token mixing the xLSTM block's convolution gives."""
    prev = jnp.concatenate([jnp.zeros_like(e[:, :1]), e[:, :-1]], axis=1)
    return jnp.concatenate([e, prev], axis=-1)


def run(name, pairs, steps, eval_every, quick, shift=True):
    cell = sized(name, 2 * EMBED if shift else EMBED)
    H = cell.hidden_size
    k1, k2, k3 = jax.random.split(jax.random.key(SEED), 3)
    params = {
        "embed": jax.random.normal(k1, (V, EMBED)) / np.sqrt(EMBED),
        "cell": cell.init(k2),
        "head": {"w": jax.random.normal(k3, (H, V)) / np.sqrt(H), "b": jnp.zeros(V)},
    }
    n_params = rc.param_count(params)
    cfg = rj.ScanConfig(method="parallel") if name == "mLSTM" else None

    def logits(p, x):
        e = p["embed"][x]
        _, hs = rj.unroll_batch(cell, p["cell"], shifted(e) if shift else e, config=cfg)
        return hs @ p["head"]["w"] + p["head"]["b"]

    def loss_acc(p, x, y, m):
        lg = logits(p, x)
        ce = optax.softmax_cross_entropy_with_integer_labels(lg, y)
        loss = jnp.sum(ce * m) / jnp.sum(m)
        acc = jnp.sum((jnp.argmax(lg, -1) == y) * m) / jnp.sum(m)
        return loss, acc

    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(LR))

    @jax.jit
    def step(p, o, x, y, m):
        (loss, acc), g = jax.value_and_grad(loss_acc, has_aux=True)(p, x, y, m)
        upd, o = opt.update(g, o, p)
        return optax.apply_updates(p, upd), o, loss, acc

    evaluate = jax.jit(loss_acc)
    test = [jnp.asarray(a) for a in data(1000, pairs, (SEED + 1, pairs))]
    o = opt.init(params)
    report = rc.progress(f"{name} P={pairs} H={H}", steps)
    t0 = time.perf_counter()
    curve = []
    for i in range(steps):
        x, y, m = data(BATCH, pairs, (SEED, pairs, i))
        params, o, loss, acc = step(params, o, jnp.asarray(x), jnp.asarray(y), jnp.asarray(m))
        if (i + 1) % eval_every == 0 or i + 1 == steps:
            tl, ta = evaluate(params, *test)
            curve.append((i + 1, float(tl), float(ta)))
            report(i + 1, force=True, loss=loss, test_acc=ta)
    return {
        "hidden_size": H,
        "params": n_params,
        "test_accuracy": curve[-1][2],
        "best_test_accuracy": max(c[2] for c in curve),
        "test_loss": curve[-1][1],
        "curve": curve,
        "seconds": time.perf_counter() - t0,
    }


def main():
    args = rc.parse(
        __doc__,
        {
            "--short": "P = 4, 8 and 300 steps",
            "--no-shift": "each step sees its own token only (no width-2 causal convolution)",
        },
    )
    shift = not args.no_shift
    pair_list = [4] if args.quick else [4, 8] if args.short else [4, 8, 16]
    steps = 40 if args.quick else 300 if args.short else 1500
    eval_every = 20 if args.quick else 100 if args.short else 250
    names = ["mLSTM", "sLSTM", "LSTM", "GRU", "minGRU"]
    out = {
        "seed": SEED,
        "shift": shift,
        "steps": steps,
        "batch": BATCH,
        "lr": LR,
        "chance": 1 / NK,
        "runs": {},
    }
    for pairs in pair_list:
        for name in names:
            r = run(name, pairs, steps, eval_every, args.quick, shift)
            out["runs"][f"{name}_P{pairs}"] = r
            print(name, pairs, {k: v for k, v in r.items() if k != "curve"}, flush=True)
    verdict = {}
    for pairs in pair_list:
        acc = {n: out["runs"][f"{n}_P{pairs}"]["best_test_accuracy"] for n in names}
        best_scalar = max(v for n, v in acc.items() if n != "mLSTM")
        verdict[f"P{pairs}"] = {
            "mlstm": acc["mLSTM"],
            "best_scalar": best_scalar,
            "mlstm_ahead": acc["mLSTM"] > best_scalar,
        }
    out["verdict"] = verdict
    name = "repro_assoc_recall" + ("_short" if args.short else "") + ("" if shift else "_noshift")
    rc.save(args, name, out)


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
