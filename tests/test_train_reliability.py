"""Reliability of the training stack under non-finite values, empty batches and a
guarded checkpoint config: a skipped update changes nothing (model, optimiser, carry),
a non-finite metric never ranks a checkpoint, an all-padding batch is a reported no-op,
and the config guard and dtype checks hold without ``config.json``."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.checkpoint import Checkpointer
from rnnjax.train import Trainer, fit

V, E, H, B, T, K = 5, 3, 4, 2, 4, 2
REG = Trainer(SequenceModel(rj.GRU(E, H), output_size=2), loss="mse")
LM = Trainer(SequenceModel(rj.GRU(E, H), output_size=V, vocab_size=V))


def tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(bool(jnp.array_equal(x, y)) for x, y in zip(la, lb))


def reg_batch(p, nan_at=None):
    r = np.random.default_rng((3, p))
    x = r.normal(size=(B, T, E)).astype(np.float32)
    if nan_at is not None:
        x[0, nan_at, 0] = np.nan
    return {"inputs": jnp.asarray(x), "targets": jnp.asarray(r.normal(size=(B, T, 2)), jnp.float32)}


def inner(opt_state):
    return opt_state.inner_state  # apply_if_finite's wrapped optimiser state


def test_skipped_update_in_stateful_tbptt_keeps_params_optimiser_and_carry():
    s0 = REG.init(jax.random.key(0))
    s1, _ = REG.tbptt_step(s0, reg_batch(0), K, stateful=True)
    # NaN in the last chunk: that chunk's update is skipped, the carry stays the one
    # after the first chunk, exactly as a run of the first chunk alone leaves it
    s2, m = REG.tbptt_step(s1, reg_batch(1, nan_at=T - 1), K, stateful=True)
    assert list(np.asarray(m["skipped"])) == [False, True]
    half = {k: v[:, :K] for k, v in reg_batch(1).items()}
    ref, _ = REG.tbptt_step(s1, half, K, stateful=True)
    assert tree_equal(s2.carry, ref.carry)
    assert tree_equal(s2.params, ref.params)
    assert tree_equal(inner(s2.opt_state), inner(ref.opt_state))
    # k = T, NaN anywhere: the whole batch is one skipped update: nothing moves
    s3, m = REG.tbptt_step(s1, reg_batch(1, nan_at=0), T, stateful=True)
    assert bool(m["skipped"][0])
    assert tree_equal(s3.carry, s1.carry) and tree_equal(s3.params, s1.params)
    assert tree_equal(inner(s3.opt_state), inner(s1.opt_state))
    # later batches train again (the carry is finite)
    s4, m = REG.tbptt_step(s3, reg_batch(2), K, stateful=True)
    assert not bool(jnp.any(m["skipped"]))
    assert all(bool(jnp.all(jnp.isfinite(c))) for c in jax.tree_util.tree_leaves(s4.carry))


def test_fit_with_checkpointer_survives_a_nan_batch_in_stateful_tbptt(tmp_path):
    def data(p):
        return reg_batch(p, nan_at=0 if p == 1 else None)

    with Checkpointer(tmp_path / "c", async_save=False) as ckpt:
        with pytest.warns(RuntimeWarning, match="batch 1: non-finite"):
            state, hist = fit(
                REG,
                REG.init(jax.random.key(0)),
                data,
                4,
                tbptt=K,
                stateful=True,
                checkpointer=ckpt,
                progress=False,
            )
        assert ckpt.all_steps()[-1] == 4
    assert [any(h["skipped"]) for h in hist] == [False, True, False, False]


def test_a_non_finite_metric_never_ranks_a_checkpoint(tmp_path):
    state = LM.init(jax.random.key(0))
    losses = [0.892, 0.044, 0.5, float("nan"), 36.6, float("inf"), 0.7]
    with Checkpointer(tmp_path / "c", keep_last=1, best_metric="loss", async_save=False) as ckpt:
        for i, loss in enumerate(losses):
            ckpt.save(
                state._replace(position=jnp.asarray(i + 1, jnp.int32)),
                metrics={"loss": loss},
                force=True,
            )
        ckpt.wait()
        assert ckpt.best_step() == 2
        assert 2 in ckpt.all_steps() and ckpt.all_steps()[-1] == 7
    with Checkpointer(
        tmp_path / "d", keep_last=1, best_metric="acc", best_mode="max", async_save=False
    ) as ckpt:
        for i, acc in enumerate([float("nan"), float("nan")]):
            ckpt.save(
                state._replace(position=jnp.asarray(i + 1, jnp.int32)),
                metrics={"acc": acc},
                force=True,
            )
        assert ckpt.best_step() is None  # nothing was ranked


def test_fit_keeps_the_true_best_checkpoint_past_nan_batches(tmp_path):
    def data(p):
        return reg_batch(p, nan_at=0 if p in (2, 3) else None)

    with Checkpointer(tmp_path / "c", keep_last=1, best_metric="loss", async_save=False) as ckpt:
        with pytest.warns(RuntimeWarning):
            _, hist = fit(
                REG, REG.init(jax.random.key(0)), data, 5, checkpointer=ckpt, progress=False
            )
        finite = {i + 1: h["loss"] for i, h in enumerate(hist) if np.isfinite(h["loss"])}
        assert ckpt.best_step() == min(finite, key=finite.get)
        assert ckpt.best_step() in ckpt.all_steps()


def test_all_padding_batch_is_a_reported_no_op_like_tbptt_k_equal_T():
    s0 = LM.init(jax.random.key(0))
    r = np.random.default_rng(0)
    batch = {
        "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
        "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
    }
    s1, _ = LM.train_step(s0, batch)  # a first update so Adam has momentum
    empty = dict(batch, length=jnp.zeros((B,), jnp.int32))
    s2, m = LM.train_step(s1, empty)
    assert int(m["tokens"]) == 0 and not bool(m["skipped"])
    assert tree_equal(s2.params, s1.params)
    assert tree_equal(inner(s2.opt_state), inner(s1.opt_state))
    assert int(s2.position) == int(s1.position) + 1 and int(s2.step) == int(s1.step) + 1
    s3, m3 = LM.tbptt_step(s1, empty, T)
    assert int(m3["tokens"][0]) == 0 and not bool(m3["skipped"][0])
    assert tree_equal(s3.params, s2.params)
    np.testing.assert_array_equal(np.asarray(m3["loss"][0]), np.asarray(m["loss"]))
    assert int(optax.tree_utils.tree_get(s2.opt_state, "count")) == 1


def test_fit_reports_an_all_padding_batch(tmp_path):
    def data(p):
        r = np.random.default_rng(p)
        b = {
            "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
            "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
            "length": jnp.full((B,), 0 if p == 1 else T, jnp.int32),
        }
        return b

    with pytest.warns(RuntimeWarning, match="batch 1 has no real step"):
        _, hist = fit(LM, LM.init(jax.random.key(0)), data, 3, progress=False)
    assert [h["tokens"] for h in hist] == [B * T, 0, B * T]


def _save_one(directory, config):
    state = LM.init(jax.random.key(0))._replace(position=jnp.asarray(1, jnp.int32))
    with Checkpointer(directory, config=config, async_save=False) as ckpt:
        ckpt.save(state, force=True)
    return state


def test_config_guard_checks_the_integrity_record_without_config_json(tmp_path):
    d = tmp_path / "c"
    _save_one(d, {"lr": 0.001})
    os.remove(d / "config.json")
    with pytest.raises(ValueError, match="config differs from the one recorded"):
        Checkpointer(d, config={"lr": 0.1})
    # the same config is accepted (and config.json is written again)
    with Checkpointer(d, config={"lr": 0.001}) as ckpt:
        ckpt.restore(LM.abstract_state())
    assert (d / "config.json").exists()


def test_restore_into_another_dtype_is_a_clear_dtype_error(tmp_path):
    d = tmp_path / "c"
    _save_one(d, None)
    target = LM.abstract_state()
    bf16 = target._replace(
        params=jax.tree_util.tree_map(
            lambda a: jax.ShapeDtypeStruct(a.shape, jnp.bfloat16), target.params
        )
    )
    with Checkpointer(d, create=False) as ckpt:
        with pytest.raises(ValueError, match=r"dtype.*params.*float32.*bfloat16") as err:
            ckpt.restore(bf16)
        assert "SHA-256" not in str(err.value) and "damaged" not in str(err.value)
