"""A character-level language model on text that ships with Python: train, validate,
checkpoint, restore from the checkpoint directory alone, and sample.

The text is the source code of standard-library modules (read with ``inspect.getsource``,
nothing is downloaded). Its first 90 % trains, the last 10 % validates. The model is a
token embedding, an LSTM and a dense head (:class:`rnnjax.SequenceModel`), trained by
stateful truncated BPTT on ``B`` contiguous streams (:class:`StreamBatcher`) with Adam, a
warm-up cosine schedule and global-norm clipping. Validation carries the state across
the validation stream (:func:`rnnjax.train.evaluate_stream`); the windowed number, every
window started from zeros, is reported beside it. The best checkpoint by validation
perplexity is restored from the directory alone (:func:`rnnjax.checkpoint.load_run`) and
sampled from a prompt, greedily and at temperature 0.8.

Run (one seeded command; ``--quick`` is a preset of about a minute on a 2-core CPU):

    python experiments/char_lm.py [--quick]

Writes ``results/char_lm[_quick].json`` (numbers and samples), ``.png`` (training loss
and validation perplexity), the JSONL training log and the checkpoint directory
``results/char_lm[_quick]_run/``.
"""

from __future__ import annotations

import inspect
import os
import shutil
import time

import jax
import jax.numpy as jnp
import numpy as np
import repro_common as rc

import rnnjax as rj
from rnnjax.checkpoint import Checkpointer, load_run
from rnnjax.tasks.language import TextCorpus
from rnnjax.train import EarlyStopping, Trainer, evaluate_batches, evaluate_stream, fit, schedule

SEED = 0
PROMPT = "def "
_PRESETS = {  # name: (--quick, full)
    "modules": (("textwrap",), ("textwrap", "argparse", "json.decoder", "string", "shlex")),
    "chars": (12_000, None),
    "embed": (16, 64),
    "hidden": (64, 256),
    "batch": (8, 32),
    "seq_len": (32, 64),
    "tbptt": (16, 32),
    "batches": (90, 3000),
    "eval_every": (30, 250),
    "sample_len": (80, 400),
}
QUICK = {name: values[0] for name, values in _PRESETS.items()}
FULL = {name: values[1] for name, values in _PRESETS.items()}


def stdlib_text(modules, chars=None) -> str:
    """The source code of standard-library modules, concatenated (ASCII only)."""
    import importlib

    text = "\n".join(inspect.getsource(importlib.import_module(m)) for m in modules)
    text = text.encode("ascii", "ignore").decode("ascii")
    return text if chars is None else text[:chars]


def sample(model, params, prompt, length: int, *, temperature: float, key):
    """Continue ``prompt`` (``(P,)`` token ids) by ``length`` tokens: greedy at
    ``temperature == 0``, else sampled from ``softmax(logits / temperature)``.

    Kept small and apart: one ``lax.scan`` over ``model.apply`` one token at a time."""

    @jax.jit
    def run(params, prompt, key):
        state, logits = model.apply(params, prompt)

        def step(carry, k):
            state, last = carry
            if temperature == 0:
                tok = jnp.argmax(last).astype(jnp.int32)
            else:
                tok = jax.random.categorical(k, last / temperature).astype(jnp.int32)
            state, out = model.apply(params, tok[None], state=state)
            return (state, out[0]), tok

        _, toks = jax.lax.scan(step, (state, logits[-1]), jax.random.split(key, length))
        return toks

    return np.asarray(run(params, jnp.asarray(prompt, jnp.int32), key))


def _fresh_paths(args):
    """The run directory and the JSONL log of this preset, emptied: one seeded command
    starts afresh."""
    stem = "char_lm" + ("_quick" if args.quick else "")
    run_dir = os.path.join(args.out, stem + "_run")
    log_path = os.path.join(args.out, stem + ".jsonl")
    shutil.rmtree(run_dir, ignore_errors=True)
    if os.path.exists(log_path):
        os.remove(log_path)
    return run_dir, log_path


def _train(cfg, corpus, train, valid, run_dir, log_path):
    """Fit the model with checkpoints by validation perplexity; returns the history and
    the training seconds."""
    V = corpus.vocab_size
    model = rj.SequenceModel(rj.LSTM(cfg["embed"], cfg["hidden"]), output_size=V, vocab_size=V)
    lr = schedule(
        "warmup_cosine_decay_schedule",
        init_value=0.0,
        peak_value=1e-2,
        warmup_steps=10,
        decay_steps=cfg["batches"] * cfg["seq_len"] // cfg["tbptt"],
        end_value=1e-4,
    )
    trainer = Trainer(model, learning_rate=lr, clip_norm=1.0)

    def validate(params):
        return evaluate_stream(trainer, params, valid, prefix="valid_")

    t0 = time.perf_counter()
    with Checkpointer(
        run_dir, trainer=trainer, best_metric="valid_ppl", keep_last=1, save_every=cfg["eval_every"]
    ) as ckpt:
        _, history = fit(
            trainer,
            trainer.init(jax.random.key(SEED)),
            train,
            cfg["batches"],
            tbptt=cfg["tbptt"],
            stateful=True,
            reset_every=train.num_windows,
            checkpointer=ckpt,
            log_path=log_path,
            evaluate=validate,
            eval_every=cfg["eval_every"],
            early_stopping=EarlyStopping("valid_ppl", patience=4),
        )
    return history, time.perf_counter() - t0


