"""Tests for rnnjax.checkpoint: exact resume, keep-last/best, config, clear errors."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.checkpoint import Checkpointer, CheckpointError, check_finite, load_config
from rnnjax.train import Trainer, TrainState, fit

V, E, H, B, T, K = 5, 3, 4, 2, 4, 2
N = 7  # batches of the whole run


def data(position):
    r = np.random.default_rng((7, position))
    return {
        "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
        "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
    }


def tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(bool(jnp.array_equal(x, y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def trainer():
    # recurrent dropout makes the run depend on the RNG key; stateful TBPTT on the carry
    return make_trainer()


@pytest.fixture(scope="module")
def uninterrupted(trainer):
    state, hist = fit(
        trainer, trainer.init(jax.random.key(0)), data, N, tbptt=K, stateful=True, progress=False
    )
    return state, hist


class Killed(Exception):
    pass


def test_kill_and_resume_equals_uninterrupted_run(trainer, uninterrupted, tmp_path):
    """Killed after batch 5 with checkpoints every 2: resume from 4, redo 5, go on to N.
    Losses and every leaf of the final state equal the uninterrupted run exactly."""
    full_state, full_hist = uninterrupted
    directory = tmp_path / "run"

    def kill(state, m):
        if int(state.position) == 5:
            raise Killed

    ckpt = Checkpointer(directory, save_every=2, keep_last=2, config=trainer.config())
    with pytest.raises(Killed):
        fit(
            trainer,
            trainer.init(jax.random.key(0)),
            data,
            N,
            tbptt=K,
            stateful=True,
            checkpointer=ckpt,
            progress=False,
            callback=kill,
        )
    ckpt.close()
    del ckpt

    resumed = Checkpointer(
        directory, save_every=2, keep_last=2, config=trainer.config(), create=False
    )
    assert resumed.latest_step() == 4
    state = resumed.restore(trainer.abstract_state(batch_size=B))
    assert isinstance(state, TrainState) and isinstance(state.carry, rj.LSTMState)
    assert int(state.position) == 4 and int(state.step) == 4 * (T // K)
    state, hist = fit(
        trainer, state, data, N, tbptt=K, stateful=True, checkpointer=resumed, progress=False
    )
    assert [h["loss"] for h in hist] == [h["loss"] for h in full_hist[4:]]
    assert tree_equal(state, full_state)
    assert resumed.latest_step() == N
    resumed.close()


def test_restore_roundtrip_keeps_namedtuples_and_values(trainer, uninterrupted, tmp_path):
    state, _ = uninterrupted
    with Checkpointer(tmp_path / "c", async_save=False) as ckpt:
        assert ckpt.save(state, force=True)
        back = ckpt.restore(trainer.abstract_state(batch_size=B))
        assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(state)
        assert type(back.opt_state) is type(state.opt_state)
        assert tree_equal(back, state)
        # a concrete state works as the target too
        assert tree_equal(ckpt.restore(state), state)
        # saving the same position again is a no-op, not an error
        assert not ckpt.save(state, force=True)


def test_keeps_last_k_and_best(trainer, tmp_path):
    losses = [5.0, 1.0, 4.0, 3.0, 2.5, 2.0]
    state = trainer.init(jax.random.key(0))
    with Checkpointer(
        tmp_path / "c", save_every=1, keep_last=2, best_metric="loss", async_save=True
    ) as ckpt:
        for p, loss in enumerate(losses, start=1):
            ckpt.save(state._replace(position=jnp.asarray(p, jnp.int32)), metrics={"loss": loss})
        ckpt.wait()
        assert ckpt.all_steps() == [2, 5, 6]  # the best (loss 1.0 at 2) and the last two
        assert ckpt.best_step() == 2
        with pytest.raises(ValueError, match="best_metric 'loss'"):
            ckpt.save(state._replace(position=jnp.asarray(9, jnp.int32)), metrics={"acc": 1.0})


def test_save_every_n(trainer, tmp_path):
    state = trainer.init(jax.random.key(0))
    with Checkpointer(tmp_path / "c", save_every=3, keep_last=10) as ckpt:
        saved = [ckpt.save(state._replace(position=jnp.asarray(p, jnp.int32))) for p in range(1, 8)]
        assert saved == [False, False, True, False, False, True, False]
        assert ckpt.save(state._replace(position=jnp.asarray(7, jnp.int32)), force=True)
        ckpt.wait()
        assert ckpt.all_steps() == [3, 6, 7]


def test_non_finite_state_is_refused(trainer, tmp_path):
    state = trainer.init(jax.random.key(0))
    bad = state._replace(
        params=dict(
            state.params,
            head={
                "w": state.params["head"]["w"].at[0, 0].set(jnp.nan),
                "b": state.params["head"]["b"],
            },
        )
    )
    with Checkpointer(tmp_path / "c") as ckpt:
        with pytest.raises(ValueError, match=r"non-finite.*params\['head'\]\['w'\]"):
            ckpt.save(bad, force=True)
        assert ckpt.all_steps() == []
    with pytest.raises(ValueError, match="non-finite"):
        check_finite({"x": jnp.array([1.0, jnp.inf])})


def test_config_json_beside_checkpoints(trainer, tmp_path):
    cfg = {"lr": 0.001, "trainer": trainer.config()}
    with Checkpointer(tmp_path / "c", config=cfg):
        pass
    path = tmp_path / "c" / "config.json"
    assert json.loads(path.read_text()) == json.loads(json.dumps(cfg))
    assert load_config(tmp_path / "c") == json.loads(json.dumps(cfg))
    with pytest.raises(ValueError, match="config differs"):
        Checkpointer(tmp_path / "c", config={"lr": 0.1})
    with pytest.raises(FileNotFoundError, match="config"):
        load_config(tmp_path / "nothing")


def test_missing_checkpoint_is_a_clear_error(trainer, tmp_path):
    missing = tmp_path / "never_written"
    with pytest.raises(FileNotFoundError, match=str(missing)):
        Checkpointer(missing, create=False)
    with Checkpointer(tmp_path / "empty") as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint in .*empty"):
            ckpt.restore(trainer.abstract_state())
        ckpt.save(trainer.init(jax.random.key(0)), force=True)
        with pytest.raises(FileNotFoundError, match="step 3"):
            ckpt.restore(trainer.abstract_state(), step=3)


def _saved(trainer, directory):
    state = trainer.init(jax.random.key(0))._replace(position=jnp.asarray(1, jnp.int32))
    with Checkpointer(directory, async_save=False) as ckpt:
        ckpt.save(state, force=True)
    return state


def _data_files(directory):
    files = [
        f
        for f in glob.glob(os.path.join(directory, "1", "state", "**", "d", "*"), recursive=True)
        if os.path.isfile(f)
    ]
    assert files
    return sorted(files, key=os.path.getsize)


@pytest.mark.parametrize(
    "damage", ["truncate", "flip", "delete_metadata", "delete_state", "digest", "delete_integrity"]
)
def test_damaged_checkpoint_is_a_clear_error(trainer, tmp_path, damage):
    directory = str(tmp_path / "c")
    _saved(trainer, directory)
    if damage == "truncate":
        for f in _data_files(directory):
            with open(f, "r+b") as fh:
                fh.truncate(os.path.getsize(f) // 2)
    elif damage == "flip":  # same size, changed bytes: only the digest can tell
        for f in _data_files(directory):
            raw = bytearray(open(f, "rb").read())
            raw[len(raw) // 2] ^= 0xFF
            open(f, "wb").write(bytes(raw))
    elif damage == "delete_metadata":
        os.remove(os.path.join(directory, "1", "state", "_METADATA"))
    elif damage == "digest":  # the values no longer match the digest taken at save time
        meta = os.path.join(directory, "1", "integrity", "metadata")
        record = json.loads(open(meta).read())
        record["sha256"] = "0" * 64
        open(meta, "w").write(json.dumps(record))
    elif damage == "delete_integrity":
        import shutil

        shutil.rmtree(os.path.join(directory, "1", "integrity"))
    else:
        import shutil

        shutil.rmtree(os.path.join(directory, "1", "state"))
    ckpt = Checkpointer(directory, create=False)
    with pytest.raises(
        (CheckpointError, FileNotFoundError), match=os.path.join(directory, "1")
    ) as err:
        ckpt.restore(trainer.abstract_state())
    if damage == "digest":
        assert "SHA-256" in str(err.value)


KILL_SCRIPT = """
import os, signal, sys
import jax, jax.numpy as jnp, numpy as np
import rnnjax as rj
from rnnjax.checkpoint import Checkpointer
from rnnjax.blocks import SequenceModel
from rnnjax.train import Trainer, fit
sys.path.insert(0, {tests!r})
from test_checkpoint import data, N, K, B, make_trainer
tr = make_trainer()
ckpt = Checkpointer({directory!r}, save_every=2, keep_last=2)
def kill(state, m):
    if int(state.position) == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, an async save may be in flight
