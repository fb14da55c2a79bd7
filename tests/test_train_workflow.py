"""The researcher's workflow around the training loop: validation inside ``fit``, the best
checkpoint by a validation metric, early stopping, resume without duplicate log rows,
streams for stateful truncated BPTT and their evaluation, a corpus that never trains on
its validation part, JSON-clean configs, a run restored from its directory alone in a new
process, and progress lines when standard output is not a terminal."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.checkpoint import Checkpointer, load_run
from rnnjax.spec import from_spec, to_spec
from rnnjax.tasks.language import StreamBatcher, TextCorpus
from rnnjax.train import (
    EarlyStopping,
    Trainer,
    evaluate_batches,
    evaluate_stream,
    fit,
    optimizer,
    schedule,
)

V, E, H, B, T, K = 5, 3, 4, 2, 4, 2
LM = Trainer(SequenceModel(rj.GRU(E, H), output_size=V, vocab_size=V), clip_norm=1.0)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def data(p):
    r = np.random.default_rng((11, p))
    return {
        "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
        "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
    }


VALID = [data(100), data(101)]


def valid_metrics(params):
    return evaluate_batches(LM, params, VALID, prefix="valid_")


def tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(bool(jnp.array_equal(x, y)) for x, y in zip(la, lb))


def rows_of(path):
    return [json.loads(line) for line in open(path).read().splitlines()]


# --------------------------------------------------------------------------- validation


def test_evaluate_batches_is_the_token_weighted_mean_of_trainer_evaluate():
    params = LM.init(jax.random.key(1)).params
    b2 = dict(data(5), length=jnp.asarray([3, 1], jnp.int32))
    got = evaluate_batches(LM, params, [data(4), b2], prefix="v_")
    m1, m2 = LM.evaluate(params, data(4)), LM.evaluate(params, b2)
    n1, n2 = int(m1["tokens"]), int(m2["tokens"])
    want = (float(m1["loss"]) * n1 + float(m2["loss"]) * n2) / (n1 + n2)
    assert got["v_tokens"] == n1 + n2 == B * T + 4
    assert got["v_loss"] == pytest.approx(want, rel=1e-6)
    assert got["v_ppl"] == pytest.approx(np.exp(want), rel=1e-6)


def test_fit_validates_logs_and_keeps_the_best_checkpoint_by_validation(tmp_path):
    seen = {}

    def callback(state, m):
        seen[int(state.position)] = state.params

    log = tmp_path / "log.jsonl"
    with Checkpointer(
        tmp_path / "c", keep_last=1, best_metric="valid_ppl", async_save=False
    ) as ckpt:
        state, hist = fit(
            LM,
            LM.init(jax.random.key(0)),
            data,
            6,
            checkpointer=ckpt,
            log_path=log,
            progress=False,
            callback=callback,
            evaluate=valid_metrics,
            eval_every=2,
        )
        rows = rows_of(log)
        evals = {r["position"]: r["valid_ppl"] for r in rows if "valid_ppl" in r}
        assert sorted(evals) == [2, 4, 6]
        for p, ppl in evals.items():  # logged = recomputed from that position's params
            assert ppl == pytest.approx(valid_metrics(seen[p])["valid_ppl"], rel=1e-6)
        best = min(evals, key=evals.get)
        assert ckpt.best_step() == best and best in ckpt.all_steps()
        restored = ckpt.restore(LM.abstract_state(), best)
        assert tree_equal(restored.params, seen[best])


def test_early_stopping_stops_after_patience_and_a_resume_stops_at_the_same_place(tmp_path):
    script = {1: 3.0, 2: 2.0, 3: 2.5, 4: 2.4, 5: 1.0, 6: 0.5}
    where = {}

    def data_at(p):
        where["p"] = p
        return data(p)

    def evaluate(params):
        return {"valid_loss": script[where["p"] + 1]}

    stop = EarlyStopping("valid_loss", patience=2)
    log = tmp_path / "log.jsonl"
    kw = dict(progress=False, evaluate=evaluate, eval_every=1, early_stopping=stop, log_path=log)
    with Checkpointer(tmp_path / "c", async_save=False) as ckpt:
        state, hist = fit(LM, LM.init(jax.random.key(0)), data_at, 6, checkpointer=ckpt, **kw)
        assert int(state.position) == 4 and len(hist) == 4
        assert hist[-1]["stopped_early"] is True and "stopped_early" not in hist[-2]
        assert ckpt.latest_step() == 4
        # resumed from position 2 (rows 3, 4 are dropped and written again): stops at 4
        s2 = ckpt.restore(LM.abstract_state(), 2)
    state2, hist2 = fit(LM, s2, data_at, 6, **kw)
    assert int(state2.position) == 4 and [h["position"] for h in hist2] == [3, 4]
    assert tree_equal(state2.params, state.params)
    # resumed at the stop: nothing more to do
    state3, hist3 = fit(LM, state2, data_at, 6, **kw)
    assert hist3 == [] and int(state3.position) == 4
    assert [r["position"] for r in rows_of(log)] == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping("valid_loss", patience=0)


class Killed(Exception):
    pass


def test_resume_neither_loses_nor_duplicates_log_rows(tmp_path):
    full_log = tmp_path / "full.jsonl"
    fit(LM, LM.init(jax.random.key(0)), data, 7, log_path=full_log, progress=False)

    def kill_at_5(state, m):
        if int(state.position) == 5:
            raise Killed

    log = tmp_path / "log.jsonl"
    d = tmp_path / "c"
    with Checkpointer(d, save_every=2, async_save=False) as ckpt:
        with pytest.raises(Killed):
            fit(
                LM,
                LM.init(jax.random.key(0)),
                data,
                7,
                checkpointer=ckpt,
                log_path=log,
                progress=False,
                callback=kill_at_5,
            )
    assert [r["position"] for r in rows_of(log)] == [1, 2, 3, 4, 5]
    with Checkpointer(d, save_every=2, async_save=False) as ckpt:
        state = ckpt.restore(LM.abstract_state())
        assert int(state.position) == 4
        fit(LM, state, data, 7, checkpointer=ckpt, log_path=log, progress=False)
    rows, full = rows_of(log), rows_of(full_log)
    assert [r["position"] for r in rows] == list(range(1, 8))
    assert [r["loss"] for r in rows] == [r["loss"] for r in full]


# --------------------------------------------------------------------------- streams


def test_stream_batcher_windows_are_consecutive_pieces_of_b_streams():
    tokens = np.arange(53) % 7
    sb = StreamBatcher(tokens, batch_size=3, seq_len=4)
    L = 53 // 3
    assert sb.num_windows == (L - 1) // 4 == 4
    xs = np.concatenate([sb.batch(j)["inputs"] for j in range(sb.num_windows)], axis=1)
    ys = np.concatenate([sb.batch(j)["targets"] for j in range(sb.num_windows)], axis=1)
    for b in range(3):
        np.testing.assert_array_equal(xs[b], tokens[b * L : b * L + 16])
        np.testing.assert_array_equal(ys[b], tokens[b * L + 1 : b * L + 17])
    np.testing.assert_array_equal(sb.batch(sb.num_windows)["inputs"], sb.batch(0)["inputs"])
    ax, ay = sb.all_windows()
    assert ax.shape == (4, 3, 4)
    np.testing.assert_array_equal(ax[2], sb.batch(2)["inputs"])
    with pytest.raises(ValueError, match="at least"):
        StreamBatcher(np.arange(5), batch_size=3, seq_len=4)


def test_stream_evaluation_carries_the_state_like_one_long_unroll():
    params = LM.init(jax.random.key(3)).params
    tokens = np.random.default_rng(0).integers(0, V, 70)
    sb = StreamBatcher(tokens, batch_size=2, seq_len=5)
    got = evaluate_stream(LM, params, sb)
    # reference: each stream unrolled in one piece, float64 cross-entropy in numpy
    n = sb.num_windows * 5
    x = jnp.asarray(sb.streams[:, :n])
    y = np.asarray(sb.streams[:, 1 : n + 1])
    _, logits = LM.model.apply_batch(params, x)
    lg = np.asarray(logits, np.float64)
    lp = (
        lg
        - np.log(np.exp(lg - lg.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - lg.max(-1, keepdims=True)
    )
    nll = -np.take_along_axis(lp, y[..., None], -1)[..., 0]
    assert got["tokens"] == y.size
    assert got["loss"] == pytest.approx(nll.mean(), rel=1e-5)
    assert got["accuracy"] == pytest.approx(float(np.mean(lg.argmax(-1) == y)), abs=1e-7)
    # windowed evaluation restarts every window from zeros: a different number
    windowed = evaluate_batches(LM, params, [sb.batch(j) for j in range(sb.num_windows)])
    assert windowed["tokens"] == got["tokens"]
    assert abs(windowed["loss"] - got["loss"]) > 1e-4


def test_stateful_fit_on_streams_resets_the_carry_each_pass():
    sb = StreamBatcher(np.random.default_rng(1).integers(0, V, 2 * 13), batch_size=2, seq_len=4)
    assert sb.num_windows == 3
    s0 = LM.init(jax.random.key(0))
    state, _ = fit(
        LM, s0, sb, 4, tbptt=K, stateful=True, reset_every=sb.num_windows, progress=False
    )
    ref = s0
    for p in range(4):
        if p % 3 == 0:
            ref = LM.reset_carry(ref)
        ref, _ = LM.tbptt_step(ref, sb.batch(p), K, stateful=True)
    assert tree_equal(state.params, ref.params) and tree_equal(state.carry, ref.carry)


def test_text_corpus_never_trains_on_its_validation_part():
    text = "ab" * 60 + "cd" * 15  # the last 20 % is the validation part
    corpus = TextCorpus(text, train_fraction=0.8)
    train, valid = corpus.split()
    assert set(corpus.decode(valid)) == {"c", "d"} and set(corpus.decode(train)) == {"a", "b"}
    for p in range(50):
        b = corpus.batch(p, batch_size=4, seq_len=9)
        seen = corpus.decode(np.concatenate([b["inputs"], b["targets"]], axis=1))
        assert set(seen) <= {"a", "b"}
    # asking split() for another fraction moves the training part with it
    corpus.split(0.5)
    assert corpus.train_fraction == 0.5 and len(corpus.train_tokens) == len(text) // 2
    assert corpus.streams(2, 4, part="valid").streams.shape[0] == 2


# --------------------------------------------------------------------------- configs


def test_trainer_config_is_json_clean_and_rebuilds_an_equal_trainer():
    model = SequenceModel(
        rj.Stacked([rj.LSTM(E, H, proj_size=2), rj.GRU(2, H)]), output_size=V, vocab_size=V
    )
    trainers = [
        Trainer(
            model,
            learning_rate=schedule(
                "warmup_cosine_decay_schedule",
                init_value=0.0,
                peak_value=1e-3,
                warmup_steps=5,
                decay_steps=50,
            ),
        ),
        Trainer(
            model,
            optimizer=optimizer("adamw", learning_rate=1e-3, weight_decay=1e-4),
            loss=rj.metrics.cross_entropy
            if hasattr(rj.metrics, "cross_entropy")
            else "cross_entropy",
            frozen=("embed",),
        ),
    ]
    for tr in trainers:
        text = json.dumps(tr.config())
        assert "0x" not in text and " at " not in text
        back = Trainer.from_config(json.loads(text))
        assert back == tr and back.model == tr.model
    cell = rj.LSTM(E, H, param_dtype=jnp.bfloat16)
    assert from_spec(json.loads(json.dumps(to_spec(cell)))) == cell


@pytest.mark.parametrize(
    "field, kwargs",
    [
        (
            "learning_rate",
            {"learning_rate": __import__("optax").schedules.cosine_decay_schedule(1e-3, 10)},
        ),
        ("loss", {"loss": lambda out, y, mask: jnp.mean((out - y) ** 2)}),
        ("optimizer", {"optimizer": __import__("optax").adam(1e-3)}),
    ],
)
def test_an_unrecordable_setting_is_refused_naming_the_field(field, kwargs):
    tr = Trainer(LM.model, **kwargs)
    with pytest.raises(TypeError, match=rf"^{field} cannot be recorded"):
        tr.config()
    with pytest.raises(TypeError, match=field):
        Checkpointer("/nonexistent/never/made", trainer=tr)


_CHILD = r"""
import sys, numpy as np, jax, jax.numpy as jnp
from rnnjax.checkpoint import load_run
run = load_run(sys.argv[1])
r = np.random.default_rng((11, int(run.state.position)))
batch = {"inputs": jnp.asarray(r.integers(0, 5, (2, 4)), jnp.int32),
         "targets": jnp.asarray(r.integers(0, 5, (2, 4)), jnp.int32)}
