"""Parallel in time, stacked: do deep minGRU / minLSTM / LRU blocks learn what one layer cannot?

Feng et al. (2024, "Were RNNs all we needed?") stack their parallel cells in residual blocks
(:class:`rnnjax.DeepRecurrent`: pre-norm, the recurrent layer, a GLU, two residual
connections) and report that one layer fails the selective copying task while two or three
layers solve it. This script measures that, and compares three-block parallel models with a
GRU of the same parameter count on the tasks of ``parallel_quality.py``. Every parallel
model runs with ``ScanConfig(method="parallel")``; the GRU with the default sequential
engine. Seed 0 everywhere.

a. Selective copying (Gu & Dao 2023, as Feng et al. use it): ``L`` blank tokens with
   ``K = 16`` data tokens (14 symbols, vocabulary 16 with the blank and the marker) at
   random sorted positions, then ``K`` marker tokens at which the model must emit the data
   tokens in order. Cross-entropy on the ``K`` output positions only; per-token accuracy
   there on 256 held-out sequences (chance 1/14 = 0.071). MinGRU and MinLSTM,
   ``DeepRecurrent.stack(cell, width=64, depth=1, 2, 3)``, embedding and softmax head;
   Adam 3e-3 (10 % warm-up, cosine decay to 3e-4), clipping 1.0, batch 32, fresh batches.
   **Scaled down for the CPU**: ``L = 64`` (the Mamba paper uses 4096; at ``L = 256`` a
   training step of the three-block minGRU took 0.4 s, of the minLSTM 0.8 s, on the shared
   2-core CPU) and 600 steps (the papers train far longer).
   Paper, as recalled (not checked against the paper; Feng et al. Table 1, accuracy %,
   1 / 2 / 3 layers): minGRU 37.0 / 96.8 / 99.5, minLSTM 37.6 / 85.7 / 96.0.
b. Markov language model (:class:`rnnjax.tasks.language.MarkovSource`: order 2, 30 symbols,
   Dirichlet(0.1)): windows of 64 tokens, batch 32, Adam 1e-2 with warm-up and cosine
   decay, clipping 1.0, 300 steps; held-out perplexity (8 x 32 sequences of 256 tokens)
   against the bound exp(H).
c. Adding problem (Hochreiter & Schmidhuber 1997), T = 200: an input encoder (2 -> width),
   final-step readout, MSE; Adam 3e-3, clipping 1.0, batch 32, 600 steps; test MSE on 500
   held-out sequences every 100 steps; solved = test MSE < 0.01 (baseline 1/6).

In b and c the three parallel models are three blocks deep: MinGRU of width 32, MinLSTM
of the width whose parameter count is nearest the MinGRU's, LRU of a width within 3 of it
with the number ``N`` of complex units nearest width / 2 that brings its count within 2 %;
the GRU is one layer whose hidden size gives the nearest count. The counts are printed and
stored, and must agree within 5 %.

Run (seed 0): ``python experiments/repro_deep_parallel.py`` (sized for about 25 min on the
shared 2-core CPU; it took 33 min while other jobs and the ``--long`` run shared it);
``--quick`` (tiny: ``L = 16``, ``K = 4``, width 16, 10-20 steps, and only minGRU x1 and
minLSTM x2 on selective copying, the MinGRU and the GRU in b and c, though all four are
matched and counted; used by the smoke test); ``--long`` (selective copying only, minGRU at
depths 1, 2, 3 for 2400 steps, the same schedule stretched: how far the 600-step figures are
from the papers' regime; 23 min, same conditions). Writes
``results/repro_deep_parallel[_quick|_long].json`` and ``.png``.
"""

from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import repro_common as rc

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.tasks.language import MarkovSource
from rnnjax.tasks.long_range import ADDING_BASELINE_MSE, adding_problem
from rnnjax.train import Trainer

SEED, BATCH = 0, 32
N_SYMBOLS = 14  # data symbols 1..14; 0 is the blank, 15 the marker: vocabulary 16
VOCAB_LM, EVAL_BATCHES, EVAL_LEN, LM_LEN = 30, 8, 256, 64
PAR = rj.ScanConfig(method="parallel")
TOLERANCE = 0.05  # parameter counts of the compared models agree within 5 %

