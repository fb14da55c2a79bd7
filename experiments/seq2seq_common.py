"""Shared plumbing of the two encoder-decoder experiments (``attention_vs_length.py`` and
``exposure_bias.py``): the model, its training loop on fresh batches, the configuration
record and the results files.

The scripts import it as ``seq2seq_common``: run them as scripts
(``python experiments/<name>.py``), whose folder is then on ``sys.path``."""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import seq2seq
from rnnjax.tasks import seq2seq_tasks as tasks
from rnnjax.train import Trainer

N_SYMBOLS, EMBED, HIDDEN, BATCH, LR = 10, 16, 64, 64, 3e-3
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")


def parser(doc: str) -> argparse.ArgumentParser:
    """The scripts' flags: ``--quick`` (more with ``add_argument``)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small preset, under a minute")
    return ap


def build(attention):
    """A GRU encoder-decoder over the tasks' vocabulary (``attention``: ``None`` or
    ``"additive"``)."""
    vocab = N_SYMBOLS + len(tasks.SPECIALS)
    return seq2seq.build(
        src_vocab=vocab,
        tgt_vocab=vocab,
        embed_size=EMBED,
        hidden_size=HIDDEN,
        cell="gru",
        attention=attention,
    )


def config(cfg: dict, preset: str, seed: int, **extra) -> dict:
    """What the results file records of the run: the preset ``cfg``, the model's sizes,
    the training settings and ``extra``."""
    return dict(
        cfg,
        preset=preset,
        seed=seed,
        n_symbols=N_SYMBOLS,
        embed=EMBED,
        hidden=HIDDEN,
        batch=BATCH,
        lr=LR,
        cell="gru",
        **extra,
        backend=jax.default_backend(),
    )


def train(model, steps: int, draw, *, seed: int, log_every: int, teacher_prob=None):
    """Train on fresh batches with the common :class:`rnnjax.Trainer` (Adam, global-norm
    clipping at 1): ``draw(rng)`` gives batch ``i`` of the task (``rng`` seeded from
    ``seed + 1``: the same batches for every model); ``teacher_prob(i)`` is the
    teacher-forcing probability of batch ``i``, fed to the model and logged as ``eps``
    (``None``: teacher forcing, the batch carries none).

    Returns:
      ``(params, log, seconds)``, the log a loss (and ``eps``) every ``log_every`` steps
      and at the last.
    """
    trainer = Trainer(model, learning_rate=LR, clip_norm=1.0)
    state = trainer.init(jax.random.key(seed), params=model.init(jax.random.key(seed)))
    rng = np.random.default_rng(seed + 1)
    log, t0 = [], time.perf_counter()
    for i in range(steps):
        src, src_len, tgt, tgt_len = (jnp.asarray(a) for a in draw(rng))
        batch = {"inputs": src, "input_length": src_len, "targets": tgt, "target_length": tgt_len}
        if teacher_prob is not None:
            batch["teacher_prob"] = jnp.asarray(teacher_prob(i), jnp.float32)
        state, m = trainer.train_step(state, batch)
        if i % log_every == 0 or i == steps - 1:
            entry = {"step": i, "loss": float(m["loss"])}
            if teacher_prob is not None:
                entry["eps"] = float(batch["teacher_prob"])
            log.append(dict(entry, time_s=time.perf_counter() - t0))
    return state.params, log, time.perf_counter() - t0


def save(results: dict, name: str, plot) -> None:
    """Write ``results/<name>.json`` and ``plot(results, "results/<name>.png")``."""
    os.makedirs(RESULTS, exist_ok=True)
    stem = os.path.join(RESULTS, name)
    with open(stem + ".json", "w") as f:
        json.dump(results, f, indent=1)
    plot(results, stem + ".png")
    print(f"wrote {stem}.json and {stem}.png")


def finish(fig, title: str, path: str) -> None:
    """Title, lay out, write and close a figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
