"""Benchmark: LSTM vs GRU vs Elman RNN vs ESN in rnnjax, against PyTorch, Flax and Equinox.

Run from the repository root::

    python -m experiments.benchmark                 # default shapes: a few minutes (see below)
    python -m experiments.benchmark --quick         # a smoke run: about 1.5-2 minutes
    python -m experiments.benchmark --full          # more shapes and repetitions
    python -m experiments.benchmark --shape 16,200,32,64 --dtype bfloat16 --backend cpu

Durations on the project's 2-core CPU: ``--quick`` took 99-114 s; the default preset is
sized for about 3 minutes on idle cores, and took 25 minutes while the two cores were
shared by a dozen other jobs (load average 12-15): on a shared machine expect several
times the idle duration. ``--full`` takes much longer (more shapes, 5-25 repetitions,
reservoirs up to N=2000).

For every shape ``B,T,I,H`` and cell it measures, for rnnjax and each installed peer
(PyTorch ``nn.LSTM``/``nn.GRU``/``nn.RNN``, Flax ``nn.RNN`` of ``OptimizedLSTMCell`` /
``GRUCell`` / ``SimpleCell``, Equinox cells under ``lax.scan``, and on GPU
``jax.experimental.rnn``'s cuDNN LSTM): forward time, training-step time (forward +
backward), compile time, memory (XLA's buffer assignment for JAX code, device peak
where the backend reports it, resident-set growth on CPU), achieved FLOP/s and its
fraction of the machine's matrix-multiply peak, measured in the same run. The
implementations are timed in alternation, round after round, so drift in the
machine's load hits all of them; ratios are computed per round and reported as median
and range. Then: quality per wall-clock second on Mackey-Glass next-step prediction
(gradient-trained LSTM and GRU against a ridge-fitted ESN, each given the same time
budget), compile time of a 2-layer bidirectional LSTM at ``T=128`` and ``T=4096``, and
the peak memory of a ``T=10000`` LSTM training step with and without
rematerialisation (``rnnjax.ScanConfig(remat=True)``).

Writes ``results/benchmark.json`` (every raw figure and the environment) and
``results/benchmark.png``, and prints the tables.

Preprocessing (Mackey-Glass task): tau = 17, Euler step 0.1, every 10th sample, 1000
discarded; the series is centred by its training-segment mean; inputs ``u[t]``,
targets ``u[t+1]``; 70 % train, 30 % test; error is the test one-step NRMSE (RMSE / std
of the target).
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse(argv):
    from experiments.bench_core import parse_shape

    ap = argparse.ArgumentParser(
        prog="python -m experiments.benchmark",
        description=__doc__.split("\n")[0] + " Default preset: the four default shapes, "
        "about 3 minutes on 2 idle cores (several times longer on shared cores).",
    )
    group = ap.add_mutually_exclusive_group()
    group.add_argument(
        "--quick",
        action="store_true",
        help="one tiny shape, a smoke run: about 1.5-2 minutes on 2 cores",
    )
    group.add_argument(
        "--full",
        action="store_true",
        help="more shapes and repetitions: far longer than the default",
    )
    ap.add_argument(
        "--shape",
        action="append",
        type=parse_shape,
        metavar="B,T,I,H",
        help="benchmark this shape (repeatable; replaces the preset's shapes)",
    )
    ap.add_argument(
        "--backend",
        choices=("cpu", "gpu", "tpu"),
        default=None,
        help="JAX backend (default: what JAX finds)",
    )
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32")
    ap.add_argument("--out", default="results", help="output folder (default: results)")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def main(argv=None) -> dict:
    args = _parse(argv)
    if args.backend:
        # must happen before JAX initialises its backends
        os.environ["JAX_PLATFORMS"] = {"gpu": "cuda", "cpu": "cpu", "tpu": "tpu"}[args.backend]
    from experiments import bench_run

    return bench_run.run(args)


if __name__ == "__main__":
    from experiments.entry import run_main

    run_main(main, sys.argv[1:])
