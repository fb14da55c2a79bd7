"""The matrix-state operators' training step: chunkwise against recurrent, and against
fla's naive PyTorch chunk functions (torch on 2 threads), with the chunkwise form's
FLOP/s against this machine's matmul peak.

One training step is the value and gradient of ``sum(o * w)`` with respect to every input
array (queries, keys, values and gates), at B=8, T=4096, 4 heads of 64 (``--quick``:
T=1024). Median of 7 repetitions after a warm-up; compile time reported apart.

    python -m experiments.bench_matrix            # writes results/bench_matrix.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments import bench_core as core
from rnnjax import ops

# family -> (extra arrays: name -> "head" (per-head scalar) | "key" (per key channel),
#            fla naive chunk file and function, its layout)
FAMILIES = {
    "linear_attn": ({}, ("linear_attn", "naive_chunk_linear_attn", "bthd")),
    "simple_gla": ({"g": "head"}, ("simple_gla", "naive_chunk_simple_gla", "bthd")),
    "gla": ({"gk": "key"}, None),
    "ssd": (None, None),
    "delta_rule": ({"beta": "head"}, ("delta_rule", "delta_rule_chunkwise", "bhtd")),
    "gated_delta_rule": (
        {"g": "head", "beta": "head"},
        ("gated_delta_rule", "naive_chunk_gated_delta_rule", "bthd"),
    ),
    "kda": ({"gk": "key", "beta": "head"}, ("kda", "naive_chunk_kda", "bthd")),
    "dplr_delta_rule": (
        {"a": "key", "b": "key", "gk": "key"},
        ("generalized_delta_rule/dplr", "dplr_chunkwise", "bhtd"),
    ),
}


def _inputs(name, B, T, h, d, key):
    extra, _ = FAMILIES[name]
    ks = jax.random.split(key, 8)
    shape = (T, B, h, d)
    if name == "ssd":
        return {
            "x": jax.random.normal(ks[0], shape),
            "dt": jax.nn.softplus(jax.random.normal(ks[1], (T, B, h)) - 3.0),
            "A": -jnp.exp(jax.random.normal(ks[2], (h,))),
            "B": jax.random.normal(ks[3], shape) / d**0.5,
            "C": jax.random.normal(ks[4], shape) / d**0.5,
        }
    k = jax.random.normal(ks[1], shape)
    if name in ("delta_rule", "gated_delta_rule", "kda", "dplr_delta_rule"):
        k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    arrays = {"q": jax.random.normal(ks[0], shape), "k": k, "v": jax.random.normal(ks[2], shape)}
    for i, (n, kind) in enumerate(extra.items()):
        s = (T, B, h) if kind == "head" else shape
        if n == "beta":
            arrays[n] = jax.nn.sigmoid(jax.random.normal(ks[3 + i], s))
        elif n in ("g", "gk"):
            arrays[n] = jax.nn.log_sigmoid(jax.random.normal(ks[3 + i], s) + 4.0)
        elif n == "a":
            arrays[n] = -k
        else:  # the rank-one term's b: k scaled by an in-context rate in (0, 1)
            arrays[n] = k * jax.nn.sigmoid(jax.random.normal(ks[3 + i], s))
    return arrays


def _jax_step(name, method, chunk):
    f = getattr(ops, name)

    def loss(arrays):
        o, _ = f(**arrays, method=method, chunk=chunk)
        return jnp.sum(o * jnp.cos(o))

    return jax.jit(jax.value_and_grad(loss))


def _time(fn, reps):
    """Median seconds of ``reps`` calls of ``fn`` after one warm-up (and compile) call."""
    fn()
    return statistics.median([core.time_call(fn) for _ in range(reps)])


def _fla(name):
    """fla's naive chunk function for ``name`` (read by path: importing ``fla`` pulls
    Triton), or ``None``."""
    ref = FAMILIES[name][1]
    spec = importlib.util.find_spec("fla")
    if ref is None or spec is None:
        return None
    path = f"{spec.submodule_search_locations[0]}/ops/{ref[0]}/naive.py"
    mod_spec = importlib.util.spec_from_file_location(f"fla_naive_{name}", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    return getattr(module, ref[1]), ref[2]


def _torch_step(name, arrays, chunk):
    import torch

    fn, layout = _fla(name)
    ts = {}
    for n, a in arrays.items():
        a = np.moveaxis(np.asarray(a), 0, 1)  # (B, T, ...)
        if layout == "bhtd":
            a = np.moveaxis(a, 2, 1)
        ts[n] = torch.tensor(a, requires_grad=True)

    rename = {"gk": "g"} if name == "kda" else {"a": "alpha", "b": "beta"}
    ts = {rename.get(n, n): t for n, t in ts.items()}
    kw = {} if name == "linear_attn" else {"chunk_size": chunk}  # its chunk is fixed at 64

    def step():
        for t in ts.values():
            t.grad = None
        o = fn(**ts, **kw)
        o = o[0] if isinstance(o, tuple) else o
        (o * torch.cos(o)).sum().backward()

    return step


def _flops(B, T, h, d, C):
    """Matmul FLOPs of one chunkwise training step (forward and backward: 3x forward):
    per chunk and head ``Q K^T`` and ``A V`` (``C x C``), ``Q S`` and ``K^T V``."""
    per_chunk = 2 * C * (C * d + C * d + 2 * d * d)
    return 3 * per_chunk * (T // C) * B * h


def _peak():
    a = jax.random.normal(jax.random.key(0), (2048, 2048))
    f = jax.jit(lambda a: a @ a)
    t = _time(lambda: f(a).block_until_ready(), 7)
    return 2 * 2048**3 / t


def measure(T=4096, reps=7, families=tuple(FAMILIES), log=print) -> dict:
    """The table's rows at B=8, T, 4 heads of 64, chunks of 64 (see the module
    docstring); ``log`` gets each row as it is measured."""
    B, h, d, C = 8, 4, 64, 64
    try:
        import torch

        torch.set_num_threads(2)
    except ImportError:  # pragma: no cover - the experiments extra has torch
        torch = None
    peak = _peak()
    rows = []
    log(f"B={B} T={T} heads={h} d={d} chunk={C}; matmul peak {peak / 1e9:.0f} GFLOP/s")
    log(
        f"{'operator':18} {'chunk ms':>9} {'recur ms':>9} {'c/r':>5} {'fla ms':>9} "
        f"{'c/fla':>6} {'% peak':>7}"
    )
    for name in families:
        arrays = _inputs(name, B, T, h, d, jax.random.key(1))
        row = {"operator": name}
        for method in ("chunkwise", "recurrent"):
            f = _jax_step(name, method, C)
            t0 = time.perf_counter()
            jax.block_until_ready(f(arrays))
            row[f"{method}_compile_s"] = time.perf_counter() - t0
            row[f"{method}_s"] = _time(lambda: jax.block_until_ready(f(arrays)), reps)
        row["chunk_over_recurrent"] = row["chunkwise_s"] / row["recurrent_s"]
        row["percent_peak"] = 100 * _flops(B, T, h, d, C) / row["chunkwise_s"] / peak
        if torch is not None and _fla(name) is not None:
            row["fla_naive_chunk_s"] = _time(_torch_step(name, arrays, C), reps)
            row["chunk_over_fla"] = row["chunkwise_s"] / row["fla_naive_chunk_s"]
        rows.append(row)
        log(_line(row))
    return {"B": B, "T": T, "heads": h, "d": d, "chunk": C, "peak_flops": peak, "rows": rows}


def _line(row) -> str:
    fla = row.get("fla_naive_chunk_s")
    fla_ms = "-" if fla is None else f"{1e3 * fla:.1f}"
    ratio = "-" if fla is None else f"{row['chunk_over_fla']:.2f}"
    return (
        f"{row['operator']:18} {1e3 * row['chunkwise_s']:9.1f} {1e3 * row['recurrent_s']:9.1f} "
        f"{row['chunk_over_recurrent']:5.2f} {fla_ms:>9} {ratio:>6} {row['percent_peak']:7.1f}"
    )


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="T=1024 and 3 repetitions")
    ap.add_argument("--out", default="results/bench_matrix.json")
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args(argv)
    report = measure(
        T=1024 if args.quick else 4096,
        reps=3 if args.quick else 7,
        families=tuple(args.families.split(",")),
    )
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    from experiments.entry import run_main

    run_main(main)
