"""Training across processes: 2 processes (``jax.distributed`` over 127.0.0.1, one CPU
device each) equal 1 process on the same global batch; a run whose process is killed
resumes from the orbax checkpoints written by every process and ends where an
uninterrupted run ends.

Every run is a subprocess of ``experiments/distributed_train.py``.
"""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "experiments", "distributed_train.py")
ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
ENV.pop("XLA_FLAGS", None)


def _start(directory, *args):
    os.makedirs(directory, exist_ok=True)
    return subprocess.Popen(
        [sys.executable, SCRIPT, "--dir", str(directory), *map(str, args)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc, timeout=600):
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return out


def _result(directory):
    with open(os.path.join(directory, "result.json"), encoding="utf-8") as f:
        return json.load(f)


def _same_params(a, b, rtol=1e-5, atol=1e-6):
    assert len(a["params"]) == len(b["params"])
    for x, y in zip(a["params"], b["params"]):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.slow  # three processes start and compile: 35 s of CPU, over a minute when busy
def test_two_processes_equal_one_process(tmp_path):
    """3 batches of 8 (4 rows per process): same losses and parameters as one process."""
    one = _start(tmp_path / "one", "--batches", 3)
    two = _start(tmp_path / "two", "--processes", 2, "--batches", 3)
    _finish(one)
    _finish(two)
    r1, r2 = _result(tmp_path / "one"), _result(tmp_path / "two")
    assert (r1["processes"], r2["processes"]) == (1, 2)
    assert r2["devices"] == 2 and r2["final_position"] == 3
    np.testing.assert_allclose(r2["losses"], r1["losses"], rtol=1e-6)
    _same_params(r1, r2)
    # orbax wrote the checkpoints of the 2-process run (every process took part)
    steps = sorted(int(d) for d in os.listdir(tmp_path / "two" / "ckpt") if d.isdigit())
    assert steps[-1] == 3


@pytest.mark.slow
def test_resume_after_one_process_is_killed(tmp_path):
    """Kill process 1 (SIGKILL) mid-run, then the survivor; start both again on the same
    directory: the run resumes from the latest checkpoint and ends with the parameters
    of an uninterrupted 2-process run."""
    ref = _start(tmp_path / "ref", "--processes", 2, "--batches", 6)
    _finish(ref)
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = tmp_path / "run"
    common = [
        "--coordinator",
        f"127.0.0.1:{port}",
        "--num-processes",
        2,
        "--batches",
        6,
        "--sleep",
        1.0,
    ]
    p0 = _start(d, *common, "--process-id", 0)
    p1 = _start(d, *common, "--process-id", 1)
    ckpt = d / "ckpt"
    deadline = time.time() + 400
    while time.time() < deadline:
        names = os.listdir(ckpt) if ckpt.exists() else []
        steps = [int(x) for x in names if x.isdigit() and int(x) >= 2]
        if steps or p0.poll() is not None:
            break
        time.sleep(0.2)
    assert p0.poll() is None, "the run ended before it could be interrupted"
    p1.send_signal(signal.SIGKILL)
    p1.wait()
    try:
        p0.wait(timeout=60)  # the survivor loses its peer and stops (or is stopped)
    except subprocess.TimeoutExpired:
        p0.send_signal(signal.SIGKILL)
        p0.wait()
    for p in (p0, p1):
        p.stdout.close()
        p.stderr.close()
    assert not (d / "result.json").exists()
    done_before = max(int(x) for x in os.listdir(ckpt) if x.isdigit())
    assert 2 <= done_before < 6
    _finish(_start(d, "--processes", 2, "--batches", 6))
    r = _result(d)
    assert r["final_position"] == 6
    assert r["positions"][0] == done_before + 1  # resumed, not restarted
    _same_params(_result(tmp_path / "ref"), r, rtol=0, atol=0)


def _processes_naming(text):
    """Pids of live processes whose command line contains ``text``."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(pid))
        except OSError:
            pass
    return pids


@pytest.mark.slow
def test_launcher_stops_every_worker_when_one_fails(tmp_path):
    """Worker 1 raises at position 1: the launcher stops worker 0 (which would otherwise
    wait in the next collective), exits non-zero and shows worker 1's error."""
    d = tmp_path / "fail"
    proc = _start(d, "--processes", 2, "--batches", 4, "--fail-at", 1)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 1, err[-3000:]
    assert "worker 1 of 2 failed (exit code 1)" in err, err[-3000:]
    tail = err[err.index("worker 1 of 2 failed") :]
    assert "RuntimeError: injected failure at position 1" in tail
    assert not (d / "result.json").exists()
    assert _processes_naming(str(d)) == []  # no worker left behind


@pytest.mark.slow
def test_launcher_names_the_first_failure_when_both_workers_end(tmp_path, monkeypatch, capsys):
    """Worker 1 fails, and worker 0 fails after it (its peer is gone) before the launcher
    looks again: the launcher names worker 1, the cause, not worker 0. The launcher's
    polling is slowed to 3 s so that both have ended by its next look."""
    import importlib.util
    import types

    spec = importlib.util.spec_from_file_location("distributed_train_launcher", SCRIPT)
    launcher = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(launcher)
    slow = types.SimpleNamespace(**vars(time))
    slow.sleep = lambda s: time.sleep(max(s, 3.0))
    monkeypatch.setattr(launcher, "time", slow)
    for k, v in ENV.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    d = tmp_path / "both"
    args = launcher._parse(["--dir", str(d), "--processes", "2", "--batches", "4"])
    os.makedirs(d)
    code = launcher.launch_local(args, ["--fail-at", 1], timeout=600)
    err = capsys.readouterr().err
    assert code == 1, err[-3000:]
    assert "[worker 0] jax.errors.JaxRuntimeError" in err, err[-3000:]  # both failed
    assert "worker 1 of 2 failed (exit code 1)" in err, err[-3000:]
    assert "Worker(s) 0 failed after it." in err
    tail = err[err.index("worker 1 of 2 failed") :]
    assert "RuntimeError: injected failure at position 1" in tail
    assert _processes_naming(str(d)) == []


@pytest.mark.slow
def test_launcher_refuses_another_runs_directory_and_overwrites_on_request(tmp_path):
    """One process: a job with another seed into a --dir that holds a run stops before
    its first step, listing the setting that differs (no traceback) and leaving the run
    as it was; with --overwrite it starts afresh in that directory."""
    d = tmp_path / "run"
    _finish(_start(d, "--batches", 2))
    first = _result(d)
    again = _start(d, "--batches", 2, "--seed", 1)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 1, err[-3000:]
    assert "\n  seed: saved 0, got 1\n" in err and "--overwrite" in err, err[-3000:]
    assert "Traceback" not in err and "batch_size" not in err
    assert _result(d) == first
    _finish(_start(d, "--batches", 2, "--seed", 1, "--overwrite"))
    second = _result(d)
    assert second["positions"] == [1, 2] and second["params_sha256"] != first["params_sha256"]


@pytest.mark.slow
def test_launcher_ctrl_c_stops_every_worker_cleanly_with_status_130(tmp_path):
    """SIGINT to the launcher of 2 workers: each worker's fit says where its run stands,
    the job exits with 130, no worker is left behind, and the checkpoint named restores."""
    d = tmp_path / "int"
    proc = _start(d, "--processes", 2, "--batches", 30, "--sleep", 1.0)
    ckpt = d / "ckpt"
    deadline = time.time() + 400
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and any(x.isdigit() and int(x) >= 2 for x in os.listdir(ckpt)):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-3000:]
    assert "distributed_train: interrupted; every worker was stopped" in err, err[-3000:]
    for i in (0, 1):
        assert f"[worker {i}] fit interrupted after batch" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert _processes_naming(str(d)) == []
    line = next(x for x in err.splitlines() if x.startswith("[worker 0] fit interrupted"))
    last = int(line.split("last checkpoint at position ")[1].split()[0])
    assert last >= 2 and (ckpt / str(last)).is_dir()
