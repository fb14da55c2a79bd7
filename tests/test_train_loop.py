"""The fit loop's workflow features: a stateful run restored from
``trainer.abstract_state()`` (batch size read from the checkpoint), the checkpointer's
default cadence, the learning rate in the log, ``schedule_unit`` checked against a plain
SGD reference, stale validation values marked, CSV and TensorBoard writers, clear
errors for ``evaluate``-less early stopping and TrainState/params mix-ups, the
vocabulary given back by ``load_run``, and Ctrl-C as a clean stop (a subprocess gets
SIGINT)."""

import json
import os
import struct
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.checkpoint import Checkpointer, load_run
from rnnjax.progress import CsvWriter, ProgressLog, TensorBoardWriter
from rnnjax.tasks.language import TextCorpus, Vocabulary
from rnnjax.train import EarlyStopping, Trainer, evaluate_batches, fit, schedule

V, E, H, B, T, K = 5, 3, 4, 2, 4, 2
MODEL = SequenceModel(rj.GRU(E, H), output_size=V, vocab_size=V)
LR = schedule("linear_schedule", init_value=0.1, end_value=0.0, transition_steps=8)
LM = Trainer(MODEL, learning_rate=LR)  # counts updates (the default)
LM_BATCH = Trainer(MODEL, learning_rate=LR, schedule_unit="batch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data(p):
    r = np.random.default_rng((7, p))
    return {
        "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
        "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
    }


def tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(bool(jnp.array_equal(x, y)) for x, y in zip(la, lb))


@pytest.fixture(scope="module")
def stateful_run(tmp_path_factory):
    """A stateful TBPTT run of 4 batches, checkpointed at 2 and 4, with a CSV writer."""
    d = tmp_path_factory.mktemp("stateful")
    with Checkpointer(d / "ckpt", trainer=LM, save_every=2, async_save=False) as ckpt:
        state, hist = fit(
            LM,
            LM.init(jax.random.key(0)),
            data,
            4,
            tbptt=K,
            stateful=True,
            checkpointer=ckpt,
            progress=False,
            log_path=d / "log.jsonl",
            writers=CsvWriter(d / "m.csv"),
        )
    return d, state, hist


# --------------------------------------------------------------------------- stateful resume


def test_stateful_run_restores_from_abstract_state_without_batch_size(stateful_run):
    d, state, _ = stateful_run
    assert state.carry is not None
    with Checkpointer(d / "ckpt", create=False) as ckpt:
        back = ckpt.restore(LM.abstract_state())  # as the Training page teaches
        assert type(back.carry) is type(state.carry)
        assert tree_equal(back, state)
        two = ckpt.restore(LM.abstract_state(), 2)
    # resuming from batch 2 gives the uninterrupted run's numbers exactly
    resumed, _ = fit(LM, two, data, 4, tbptt=K, stateful=True, progress=False)
    assert tree_equal(resumed, state)


def test_stateful_restore_without_a_recorded_trainer_names_batch_size(stateful_run, tmp_path):
    _, state, _ = stateful_run
    with Checkpointer(tmp_path / "c", async_save=False) as ckpt:  # no trainer= record
        ckpt.save(state, force=True)
        with pytest.raises(ValueError, match=r"batch_size=2"):
            ckpt.restore(LM.abstract_state())
        assert tree_equal(ckpt.restore(LM.abstract_state(batch_size=B)), state)


# --------------------------------------------------------------------------- cadence


def test_checkpointer_default_cadence_is_batches_or_seconds(tmp_path):
    state = LM.init(jax.random.key(0))
    at = lambda p: state._replace(position=jnp.asarray(p, jnp.int32))
    with Checkpointer(tmp_path / "a", async_save=False) as ckpt:
        assert ckpt.options.save_interval_s == 300.0
        assert [ckpt.save(at(p)) for p in (1, 2, 99)] == [False, False, False]
        assert ckpt.save(at(100))
    # the clock: with a tiny interval every call saves, whatever the position
    with Checkpointer(tmp_path / "b", save_interval_s=1e-9, async_save=False) as ckpt:
        assert [ckpt.save(at(p)) for p in (1, 2, 3)] == [True, True, True]
    with Checkpointer(tmp_path / "c", save_every=2, save_interval_s=None) as ckpt:
        assert [ckpt.save(at(p)) for p in (1, 2, 3)] == [False, True, False]


# --------------------------------------------------------------------------- learning rate


def test_learning_rate_is_logged_per_row_at_the_update_count(stateful_run):
    d, _, hist = stateful_run
    n = T // K  # updates per batch
    # after batch p the last update was number (p + 1) n - 1, at count (p + 1) n - 1
    want = [float(LR((p + 1) * n - 1)) for p in range(4)]
    np.testing.assert_allclose([r["lr"] for r in hist], want, rtol=1e-6)
    rows = [json.loads(x) for x in open(d / "log.jsonl").read().splitlines()]
    np.testing.assert_allclose([r["lr"] for r in rows], want, rtol=1e-6)


def test_schedule_unit_batch_equals_sgd_at_the_batch_rate():
    """Every chunk of batch p uses lr(p): the same as plain SGD at the constant rate
    lr(p) for that batch (an independent reference: optax.sgd, no scaling trick)."""
    tb = Trainer(MODEL, optimizer="sgd", learning_rate=LR, schedule_unit="batch")
    state, hist = fit(tb, tb.init(jax.random.key(1)), data, 2, tbptt=K, progress=False)
    ref = tb.init(jax.random.key(1))
    for p in range(2):
        fixed = Trainer(MODEL, optimizer="sgd", learning_rate=float(LR(p)))
        s = fixed.init(jax.random.key(1), params=ref.params)._replace(
            key=ref.key, position=ref.position, step=ref.step
        )
        ref, _ = fixed.tbptt_step(s, data(p), K)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose([r["lr"] for r in hist], [float(LR(0)), float(LR(1))])
    # and it differs from counting updates (two per batch here)
    assert float(LR(1)) != float(LR(3))
    assert tb.config()["schedule_unit"] == "batch"
    assert Trainer.from_config(tb.config()) == tb
    assert "schedule_unit" not in LM.config()  # the default keeps old configs valid


def test_learning_rate_at_counts_applied_updates_only():
    st = LM.init(jax.random.key(0))
    assert LM.learning_rate_at(st) == pytest.approx(float(LR(0)))
    st2, _ = LM.train_step(st, data(0))
    st3, _ = LM.train_step(st2, data(1))
    assert LM.learning_rate_at(st3) == pytest.approx(float(LR(1)))
    nan_params = jax.tree_util.tree_map(lambda a: a * jnp.nan, st3.params)
    st4, m = LM.train_step(st3._replace(params=nan_params), data(2))
    assert bool(m["skipped"])
    assert LM.learning_rate_at(st4) == pytest.approx(float(LR(1)))  # skipped: not counted
    assert Trainer(MODEL, learning_rate=0.02).learning_rate_at(st) == 0.02


# --------------------------------------------------------------------------- progress and writers


def test_stale_validation_values_are_marked_with_their_position():
    import io

    out = io.StringIO()
    with ProgressLog(3, enabled="plain", every=1, stream=out) as log:
        log.update(1, {"loss": 1.0, "lr": 0.5, "valid_loss": 2.0}, show=True)
        log.update(2, {"loss": 0.9, "lr": 0.25})
        log.update(3, {"loss": 0.8, "lr": 0.125, "valid_loss": 1.5})
    lines = out.getvalue().splitlines()
    assert "valid_loss 2  " in lines[0] and "(at" not in lines[0] and "lr 0.5" in lines[0]
    assert "valid_loss 2 (at 1)" in lines[1]
    assert "valid_loss 1.5" in lines[2] and "(at" not in lines[2]


def test_csv_writer_rows_columns_and_resume(stateful_run, tmp_path):
    import csv

    d, _, hist = stateful_run
    rows = list(csv.DictReader(open(d / "m.csv")))
    assert [int(r["position"]) for r in rows] == [1, 2, 3, 4]
    # TBPTT's per-chunk losses become their token-weighted mean (equal tokens: the mean)
    np.testing.assert_allclose(
        [float(r["loss"]) for r in rows], [np.mean(h["loss"]) for h in hist], rtol=1e-6
    )
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [h["lr"] for h in hist])
    w = CsvWriter(tmp_path / "r.csv")
    w.open(0)
    for p in (1, 2, 3):
        w.write(p, {"loss": float(p)})
    w.write(4, {"loss": 4.0, "valid_loss": 0.5, "stopped": True})
    w.close()
    w.open(2)  # a run resumed at 2 writes 3 and 4 again
    w.write(3, {"loss": 30.0})
    w.close()
    rows = list(csv.DictReader(open(tmp_path / "r.csv")))
    assert [(r["position"], r["loss"], r["valid_loss"]) for r in rows] == [
        ("1", "1.0", ""),
        ("2", "2.0", ""),
        ("3", "30.0", ""),
    ]