FULL = dict(
    sc_L=64, sc_K=16, sc_width=64, sc_steps=600, sc_eval_every=50, sc_test=256,
    width=32, lm_steps=300, add_T=200, add_steps=600, add_eval_every=100, add_test=500,
)  # fmt: skip
QUICK = dict(
    sc_L=16, sc_K=4, sc_width=16, sc_steps=20, sc_eval_every=10, sc_test=64,
    width=16, lm_steps=10, add_T=20, add_steps=20, add_eval_every=10, add_test=64,
    sc_runs=(("mingru", 1), ("minlstm", 2)), trained=("mingru", "gru"),
)  # fmt: skip
LONG = dict(
    FULL, sc_steps=2400, sc_eval_every=100, sc_runs=(("mingru", 1), ("mingru", 2), ("mingru", 3))
)
# the full preset trains every model: selective copying at depths 1, 2, 3 of both cells, and
# all four matched models in b and c; the quick one (a compilation per model dominates its
# time) trains the subsets above, but matches and counts all four models


def selective_copying(batch_size: int, L: int, K: int, *, n_symbols: int = N_SYMBOLS, seed=0):
    """``{"inputs", "targets"}``, ``(B, L + K)`` int32: ``K`` data tokens (``1..n_symbols``)
    at random sorted positions among ``L`` blanks (0), then ``K`` markers
    (``n_symbols + 1``); the targets hold the data tokens, in order, at the marker steps
    (0 elsewhere, not scored)."""
    rng = np.random.default_rng(seed)
    pos = np.sort(np.argsort(rng.random((batch_size, L)), axis=1)[:, :K], axis=1)
    data = rng.integers(1, n_symbols + 1, size=(batch_size, K)).astype(np.int32)
    x = np.zeros((batch_size, L + K), np.int32)
    np.put_along_axis(x, pos, data, axis=1)
    x[:, L:] = n_symbols + 1
    y = np.zeros_like(x)
    y[:, L:] = data
    return {"inputs": x, "targets": y}


@dataclasses.dataclass(frozen=True)
class TailCrossEntropy:
    """Cross-entropy on the last ``k`` steps only (the output positions); a Trainer loss."""

    k: int

    def __call__(self, outputs, targets, mask):
        o, t = outputs[:, -self.k :], targets[:, -self.k :]
        return optax.softmax_cross_entropy_with_integer_labels(o, t).mean()


