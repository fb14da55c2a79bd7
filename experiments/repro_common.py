"""Shared plumbing of the ``repro_*.py`` reproduction scripts: the ``--quick`` flag,
results files, and a seeded training loop over :class:`rnnjax.train.Trainer`.

The scripts import it as ``repro_common``: run them as scripts
(``python experiments/repro_<claim>.py``), whose folder is then on ``sys.path``."""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "results")


def parse(doc: str, flags: dict = None):
    """``--quick`` (a preset under a minute, used by the smoke test), ``--out`` (results
    dir) and any extra boolean ``flags`` (``{"--name": "help"}``)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny preset (under a minute)")
    p.add_argument("--out", default=RESULTS, help="results directory")
    for flag, help_ in (flags or {}).items():
        p.add_argument(flag, action="store_true", help=help_)
    return p.parse_args()


def save(args, name: str, result: dict, fig=None) -> str:
    """Write ``<out>/<name>[_quick].json`` (and ``.png`` of ``fig``); return the JSON path."""
    os.makedirs(args.out, exist_ok=True)
    stem = os.path.join(args.out, name + ("_quick" if args.quick else ""))
    result = dict(result, quick=bool(args.quick), jax_version=jax.__version__,
                  backend=jax.default_backend())
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2, default=float)
    if fig is not None:
        fig.savefig(stem + ".png", dpi=110, bbox_inches="tight")
    print(json.dumps(result, indent=2, default=float)[:4000])
    return stem + ".json"


def to_jnp(batch: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in batch.items()}


def train(trainer, key, batch_fn, steps: int, *, eval_batch=None, eval_every: int = 100,
          solved=None, log_every: int = 0):
    """Train ``steps`` updates on ``batch_fn(step)``; evaluate on ``eval_batch`` every
    ``eval_every`` steps. ``solved(metrics) -> bool`` marks the first evaluation step at
    which the task counts as solved (training goes on to ``steps``).

    Returns:
      ``(state, log)`` with ``log = {"eval_steps", "eval" (one metrics dict per
      evaluation), "train_loss", "grad_norm" (one per step), "steps_to_solve",
      "seconds" (wall time of the loop, first-call compilation included)}``.
    """
    state = trainer.init(key)
    log = {"eval_steps": [], "eval": [], "train_loss": [], "grad_norm": [], "steps_to_solve": None}
    t0 = time.perf_counter()
    for i in range(steps):
        state, m = trainer.train_step(state, to_jnp(batch_fn(i)))
        log["train_loss"].append(m["loss"])
        log["grad_norm"].append(m["grad_norm"])
        if eval_batch is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
            ev = {k: float(v) for k, v in jax.device_get(trainer.evaluate(state.params, eval_batch)).items()}
            log["eval_steps"].append(i + 1)
            log["eval"].append(ev)
            if solved is not None and log["steps_to_solve"] is None and solved(ev):
                log["steps_to_solve"] = i + 1
    log["train_loss"] = [float(v) for v in jax.device_get(log["train_loss"])]
    log["grad_norm"] = [float(v) for v in jax.device_get(log["grad_norm"])]
    log["seconds"] = time.perf_counter() - t0
    return state, log


def param_count(params) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