fit(tr, tr.init(jax.random.key(0)), data, N, tbptt=K, stateful=True, checkpointer=ckpt,
    progress=False, callback=kill)
"""


def make_trainer():
    layer = rj.Recurrent(rj.LSTM(E, H), recurrent_dropout=0.25)
    return Trainer(SequenceModel(layer, output_size=V, vocab_size=V), clip_norm=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("kill_at", [4, 5])
def test_sigkill_and_resume_equals_uninterrupted_run(trainer, uninterrupted, tmp_path, kill_at):
    """A subprocess is SIGKILLed right after the save at 4 started (possibly unfinished)
    or one batch later; the resumed run still ends in the uninterrupted state."""
    import subprocess
    import sys

    assert make_trainer() == trainer
    directory = str(tmp_path / "run")
    script = KILL_SCRIPT.format(
        tests=os.path.dirname(__file__), directory=directory, kill_at=kill_at
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == -9, proc.stderr[-3000:]
    ckpt = Checkpointer(directory, save_every=2, keep_last=2, create=False)
    assert ckpt.latest_step() in (2, 4)
    state = ckpt.restore(trainer.abstract_state(batch_size=B))
    start = int(state.position)
    state, hist = fit(
        trainer, state, data, N, tbptt=K, stateful=True, checkpointer=ckpt, progress=False
    )
    full_state, full_hist = uninterrupted
    assert [h["loss"] for h in hist] == [h["loss"] for h in full_hist[start:]]
    assert tree_equal(state, full_state)
    ckpt.close()


# --------------------------------------------------------------------------- arguments, readers


@pytest.fixture(scope="module")
def ranked_run(trainer, tmp_path_factory):
    """A run directory with the trainer record: checkpoints 1, 2, 3 ranked by 'score'
    (best: 2), written synchronously."""
    d = tmp_path_factory.mktemp("ranked") / "run"
    state = trainer.init(jax.random.key(0))
    with Checkpointer(
        d, trainer=trainer, best_metric="score", keep_last=3, async_save=False, save_every=1
    ) as ck:
        for p, score in [(1, 3.0), (2, 1.0), (3, 2.0)]:
            ck.save(state._replace(position=jnp.asarray(p, jnp.int32)), {"score": score})
        assert ck.all_steps() == [1, 2, 3]
    return str(d)


def test_checkpointer_arguments_are_checked(trainer, tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="directory.*not a directory"):
        Checkpointer(a_file)
    with pytest.raises(TypeError, match="directory must be a path"):
        Checkpointer(3)
    with pytest.raises(TypeError, match="config must be a dict"):
        Checkpointer(tmp_path / "c", config=[1, 2])
    state = trainer.init(jax.random.key(0))
    with Checkpointer(tmp_path / "s", async_save=False, best_metric="a") as ck:
        with pytest.raises(TypeError, match="state must be an rnnjax.train.TrainState"):
            ck.save({"a": jnp.ones(2)})
        with pytest.raises(TypeError, match=r"metrics\['loss'\] must be a real number"):
            ck.save(state, metrics={"loss": "low"}, force=True)
        with pytest.raises(TypeError, match="metrics must be a dict"):
            ck.save(state, metrics=[0.5], force=True)
        with pytest.raises(TypeError, match=r"metrics\['loss'\]"):
            ck.save(state, metrics={"loss": jnp.ones(2)}, force=True)
        assert ck.all_steps() == []  # nothing was written by the refused calls
        # NumPy, JAX 0-d and bool metrics are numbers
        assert ck.save(
            state,
            metrics={"a": np.float32(1.5), "b": jnp.asarray(2.0), "c": True, "d": 3},
            force=True,
        )
        ck.wait()
        assert ck._manager.metrics(0) == {"a": 1.5, "b": 2.0, "c": 1.0, "d": 3.0}


def test_load_run_step_and_best_are_checked(trainer, ranked_run):
    with pytest.raises(ValueError, match="step must be >= 0"):
        rj.load_run(ranked_run, step=-1)
    with pytest.raises(FileNotFoundError, match=r"step 99 .*available steps: \[1, 2, 3\]"):
        rj.load_run(ranked_run, step=99)
    for bad in ("3", True, 2.0):
        with pytest.raises(TypeError, match="step must be an int"):
            rj.load_run(ranked_run, step=bad)
    with pytest.raises(TypeError, match="best must be a bool"):
        rj.load_run(ranked_run, best="yes")
    with pytest.raises(ValueError, match="step or best=True, not both"):
        rj.load_run(ranked_run, step=1, best=True)
    assert rj.load_run(ranked_run).step == 3
    assert rj.load_run(ranked_run, best=True).step == 2
    assert rj.load_run(ranked_run, step=np.int64(1)).step == 1
    with pytest.raises(FileNotFoundError, match="step 4"):
        Checkpointer(ranked_run, create=False).restore(trainer.abstract_state(), step=4)
    with pytest.raises(ValueError, match="step must be >= 0"):
        Checkpointer(ranked_run, create=False).restore(trainer.abstract_state(), step=-1)


def _copy(src, tmp_path):
    import shutil

    d = str(tmp_path / "copy")
    shutil.copytree(src, d)
    return d


@pytest.mark.parametrize(
    "name,pattern",
    [
        ("ranking.json", "ranking.json is damaged: expected a JSON object"),
        ("config.json", "config.json is damaged: expected a JSON object"),
        (os.path.join("2", "metrics", "metrics"), "damaged.*" + os.path.join("2", "metrics")),
    ],
)
def test_damaged_shared_files_are_checkpoint_errors(ranked_run, tmp_path, name, pattern):
    """Decode errors (bad UTF-8, cut JSON, a JSON list) become CheckpointError naming the file."""
    for content in (b"\xff\xfe{", b'{"best_metric": "sc', b"[1, 2]"):
        d = _copy(ranked_run, tmp_path)
        with open(os.path.join(d, name), "wb") as f:
            f.write(content)
        with pytest.raises(CheckpointError, match=pattern) as info:
            rj.load_run(d, best=True)
        assert d in str(info.value)
        import shutil

        shutil.rmtree(d)


def test_step_directory_copied_from_another_step_is_damaged(ranked_run, tmp_path):
    """Step 2's directory copied over step 3's: never step 2's state reported as step 3."""
    import shutil

    d = _copy(ranked_run, tmp_path)
    shutil.rmtree(os.path.join(d, "3"))
    shutil.copytree(os.path.join(d, "2"), os.path.join(d, "3"))
    with pytest.raises(CheckpointError, match=r"3 is damaged: its integrity record is of step 2"):
        rj.load_run(d)
    assert rj.load_run(d, step=2).step == 2  # the intact steps still restore


