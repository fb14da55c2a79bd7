"""Profile one rnnjax training step with ``jax.profiler`` and print where the time goes.

    python -m experiments.profile_step --shape 64,256,128,256 --cell gru [--autodiff]

Compiles ``jax.grad`` of a mean-square loss over ``rnnjax.unroll_batch`` (the step the
benchmark times), records ``--steps`` runs under :func:`jax.profiler.trace` and prints
the XLA operations (thunks) that took the most time per step: how often each ran and
its total (a ``while.N`` row is a whole scan, the operations inside it included). On XLA:CPU the per-operation events need the runtime flag
``--xla_cpu_enable_xprof_traceme``, which this script adds to ``XLA_FLAGS`` before JAX
starts. ``--autodiff`` profiles the reference path instead
(``rnnjax.ScanConfig(backward="reference")``: autodiff of the engine's scan). ``--json PATH`` also writes the table.

The table lists what the trace attributes; the large products outside the loops (the
weight gradients), which XLA:CPU spreads over its worker threads, appear with only a
fraction of their time, so the listed times add up to less than the untraced step. What
it showed on the project's 2-core CPU (jax 0.10.2):

- GRU, B=64, T=256, I=128, H=256 (294 ms a step): the three per-step matrix products
  (``ynn_fusion*``, 256 calls each) 141 ms, at 95-105 GFLOP/s; the elementwise gate
  fusions about 40 ms; zero-filling the scans' stacked outputs (``wrapped_broadcast*``,
  once a step) 31 ms; the rest, about 80 ms, is mostly the weight-gradient products.
- LSTM, B=256, T=64, I=256, H=512 (906 ms): the per-step products 432 ms at 195-199
  GFLOP/s (both cores: the measured peak is 180-190), zero-fills 39 ms, relayout copies
  of inputs and outputs about 37 ms.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import os
import shutil
import sys
import tempfile

_FLAG = "--xla_cpu_enable_xprof_traceme=true"
if "jax" not in sys.modules and _FLAG not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _FLAG).strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnnjax as rj  # noqa: E402

CELLS = {"lstm": rj.LSTM, "gru": rj.GRU, "rnn": rj.SimpleRNN}
# events of the runtime around the program, not operations of it
_WRAPPERS = (
    "ThunkExecutor",
    "block_until_ready",
    "$",
    "SlinkyThreadPool",
    "PjRt",
    "Pjit",
    "Execute",
)


def top_ops(trace_dir: str, steps: int, n: int = 15) -> list:
    """The ``n`` operations with the largest total duration in the trace under
    ``trace_dir``, per step: ``[{"name", "ms", "calls"}]``, largest first."""
    files = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    if not files:
        raise FileNotFoundError(f"no *.trace.json.gz under {trace_dir!r}: did jax.profiler run?")
    with gzip.open(max(files, key=os.path.getmtime)) as f:
        events = json.load(f)["traceEvents"]
    total, calls = collections.Counter(), collections.Counter()
    for e in events:
        name = e.get("name", "")
        if e.get("ph") != "X" or any(name.startswith(w) or w in name for w in _WRAPPERS):
            continue
        total[name] += e.get("dur", 0)
        calls[name] += 1
    return [
        {"name": k, "ms": v / steps / 1000.0, "calls": calls[k] // steps}
        for k, v in total.most_common(n)
    ]


def profile(shape, cell_name: str, steps: int = 3, autodiff: bool = False, n: int = 15):
    """Trace ``steps`` training steps; returns ``(step_ms, top_ops)``."""
    import time

    B, T, I, H = shape
    cell = CELLS[cell_name](I, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    config = rj.ScanConfig(backward="reference" if autodiff else "auto")
    step = jax.jit(
        jax.grad(lambda p, x: 0.5 * jnp.mean(rj.unroll_batch(cell, p, x, config=config)[1] ** 2))
    )
    compiled = step.lower(params, xs).compile()
    jax.block_until_ready(compiled(params, xs))
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(params, xs))
    step_ms = (time.perf_counter() - t0) * 1e3
    trace_dir = tempfile.mkdtemp(prefix="rnnjax_profile_")
    try:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                jax.block_until_ready(compiled(params, xs))
        return step_ms, top_ops(trace_dir, steps, n)
    finally:
        shutil.rmtree(trace_dir, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", default="64,256,128,256", help="B,T,I,H")
    ap.add_argument("--cell", default="lstm", choices=sorted(CELLS))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--autodiff", action="store_true", help="profile the reference scan")
    ap.add_argument("--json", default=None, help="also write the table here")
    args = ap.parse_args(argv)
    try:
        shape = tuple(int(v) for v in args.shape.split(","))
        if len(shape) != 4 or min(shape) < 1:
            raise ValueError
    except ValueError:
        ap.error(f"--shape must be four positive integers B,T,I,H; got {args.shape!r}")
    step_ms, ops = profile(shape, args.cell, args.steps, args.autodiff, args.top)
    print(
        f"{args.cell} B,T,I,H={args.shape} ({'autodiff' if args.autodiff else 'rnnjax default'}) "
        f"on {jax.default_backend()}: one step {step_ms:.2f} ms untraced"
    )
    print(f"{'ms/step':>9} {'calls':>6}  operation")
    for op in ops:
        print(f"{op['ms']:>9.2f} {op['calls']:>6}  {op['name'][:80]}")
    if args.json:
        os.makedirs(os.path.dirname(args.json) or ".", exist_ok=True)
        with open(args.json, "w") as f:
            json.dump(
                {
                    "shape": shape,
                    "cell": args.cell,
                    "autodiff": args.autodiff,
                    "step_ms": step_ms,
                    "top_ops": ops,
                },
                f,
                indent=1,
            )
    return ops


if __name__ == "__main__":
    from experiments.entry import run_main

    run_main(main)
