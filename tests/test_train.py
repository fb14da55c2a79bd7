"""Tests for rnnjax.train: optimiser factory, train step, loss heads, truncated BPTT, fit.

References are independent of the code under test: losses recomputed in numpy float64
from the model outputs, gradients from ``jax.grad`` of a loss written here, TBPTT
against a plain Python loop over chunks, optax updates applied by hand.
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from rnnjax.blocks import SequenceModel
from rnnjax.train import Trainer, fit, frozen_labels, make_optimizer

V, E, H, B, T = 5, 3, 4, 3, 6
LM_MODEL = SequenceModel(rj.LSTM(E, H), output_size=V, vocab_size=V)


def tree_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    return len(la) == len(lb) and all(bool(jnp.array_equal(x, y)) for x, y in zip(la, lb))


def tree_maxdiff(a, b):
    return max(
        float(jnp.max(jnp.abs(x - y)))
        for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    )


def token_batch(seed=0, length=True):
    r = np.random.default_rng(seed)
    b = {
        "inputs": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
        "targets": jnp.asarray(r.integers(0, V, (B, T)), jnp.int32),
    }
    if length:
        b["length"] = jnp.asarray([T, 4, 1], jnp.int32)
    return b


def float_batch(seed=0, O=2, T_=T):
    r = np.random.default_rng(seed)
    return {
        "inputs": jnp.asarray(r.normal(size=(B, T_, E)), jnp.float32),
        "targets": jnp.asarray(r.normal(size=(B, T_, O)), jnp.float32),
    }


@pytest.fixture(scope="module")
def lm_trainer():
    return Trainer(LM_MODEL, clip_norm=0.5)


@pytest.fixture(scope="module")
def reg_model():
    return SequenceModel(rj.GRU(E, H), output_size=2)


# --------------------------------------------------------------------------- optimiser


def test_make_optimizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="optimizer must be one of"):
        make_optimizer("adamax")
    with pytest.raises(ValueError, match="learning_rate"):
        make_optimizer(optax.sgd(0.1), 0.1)
    with pytest.raises(ValueError, match="learning_rate must be a positive"):
        make_optimizer("adam", -1.0)
    with pytest.raises(ValueError, match="clip_norm"):
        make_optimizer("adam", clip_norm=0.0)
    with pytest.raises(TypeError, match="optimizer must be a name"):
        make_optimizer(3)
    with pytest.raises(ValueError, match="loss must be one of"):
        Trainer(SequenceModel(rj.GRU(E, H), output_size=2), loss="hinge")


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd", "rmsprop"])
def test_named_optimizers_match_optax_without_clipping(name):
    """With clip_norm=None the factory's update equals the plain optax optimiser's."""
    params = {"w": jnp.array([1.0, -2.0, 0.5])}
    grads = {"w": jnp.array([0.3, -0.1, 2.0])}
    tx = make_optimizer(name, 0.01, clip_norm=None)
    ref = getattr(optax, name)(0.01)
    u, _ = tx.update(grads, tx.init(params), params)
    u_ref, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_allclose(u["w"], u_ref["w"], rtol=1e-6)


def test_frozen_labels_by_name_callable_and_tree():
    params = {"reservoir": {"w": jnp.ones(2)}, "readout": {"w": jnp.ones(2)}}
    want = {"reservoir": {"w": "frozen"}, "readout": {"w": "trainable"}}
    assert frozen_labels(params, ("reservoir",)) == want
    assert (
        frozen_labels(params, lambda p: {"reservoir": {"w": True}, "readout": {"w": False}}) == want
    )
    assert frozen_labels(params, {"reservoir": {"w": True}, "readout": {"w": False}}) == want


def test_schedule_sets_the_sgd_step_size():
    """SGD with an optax schedule: update_t = -schedule(t) * grad."""
    sched = optax.schedules.exponential_decay(0.1, transition_steps=1, decay_rate=0.5)
    tx = make_optimizer("sgd", sched, clip_norm=None)
    p = {"w": jnp.array([1.0, 2.0])}
    g = {"w": jnp.array([0.5, -1.0])}
    s = tx.init(p)
    for t in range(3):
        u, s = tx.update(g, s, p)
        np.testing.assert_allclose(u["w"], -0.1 * 0.5**t * g["w"], rtol=1e-6)


# --------------------------------------------------------------------------- train step


@jax.jit
def _apply_lm(params, inputs, length):
    return LM_MODEL.apply_batch(params, inputs, length)[1]


def _reference_lm_loss(model, params, batch):
    """Masked mean cross-entropy written independently (log_softmax by hand)."""
    logits = _apply_lm(params, batch["inputs"], batch["length"])
    logp = logits - jax.scipy.special.logsumexp(logits, axis=-1, keepdims=True)
    picked = jnp.take_along_axis(logp, batch["targets"][..., None], axis=-1)[..., 0]
    mask = (jnp.arange(T)[None, :] < batch["length"][:, None]).astype(jnp.float32)
    return -jnp.sum(picked * mask) / jnp.sum(mask)


_reference_grad = jax.jit(lambda p, b: jax.grad(_reference_lm_loss, argnums=1)(LM_MODEL, p, b))


def test_train_step_loss_matches_float64_numpy(lm_trainer):
    state = lm_trainer.init(jax.random.key(0))
    batch = token_batch()
    logits = _apply_lm(state.params, batch["inputs"], batch["length"])
    lg = np.asarray(logits, np.float64)
    y, n = np.asarray(batch["targets"]), np.asarray(batch["length"])
    total, count = 0.0, 0
    for b in range(B):
        for t in range(n[b]):
            row = lg[b, t]
            total += np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[y[b, t]]
            count += 1
    _, m = lm_trainer.train_step(state, batch)
    np.testing.assert_allclose(float(m["loss"]), total / count, rtol=1e-5)


def test_clipping_bounds_global_norm_and_reports_norm_before():
    """SGD with lr 1: the applied update is the clipped gradient, its global norm is
    min(|g|, c), and the reported norm is |g| of jax.grad before clipping. The threshold
    lies between the gradient norms of two batches, so one is clipped and one is not."""
    params = LM_MODEL.init(jax.random.key(1))
    batches = [token_batch(0), token_batch(1)]
    norms = []
    for batch in batches:
        g = _reference_grad(params, batch)
        norms.append(
            float(
                np.sqrt(
                    sum(
                        np.sum(np.asarray(x, np.float64) ** 2) for x in jax.tree_util.tree_leaves(g)
                    )
                )
            )
        )
    assert abs(norms[0] - norms[1]) > 1e-3 * max(norms)
    clip = float(np.sqrt(norms[0] * norms[1]))
    tr = Trainer(LM_MODEL, optimizer="sgd", learning_rate=1.0, clip_norm=clip)
    state = tr.init(jax.random.key(1), params=params)
    for batch, g_norm in zip(batches, norms):
        new, m = tr.train_step(state, batch)
        step = jax.tree_util.tree_map(lambda a, b: a - b, state.params, new.params)
        applied = float(optax.tree.norm(step))
        np.testing.assert_allclose(float(m["grad_norm"]), g_norm, rtol=1e-4)
        np.testing.assert_allclose(applied, min(g_norm, clip), rtol=1e-3)
        assert bool(m["clipped"]) == (g_norm > clip)
        assert applied <= clip * (1 + 1e-4)


def test_nan_batch_is_skipped_and_counted(reg_model):
    tr = Trainer(reg_model, loss="mse")
    state = tr.init(jax.random.key(0))
    good = float_batch()
    state, m0 = tr.train_step(state, good)
    assert not bool(m0["skipped"]) and int(m0["nonfinite_total"]) == 0
    bad = dict(good, inputs=good["inputs"].at[1, 2, 0].set(jnp.nan))
    after, m1 = tr.train_step(state, bad)
    assert bool(m1["skipped"]) and int(m1["nonfinite_total"]) == 1
    assert not np.isfinite(float(m1["grad_norm"]))
    assert tree_equal(after.params, state.params)
    # the inner (Adam) state is untouched too: the next good step equals one from `state`
    assert tree_equal(after.opt_state.inner_state, state.opt_state.inner_state)
    assert int(after.step) == int(state.step) + 1
    again, m2 = tr.train_step(after, good)
    ref, _ = tr.train_step(state, good)
    assert not bool(m2["skipped"]) and int(m2["nonfinite_total"]) == 1
    assert tree_equal(again.params, ref.params)


def test_frozen_parameters_stay_untouched():
    model = SequenceModel(rj.GRU(E, H), output_size=2)
    tr = Trainer(
        model,
        loss="mse",
        optimizer="adamw",
        learning_rate=0.05,
        frozen=("layer",),
        optimizer_kwargs=(("weight_decay", 0.1),),
    )
    state = tr.init(jax.random.key(0))
    new = before = state
    for i in range(3):
        before = new
        new, m = tr.train_step(new, float_batch(i))
    assert tree_equal(new.params["layer"], state.params["layer"])
    assert not tree_equal(new.params["head"], state.params["head"])
    # the reported norm covers the trainable (head) gradients only
    b = float_batch(2)
    g = jax.jit(
        jax.grad(lambda p: jnp.mean((model.apply_batch(p, b["inputs"])[1] - b["targets"]) ** 2))
    )(before.params)
    np.testing.assert_allclose(float(m["grad_norm"]), float(optax.tree.norm(g["head"])), rtol=1e-5)
    assert float(optax.tree.norm(g["layer"])) > 0


def test_final_head_classification_loss(key):
    model = SequenceModel(rj.LSTM(E, H), output_size=3, head="final")
    tr = Trainer(model)
    state = tr.init(key)
    r = np.random.default_rng(0)
    batch = {
        "inputs": jnp.asarray(r.normal(size=(B, T, E)), jnp.float32),
        "targets": jnp.asarray([0, 2, 1], jnp.int32),
        "length": jnp.asarray([T, 2, 4], jnp.int32),
    }
    _, logits = model.apply_batch(state.params, batch["inputs"], batch["length"])
    lg = np.asarray(logits, np.float64)
    ref = np.mean([np.log(np.exp(lg[b]).sum()) - lg[b, int(batch["targets"][b])] for b in range(B)])
    _, m = tr.train_step(state, batch)
    np.testing.assert_allclose(float(m["loss"]), ref, rtol=1e-5)
    with pytest.raises(ValueError, match="targets"):
        tr.train_step(state, dict(batch, targets=jnp.zeros((B, T), jnp.int32)))


def test_bad_batches_are_clear_errors(lm_trainer):
    state = lm_trainer.init(jax.random.key(0))
    with pytest.raises(ValueError, match="'inputs', 'targets'"):
        lm_trainer.train_step(state, {"inputs": jnp.zeros((B, T), jnp.int32)})
    with pytest.raises(ValueError, match="length"):
        lm_trainer.train_step(state, dict(token_batch(), length=jnp.asarray([1, 2], jnp.int32)))
    with pytest.raises(ValueError, match=r"\[0, T\]"):
        lm_trainer.train_step(
            state, dict(token_batch(), length=jnp.asarray([1, 2, T + 1], jnp.int32))
        )
    with pytest.raises(ValueError, match="k must be an int >= 1 dividing T"):
        lm_trainer.tbptt_step(state, token_batch(), 4)


def test_uniform_predictor_has_perplexity_equal_to_vocabulary(lm_trainer):
    params = lm_trainer.init(jax.random.key(0)).params
    params = dict(
        params,
        head={"w": jnp.zeros_like(params["head"]["w"]), "b": jnp.zeros_like(params["head"]["b"])},
    )
    m = lm_trainer.evaluate(params, token_batch())
    np.testing.assert_allclose(float(m["perplexity"]), V, rtol=1e-6)
    assert int(m["tokens"]) == T + 4 + 1
    np.testing.assert_allclose(
        float(rj.metrics.perplexity(jnp.zeros((7, 11)), jnp.arange(7))), 11, rtol=1e-6
    )


# --------------------------------------------------------------------------- TBPTT


def test_tbptt_with_k_equal_T_is_full_bptt(lm_trainer):
    state = lm_trainer.init(jax.random.key(0))
    batch = token_batch()
    full, m_full = lm_trainer.train_step(state, batch)
    tb, m_tb = lm_trainer.tbptt_step(state, batch, T)
    assert m_tb["loss"].shape == (1,)
    np.testing.assert_allclose(float(m_tb["loss"][0]), float(m_full["loss"]), rtol=1e-6)
    np.testing.assert_allclose(float(m_tb["grad_norm"][0]), float(m_full["grad_norm"]), rtol=1e-5)
    assert tree_maxdiff(tb.params, full.params) < 1e-6


def test_tbptt_equals_python_loop_over_chunks(reg_model):
    """The scanned TBPTT pass equals a plain loop: per chunk, grad of the chunk loss from
    the stop-gradient carry, an optax update, the carry from a forward pass."""
    k = 2
    tr = Trainer(reg_model, loss="mse")
    state = tr.init(jax.random.key(3))
    batch = float_batch(5)
    new, m = tr.tbptt_step(state, batch, k)
    params, opt_state = state.params, state.opt_state
    carry = jax.tree_util.tree_map(lambda a: jnp.zeros((B,) + a.shape), reg_model.initial_state())

    def loss(p, carry, xs, ys):
        _, out = reg_model.apply_batch(p, xs, state=carry)
        return jnp.mean((out - ys) ** 2)

    @jax.jit
    def chunk(params, opt_state, carry, xs, ys):
        l, g = jax.value_and_grad(loss)(params, carry, xs, ys)
        carry, _ = reg_model.apply_batch(params, xs, state=carry)
        u, opt_state = tr.tx.update(g, opt_state, params)
        return optax.apply_updates(params, u), opt_state, carry, l

    losses = []
    for c in range(T // k):
        xs = batch["inputs"][:, c * k : (c + 1) * k]
        ys = batch["targets"][:, c * k : (c + 1) * k]
        params, opt_state, carry, l = chunk(params, opt_state, carry, xs, ys)
        losses.append(float(l))
    np.testing.assert_allclose(np.asarray(m["loss"]), losses, rtol=1e-5)
    assert tree_maxdiff(new.params, params) < 1e-5
    assert int(new.step) == T // k and int(new.position) == 1


def test_no_gradient_crosses_a_chunk_boundary(reg_model):
    tr = Trainer(reg_model, loss="mse")
    params = reg_model.init(jax.random.key(0))
    batch = float_batch(1)
    k = 2

    def chunk_loss(xs, j):
        return tr.chunk_losses(params, dict(batch, inputs=xs), k)[j]

    g = jax.grad(chunk_loss)(batch["inputs"], 1)  # loss of chunk 2 (steps 2, 3)
    assert bool(jnp.all(g[:, :k] == 0.0))  # inputs of chunk 1: exactly zero
    assert float(jnp.max(jnp.abs(g[:, k : 2 * k]))) > 0
    assert bool(jnp.all(g[:, 2 * k :] == 0.0))  # the future does not matter either

    # control: without truncation the same loss does depend on chunk 1's inputs
    def untruncated(xs):
        _, out = reg_model.apply_batch(params, xs)
        return jnp.mean((out[:, k : 2 * k] - batch["targets"][:, k : 2 * k]) ** 2)

    g_full = jax.grad(untruncated)(batch["inputs"])
    assert float(jnp.max(jnp.abs(g_full[:, :k]))) > 0
    np.testing.assert_allclose(
        float(tr.chunk_losses(params, batch, k)[1]), float(untruncated(batch["inputs"])), rtol=1e-6
    )


def test_stateful_tbptt_continues_streams_and_resets(reg_model):
    """Two stateful calls on the halves of a sequence equal one call on the whole."""
    k = 2
    tr = Trainer(reg_model, loss="mse")
    state = tr.init(jax.random.key(0))
    batch = float_batch(2, T_=2 * T)
    whole, m_whole = tr.tbptt_step(state, batch, k)
    half = lambda i: {n: v[:, i * T : (i + 1) * T] for n, v in batch.items()}  # noqa: E731
    s1, m1 = tr.tbptt_step(state, half(0), k, stateful=True)
    assert s1.carry is not None
    s2, m2 = tr.tbptt_step(s1, half(1), k, stateful=True)
    np.testing.assert_allclose(np.concatenate([m1["loss"], m2["loss"]]), m_whole["loss"], rtol=1e-5)
    assert tree_maxdiff(s2.params, whole.params) < 1e-5
    # reset: the next call starts from zeros, like a non-stateful call
    reset = tr.reset_carry(s2)
    assert reset.carry is None
    s3, m3 = tr.tbptt_step(reset, half(0), k, stateful=True)
    s3_ref, m3_ref = tr.tbptt_step(s2._replace(carry=None), half(0), k)
    np.testing.assert_array_equal(m3["loss"], m3_ref["loss"])
    assert tree_equal(s3.params, s3_ref.params)
    # without stateful the carry starts from zeros: the second half's losses differ
    _, m2_fresh = tr.tbptt_step(s1, half(1), k)
    assert not np.allclose(m2_fresh["loss"], m2["loss"])


def test_tbptt_chunk_without_real_steps_makes_no_update(lm_trainer):
    """Lengths <= k: chunks 2 and 3 hold no real step, so Adam makes exactly one update
    (an update with zero gradients would still move the params through the moments)."""
    state = lm_trainer.init(jax.random.key(0))
    batch = dict(token_batch(), length=jnp.asarray([2, 1, 2], jnp.int32))
    new, m = lm_trainer.tbptt_step(state, batch, 2)
    np.testing.assert_array_equal(np.asarray(m["tokens"]), [5, 0, 0])
    assert int(optax.tree_utils.tree_get(new.opt_state, "count")) == 1
    assert not tree_equal(new.params, state.params)
    assert not bool(jnp.any(m["skipped"]))
    assert int(new.step) == 3


# --------------------------------------------------------------------------- fit


def test_fit_logs_jsonl_and_matches_manual_steps(lm_trainer, tmp_path):
    data = lambda p: token_batch(seed=p)  # noqa: E731
    log = tmp_path / "log" / "metrics.jsonl"
    state0 = lm_trainer.init(jax.random.key(0))
    state, hist = fit(lm_trainer, state0, data, 3, log_path=log, progress=True)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["position"] for r in rows] == [1, 2, 3]
    ref = state0
    for p in range(3):
        ref, m = lm_trainer.train_step(ref, data(p))
        assert rows[p]["loss"] == pytest.approx(float(m["loss"]), rel=1e-7)
    assert tree_equal(ref.params, state.params)
    assert int(state.position) == 3
    with pytest.raises(ValueError, match="stateful=True needs tbptt"):
        fit(lm_trainer, state0, data, 1, stateful=True, progress=False)


def test_fit_reports_and_skips_a_nan_batch(reg_model, tmp_path):
    """Batch 1 holds a NaN: fit warns, logs it as skipped (loss null), and the run equals
    one that never saw batch 1."""
    tr = Trainer(reg_model, loss="mse")

    def data(p):
        b = float_batch(p)
        return dict(b, inputs=b["inputs"].at[0, 0, 0].set(jnp.nan)) if p == 1 else b

    log = tmp_path / "m.jsonl"
    state0 = tr.init(jax.random.key(0))
    with pytest.warns(RuntimeWarning, match="batch 1: non-finite gradient"):
        state, hist = fit(tr, state0, data, 3, log_path=log, progress=False)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["skipped"] for r in rows] == [False, True, False]
    assert rows[1]["loss"] is None and rows[2]["nonfinite_total"] == 1
    ref, _ = tr.train_step(state0, data(0))
    ref, _ = tr.train_step(ref, data(2))
    assert tree_equal(state.params, ref.params)
