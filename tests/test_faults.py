"""Fault injection: processes killed mid-run, checkpoint files damaged.

- SIGKILL at random points of a run that checkpoints asynchronously (a subprocess
  running :func:`rnnjax.train.fit` with a :class:`rnnjax.checkpoint.Checkpointer`),
  then resumed from its directory: the final state equals the uninterrupted run's, bit
  for bit.
- Every file of a checkpoint truncated, flipped (one byte changed) and deleted in turn:
  :meth:`Checkpointer.restore` either returns exactly the saved state or raises an
  error (``CheckpointError`` or ``FileNotFoundError``) whose message names the
  checkpoint's path; never a silent wrong restore, never an obscure error.

The quick profile (every file flipped, in this process) runs by default; the kills
(worker processes) and the truncations and deletions are marked slow.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.checkpoint import Checkpointer, CheckpointError
from rnnjax.train import Trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
N_BATCHES = 8

WORKER = textwrap.dedent(
    """
    import os, sys, time
    import jax, numpy as np
    import rnnjax as rj
    from rnnjax.checkpoint import Checkpointer
    from rnnjax.blocks import SequenceModel
    from rnnjax.train import Trainer, fit

    directory, n, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    trainer = Trainer(SequenceModel(rj.LSTM(3, 5), output_size=4, vocab_size=4),
                      learning_rate=1e-2)

    def data(p):
        r = np.random.default_rng(p)
        x = r.integers(0, 4, (4, 6)).astype(np.int32)
        return {"inputs": x, "targets": np.roll(x, 1, axis=1),
                "length": r.integers(1, 7, (4,)).astype(np.int32)}

    ckpt = Checkpointer(directory, save_every=1, keep_last=2, async_save=True,
                        config={"n": n})
    if ckpt.latest_step() is None:
        state = trainer.init(jax.random.key(0))
    else:
        state = ckpt.restore(trainer.abstract_state())
    print("START", int(state.position), flush=True)
    state, _ = fit(trainer, state, data, n, checkpointer=ckpt, progress=False,
                   callback=lambda s, m: time.sleep(pause))
    ckpt.close()
    leaves = jax.tree_util.tree_leaves(state)
    np.savez(os.path.join(directory, "final.npz"), *[np.asarray(a) for a in leaves])
    print("DONE", flush=True)
    """
)

FAULTS = {"injected": 0, "survived": 0}


def _run(directory, pause=0.0, kill_at=None):
    """Run the worker. With ``kill_at = (step, delay)``: SIGKILL it ``delay`` seconds
    after the checkpoint directory of ``step`` appears (so the kill lands anywhere: in a
    train step, in an asynchronous write, between them). Returns the position it
    started from, or None when killed."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(directory), str(N_BATCHES), str(pause)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = proc.stdout.readline()
    if not first.startswith("START"):
        proc.wait()
        raise AssertionError(proc.stderr.read()[-3000:])
    start = int(first.split()[1])
    if kill_at is not None:
        step, delay = kill_at
        deadline = time.time() + 300
        while proc.poll() is None and time.time() < deadline:
            if any(n.split(".")[0] == str(step) for n in os.listdir(directory)):
                break
            time.sleep(0.02)
        time.sleep(delay)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            return None
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0 and "DONE" in out, err[-3000:]
    return start


def _final(directory):
    with np.load(os.path.join(directory, "final.npz")) as z:
        return [z[k] for k in sorted(z.files, key=lambda s: int(s.split("_")[1]))]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("uninterrupted")
    assert _run(d) == 0
    return _final(d)


def _kill_and_resume(reference, directory, seed):
    rng = random.Random(seed)
    pause = 0.2
    kill_at = (rng.randrange(1, N_BATCHES - 1), rng.uniform(0.0, 2 * pause))
    FAULTS["injected"] += 1
    assert _run(directory, pause, kill_at=kill_at) is None, "the run ended before the kill"
    start = _run(directory)  # resume to the end
    assert 0 <= start < N_BATCHES
    got = _final(directory)
    assert len(got) == len(reference)
    for a, b in zip(got, reference):
        np.testing.assert_array_equal(a, b)
    FAULTS["survived"] += 1
    return kill_at, start


@pytest.mark.slow  # three worker processes: about 25 s of CPU
def test_sigkill_during_async_checkpointing_then_resume(reference, tmp_path):
    d = tmp_path / "run"
    d.mkdir()
    _kill_and_resume(reference, d, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1, 7))
def test_sigkill_at_random_points_slow(reference, tmp_path, seed):
    d = tmp_path / "run"
    d.mkdir()
    print(_kill_and_resume(reference, d, seed))


