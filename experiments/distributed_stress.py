"""Stress test of training across processes: fresh starts, and workers killed then resumed.

Runs ``experiments/distributed_train.py`` through its local launcher (2 processes on
127.0.0.1, CPU devices):

- ``--fresh`` fresh starts (default 20), each in a new directory: every one must exit 0
  within ``--timeout`` seconds and end with the same parameters (a SHA-256 of them) as
  the first;
- ``--kills`` runs (default 5) in which one worker is killed (SIGKILL) after a random
  checkpoint has appeared: the launcher must stop the other worker and exit non-zero;
  the job is then started again on the same directory and must resume from its latest
  checkpoint (not from the start) and end with exactly the parameters of the
  uninterrupted run.

A crash is a run that exits non-zero (a fresh start) or a resume that fails; a hang is
a run stopped by ``--timeout``. Writes ``<dir>/stress.json`` (every run and the
summary) and prints one line per run::

    python experiments/distributed_stress.py --dir /tmp/dp_stress

Takes about 2 minutes a run when the machine is busy (under one idle): 30 runs in all
with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "distributed_train.py")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dir", required=True, help="where the runs and stress.json go")
    p.add_argument("--fresh", type=int, default=20, help="fresh 2-process starts")
    p.add_argument("--kills", type=int, default=5, help="runs with a worker killed, resumed")
    p.add_argument("--batches", type=int, default=6)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take")
    p.add_argument("--seed", type=int, default=0, help="seed of the kill points")
    return p.parse_args(argv)


def _env():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.pop("XLA_FLAGS", None)
    return env


def _launch(directory, batches, timeout, *extra):
    os.makedirs(directory, exist_ok=True)
    cmd = [sys.executable, SCRIPT, "--processes", "2", "--dir", str(directory)]
    cmd += ["--batches", str(batches), "--timeout", str(timeout), *map(str, extra)]
    return subprocess.Popen(
        cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _wait(proc, timeout):
    """``(returncode, stderr tail, hung)``; a launcher past ``timeout`` + 60 s is killed."""
    try:
        _, err = proc.communicate(timeout=timeout + 60)
    except subprocess.TimeoutExpired:
        _kill_tree(proc)
        _, err = proc.communicate()
        return proc.returncode, err[-2000:], True
    return proc.returncode, err[-2000:], proc.returncode == 124


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="utf-8") as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


def _kill_tree(proc):
    for c in _children(proc.pid):
        try:
            os.kill(c, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.kill()


def _result(directory):
    path = os.path.join(directory, "result.json")
    if not os.path.exists(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _steps(directory):
    ckpt = os.path.join(directory, "ckpt")
    names = os.listdir(ckpt) if os.path.isdir(ckpt) else []
    return sorted(int(n) for n in names if n.isdigit())


def fresh(directory, batches, timeout):
    t0 = time.time()
    code, err, hung = _wait(_launch(directory, batches, timeout), timeout)
    r = _result(directory)
    return {
        "kind": "fresh",
        "returncode": code,
        "hung": hung,
        "seconds": round(time.time() - t0, 1),
        "final_position": None if r is None else r["final_position"],
        "params_sha256": None if r is None else r["params_sha256"],
        "error": "" if code == 0 else err,
    }


def kill_and_resume(directory, batches, timeout, rng):
    """Kill one worker (SIGKILL) once checkpoint ``kill_step`` exists, then resume."""
    kill_step = rng.randrange(1, batches - 1)
    victim = rng.randrange(2)
    t0 = time.time()
    proc = _launch(directory, batches, timeout, "--sleep", 1.0)
    workers = []
    while proc.poll() is None and time.time() - t0 < timeout:
        workers = workers if len(workers) == 2 else _children(proc.pid)
        if any(s >= kill_step for s in _steps(directory)):
            break
        time.sleep(0.1)
    killed = proc.poll() is None and len(workers) == 2
    if killed:
        time.sleep(rng.uniform(0.0, 1.0))  # anywhere in the next step or save
        try:
            os.kill(workers[victim], signal.SIGKILL)
        except ProcessLookupError:
            killed = False
    code, err, hung = _wait(proc, timeout)
    row = {
        "kind": "kill",
        "kill_step": kill_step,
        "victim": victim,
        "killed": killed,
        "launcher_returncode": code,
        "launcher_hung": hung,
        "launcher_named_worker": f"worker {victim}" in err,
        "stop_seconds": round(time.time() - t0, 1),
        "steps_before_resume": _steps(directory),
    }
    before = max(_steps(directory), default=0)
    t1 = time.time()
    code, err, hung = _wait(_launch(directory, batches, timeout), timeout)
    r = _result(directory)
    row.update(
        returncode=code,
        hung=hung,
        seconds=round(time.time() - t1, 1),
        resumed_from=None if r is None else r["positions"][0] - 1,
        expected_resume=before,
        final_position=None if r is None else r["final_position"],
        params_sha256=None if r is None else r["params_sha256"],
        error="" if code == 0 else err,
    )
    return row


def main(argv=None):
    args = _parse(argv)
    os.makedirs(args.dir, exist_ok=True)
    rng = random.Random(args.seed)
    rows, reference = [], None
    out = os.path.join(args.dir, "stress.json")

    def record(row, label):
        rows.append(row)
        ok = row["returncode"] == 0 and not row["hung"] and row["final_position"] == args.batches
        if ok and reference is not None:
            ok = row["params_sha256"] == reference
        if row["kind"] == "kill":
            ok = (
                ok
                and row["killed"]
                and row["launcher_returncode"] not in (0, 124)
                and not row["launcher_hung"]
                and row["launcher_named_worker"]
                and row["resumed_from"] == row["expected_resume"]
            )
        row["ok"] = bool(ok)
        summary = _summary(rows)
        with open(out, "w", encoding="utf-8") as f:
            json.dump({"args": vars(args), "summary": summary, "runs": rows}, f, indent=1)
        detail = {k: v for k, v in row.items() if k not in ("error", "params_sha256")}
        print(f"{label}: {'ok' if ok else 'FAILED'} {json.dumps(detail)}", flush=True)
        if not ok and row.get("error"):
            print(row["error"], flush=True)

    # one kill after every few fresh starts (a kill needs the reference: the first run)
    every = max(1, args.fresh // max(1, args.kills)) if args.kills else 0
    k = 0
    for i in range(args.fresh):
        d = os.path.join(args.dir, f"fresh{i}")
        shutil.rmtree(d, ignore_errors=True)
        row = fresh(d, args.batches, args.timeout)
        if reference is None and row["returncode"] == 0:
            reference = row["params_sha256"]
        record(row, f"fresh {i + 1}/{args.fresh}")
        shutil.rmtree(d, ignore_errors=True)
        if every and (i + 1) % every == 0 and k < args.kills and reference is not None:
            d = os.path.join(args.dir, f"kill{k}")
            shutil.rmtree(d, ignore_errors=True)
            record(
                kill_and_resume(d, args.batches, args.timeout, rng), f"kill {k + 1}/{args.kills}"
            )
            shutil.rmtree(d, ignore_errors=True)
            k += 1
    if reference is None and args.kills:
        d = os.path.join(args.dir, "reference")
        shutil.rmtree(d, ignore_errors=True)
        row = fresh(d, args.batches, args.timeout)
        reference = row["params_sha256"]
        record(row, "reference")
    while k < args.kills:
        d = os.path.join(args.dir, f"kill{k}")
        shutil.rmtree(d, ignore_errors=True)
        record(kill_and_resume(d, args.batches, args.timeout, rng), f"kill {k + 1}/{args.kills}")
        shutil.rmtree(d, ignore_errors=True)
        k += 1
    summary = _summary(rows)
    print(json.dumps(summary), flush=True)
    return 0 if all(r["ok"] for r in rows) else 1


def _summary(rows):
    fresh_rows = [r for r in rows if r["kind"] == "fresh"]
    kill_rows = [r for r in rows if r["kind"] == "kill"]
    return {
        "fresh_runs": len(fresh_rows),
        "fresh_failed": sum(not r["ok"] for r in fresh_rows),
        "fresh_crashes": sum(r["returncode"] not in (0, 124) and not r["hung"] for r in fresh_rows),
        "fresh_hangs": sum(bool(r["hung"]) for r in fresh_rows),
        "kill_runs": len(kill_rows),
        "kill_failed": sum(not r["ok"] for r in kill_rows),
        "resumes_equal_to_uninterrupted": sum(r["ok"] for r in kill_rows),
        "mean_fresh_seconds": round(
            sum(r["seconds"] for r in fresh_rows) / max(1, len(fresh_rows)), 1
        ),
    }


if __name__ == "__main__":
    from entry import run_main

    sys.exit(run_main(main))