def test_unrecognised_newest_step_directory_is_damaged(ranked_run, tmp_path):
    """A step directory orbax does not list (its metadata deleted) is not skipped silently
    in favour of an older step."""
    d = _copy(ranked_run, tmp_path)
    for name in os.listdir(os.path.join(d, "3")):
        path = os.path.join(d, "3", name)
        if os.path.isfile(path) and "METADATA" in name.upper():
            os.remove(path)
    try:
        run = rj.load_run(d)
    except CheckpointError as err:
        assert os.path.join(d, "3") in str(err)
    else:
        assert run.step == 3


def test_only_process_zero_writes_the_shared_files(trainer, tmp_path, monkeypatch):
    """Another process checks the config but writes neither config.json nor ranking.json."""
    from rnnjax.checkpoint import _files as checkpoint  # where the processes are told apart

    monkeypatch.setattr(checkpoint, "_primary", lambda: False)
    d = tmp_path / "other"
    with Checkpointer(d, config={"a": 1}, best_metric="loss"):
        pass
    assert sorted(os.listdir(d)) == []
    monkeypatch.setattr(checkpoint, "_primary", lambda: True)
    with Checkpointer(d, config={"a": 1}, best_metric="loss"):
        pass
    assert sorted(os.listdir(d)) == ["config.json", "ranking.json"]
    monkeypatch.setattr(checkpoint, "_primary", lambda: False)
    with pytest.raises(ValueError, match="config differs"):  # every process checks
        Checkpointer(d, config={"a": 2})


