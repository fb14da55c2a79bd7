"""Overhead of the Flax modules over the functional layer they wrap.

Times one jitted forward + backward pass (gradient of a loss of the outputs with respect
to every parameter) of a 2-layer bidirectional LSTM over padded sequences with lengths,
run four ways on the same parameters and inputs, in one process:

- ``functional``: ``rnnjax.Stacked.apply_batch`` under ``jax.jit``;
- ``linen``: ``rnnjax.linen.LSTM`` via ``module.apply`` under ``jax.jit``;
- ``nnx.jit``: ``rnnjax.nnx.LSTM`` under ``nnx.jit`` / ``nnx.grad`` (what most NNX code
  does; pays NNX's per-call graph traversal in Python);
- ``nnx split``: the same NNX module, ``nnx.split`` once and ``jax.jit`` over the state
  (NNX's recommended fast path).

Calls alternate between the variants round by round, so a change in the machine's load
hits all of them alike; the report is the median per variant and the median of the
per-round ratios to ``functional``. Shapes: ``B`` batch, ``T`` time, ``I`` input, ``H``
hidden. Writes ``<out>/flax_overhead.json``.

Run: python experiments/flax_overhead.py [--rounds 30] [--out results]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

import rnnjax.linen as rlinen
import rnnjax.nnx as rnnx

B, T, I, H = 32, 128, 64, 128


def _loss(ys):
    return jnp.mean(ys**2)


def build(seed: int = 0, shape=(B, T, I, H)):
    """The four variants as zero-argument callables returning the gradients."""
    B, T, I, H = shape
    k_x, k_n, k_p = jax.random.split(jax.random.key(seed), 3)
    xs = jax.random.normal(k_x, (B, T, I), jnp.float32)
    length = jax.random.randint(k_n, (B,), T // 2, T + 1)

    nnx_model = rnnx.LSTM(I, H, num_layers=2, bidirectional=True, rngs=nnx.Rngs(0))
    params = nnx_model.layer_params()  # the same parameters for every variant
    net = nnx_model.functional()
    module = rlinen.LSTM(H, num_layers=2, bidirectional=True)
    variables = {"params": {f"layer_{i}": p for i, p in enumerate(params)}}

    functional = jax.jit(jax.grad(lambda p, x: _loss(net.apply_batch(p, x, length)[1])))
    linen = jax.jit(jax.grad(lambda v, x: _loss(module.apply(v, x, length)[1])))
    nnx_jit = nnx.jit(nnx.grad(lambda m, x: _loss(m(x, length)[1])))
    graphdef, state = nnx.split(nnx_model)
    nnx_split = jax.jit(jax.grad(lambda s, x: _loss(nnx.merge(graphdef, s)(x, length)[1])))
    return {
        "functional": lambda: functional(params, xs),
        "linen": lambda: linen(variables, xs),
        "nnx.jit": lambda: nnx_jit(nnx_model, xs),
        "nnx split": lambda: nnx_split(state, xs),
    }


def _flat(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


def measure(rounds: int, seed: int = 0, shape=(B, T, I, H)) -> dict:
    """Check that the four variants agree, then time them in alternation.

    Returns:
      A report: first-call (compile) seconds, median seconds, and the median of the
      per-round ratios to the functional layer, per variant.
    """
    if rounds < 3:
        raise ValueError(f"rounds must be >= 3; got {rounds}")
    variants = build(seed, shape)
    compile_s, grads = {}, {}
    for name, fn in variants.items():
        t0 = time.perf_counter()
        grads[name] = jax.block_until_ready(fn())
        compile_s[name] = time.perf_counter() - t0
    # the four variants compute the same gradients
    ref = _flat(grads["functional"])
    for name in ("linen", "nnx.jit", "nnx split"):
        got = _flat(grads[name])
        err = max(float(np.max(np.abs(a - b))) for a, b in zip(got, ref))
        if len(got) != len(ref) or err > 1e-6:
            raise AssertionError(f"{name} gradients differ from functional by {err}")
    for fn in variants.values():  # one warm call each
        jax.block_until_ready(fn())

    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - t0)

    base = times["functional"]
    return {
        "shape": {
            "B": shape[0],
            "T": shape[1],
            "I": shape[2],
            "H": shape[3],
            "layers": 2,
            "bidirectional": True,
        },
        "rounds": rounds,
        "first_call_s": compile_s,
        "median_s": {n: statistics.median(t) for n, t in times.items()},
        "ratio_to_functional": {
            n: statistics.median([a / b for a, b in zip(t, base)]) for n, t in times.items()
        },
        "times_s": times,
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=30, help="timed rounds (default 30)")
    ap.add_argument("--out", default="results", help="output folder (default: results)")
    args = ap.parse_args()
    if args.rounds < 3:
        raise ValueError(f"--rounds must be >= 3; got {args.rounds}")

    report = measure(args.rounds)
    report.update(
        {
            "backend": jax.default_backend(),
            "devices": [str(d) for d in jax.devices()],
            "machine": platform.machine(),
            "cpu_count": os.cpu_count(),
            "jax": jax.__version__,
        }
    )
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "flax_overhead.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=1)
    print(
        f"fwd+bwd, 2-layer bidirectional LSTM, B={B} T={T} I={I} H={H}, "
        f"{args.rounds} alternating rounds, {jax.default_backend()}"
    )
    print(f"{'variant':<12} {'first call s':>12} {'median ms':>10} {'ratio':>7}")
    for n in report["median_s"]:
        print(
            f"{n:<12} {report['first_call_s'][n]:>12.2f} {1e3 * report['median_s'][n]:>10.2f} "
            f"{report['ratio_to_functional'][n]:>7.3f}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    from entry import run_main

    run_main(main)
