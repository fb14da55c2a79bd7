"""Claim: packing variable-length sequences into rows with resets wastes no compute on padding.

Padded batches of variable-length sequences spend a step of the recurrence on every padded
position. With ``resets`` (``rnnjax.pack``), many sequences share a row back to back, each
running from the initial state as if alone, so a batch holds only real tokens.

Setup (seed 0): the order-2 Markov source of ``rnnjax.tasks.language`` (V = 30, Dirichlet
0.1), ``N`` training sequences with lengths uniform in [8, 128], a language model
(embedding 32, LSTM H = 128, per-step head), Adam 3e-3, batches of 16 rows of T = 128.
Padded: 16 sequences per row-batch, each padded to 128. Packed: the same sequences packed
first-fit into rows of 128 (``rj.pack``), ``resets`` at every sequence start. One epoch
of each, same initial parameters. Reported: real tokens per second (compilation excluded),
the share of computed steps that are real tokens, held-out perplexity after the epoch, and
an exactness check: on the same parameters the packed loss of every sequence equals its
padded loss.

Run: ``python experiments/repro_packing.py`` (``--quick``: tiny sizes). Writes
``results/repro_packing.json`` and ``.png``.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.language import MarkovSource

SEED, V, T, B = 0, 30, 128, 16


def _pairs(seqs):
    """(inputs, targets) of each sequence, stacked as ``(n - 1, 2)`` int arrays."""
    return [np.stack([s[:-1], s[1:]], axis=1) for s in seqs]


def _padded_batches(pairs):
    out = []
    for i in range(0, len(pairs), B):
        chunk = pairs[i : i + B]
        x = np.zeros((len(chunk), T, 2), np.int32)
        n = np.zeros(len(chunk), np.int32)
        for j, p in enumerate(chunk):
            x[j, : len(p)] = p
            n[j] = len(p)
        out.append((x, n, None))
    return out


def _packed_batches(pairs):
    xs, resets, length, index = rj.pack(pairs, row_length=T)
    xs, resets, length = np.asarray(xs), np.asarray(resets), np.asarray(length)
    return [
        (xs[i : i + B], length[i : i + B], resets[i : i + B]) for i in range(0, len(xs), B)
    ], index


def _sequences(n_train, n_test):
    """Training and test sequences of random lengths cut from a Markov stream, as
    (input, target) pairs."""
    rng = np.random.default_rng(SEED)
    src = MarkovSource(vocab_size=V, order=2, seed=SEED)
    stream = np.asarray(src.sample((n_train + n_test) * T, seed=SEED))
    lengths = rng.integers(8, T + 2, size=n_train + n_test)
    starts = rng.integers(0, len(stream) - T - 2, size=n_train + n_test)
    seqs = [stream[s : s + n] for s, n in zip(starts, lengths)]
    return _pairs(seqs[:n_train]), _pairs(seqs[n_train:])


def _training(model, opt):
    """``loss_fn(params, x, n, r) -> (mean loss, per-token losses)`` over the real tokens,
    and one jitted Adam ``step``."""

    def loss_fn(params, x, n, r):
        _, logits = model.apply_batch(params, x[..., 0], n, resets=r)
        mask = jnp.arange(x.shape[1])[None, :] < n[:, None]
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, x[..., 1])
        return jnp.sum(jnp.where(mask, ce, 0.0)) / jnp.maximum(mask.sum(), 1), ce

    @jax.jit
    def step(params, opt_state, x, n, r):
        (loss, _), g = jax.value_and_grad(loss_fn, has_aux=True)(params, x, n, r)
        upd, opt_state = opt.update(g, opt_state, params)
        return optax.apply_updates(params, upd), opt_state, loss

    return loss_fn, step


def _perplexity(loss_fn, params, test_batches) -> float:
    tot = cnt = 0.0
    for x, n, _ in test_batches:
        loss, _ = loss_fn(params, jnp.asarray(x), jnp.asarray(n), None)
        tot, cnt = tot + float(loss) * n.sum(), cnt + n.sum()
    return float(np.exp(tot / cnt))


def _epoch(name, batches, step, params, opt_state):
    """One timed epoch over ``batches`` (compiled first); returns the parameters and the
    seconds."""

    def device(batch):
        return tuple(None if a is None else jnp.asarray(a) for a in batch)

    jax.block_until_ready(step(params, opt_state, *device(batches[0])))  # compile
    if len(batches[-1][0]) != len(batches[0][0]):
        jax.block_until_ready(step(params, opt_state, *device(batches[-1])))
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        params, opt_state, loss = step(params, opt_state, *device(batch))
        if (i + 1) % 8 == 0:
            print(f"  {name}: batch {i + 1}/{len(batches)} loss {float(loss):.3f}", flush=True)
    jax.block_until_ready(params)
    return params, time.perf_counter() - t0


def _loss_difference(loss_fn, params, train, index) -> float:
    """The largest difference of a sequence's loss, packed against padded, same
    parameters."""
    xs, resets, length = (jnp.asarray(a) for a in rj.pack(train, row_length=T)[:3])
    _, ce_packed = loss_fn(params, xs, length, resets)
    per_packed = [float(c.sum()) for c in rj.unpack(ce_packed, index)]
    per_padded = []
    for x, n, _ in _padded_batches(train):
        _, ce = loss_fn(params, jnp.asarray(x), jnp.asarray(n), None)
        per_padded += [float(ce[j, : n[j]].sum()) for j in range(len(n))]
    return float(np.max(np.abs(np.array(per_packed) - per_padded)))


def _plot(out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = ["padded", "packed"]
    ax.bar(names, [out[k]["tokens_per_second"] for k in names], color=["#999999", "#1f77b4"])
    ax.set_ylabel("real tokens per second", fontsize=10)
    ax.set_title(f"LSTM language model, one epoch: packed {out['speedup']:.2f}x", fontsize=10)
    ax.tick_params(labelsize=10)
    return fig


def main():
    args = rc.parse(__doc__)
    n_train, n_test = (64, 32) if args.quick else (512, 128)
    train, test = _sequences(n_train, n_test)
    model = SequenceModel(rj.LSTM(32, 128), output_size=V, vocab_size=V)
    opt = optax.adam(3e-3)
    loss_fn, step = _training(model, opt)
    test_batches = _padded_batches(test)
    init = model.init(jax.random.key(SEED))
    real = int(sum(len(p) for p in train))
    packed, index = _packed_batches(train)
    runs = {"padded": _padded_batches(train), "packed": packed}
    out = {"seed": SEED, "n_train": n_train, "real_tokens": real}
    for name, batches in runs.items():
        params, secs = _epoch(name, batches, step, init, opt.init(init))
        computed = sum(a[0].shape[0] * T for a in batches)
        out[name] = {
            "batches": len(batches),
            "seconds": secs,
            "tokens_per_second": real / secs,
            "real_share": real / computed,
            "test_perplexity": _perplexity(loss_fn, params, test_batches),
        }
        print(
            f"{name}: {len(batches)} batches, {real / secs:,.0f} real tokens/s, "
            f"{100 * real / computed:.0f}% of computed steps real, "
            f"test perplexity {out[name]['test_perplexity']:.2f}",
            flush=True,
        )
    out["speedup"] = out["packed"]["tokens_per_second"] / out["padded"]["tokens_per_second"]
    out["max_abs_loss_difference"] = _loss_difference(loss_fn, init, train, index)
    print(
        f"packed / padded real tokens per second: {out['speedup']:.2f}x; per-sequence loss "
        f"difference packed vs padded: {out['max_abs_loss_difference']:.2e}"
    )
    rc.save(args, "repro_packing", out, _plot(out))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