# --------------------------------------------------------------------------- damaged files


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A checkpoint directory holding one synchronous checkpoint, and its state."""
    trainer = Trainer(SequenceModel(rj.GRU(2, 3), output_size=3, vocab_size=3))
    state = trainer.init(jax.random.key(1))
    batch = {"inputs": jnp.array([[0, 1, 2]]), "targets": jnp.array([[1, 2, 0]])}
    state, _ = trainer.train_step(state, batch)
    d = tmp_path_factory.mktemp("saved")
    with Checkpointer(d, async_save=False, config={"run": 1}) as ck:
        ck.save(state, metrics={"loss": 1.0}, force=True)
    return d, state, trainer.abstract_state()


def _files(directory):
    out = []
    for root, _, names in os.walk(directory):
        out += [os.path.join(root, n) for n in names]
    return sorted(out)


def _damage(path, how, rng):
    if how == "delete":
        os.remove(path)
        return
    data = open(path, "rb").read()
    if how == "truncate":
        data = data[: len(data) // 2]
    elif data:  # flip one byte
        i = rng.randrange(len(data))
        data = data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :]
    else:
        data = b"\x00"
    with open(path, "wb") as f:
        f.write(data)


def _check_all_files(saved, tmp_path, modes):
    src, state, target = saved
    outcomes = {"equal": 0, "clear error": 0}
    rng = random.Random(0)
    n_files = len(_files(src))
    assert n_files >= 3
    for how in modes:
        for i in range(n_files):
            d = tmp_path / f"{how}{i}"
            shutil.copytree(src, d)
            victim = _files(d)[i]
            _damage(victim, how, rng)
            FAULTS["injected"] += 1
            try:
                got = Checkpointer(d, create=False, async_save=False).restore(target)
            except (CheckpointError, FileNotFoundError) as err:
                assert str(d) in str(err), f"{how} {victim}: the error must name the path: {err}"
                outcomes["clear error"] += 1
            except Exception as err:  # noqa: BLE001
                pytest.fail(
                    f"{how} {os.path.relpath(victim, d)}: obscure error {type(err).__name__}: {err}"
                )
            else:
                for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(state)):
                    np.testing.assert_array_equal(
                        np.asarray(a),
                        np.asarray(b),
                        err_msg=f"{how} {victim}: silent wrong restore",
                    )
                outcomes["equal"] += 1
            FAULTS["survived"] += 1
            shutil.rmtree(d, ignore_errors=True)
    return outcomes


def test_every_file_flipped(saved, tmp_path):
    out = _check_all_files(saved, tmp_path, ["flip"])
    assert out["clear error"] >= 1


@pytest.mark.slow
def test_every_file_truncated_flipped_deleted(saved, tmp_path):
    out = _check_all_files(saved, tmp_path, ["truncate", "flip", "delete"])
    print(f"\ncorrupted-checkpoint restores: {out}")
    assert out["clear error"] >= 3


# --------------------------------------------------------------------------- damaged run directory

RUN_KINDS = ("truncate", "flip", "delete", "copy-step")
RUN_TABLE: dict = {}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run directory written by ``fit``: 4 checkpoints (3 kept), ranked by an
    evaluated metric (best: step 2), with the trainer record; and the state at every
    step."""
    from rnnjax.train import fit

    trainer = Trainer(SequenceModel(rj.GRU(2, 3), output_size=3, vocab_size=3))
    d = tmp_path_factory.mktemp("rundir") / "run"
    states = {}
    scores = {1: 3.0, 2: 1.0, 3: 2.0, 4: 4.0}  # the best (min) is step 2

    def data(p):
        x = (np.arange(6).reshape(2, 3) + p) % 3
        return {"inputs": x.astype(np.int32), "targets": np.roll(x, 1, 1).astype(np.int32)}

    step = {"n": 0}

    def evaluate(params):
        step["n"] += 1
        return {"score": scores[step["n"]]}

    def keep(state, m):
        states[int(state.position)] = jax.device_get(state)

    ck = Checkpointer(d, trainer=trainer, best_metric="score", keep_last=3, async_save=False)
    fit(
        trainer,
        trainer.init(jax.random.key(0)),
        data,
        4,
        checkpointer=ck,
        evaluate=evaluate,
        eval_every=1,
        callback=keep,
        progress=False,
    )
    ck.close()
    assert sorted(int(n) for n in os.listdir(d) if n.isdigit()) == [2, 3, 4]
    return d, states