def _tb_scalars(logdir):
    """``{tag: [(step, value)]}`` read back from the event files (TFRecord framing)."""
    from tensorboardX.proto import event_pb2

    out = {}
    for name in sorted(os.listdir(logdir)):
        raw = open(os.path.join(logdir, name), "rb").read()
        i = 0
        while i < len(raw):
            (n,) = struct.unpack("<Q", raw[i : i + 8])
            ev = event_pb2.Event.FromString(raw[i + 12 : i + 12 + n])
            i += 12 + n + 4
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((ev.step, v.simple_value))
    return out


def test_tensorboard_writer_through_fit(tmp_path):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    _, hist = fit(
        LM,
        LM.init(jax.random.key(0)),
        data,
        2,
        progress=False,
        writers=[TensorBoardWriter(logdir)],
        evaluate=lambda p: evaluate_batches(LM, p, [data(9)], prefix="valid_"),
    )
    got = _tb_scalars(logdir)
    assert [s for s, _ in got["loss"]] == [1, 2]
    np.testing.assert_allclose([v for _, v in got["loss"]], [h["loss"] for h in hist], rtol=1e-6)
    np.testing.assert_allclose([v for _, v in got["lr"]], [h["lr"] for h in hist], rtol=1e-6)
    assert [s for s, _ in got["valid_loss"]] == [2]


