"""Exposure bias: teacher forcing vs scheduled sampling vs free running (Bengio et al. 2015).

Task: sorting (:func:`rnnjax.tasks.seq2seq_tasks.sorting`; default) or reversal
(``--task reversal``) of sequences over 10 symbols, lengths uniform in ``[1, L]``. In
sorting the next output depends strongly on the previous one, so what the decoder is fed
matters; reversal without attention is the harder task on which the fixed-context model
is far from perfect (see ``attention_vs_length.py``). Three identical GRU encoder-decoders (embedding 16,
hidden 64, Adam 3e-3, clipping 1.0, batch 64; by default without attention, so that the
decoder sees only the fixed context vector and leans on the tokens fed back to it;
``--attention`` adds additive attention) are trained on
the SAME batches from the same seed, differing only in what the decoder is fed at
training time:

- teacher forcing: the ground-truth previous token (``eps_i = 1``);
- scheduled sampling: the ground truth with probability ``eps_i = k / (k + exp(i / k))``
  (inverse sigmoid decay), else the model's own arg-max prediction, drawn per step and
  per example; ``k`` is set so that ``eps_i = 1/2`` at half the training steps
  (``k log k = steps / 2``);
- free running: always the model's own prediction (``eps_i = 0``).

Each mode is trained from ``seeds`` seeds (3 by default; the initialisation, the batches
and the draws change with the seed, the held-out set does not) and reported as mean and
standard deviation over seeds: a single seed's differences between modes were found to
be smaller than the change from a different floating-point rounding of the same run.

Evaluation on held-out data (a seed never trained on): the token accuracy when the
decoder is fed the ground truth (teacher-forced, what training optimises), and the token
and sequence accuracy of free-running greedy generation (what is used). The difference
between the two token accuracies is the exposure-bias gap.

Preprocessing: none (symbols are token ids).

Run (one seeded command each):

    python experiments/exposure_bias.py            # sorting, L = 12, 2000 steps
    python experiments/exposure_bias.py --quick    # L = 8, 200 steps, < 1 min
    python experiments/exposure_bias.py --attention   # the same with additive attention
    python experiments/exposure_bias.py --task reversal   # reversal, lengths 1..16

Writes ``results/exposure_bias[_reversal][_attention][_quick].json`` and ``.png``.

References:
  Bengio, Vinyals, Jaitly & Shazeer (2015). Scheduled sampling for sequence prediction
  with recurrent neural networks. NeurIPS.
  Ranzato, Chopra, Auli & Zaremba (2016). Sequence level training with recurrent neural
  networks. ICLR. (the name "exposure bias")
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import seq2seq_common as sc

from rnnjax import schedules, seq2seq
from rnnjax.decoding import greedy_decode
from rnnjax.tasks import seq2seq_tasks as tasks

SEED = 0
PRESETS = {  # max_len per task
    "default": dict(max_len={"sorting": 12, "reversal": 16}, steps=2000, n_eval=1000, seeds=3),
    "quick": dict(max_len={"sorting": 8, "reversal": 8}, steps=200, n_eval=300, seeds=1),
}
TASKS = {"sorting": tasks.sorting, "reversal": tasks.reversal}
KEYS = [
    "teacher_forced_token_acc",
    "free_running_token_acc",
    "free_running_seq_acc",
    "exposure_bias_gap",
    "free_running_acc_by_position",
    "teacher_forced_acc_by_position",
]


def inverse_sigmoid_k(steps: int) -> float:
    """The ``k`` with ``k log k = steps / 2``: eps is 1/2 at half of training (Newton's
    method on the convex ``k log k - c``, from the right of the root)."""
    c = steps / 2
    k = c + 1.0  # (c + 1) log(c + 1) >= c: Newton's iterates decrease monotonically to the root
    for _ in range(50):
        k -= (k * math.log(k) - c) / (math.log(k) + 1.0)
    return k


def train(model, cfg, schedule, seed, log_every=50):
    """Train on fresh batches (:func:`seq2seq_common.train`); ``schedule(i)`` is the
    teacher-forcing probability of batch ``i`` (``None``: teacher forcing)."""
    L = cfg["max_len"]
    return sc.train(
        model,
        cfg["steps"],
        lambda rng: TASKS[cfg["task"]](sc.BATCH, 1, L, sc.N_SYMBOLS, seed=rng),
        seed=seed,
        log_every=log_every,
        teacher_prob=(lambda i: 1.0) if schedule is None else schedule,
    )


def evaluate(model, params, cfg):
    L, n = cfg["max_len"], cfg["n_eval"]
    d = TASKS[cfg["task"]](n, 1, L, sc.N_SYMBOLS, seed=SEED + 12345)  # held out
    src, src_len, tgt, tgt_len = (jnp.asarray(a) for a in d)
    logits, _ = jax.jit(seq2seq.decode_train_batch, static_argnums=0)(
        model, params, src, src_len, tgt, tgt_len
    )
    tf_pred = jnp.argmax(logits, -1)
    out = greedy_decode(model, params, src, src_len, max_len=L + 1)
    mask = np.arange(L + 1)[None, :] < d.tgt_len[:, None]
    fr_hit = (np.asarray(out.tokens) == d.tgt) & mask
    tf_hit = (np.asarray(tf_pred) == d.tgt) & mask
    res = {
        "teacher_forced_token_acc": float(tasks.token_accuracy(tf_pred, tgt, tgt_len)),
        "teacher_forced_seq_acc": float(tasks.sequence_accuracy(tf_pred, tgt, tgt_len)),
        "free_running_token_acc": float(tasks.token_accuracy(out.tokens, tgt, tgt_len)),
        "free_running_seq_acc": float(tasks.sequence_accuracy(out.tokens, tgt, tgt_len)),
        # accuracy at each target position (over the examples long enough to have it)
        "free_running_acc_by_position": (fr_hit.sum(0) / np.maximum(mask.sum(0), 1)).tolist(),
        "teacher_forced_acc_by_position": (tf_hit.sum(0) / np.maximum(mask.sum(0), 1)).tolist(),
        "examples_by_position": mask.sum(0).tolist(),
    }
    res["exposure_bias_gap"] = res["teacher_forced_token_acc"] - res["free_running_token_acc"]
    p = res["free_running_seq_acc"]
    res["free_running_seq_acc_stderr"] = math.sqrt(p * (1 - p) / n)  # binomial
    return res


def _modes(steps: int) -> dict:
    """Teacher forcing, scheduled sampling (inverse sigmoid, ``eps = 1/2`` at half the
    steps) and free running."""
    return {
        "teacher_forcing": None,
        "scheduled_sampling": schedules.sampling_schedule(
            "inverse_sigmoid", k=inverse_sigmoid_k(steps)
        ),
        "free_running": schedules.sampling_schedule("constant", value=0.0),
    }


def _run_mode(name, model, cfg, schedule) -> dict:
    """Train and evaluate one mode from every seed; its runs, mean and spread."""
    runs = []
    for seed in range(SEED, SEED + cfg["seeds"]):
        params, log, secs = train(model, cfg, schedule, seed)
        res = evaluate(model, params, cfg)
        res.update(seed=seed, train_log=log, train_time_s=secs)
        runs.append(res)
        print(
            f"{name}, seed {seed}: {cfg['steps']} steps in {secs:.1f} s, final loss "
            f"{log[-1]['loss']:.4f}, free-running seq acc {res['free_running_seq_acc']:.4f}"
        )
    return {
        "runs": runs,
        "mean": {k: np.mean([r[k] for r in runs], axis=0).tolist() for k in KEYS},
        "std": {k: np.std([r[k] for r in runs], axis=0).tolist() for k in KEYS},
    }


def _print_table(results, task, cfg, attention):
    print(
        f"\n{task}, lengths 1..{cfg['max_len']}, attention: {attention}, "
        f"{cfg['n_eval']} held-out sequences; mean +- std over {cfg['seeds']} seed(s)"
    )
    cols = KEYS[:4]
    print(
        f"{'training mode':<20} "
        + " ".join(
            f"{h:>17}" for h in ["TF tok acc", "FR tok acc", "FR seq acc", "gap (TF-FR tok)"]
        )
    )
    for name, r in results["modes"].items():
        print(f"{name:<20} " + " ".join(f"{r['mean'][c]:>9.4f} +- {r['std'][c]:.4f}" for c in cols))


def main():
    ap = sc.parser(__doc__)
    ap.add_argument("--attention", action="store_true", help="additive attention")
    ap.add_argument("--task", choices=sorted(TASKS), default="sorting")
    args = ap.parse_args()
    attention = "additive" if args.attention else None
    preset = "quick" if args.quick else "default"
    cfg = dict(PRESETS[preset], task=args.task)
    cfg["max_len"] = cfg["max_len"][args.task]
    model = sc.build(attention)
    config = sc.config(
        cfg,
        preset,
        SEED,
        attention=attention,
        inverse_sigmoid_k=inverse_sigmoid_k(cfg["steps"]),
        feed="argmax",
    )
    results = {"config": config, "modes": {}}
    for name, schedule in _modes(cfg["steps"]).items():
        results["modes"][name] = _run_mode(name, model, cfg, schedule)
    _print_table(results, args.task, cfg, attention)
    name = (
        "exposure_bias"
        + ("" if args.task == "sorting" else "_" + args.task)
        + ("_attention" if args.attention else "")
        + ("_quick" if args.quick else "")
    )
    sc.save(results, name, plot)


def plot(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for (name, r), color in zip(results["modes"].items(), ["C0", "C1", "C2"]):
        for j, run in enumerate(r["runs"]):
            steps = [e["step"] for e in run["train_log"]]
            axes[0].plot(
                steps,
                [e["loss"] for e in run["train_log"]],
                color=color,
                lw=1,
                alpha=0.8,
                label=name if j == 0 else None,
            )
        m = r["mean"]
        x = np.arange(1, len(m["free_running_acc_by_position"]) + 1)
        axes[1].plot(
            x,
            m["free_running_acc_by_position"],
            "o-",
            ms=3,
            color=color,
            label=f"{name}: free running",
        )
        axes[1].plot(
            x,
            m["teacher_forced_acc_by_position"],
            "--",
            color=color,
            alpha=0.6,
            label=f"{name}: teacher-forced",
        )
    axes[0].set_yscale("log")
    axes[0].set_xlabel("training step")
    axes[0].set_ylabel("training loss (with the mode's feeding)")
    axes[0].legend(fontsize=8)
    axes[1].set_xlabel("target position")
    axes[1].set_ylabel("held-out token accuracy (mean over seeds)")
    axes[1].set_ylim(-0.02, 1.02)
    axes[1].legend(fontsize=7, loc="lower left")
    for ax in axes:
        ax.grid(alpha=0.3)
    c = results["config"]
    sc.finish(
        fig,
        f"{c['task'].capitalize()}, lengths 1..{c['max_len']}, {c['steps']} steps, "
        f"attention: {c['attention']}, {c['seeds']} seed(s): exposure bias",
        path,
    )


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
