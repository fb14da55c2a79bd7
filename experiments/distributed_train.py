"""Data-parallel training over several processes (``jax.distributed`` + ``jax.sharding``).

A GRU language model on a synthetic token task, trained with
:func:`rnnjax.distributed.fit`: every process holds its rows of each global batch, the
parameters are replicated, XLA inserts the gradient all-reduce, and orbax checkpoints
are written by every process. The run resumes from its latest checkpoint when started
again with the same ``--dir``.

One machine, 2 processes on the loopback address (CPU devices)::

    python experiments/distributed_train.py --processes 2 --dir /tmp/dp_run

Several hosts: one command per host, the same coordinator (host 0's address) on all::

    python experiments/distributed_train.py --coordinator HOST0:1234 --num-processes 2 --process-id 0 --dir /shared/run
    python experiments/distributed_train.py --coordinator HOST0:1234 --num-processes 2 --process-id 1 --dir /shared/run

(``--dir`` must be a directory every host can read and write.) Process 0 writes the
numbers to ``<dir>/result.json``: per-batch losses, the process count and a digest of
the final parameters.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--processes",
        type=int,
        default=0,
        help="launch this many local processes on 127.0.0.1 (this machine)",
    )
    p.add_argument("--coordinator", default=None, help="host:port of process 0")
    p.add_argument("--num-processes", type=int, default=1)
    p.add_argument("--process-id", type=int, default=0)
    p.add_argument("--dir", required=True, help="checkpoint and result directory")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=8, help="global batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sleep", type=float, default=0.0, help=argparse.SUPPRESS)  # fault tests
    return p.parse_args(argv)


def _data(seed: int, B: int, T: int = 6, V: int = 5):
    import numpy as np

    def data(position: int) -> dict:
        r = np.random.default_rng([seed, position])
        x = r.integers(0, V, (B, T)).astype(np.int32)
        return {
            "inputs": x,
            "targets": np.roll(x, -1, axis=1),
            "length": r.integers(1, T + 1, (B,)).astype(np.int32),
        }

    return data


def worker(args) -> dict:
    """Train (or resume) as one process of the job; returns the result (process 0
    also writes it)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from rnnjax import distributed as dist

    if args.coordinator is not None and args.num_processes > 1:
        dist.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax
    import numpy as np

    import rnnjax as rj
    from rnnjax.checkpoint import Checkpointer
    from rnnjax.models import SequenceModel
    from rnnjax.train import Trainer

    trainer = Trainer(SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5), learning_rate=1e-2)
    mesh = dist.make_mesh()
    ckpt = Checkpointer(
        os.path.join(args.dir, "ckpt"),
        save_every=1,
        keep_last=2,
        config={"batch_size": args.batch_size, "seed": args.seed},
    )
    if ckpt.latest_step() is not None:
        state = ckpt.restore(dist.abstract_state(trainer, mesh))
    else:
        state = trainer.init(jax.random.key(args.seed))
    data = _data(args.seed, args.batch_size)
    if args.sleep:
        slow, data = data, (lambda p: (time.sleep(args.sleep), slow(p))[1])
    state, history = dist.fit(
        trainer,
        state,
        data,
        args.batches,
        mesh,
        checkpointer=ckpt,
        progress=args.process_id == 0 and sys.stderr.isatty(),
    )
    ckpt.close()
    params = [np.asarray(a).tolist() for a in jax.tree_util.tree_leaves(state.params)]
    result = {
        "processes": jax.process_count(),
        "devices": jax.device_count(),
        "losses": [m["loss"] for m in history],
        "positions": [m["position"] for m in history],
        "final_position": int(state.position),
        "params_sha256": hashlib.sha256(json.dumps(params).encode()).hexdigest(),
        "params": params,
    }
    if jax.process_index() == 0:
        with open(os.path.join(args.dir, "result.json"), "w", encoding="utf-8") as f:
            json.dump(result, f)
    return result


def launch_local(args) -> int:
    """Start ``args.processes`` copies of this script on 127.0.0.1 and wait for them."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for i in range(args.processes):
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            str(args.processes),
            "--process-id",
            str(i),
            "--dir",
            args.dir,
            "--batches",
            str(args.batches),
            "--batch-size",
            str(args.batch_size),
            "--seed",
            str(args.seed),
        ]
        procs.append(subprocess.Popen(cmd))
    return max(p.wait() for p in procs)


if __name__ == "__main__":
    a = _parse()
    os.makedirs(a.dir, exist_ok=True)
    if a.processes:
        code = launch_local(a)
        if code == 0:
            with open(os.path.join(a.dir, "result.json"), encoding="utf-8") as f:
                r = json.load(f)
            print(json.dumps({k: v for k, v in r.items() if k != "params"}))
        sys.exit(code)
    r = worker(a)
    if r["processes"] == 1:
        print(json.dumps({k: v for k, v in r.items() if k != "params"}))
