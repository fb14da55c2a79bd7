"""Shared plumbing of the experiment scripts: the ``--quick`` flag, results files,
progress lines as a script runs (:class:`Progress`), a seeded training loop over
:class:`rnnjax.train.Trainer` that reports its progress, the adding-problem training, a
ridge readout and the figures' ``pyplot``.

The scripts import it as ``repro_common``: run them as scripts
(``python experiments/repro_<claim>.py``), whose folder is then on ``sys.path``."""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    result = dict(
        result, quick=bool(args.quick), jax_version=jax.__version__, backend=jax.default_backend()
    )
    with open(stem + ".json", "w") as f:
        json.dump(result, f, indent=2, default=float)
    if fig is not None:
        fig.savefig(stem + ".png", dpi=110, bbox_inches="tight")
    print(json.dumps(result, indent=2, default=float)[:4000])
    return stem + ".json"


class Progress:
    """Plain progress lines, printed and flushed as a script runs (a log file or a pipe
    sees them at once): ``[label] done/total  metrics  elapsed  eta``.

    Args:
      label: what is running (``"LSTM T=100"``).
      total: the number of units (steps, runs) to do.
      every: print after every this many units (default: about ten lines), and always
        after the last one.

    Example:
      >>> p = Progress("demo", 4, every=2)
      >>> for i in range(4):
      ...     p(i + 1, loss=1.0 / (i + 1))  # doctest: +ELLIPSIS
      [demo] 2/4  loss 0.5  elapsed ...
      [demo] 4/4  loss 0.25  elapsed ...
    """

    def __init__(self, label: str, total: int, every: int = None, stream=None):
        self.label, self.total = label, int(total)
        self.every = max(1, every if every else self.total // 10)
        self.stream = stream
        self.t0 = time.perf_counter()

    def __call__(self, done: int, *, force: bool = False, **metrics) -> None:
        """Print a line after ``done`` units when it is due (or ``force``)."""
        if not force and done % self.every and done != self.total:
            return
        from rnnjax.progress import format_metrics

        elapsed = time.perf_counter() - self.t0
        eta = elapsed / done * (self.total - done) if done else float("nan")
        shown = format_metrics({k: float(v) for k, v in metrics.items()}, names=list(metrics))
        print(
            f"[{self.label}] {done}/{self.total}  {shown + '  ' if shown else ''}"
            f"elapsed {elapsed:.1f} s  eta {eta:.1f} s",
            file=self.stream or sys.stdout,
            flush=True,
        )


def progress(label: str, total: int, every: int = None) -> Progress:
    """A :class:`Progress` reporter; call it as ``report(done, loss=..., ...)``."""
    return Progress(label, total, every)


def pyplot():
    """``matplotlib.pyplot`` on the file-only Agg backend, or ``None`` where matplotlib is
    not installed (the scripts then write their JSON without a figure)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def to_jnp(batch: dict) -> dict:
    return {k: jnp.asarray(v) for k, v in batch.items()}


def train(
    trainer,
    key,
    batch_fn,
    steps: int,
    *,
    eval_batch=None,
    eval_every: int = 100,
    solved=None,
    log_every: int = 0,
    label: str = "train",
):
    """Train ``steps`` updates on ``batch_fn(step)``; evaluate on ``eval_batch`` every
    ``eval_every`` steps. ``solved(metrics) -> bool`` marks the first evaluation step at
    which the task counts as solved (training goes on to ``steps``). Progress lines
    (``[label] step/steps  loss ...``) are printed every ``log_every`` steps (default
    about ten lines per run) and after each evaluation.

    Returns:
      ``(state, log)`` with ``log = {"eval_steps", "eval" (one metrics dict per
      evaluation), "train_loss", "grad_norm" (one per step), "steps_to_solve",
      "seconds" (wall time of the loop, first-call compilation included)}``.
    """
    state = trainer.init(key)
    log = {"eval_steps": [], "eval": [], "train_loss": [], "grad_norm": [], "steps_to_solve": None}
    t0 = time.perf_counter()
    report = Progress(label, steps, every=log_every or None)
    for i in range(steps):
        state, m = trainer.train_step(state, to_jnp(batch_fn(i)))
        log["train_loss"].append(m["loss"])
        log["grad_norm"].append(m["grad_norm"])
        shown = {}
        if eval_batch is not None and ((i + 1) % eval_every == 0 or i + 1 == steps):
            ev = {
                k: float(v)
                for k, v in jax.device_get(trainer.evaluate(state.params, eval_batch)).items()
            }
            log["eval_steps"].append(i + 1)
            log["eval"].append(ev)
            if solved is not None and log["steps_to_solve"] is None and solved(ev):
                log["steps_to_solve"] = i + 1
            shown = {"eval_" + k: v for k, v in ev.items() if k != "tokens"}
        if shown or (i + 1) % report.every == 0 or i + 1 == steps:
            report(i + 1, force=bool(shown), loss=m["loss"], **shown)
    log["train_loss"] = [float(v) for v in jax.device_get(log["train_loss"])]
    log["grad_norm"] = [float(v) for v in jax.device_get(log["grad_norm"])]
    log["seconds"] = time.perf_counter() - t0
    return state, log


def train_adding(
    model,
    key,
    T: int,
    steps: int,
    *,
    test,
    eval_every: int,
    learning_rate: float = 3e-3,
    batch: int = 32,
    seed: int = 0,
    label: str = "train",
):
    """Train ``model`` (a one-output regressor read at the final step) on the adding
    problem of length ``T`` with a mean squared error, Adam and clipping at norm 1:
    :func:`train` on ``adding_problem(batch, T, seed=(seed, T, i))`` at step ``i``,
    evaluated on ``test``; solved at a test MSE under 0.01.

    Returns:
      :func:`train`'s ``(state, log)``.
    """
    from rnnjax.tasks.long_range import adding_problem
    from rnnjax.train import Trainer

    trainer = Trainer(model, loss="mse", learning_rate=learning_rate, clip_norm=1.0)
    return train(
        trainer,
        key,
        lambda i: adding_problem(batch, T, seed=(seed, T, i)),
        steps,
        eval_batch=test,
        eval_every=eval_every,
        solved=lambda m: m["loss"] < 0.01,
        label=label,
    )


def eval_record(log: dict, metric: str = "test_mse", best: bool = True) -> dict:
    """What a results file keeps of :func:`train`'s ``log``: the step that solved the task,
    the final (and with ``best`` the lowest) evaluated loss as ``final_<metric>``
    (``best_<metric>``), its curve ``<metric>_curve`` over ``eval_steps``, and the
    seconds."""
    losses = [e["loss"] for e in log["eval"]]
    record = {"steps_to_solve": log["steps_to_solve"], f"final_{metric}": losses[-1]}
    if best:
        record[f"best_{metric}"] = min(losses)
    record.update(
        {f"{metric}_curve": losses, "eval_steps": log["eval_steps"], "seconds": log["seconds"]}
    )
    return record


def perplexity(model, params, source, batch: int, length: int, batches: int, seed: int) -> float:
    """Held-out perplexity of a language ``model`` on ``batches`` batches of ``source``
    (``batch`` sequences of ``length`` tokens, seeds from ``seed``), the first target of
    each sequence left out (the model has seen no context for it)."""
    import optax

    @jax.jit
    def ce(params, inputs, targets):
        _, logits = model.apply_batch(params, inputs)
        return optax.softmax_cross_entropy_with_integer_labels(logits, targets)

    nll = [
        np.asarray(ce(params, jnp.asarray(b["inputs"]), jnp.asarray(b["targets"])))[:, 1:]
        for b in (source.batch(i, batch, length, seed=seed) for i in range(batches))
    ]
    return float(np.exp(np.concatenate([n.ravel() for n in nll]).mean()))


def ridge_fit(Z, Y, ridge: float):
    """Ridge regression with an intercept in float64: ``W`` minimising
    ``|[Z, 1] W - Y|^2 + ridge |W|^2`` (``Z`` ``(n, f)``, ``Y`` ``(n, o)``); apply it with
    :func:`ridge_apply`."""
    Z = np.concatenate([Z, np.ones((Z.shape[0], 1))], 1).astype(np.float64)
    return np.linalg.solve(Z.T @ Z + ridge * np.eye(Z.shape[1]), Z.T @ Y.astype(np.float64))


def ridge_apply(W, Z):
    """``[Z, 1] W``: the readout of :func:`ridge_fit` on features ``Z``."""
    return np.concatenate([Z, np.ones((Z.shape[0], 1))], 1) @ W


def param_count(params) -> int:
    return int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params)))