# --------------------------------------------------------------------------- one run per directory


def _counting(calls):
    def data_at(p):
        calls.append(p)
        return data(p)

    return data_at


@pytest.mark.parametrize("stateful", [False, True])
def test_a_fresh_run_into_another_runs_directory_is_refused_before_its_first_step(
    trainer, tmp_path, stateful
):
    """Same config or another, stateful or stateless: the second run raises before its
    first batch, names what to do, and leaves the first run's directory and log as they
    were; overwrite=True replaces the first run."""
    d, log = tmp_path / "run", tmp_path / "log.jsonl"
    kw = dict(tbptt=K, stateful=stateful, progress=False, log_path=log)
    with Checkpointer(d, trainer=trainer, save_every=1, async_save=False) as ckpt:
        first, _ = fit(trainer, trainer.init(jax.random.key(0)), data, 2, checkpointer=ckpt, **kw)
    log_before = log.read_text()
    # the same settings, another seed, no restore
    calls = []
    with Checkpointer(d, trainer=trainer, save_every=1, async_save=False) as ckpt:
        with pytest.raises(ValueError, match="would not continue") as err:
            fit(
                trainer,
                trainer.init(jax.random.key(1)),
                _counting(calls),
                2,
                checkpointer=ckpt,
                **kw,
            )
    for what in ("new directory", "restore_or_init", "overwrite=True", str(d)):
        assert what in str(err.value)
    assert calls == [] and log.read_text() == log_before
    assert tree_equal(rj.load_run(d).state, first)  # the first run is still there
    # another architecture: the fields that differ, one line each, not two whole configs
    other = Trainer(
        SequenceModel(
            rj.Recurrent(rj.LSTM(E, H), recurrent_dropout=0.5), output_size=V, vocab_size=V
        )
    )
    with pytest.raises(ValueError, match="config differs") as err:
        Checkpointer(d, trainer=other, config={"note": "b"})
    lines = str(err.value).splitlines()
    assert lines[1:3] == [
        '  note: not in the saved config, got "b"',
        "  trainer.model.fields.layer.fields.recurrent_dropout: saved 0.25, got 0.5",
    ]
    assert "in 2 field(s)" in lines[0] and len(lines) == 4 and "overwrite=True" in lines[3]
    # an explicit overwrite replaces the first run
    with Checkpointer(d, trainer=other, save_every=1, async_save=False, overwrite=True) as ckpt:
        assert ckpt.all_steps() == []
        second, _ = fit(other, other.init(jax.random.key(1)), data, 1, checkpointer=ckpt, **kw)
    run = rj.load_run(d)
    assert run.trainer == other and run.step == 1 and tree_equal(run.state, second)


