"""Regularised and reduced-precision rows of the benchmark, measured in one run.

- A 2-layer LSTM (B=32, T=128, I=64, H=128) with dropout 0.2 between layers and
  variational recurrent dropout 0.25 (masks drawn every step from a key) against the same
  model without dropout, and against PyTorch's ``nn.LSTM(num_layers=2, dropout=0.2)`` in
  training mode (PyTorch has no recurrent dropout: its row is the between-layer dropout
  alone). Targets: at most 1.1x the model without dropout, at most PyTorch's time.
- bfloat16: an LSTM and a GRU layer with ``param_dtype=bfloat16`` (bfloat16 products,
  float32 state) against float32, same shape.

Each row is a training step (gradient of ``mean(ys ** 2) / 2`` w.r.t. the parameters),
timed in alternating rounds so that the machine's drift hits every row alike; ratios are
medians of per-round ratios.

Run alone: ``python -m experiments.bench_regularised [--rounds N]``.
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj

SHAPE = (32, 128, 64, 128)  # B, T, I, H


def _loss(ys):
    return 0.5 * jnp.mean(jnp.square(ys.astype(jnp.float32)))


def _compiled(net, params, xs, key):
    def step(p, x, k):
        return jax.grad(lambda p: _loss(net.apply_batch(p, x, key=k)[1]))(p)

    c = jax.jit(step).lower(params, xs, key).compile()
    return lambda: jax.block_until_ready(c(params, xs, key))


def rnnjax_rows(B, T, I, H):
    """Zero-argument training steps of the rnnjax rows."""
    xs = jax.random.normal(jax.random.key(1), (B, T, I))
    key = jax.random.key(2)
    plain = rj.Stacked([rj.LSTM(I, H), rj.LSTM(H, H)])
    drop = rj.Stacked(
        [
            rj.Recurrent(rj.LSTM(I, H), recurrent_dropout=0.25),
            rj.Recurrent(rj.LSTM(H, H), recurrent_dropout=0.25),
        ],
        dropout=0.2,
    )
    params = plain.init(jax.random.key(0))
    rows = {
        "rnnjax 2-layer LSTM": _compiled(plain, params, xs, None),
        "rnnjax 2-layer LSTM, dropout": _compiled(drop, params, xs, key),
    }
    for name, cell in (("LSTM", rj.LSTM), ("GRU", rj.GRU)):
        for dt, label in ((jnp.float32, "float32"), (jnp.bfloat16, "bfloat16")):
            layer = rj.Recurrent(cell(I, H, param_dtype=dt))
            rows[f"rnnjax {name} {label}"] = _compiled(
                layer, layer.init(jax.random.key(0)), xs, None
            )
    return rows


def torch_rows(B, T, I, H):
    """PyTorch's 2-layer LSTM with dropout 0.2 between layers, training mode."""
    import torch

    from experiments.bench_peers import torch_threads

    torch.manual_seed(0)
    threads = torch_threads()
    model = torch.nn.LSTM(I, H, num_layers=2, dropout=0.2, batch_first=True).train()
    xs = torch.randn(B, T, I)

    def train():
        torch.set_num_threads(threads)
        model.zero_grad(set_to_none=True)
        ys = model(xs)[0]
        (0.5 * ys.square().mean()).backward()
        return ys

    return {"torch 2-layer LSTM, dropout": train}


def measure(rounds: int = 7, shape=SHAPE) -> dict:
    """Median seconds per row and the target ratios, alternating rounds."""
    rows = rnnjax_rows(*shape)
    try:
        rows.update(torch_rows(*shape))
    except ImportError:
        pass
    for fn in rows.values():  # warm up
        fn()
    times = {k: [] for k in rows}
    for r in range(rounds):
        for k, fn in rows.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
        print(f"  regularised rows: round {r + 1}/{rounds}", flush=True)

    def ratio(a, b):
        return float(np.median(np.array(times[a]) / np.array(times[b])))

    out = {
        "shape": dict(zip("BTIH", shape)),
        "rounds": rounds,
        "median_s": {k: float(np.median(v)) for k, v in times.items()},
    }
    out["ratios"] = {
        "dropout / no dropout (target <= 1.1)": ratio(
            "rnnjax 2-layer LSTM, dropout", "rnnjax 2-layer LSTM"
        ),
        "LSTM bfloat16 / float32": ratio("rnnjax LSTM bfloat16", "rnnjax LSTM float32"),
        "GRU bfloat16 / float32": ratio("rnnjax GRU bfloat16", "rnnjax GRU float32"),
    }
    if "torch 2-layer LSTM, dropout" in times:
        out["ratios"]["dropout: rnnjax / torch (target <= 1.0)"] = ratio(
            "rnnjax 2-layer LSTM, dropout", "torch 2-layer LSTM, dropout"
        )
    return out


def report(out: dict) -> str:
    lines = [
        f"Regularised and bfloat16 rows, training step, B,T,I,H = "
        f"{','.join(str(v) for v in out['shape'].values())} ({out['rounds']} rounds)"
    ]
    for k, v in out["median_s"].items():
        lines.append(f"  {k:<34} {1e3 * v:9.2f} ms")
    for k, v in out["ratios"].items():
        lines.append(f"  {k:<44} {v:6.2f}")
    return "\n".join(lines)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=7, help="alternating timing rounds (default 7)")
    args = p.parse_args()
    out = measure(args.rounds)
    print(report(out))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    from experiments.entry import run_main

    run_main(main)