def deep(cell, width, depth, input_size=None, hidden_size=None):
    if cell is rj.LRU and hidden_size is None:
        hidden_size = max(1, width // 2)
    return rj.DeepRecurrent.stack(
        cell, width=width, depth=depth, input_size=input_size, hidden_size=hidden_size, config=PAR
    )


@functools.lru_cache(maxsize=None)
def n_params(model) -> int:
    shapes = jax.eval_shape(model.init, jax.random.key(0))
    return rj.count_params(shapes)


def nearest(count, target, lo, hi):
    """The size in ``[lo, hi]`` whose ``count(size)`` (increasing) is nearest ``target``."""
    while hi - lo > 1:  # bisection: count(lo) < target <= count(hi), or the ends
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if count(mid) < target else (lo, mid)
    return min((lo, hi), key=lambda s: abs(count(s) - target))


def _n(model):
    return model.layer.blocks[0].layer.cell.hidden_size


def matched_models(width, make, input_size=None):
    """``{name: (model, parameter count)}``: the three-block parallel models and a one-layer
    GRU, MinGRU at ``width``, the others at the size whose count is nearest the MinGRU's.
    ``make(layer)`` wraps a layer in its task's model; ``input_size``: the features of
    float inputs (an encoder maps them to the width), ``None`` for tokens (the embedding
    has the layer's input size)."""
    out = {"mingru": make(deep(rj.MinGRU, width, 3, input_size))}
    target = n_params(out["mingru"])
    w = nearest(lambda w: n_params(make(deep(rj.MinLSTM, w, 3, input_size))), target, 2, 4 * width)
    out["minlstm"] = make(deep(rj.MinLSTM, w, 3, input_size))
    # the LRU: width near the MinGRU's, N complex units (about width / 2) fine-tuning the count
    lrus = []
    for w in range(max(2, width - 3), width + 4):
        n = nearest(lambda n: n_params(make(deep(rj.LRU, w, 3, input_size, n))), target, 1, 4 * w)
        lrus.append(make(deep(rj.LRU, w, 3, input_size, n)))
    out["lru"] = min(  # within 2 %, the N nearest width / 2 (the LRU's usual 2N = width)
        lrus,
        key=lambda m: (abs(n_params(m) - target) > 0.02 * target, abs(_n(m) - m.layer.width / 2)),
    )

    def gru(h):
        return make(rj.Recurrent(rj.GRU(input_size or width, h)))

    out["gru"] = gru(nearest(lambda h: n_params(gru(h)), target, 1, 16 * width))
    return {k: (m, n_params(m)) for k, m in out.items()}


def schedule(peak, steps, end):
    return optax.schedules.warmup_cosine_decay_schedule(
        0.0, peak, warmup_steps=max(1, steps // 10), decay_steps=steps, end_value=end
    )


def run_selective(p, key):
    L, K = p["sc_L"], p["sc_K"]
    vocab = N_SYMBOLS + 2
    test = rc.to_jnp(selective_copying(p["sc_test"], L, K, seed=(SEED + 1, L, K)))
    loss = TailCrossEntropy(K)
    out = {
        "L": L, "K": K, "n_symbols": N_SYMBOLS, "vocab": vocab, "width": p["sc_width"],
        "steps": p["sc_steps"], "chance_accuracy": 1.0 / N_SYMBOLS,
    }  # fmt: skip
    cells = {"mingru": rj.MinGRU, "minlstm": rj.MinLSTM}
    runs = p.get("sc_runs", [(c, d) for c in cells for d in (1, 2, 3)])
    out["runs"] = [f"{c}_x{d}" for c, d in runs]
    for cell_name, depth in runs:
        cell = cells[cell_name]
        name = f"{cell_name}_x{depth}"
        model = SequenceModel(deep(cell, p["sc_width"], depth), output_size=vocab, vocab_size=vocab)
        trainer = Trainer(
            model, loss=loss, learning_rate=schedule(3e-3, p["sc_steps"], 3e-4), clip_norm=1.0
        )

        @jax.jit
        def evaluate(params, batch, model=model):
            _, logits = model.apply_batch(params, batch["inputs"])
            o, t = logits[:, -K:], batch["targets"][:, -K:]
            ce = optax.softmax_cross_entropy_with_integer_labels(o, t).mean()
            return ce, jnp.mean(jnp.argmax(o, -1) == t)

        state = trainer.init(key)
        report = rc.progress(f"selective copying {name}", p["sc_steps"])
        curve, steps, losses = [], [], []
        t0 = time.perf_counter()
        for i in range(p["sc_steps"]):
            batch = rc.to_jnp(selective_copying(BATCH, L, K, seed=(SEED, L, K, i)))
            state, m = trainer.train_step(state, batch)
            losses.append(m["loss"])
            if (i + 1) % p["sc_eval_every"] == 0 or i + 1 == p["sc_steps"]:
                ce, acc = (float(v) for v in evaluate(state.params, test))
                curve.append(acc), steps.append(i + 1)
                report(i + 1, force=True, loss=m["loss"], test_ce=ce, test_acc=acc)
        seconds = time.perf_counter() - t0
        out[name] = {
            "cell": cell_name, "depth": depth, "final_test_accuracy": curve[-1],
            "best_test_accuracy": max(curve), "final_test_ce": ce,
            "test_accuracy_curve": curve, "eval_steps": steps,
            "train_loss_curve": [float(v) for v in jax.device_get(losses)],
            "seconds": seconds, "params": rc.param_count(state.params),
        }  # fmt: skip
        print(
            f"selective copying {name}: test accuracy {curve[-1]:.3f} (best "
            f"{max(curve):.3f}), {rc.param_count(state.params)} params, {seconds:.1f} s",
            flush=True,
        )
    return out


def _within(counts):
    ref = counts["mingru"]
    return {k: abs(v - ref) / ref for k, v in counts.items()}


def run_language_model(p, key):
    source = MarkovSource(vocab_size=VOCAB_LM, order=2, concentration=0.1, seed=SEED)

    def make(layer):
        return SequenceModel(layer, output_size=VOCAB_LM, vocab_size=VOCAB_LM)

    models = matched_models(p["width"], make)
    counts = {k: c for k, (_, c) in models.items()}
    out = {
        "steps": p["lm_steps"], "seq_len": LM_LEN, "perplexity_bound": source.perplexity_bound,
        "param_counts": counts, "param_gap_vs_mingru": _within(counts),
    }  # fmt: skip
    print(f"language model parameter counts: {counts}", flush=True)
    steps = p["lm_steps"]
    for name, (model, count) in models.items():
        if name not in p.get("trained", models):
            continue
        trainer = Trainer(model, learning_rate=schedule(1e-2, steps, 1e-3), clip_norm=1.0)
        state, log = rc.train(
            trainer,
            key,
            lambda i: source.batch(i, BATCH, LM_LEN, seed=SEED),
            steps,
            label=f"language model {name}",
        )
        ppl = rc.perplexity(model, state.params, source, BATCH, EVAL_LEN, EVAL_BATCHES, SEED + 1000)
        out[name] = {
            "perplexity": ppl, "seconds": log["seconds"], "params": count,
            "layer": repr(model.layer), "train_loss_curve": log["train_loss"],
        }  # fmt: skip
        print(
            f"language model {name}: perplexity {ppl:.3f} (bound {source.perplexity_bound:.3f}), "
            f"{count} params, {log['seconds']:.1f} s",
            flush=True,
        )
    return out


def run_adding(p, key):
    T = p["add_T"]
    test = rc.to_jnp(adding_problem(p["add_test"], T, seed=(SEED + 1, T)))

    def make(layer):
        return SequenceModel(layer, output_size=1, head="final")

    models = matched_models(p["width"], make, input_size=2)
    counts = {k: c for k, (_, c) in models.items()}
    out = {
        "T": T, "steps": p["add_steps"], "baseline_mse": ADDING_BASELINE_MSE,
        "param_counts": counts, "param_gap_vs_mingru": _within(counts),
    }  # fmt: skip
    print(f"adding parameter counts: {counts}", flush=True)
    for name, (model, count) in models.items():
        if name not in p.get("trained", models):
            continue
        state, log = rc.train_adding(
            model,
            key,
            T,
            p["add_steps"],
            test=test,
            eval_every=p["add_eval_every"],
            batch=BATCH,
            seed=SEED,
            label=f"adding T={T} {name}",
        )
        out[name] = dict(rc.eval_record(log, best=False), params=count, layer=repr(model.layer))
        print(
            f"adding T={T} {name}: solved at {log['steps_to_solve']}, final MSE "
            f"{log['eval'][-1]['loss']:.4f}, {count} params, {log['seconds']:.1f} s",
            flush=True,
        )
    return out


def plot(out):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    sc, lm, ad = out["selective_copying"], out.get("language_model"), out.get("adding")
    fig, axes = plt.subplots(1, 3 if lm else 1, figsize=(15, 4) if lm else (6, 4), squeeze=False)
    axes = axes[0]
    for run in sc["runs"]:
        r = sc[run]
        ls = "-" if r["cell"] == "mingru" else "--"
        axes[0].plot(r["eval_steps"], r["test_accuracy_curve"], ls, label=run.replace("_", " "))
    axes[0].axhline(sc["chance_accuracy"], c="k", ls=":", label="chance")
    axes[0].set_title(f"selective copying L={sc['L']}, K={sc['K']}: test accuracy")
    if not lm:
        axes[0].set_xlabel("step"), axes[0].legend(fontsize=7)
        return fig
    for name in (k for k in ("mingru", "minlstm", "lru", "gru") if k in lm):
        curve = np.asarray(lm[name]["train_loss_curve"])
        n = max(1, len(curve) // 100)  # about 100 points, at their true steps
        steps = np.arange(1, len(curve) + 1)[::n]
        axes[1].plot(steps, np.exp(curve[::n]), label=f"{name} ({lm[name]['params']})")
        axes[2].semilogy(ad[name]["eval_steps"], ad[name]["test_mse_curve"], label=name)
    axes[1].axhline(lm["perplexity_bound"], c="k", ls=":", label="bound exp(H)")
    axes[1].set_title("Markov LM: training perplexity"), axes[1].set_ylim(top=40)
    axes[2].axhline(ADDING_BASELINE_MSE, c="k", ls=":", label="baseline 1/6")
    axes[2].set_title(f"adding T={ad['T']}: test MSE")
    for ax in axes:
        ax.set_xlabel("step"), ax.legend(fontsize=7)
    return fig


def main():
    args = rc.parse(__doc__, {"--long": "selective copying only, minGRU x1-x3, 2400 steps"})
    p = QUICK if args.quick else LONG if args.long else FULL
    key = jax.random.key(SEED)
    t0 = time.perf_counter()
    out = {"seed": SEED, "batch": BATCH, "preset": p, "tolerance": TOLERANCE}
    out["selective_copying"] = run_selective(p, key)
    if not args.long:
        out["language_model"] = run_language_model(p, key)
        out["adding"] = run_adding(p, key)
    out["seconds"] = time.perf_counter() - t0
    name = "repro_deep_parallel" + ("_long" if args.long and not args.quick else "")
    rc.save(args, name, out, plot(out))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