nxt, m = run.trainer.tbptt_step(run.state, batch, 2, stateful=True)
leaves = lambda t: {str(i): np.asarray(a) for i, a in enumerate(jax.tree_util.tree_leaves(t))}
np.savez(sys.argv[2] + "_params.npz", **leaves(run.state.params))
np.savez(sys.argv[2] + "_next.npz", **leaves((nxt.params, nxt.carry, nxt.opt_state)))
print(type(run.trainer.model.layer.cell).__name__, run.step)
"""


def test_restore_from_the_directory_alone_in_a_new_process(tmp_path):
    tr = Trainer(
        SequenceModel(rj.LSTM(E, H), output_size=V, vocab_size=V),
        learning_rate=schedule(
            "exponential_decay", init_value=1e-2, transition_steps=2, decay_rate=0.5
        ),
    )
    d = tmp_path / "run"
    with Checkpointer(d, trainer=tr, async_save=False) as ckpt:
        state, _ = fit(
            tr,
            tr.init(jax.random.key(0)),
            data,
            3,
            tbptt=K,
            stateful=True,
            checkpointer=ckpt,
            progress=False,
        )
    nxt, _ = tr.tbptt_step(state, data(3), K, stateful=True)
    out = str(tmp_path / "child")
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, str(d), out],
        capture_output=True,
        text=True,
        timeout=300,
        env=dict(os.environ, PYTHONPATH=ROOT),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["LSTM", "3"]
    got = np.load(out + "_params.npz")
    for i, a in enumerate(jax.tree_util.tree_leaves(state.params)):
        np.testing.assert_array_equal(got[str(i)], np.asarray(a))
    got = np.load(out + "_next.npz")
    for i, a in enumerate(jax.tree_util.tree_leaves((nxt.params, nxt.carry, nxt.opt_state))):
        np.testing.assert_array_equal(got[str(i)], np.asarray(a))
    # in this process too, and the rebuilt trainer equals the one trained
    run = load_run(d)
    assert run.trainer == tr and tree_equal(run.state, state)


# --------------------------------------------------------------------------- progress


def test_progress_prints_plain_lines_when_stdout_is_not_a_terminal(capsys):
    fit(
        LM, LM.init(jax.random.key(0)), data, 4, progress=True, evaluate=valid_metrics, eval_every=2
    )
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("train ")]
    assert [ln.split()[1] for ln in lines] == ["1/4", "2/4", "3/4", "4/4"]
    assert "valid_ppl" in lines[1] and "valid_ppl" not in lines[0]
    assert "steps/s" in lines[-1] and "eta" in lines[-1]