def _readers():
    # (name, call, the step it must return)
    return [
        ("latest", lambda d: rj.load_run(d), 4),
        ("best", lambda d: rj.load_run(d, best=True), 2),
        ("step=3", lambda d: rj.load_run(d, step=3), 3),
    ]


def _pattern(rel):
    """``rel`` with the step and orbax's hashed file names generalised (one table row)."""
    import re

    parts = rel.split(os.sep)
    parts = ["<step>" if p.isdigit() else re.sub(r"^[0-9a-f]{32}$", "*", p) for p in parts]
    return os.sep.join(parts)


def _damage_run(d, rel, how, rng):
    path = os.path.join(d, rel)
    if how == "copy-step":  # the step directory replaced by a copy of another step's
        step = rel.split(os.sep)[0]
        other = {"2": "3", "3": "4", "4": "2"}[step]
        shutil.rmtree(os.path.join(d, step))
        shutil.copytree(os.path.join(d, other), os.path.join(d, step))
    else:
        _damage(path, how, rng)


def _check_run_dir(run_dir, tmp_path, kinds, every_file=True):
    src, states = run_dir
    rng = random.Random(1)
    files = [os.path.relpath(f, src) for f in _files(src)]
    steps = sorted(n for n in os.listdir(src) if n.isdigit())
    bad = []
    for how in kinds:
        victims = [os.path.join(s, "x") for s in steps] if how == "copy-step" else files
        if not every_file:
            victims = victims[:: max(1, len(victims) // 3)]
        for rel in victims:
            d = tmp_path / "victim"
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(src, d)
            _damage_run(d, rel, how, rng)
            row = RUN_TABLE.setdefault(
                ("<step>/" if how == "copy-step" else _pattern(rel), how),
                {"exact": 0, "clear error": 0, "bad": 0},
            )
            for name, call, want in _readers():
                FAULTS["injected"] += 1
                try:
                    run = call(d)
                except (CheckpointError, FileNotFoundError, ValueError) as err:
                    if str(d) not in str(err) or "Decode" in type(err).__name__:
                        row["bad"] += 1
                        bad.append(f"{how} {rel} {name}: unclear {type(err).__name__}: {err}")
                    else:
                        row["clear error"] += 1
                        FAULTS["survived"] += 1
                    continue
                except Exception as err:  # noqa: BLE001
                    row["bad"] += 1
                    bad.append(f"{how} {rel} {name}: obscure {type(err).__name__}: {err}")
                    continue
                same = run.step == want and all(
                    np.array_equal(np.asarray(a), np.asarray(b))
                    for a, b in zip(
                        jax.tree_util.tree_leaves(run.state),
                        jax.tree_util.tree_leaves(states[want]),
                    )
                )
                if same:
                    row["exact"] += 1
                    FAULTS["survived"] += 1
                else:
                    row["bad"] += 1
                    bad.append(f"{how} {rel} {name}: silently step {run.step}, wanted {want}")
    shutil.rmtree(tmp_path / "victim", ignore_errors=True)
    return bad


def _print_run_table():
    print("\nfile (damage) -> restores: exact / clear error / bad")
    for (pattern, how), c in sorted(RUN_TABLE.items()):
        print(f"  {pattern:45s} {how:9s} {c['exact']:3d} {c['clear error']:3d} {c['bad']:3d}")


def test_run_directory_undamaged_restores_exactly(run_dir):
    src, states = run_dir
    for name, call, want in _readers():
        run = call(src)
        assert run.step == want, name
        for a, b in zip(
            jax.tree_util.tree_leaves(run.state), jax.tree_util.tree_leaves(states[want])
        ):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_run_directory_some_files_damaged(run_dir, tmp_path):
    """A sample of the run directory's files, every damage kind: exact or a clear error."""
    bad = _check_run_dir(run_dir, tmp_path, RUN_KINDS, every_file=False)
    assert not bad, "\n".join(bad)


@pytest.mark.slow
def test_run_directory_every_file_every_damage(run_dir, tmp_path):
    """Every file of the run directory truncated, flipped, deleted, and every step
    directory replaced by another step's: under load_run (latest, best, a given step)
    the exact state of the asked step or a clear error naming the path; never a raw
    decode error, never another step."""
    RUN_TABLE.clear()
    bad = _check_run_dir(run_dir, tmp_path, RUN_KINDS)
    _print_run_table()
    assert not bad, "\n".join(bad)


def test_zz_report_faults():
    print(f"\nfaults injected {FAULTS['injected']}, survived {FAULTS['survived']}")
    assert FAULTS["survived"] == FAULTS["injected"]