# --------------------------------------------------------------------------- clear errors


def test_early_stopping_and_eval_every_need_evaluate():
    st = LM.init(jax.random.key(0))
    with pytest.raises(ValueError, match="early_stopping.*evaluate"):
        fit(LM, st, data, 2, early_stopping=EarlyStopping("valid_loss"), progress=False)
    with pytest.raises(ValueError, match="eval_every"):
        fit(LM, st, data, 2, eval_every=1, progress=False)


def test_a_metric_never_logged_warns_after_the_first_evaluation():
    st = LM.init(jax.random.key(0))
    with pytest.warns(RuntimeWarning, match="'valid_los' is not among the logged metrics"):
        fit(
            LM,
            st,
            data,
            1,
            evaluate=lambda p: {"valid_loss": 1.0},
            early_stopping=EarlyStopping("valid_los"),
            progress=False,
        )


def test_trainstate_and_params_mix_ups_name_the_argument():
    st = LM.init(jax.random.key(0))
    with pytest.raises(TypeError, match="params must be the model parameters; got a TrainState"):
        LM.evaluate(st, data(0))
    with pytest.raises(TypeError, match="params .*TrainState"):
        evaluate_batches(LM, st, [data(0)])
    with pytest.raises(TypeError, match="state must be a TrainState; got dict"):
        fit(LM, st.params, data, 1, progress=False)
    with pytest.raises(TypeError, match="state must be a TrainState; got dict"):
        LM.train_step(st.params, data(0))
    from rnnjax import distributed

    with pytest.raises(TypeError, match="state must be a TrainState; got dict"):
        distributed.fit(LM, st.params, data, 1, progress=False)


# --------------------------------------------------------------------------- vocabulary


def test_load_run_gives_back_the_vocabulary_of_a_text_corpus(tmp_path):
    corpus = TextCorpus("the cat sat on the mat. " * 6, train_fraction=0.8)
    tr = Trainer(
        SequenceModel(rj.GRU(3, 4), output_size=corpus.vocab_size, vocab_size=corpus.vocab_size)
    )
    with Checkpointer(tmp_path / "c", trainer=tr, data=corpus, async_save=False) as ckpt:
        fit(
            tr,
            tr.init(jax.random.key(0)),
            lambda p: corpus.batch(p, 2, 6),
            1,
            checkpointer=ckpt,
            progress=False,
        )
    run = load_run(tmp_path / "c")
    vocab = run.vocabulary
    assert isinstance(vocab, Vocabulary) and vocab.vocab == corpus.vocab
    prompt = vocab.encode("the mat")
    np.testing.assert_array_equal(prompt, corpus.encode("the mat"))
    logits = run.trainer.model.apply(run.state.params, jnp.asarray(prompt))[1]
    assert len(vocab.decode(jnp.argmax(logits, -1))) == len(prompt)
    assert vocab.decode(prompt) == "the mat"
    with pytest.raises(ValueError, match="outside the vocabulary"):
        vocab.encode("dog!")
    # a run written without data= has no vocabulary
    assert run._replace(config={}).vocabulary is None


