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
the final parameters; it alone writes the files the processes share (the checkpoints'
``config.json``), while orbax writes each checkpoint's arrays from every process.

A directory holds one run: started again with the same settings the job resumes from
its latest checkpoint (``Checkpointer.restore_or_init``); with other settings (``--seed``,
``--batch-size``) it stops before the first step with the settings that differ, one
line each, unless ``--overwrite`` says to delete the run saved there and start afresh.
Ctrl-C stops every worker cleanly (each says where its run stands) and the job exits
with status 130.

With ``--processes`` the launcher passes each worker's error output through (prefixed
``[worker i]``); when a worker fails it stops every other worker at once and exits with
the failing worker's exit code, after printing the end of its error output (when several
have failed, the one whose error began first: the others lost their peer)
(``--timeout`` stops the whole job after that many seconds, exit code 124).
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete the run already saved in --dir and start afresh",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=0.0,
        help="with --processes: stop every worker after this many seconds (0: no limit)",
    )
    p.add_argument("--sleep", type=float, default=0.0, help=argparse.SUPPRESS)  # fault tests
    p.add_argument("--fail-at", type=int, default=-1, help=argparse.SUPPRESS)  # fault tests
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
    _watch_parent()
    from rnnjax import distributed as dist

    if args.coordinator is not None and args.num_processes > 1:
        dist.initialize(args.coordinator, args.num_processes, args.process_id)
    import jax
    import numpy as np

    import rnnjax as rj
    from rnnjax.blocks import SequenceModel
    from rnnjax.checkpoint import Checkpointer
    from rnnjax.train import Trainer

    trainer = Trainer(SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5), learning_rate=1e-2)
    mesh = dist.make_mesh()
    try:
        ckpt = Checkpointer(
            os.path.join(args.dir, "ckpt"),
            save_every=1,
            keep_last=2,
            config={"batch_size": args.batch_size, "seed": args.seed},
            overwrite=args.overwrite,
        )
    except ValueError as err:  # another run's directory: say so, without a traceback
        raise SystemExit(
            f"distributed_train: {err}\n(--overwrite: start afresh in --dir)"
        ) from None
    # resume or start: the latest checkpoint when there is one, else a fresh state
    state = ckpt.restore_or_init(
        trainer, jax.random.key(args.seed), target=dist.abstract_state(trainer, mesh)
    )
    data = _data(args.seed, args.batch_size)
    if args.sleep:
        slow, data = data, (lambda p: (time.sleep(args.sleep), slow(p))[1])
    if args.fail_at >= 0:  # fault tests: this process fails when it reaches the position
        whole = data

        def data(p):
            if p == args.fail_at and jax.process_index() == args.num_processes - 1:
                raise RuntimeError(f"injected failure at position {p}")
            return whole(p)

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