def test_a_run_from_an_older_checkpoint_and_save_never_replace_a_checkpoint(trainer, tmp_path):
    d = tmp_path / "run"
    state = trainer.init(jax.random.key(0))
    at = lambda s, p: s._replace(position=jnp.asarray(p, jnp.int32))  # noqa: E731
    with Checkpointer(d, save_every=1, async_save=False) as ckpt:
        assert ckpt.save(at(state, 1)) and ckpt.save(at(state, 2))
        ckpt.check_start(at(state, 2))  # the newest checkpoint's state: a resume
        ckpt.check_start(at(state, 3))  # past the newest: nothing collides
        with pytest.raises(ValueError, match=r"position 1 .*steps \[1, 2\]"):
            ckpt.check_start(ckpt.restore(trainer.abstract_state(), 1))  # older: 2 collides
    other = trainer.init(jax.random.key(1))
    with Checkpointer(d, save_every=1, async_save=False) as ckpt:
        with pytest.raises(ValueError, match="step 2 of another state"):
            ckpt.check_start(at(other, 2))
        with pytest.raises(ValueError, match="another state is saved at step 2"):
            ckpt.save(at(other, 2), force=True)
        assert not ckpt.save(at(state, 2), force=True)  # this very state: nothing to do
        assert tree_equal(ckpt.restore(trainer.abstract_state(), 2), at(state, 2))


def test_restore_or_init_resumes_exactly_or_starts_fresh(trainer, uninterrupted, tmp_path):
    """The same two lines start the run and resume it after a stop at batch 5: the
    resumed run's losses and final state equal the uninterrupted run's."""
    full_state, full_hist = uninterrupted
    d = tmp_path / "run"

    def run(callback=None):
        with Checkpointer(d, trainer=trainer, save_every=2, keep_last=2) as ckpt:
            state = ckpt.restore_or_init(trainer, jax.random.key(0))
            start = int(state.position)
            kw = dict(tbptt=K, stateful=True, progress=False, callback=callback)
            state, hist = fit(trainer, state, data, N, checkpointer=ckpt, **kw)
        return start, state, hist

    def kill(state, m):
        if int(state.position) == 5:
            raise Killed

    with pytest.raises(Killed):
        run(kill)
    start, state, hist = run()
    assert start == 4
    assert [h["loss"] for h in hist] == [h["loss"] for h in full_hist[4:]]
    assert tree_equal(state, full_state)
    # a fresh start is trainer.init(key); a damaged newest step is an error, never a start
    with Checkpointer(tmp_path / "fresh") as ckpt:
        assert tree_equal(
            ckpt.restore_or_init(trainer, jax.random.key(3)), trainer.init(jax.random.key(3))
        )
    os.makedirs(d / str(N + 1))
    with pytest.raises(CheckpointError, match=str(d / str(N + 1))):
        Checkpointer(d, create=False).restore_or_init(trainer, jax.random.key(0))
    with pytest.raises(TypeError, match="trainer must be"):
        Checkpointer(tmp_path / "fresh").restore_or_init(trainer.model, jax.random.key(0))