# --------------------------------------------------------------------------- Ctrl-C


def test_ctrl_c_in_fit_waits_for_the_save_closes_the_writers_and_raises_again(tmp_path, capsys):
    """In process: fit never ends the process; the KeyboardInterrupt comes back to the
    caller after the save in flight, the writers' close and the one-line resume hint."""
    closed = []

    class Writer(CsvWriter):
        def close(self):
            closed.append(True)
            super().close()

    def data_until_3(p):
        if p == 3:
            raise KeyboardInterrupt
        return data(p)

    with Checkpointer(tmp_path / "c", save_every=2) as ckpt:  # asynchronous saves
        with pytest.raises(KeyboardInterrupt):
            fit(
                LM,
                LM.init(jax.random.key(0)),
                data_until_3,
                6,
                checkpointer=ckpt,
                progress=False,
                writers=Writer(tmp_path / "m.csv"),
            )
        assert ckpt.all_steps() == [2]
        assert int(ckpt.restore(LM.abstract_state()).position) == 2
    assert closed == [True]
    lines = [x for x in capsys.readouterr().err.splitlines() if "interrupted" in x]
    assert len(lines) == 1 and "after batch 3: last checkpoint at position 2" in lines[0]
    with Checkpointer(tmp_path / "c", save_every=2) as ckpt:  # the old attribute warns
        with pytest.warns(DeprecationWarning, match="Checkpointer.options.save_every"):
            assert ckpt.save_every == 2


_INTERRUPTED = textwrap.dedent(
    """
    import os, signal, sys
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, {root!r})
    import rnnjax as rj
    from rnnjax.blocks import SequenceModel
    from rnnjax.train import Trainer, fit, schedule
    V, E, H, B, T, K = 5, 3, 4, 2, 4, 2
    LR = schedule("linear_schedule", init_value=0.1, end_value=0.0, transition_steps=8)
    LM = Trainer(SequenceModel(rj.GRU(E, H), output_size=V, vocab_size=V), learning_rate=LR)

    def data(p):
        if p == 5:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while batch 5 is being read
        r = np.random.default_rng((7, p))
        return {{
            "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
            "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
        }}

    try:
        with rj.Checkpointer({d!r}, trainer=LM, save_every=2) as ckpt:  # asynchronous saves
            fit(LM, LM.init(jax.random.key(0)), data, 8, tbptt=K, stateful=True,
                checkpointer=ckpt, progress=False, log_path={log!r})
    except KeyboardInterrupt:  # fit raises it again: the script's entry point ends with 130
        print("KeyboardInterrupt raised")
        sys.exit(130)
    print("NOT REACHED")
    """
)


@pytest.mark.slow
def test_ctrl_c_is_a_clean_stop_and_the_run_resumes_exactly(tmp_path):
    d, log = str(tmp_path / "ckpt"), str(tmp_path / "log.jsonl")
    script = _INTERRUPTED.format(root=ROOT, d=d, log=log)
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    p = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=600
    )
    assert p.returncode == 130, p.stderr[-3000:]
    assert "KeyboardInterrupt raised" in p.stdout, p.stdout  # fit never ends the process
    assert "NOT REACHED" not in p.stdout and "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [x for x in p.stderr.splitlines() if "interrupted" in x]
    assert len(lines) == 1, p.stderr
    assert "fit interrupted after batch 5: last checkpoint at position 4" in lines[0]
    assert "restore(trainer.abstract_state())" in lines[0]
    # the directory restores exactly, and the resumed run equals an uninterrupted one
    with Checkpointer(d, create=False) as ckpt:
        state = ckpt.restore(LM.abstract_state())
    assert int(state.position) == 4
    with Checkpointer(d, trainer=LM, save_every=2, async_save=False) as ckpt:
        resumed, _ = fit(
            LM,
            state,
            data,
            8,
            tbptt=K,
            stateful=True,
            checkpointer=ckpt,
            progress=False,
            log_path=log,
        )
    straight, _ = fit(
        LM, LM.init(jax.random.key(0)), data, 8, tbptt=K, stateful=True, progress=False
    )
    assert tree_equal(resumed, straight)
    rows = [json.loads(x) for x in open(log).read().splitlines()]
    assert [r["position"] for r in rows] == list(range(1, 9))