def _watch_parent() -> None:
    """A worker started by :func:`launch_local` exits when its launcher is gone (killed),
    rather than waiting in a collective for a peer that will never come."""
    import threading

    parent = os.environ.get("RNNJAX_LAUNCHER_PID")
    if not parent:
        return

    def watch():
        while True:
            if os.getppid() != int(parent):
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def _stop(procs, grace: float = 5.0) -> None:
    """SIGTERM every running process, then SIGKILL what is left after ``grace`` seconds."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.time() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _worker_cmd(args, i: int, port: int, worker_args) -> list:
    return [
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
        *map(str, worker_args),
    ]


def _interrupt(procs, grace: float = 60.0) -> None:
    """Ctrl-C: pass SIGINT on to every worker once (they run in sessions of their own, so
    the terminal's goes to the launcher alone), let each stop cleanly (its save
    finished, its resume line printed) for up to ``grace`` seconds, then stop the rest."""
    import signal

    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    deadline = time.time() + grace
    while time.time() < deadline and any(p.poll() is None for p in procs):
        time.sleep(0.1)
    _stop(procs)


def _wait(procs, timeout: float):
    """Wait until every worker has succeeded (``None``), one has failed (its index), or
    ``timeout`` (> 0) seconds have passed (``"timeout"``, every worker stopped)."""
    start = time.time()
    while True:
        codes = [p.poll() for p in procs]
        bad = [i for i, c in enumerate(codes) if c not in (None, 0)]
        if bad:
            return bad[0]
        if all(c == 0 for c in codes):
            return None
        if timeout and time.time() - start > timeout:
            _stop(procs)
            return "timeout"
        time.sleep(0.1)


def launch_local(args, worker_args=(), timeout: float = 0.0) -> int:
    """Start ``args.processes`` copies of this script on 127.0.0.1 and wait for them.

    Each worker's stderr is passed through, each line prefixed with ``[worker i]``. When
    a worker fails, every other worker is stopped at once (SIGTERM, then SIGKILL) and
    the launcher returns that worker's exit code after printing the end of its error;
    with ``timeout`` > 0 the whole job is stopped after that many seconds (exit 124).
    Ctrl-C (``KeyboardInterrupt``) is passed on to the workers, which stop cleanly, and
    raised again once they have. Returns 0 when every worker succeeded.
    """
    import collections
    import socket
    import threading

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, RNNJAX_LAUNCHER_PID=str(os.getpid()))
    procs, tails, readers = [], [], []
    # when each worker's error began (its last traceback's first line, else the end of
    # its output): one worker's failure makes the others fail too (they lose their peer
    # in the next collective), so the first to begin is the cause
    began = [None] * args.processes
    for i in range(args.processes):
        p = subprocess.Popen(
            _worker_cmd(args, i, port, worker_args),
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        tail = collections.deque(maxlen=40)

        def pump(p=p, tail=tail, i=i):
            for line in p.stderr:
                if line.startswith("Traceback (most recent call last)"):
                    began[i] = time.monotonic()
                tail.append(line)
                sys.stderr.write(f"[worker {i}] {line}")
            if began[i] is None:
                began[i] = time.monotonic()
            p.stderr.close()

        t = threading.Thread(target=pump, daemon=True)
        t.start()
        procs.append(p)
        tails.append(tail)
        readers.append(t)
    try:
        failed = _wait(procs, timeout)
    except KeyboardInterrupt:
        _interrupt(procs)
        for t in readers:
            t.join(timeout=5)
        raise
    except BaseException:  # a kill of the launcher: take the workers down too
        _stop(procs)
        raise
    if failed == "timeout":
        sys.stderr.write(
            f"distributed_train: the job ran past --timeout {timeout:g} s; every "
            "worker was stopped\n"
        )
        return 124
    if failed is None:
        for t in readers:
            t.join(timeout=5)
        return 0
    return _report_failure(args, procs, readers, tails, began)


def _report_failure(args, procs, readers, tails, began) -> int:
    """Stop every worker and print the end of the error output of the one whose error
    began first; its exit code (1 for a signal)."""
    running = [p.poll() is None for p in procs]
    _stop(procs)
    for t in readers:
        t.join(timeout=5)
    # of the workers that ended by themselves, report the one whose error began first
    ended = [i for i, p in enumerate(procs) if not running[i] and p.returncode != 0]
    # (a reader still running after its join timeout has no time yet: it sorts last)
    failed = min(ended, key=lambda i: (began[i] is None, began[i] or 0.0, i))
    code = procs[failed].returncode
    how = f"signal {-code}" if code < 0 else f"exit code {code}"
    also = [i for i in ended if i != failed]
    after = f" Worker(s) {', '.join(map(str, also))} failed after it." if also else ""
    sys.stderr.write(
        f"distributed_train: worker {failed} of {args.processes} failed ({how}); every "
        f"other worker was stopped.{after} The end of worker {failed}'s error output:\n"
        + "".join(tails[failed])
    )
    return code if code > 0 else 1


def _main(a) -> int:
    os.makedirs(a.dir, exist_ok=True)
    if a.processes:
        extra = ["--sleep", a.sleep] if a.sleep else []
        extra += ["--fail-at", a.fail_at] if a.fail_at >= 0 else []
        extra += ["--overwrite"] if a.overwrite else []
        try:
            code = launch_local(a, extra, timeout=a.timeout)
        except KeyboardInterrupt:  # the workers have stopped cleanly
            sys.stderr.write("distributed_train: interrupted; every worker was stopped\n")
            return 130  # the shell's code for an interrupt
        if code == 0:
            with open(os.path.join(a.dir, "result.json"), encoding="utf-8") as f:
                r = json.load(f)
            print(json.dumps({k: v for k, v in r.items() if k != "params"}))
        return code
    try:
        r = worker(a)
    except BaseException as err:  # noqa: BLE001 - any failure of a worker ends it at once
        # a normal exit would run JAX's distributed shutdown, a barrier that waits for
        # every other process: those wait in the next collective, so the failed worker
        # would hang until the coordination timeout and the launcher could not stop them
        import traceback

        if isinstance(err, KeyboardInterrupt):  # fit printed where the run stands
            code = 130
        elif isinstance(err, SystemExit):
            code = err.code if isinstance(err.code, int) else 1
            if isinstance(err.code, str):
                print(err.code, file=sys.stderr)
        else:
            code = 1
            traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if r["processes"] == 1:
        print(json.dumps({k: v for k, v in r.items() if k != "params"}))
    return 0


if __name__ == "__main__":
    sys.exit(_main(_parse()))