def _restored(cfg, corpus, valid, run_dir) -> dict:
    """The best checkpoint, from the run directory alone: its validation perplexity over
    the stream and in fresh windows, and samples from the prompt."""
    run = load_run(run_dir, best=True)
    params = run.state.params
    stream = evaluate_stream(run.trainer, params, valid)
    windowed = evaluate_batches(
        run.trainer, params, [valid.batch(j) for j in range(valid.num_windows)]
    )
    prompt = corpus.encode(PROMPT)
    greedy, warm = (
        corpus.decode(
            sample(
                run.trainer.model,
                params,
                prompt,
                cfg["sample_len"],
                temperature=temperature,
                key=jax.random.key(SEED),
            )
        )
        for temperature in (0.0, 0.8)
    )
    print(
        f"best step {run.step}: validation perplexity {stream['ppl']:.3f} over the stream, "
        f"{windowed['ppl']:.3f} in fresh windows (uniform: {corpus.vocab_size})",
        flush=True,
    )
    print("greedy:", repr(PROMPT + greedy), flush=True)
    print("T=0.8: ", repr(PROMPT + warm), flush=True)
    return {
        "step": run.step,
        "stream": stream,
        "windowed": windowed,
        "greedy": greedy,
        "warm": warm,
    }


def _plot(plt, history, evals):
    fig, ax = plt.subplots(figsize=(6, 3.5))
    loss = [float(np.nanmean(np.asarray(h["loss"], float))) for h in history]
    ax.plot(range(1, len(loss) + 1), np.exp(loss), lw=1, label="training (exp loss)")
    ax.plot(
        [h["position"] for h in evals],
        [h["valid_ppl"] for h in evals],
        "o-",
        label="validation stream",
    )
    ax.set_yscale("log")
    ax.set_xlabel("batch", fontsize=10)
    ax.set_ylabel("perplexity", fontsize=10)
    ax.set_title("char-level LSTM on Python's own source", fontsize=11)
    ax.legend(fontsize=9)
    return fig


def main():
    args = rc.parse(__doc__)
    cfg = QUICK if args.quick else FULL
    run_dir, log_path = _fresh_paths(args)
    text = stdlib_text(cfg["modules"], cfg["chars"])
    corpus = TextCorpus(text, train_fraction=0.9)
    train = corpus.streams(cfg["batch"], cfg["seq_len"], part="train")
    valid = corpus.streams(cfg["batch"] // 2, cfg["seq_len"], part="valid")
    V = corpus.vocab_size
    print(
        f"text: {len(text)} characters of {', '.join(cfg['modules'])}; vocabulary {V}; "
        f"{train.num_windows} training windows per pass",
        flush=True,
    )
    history, train_s = _train(cfg, corpus, train, valid, run_dir, log_path)
    best = _restored(cfg, corpus, valid, run_dir)  # from the checkpoint directory alone
    evals = [h for h in history if "valid_ppl" in h]
    result = {
        "seed": SEED,
        "text": {
            "modules": list(cfg["modules"]),
            "characters": len(text),
            "vocab_size": V,
            "train_tokens": int(len(corpus.train_tokens)),
            "valid_tokens": int(len(corpus.valid_tokens)),
        },
        "config": {k: v for k, v in cfg.items() if k != "modules"},
        "batches_run": len(history),
        "train_seconds": train_s,
        "train_loss_last": history[-1]["loss"][-1],
        "valid_ppl_by_position": {str(h["position"]): h["valid_ppl"] for h in evals},
        "best_step": best["step"],
        "restored_valid_ppl_stream": best["stream"]["ppl"],
        "restored_valid_ppl_windowed": best["windowed"]["ppl"],
        "restored_equals_logged": bool(
            np.isclose(
                best["stream"]["ppl"],
                {h["position"]: h["valid_ppl"] for h in evals}[best["step"]],
                rtol=1e-5,
            )
        ),
        "uniform_ppl": V,
        "prompt": PROMPT,
        "sample_greedy": best["greedy"],
        "sample_temperature_0.8": best["warm"],
        "checkpoint_dir": os.path.abspath(run_dir),
    }
    plt = rc.pyplot()
    rc.save(args, "char_lm", result, plt and _plot(plt, history, evals))


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
