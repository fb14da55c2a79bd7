"""The natively batched fast path (``rnnjax.sequence.run_batch``): ``unroll_batch`` and
the layers' ``apply_batch`` scan ``(T, B, .)`` arrays with the hand-written backward
pass. Checked against the per-example reference (``vmap`` of the autodiffed scan), finite
differences in float64, and for which calls it is taken.

(``tests/test_fused.py`` runs every cell, length, reverse and initial-state variant of
``unroll_batch`` through it against the reference; ``tests/test_interop.py`` compares the
layers' ``apply_batch`` with PyTorch's packed sequences.)"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from rnnjax import fused

T, I, H = 5, 3, 4


@pytest.fixture
def native_calls(monkeypatch):
    """Records the rank of ``xs`` of every ``fused.run`` call (3: natively batched)."""
    calls = []
    real = fused.run

    def spy(cell, params, state, xs, valid, opts=None):
        calls.append(xs.ndim)
        return real(cell, params, state, xs, valid, opts)

    monkeypatch.setattr(fused, "run", spy)
    return calls


def _close(got, ref, tol=2e-5):
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got)):
        assert a.shape == b.shape
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=tol, atol=tol)


def _grads(fn, *args):
    """Value and gradient of a scalar summary of ``fn(*args) -> (state, ys)``."""

    def loss(*a):
        st, ys = fn(*a)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(l ** 2) for l in jax.tree_util.tree_leaves(st)), (st, ys)

    return jax.value_and_grad(loss, argnums=tuple(range(len(args))), has_aux=True)(*args)


@pytest.mark.parametrize("cell", [rj.LSTM(I, H), rj.GRU(I, H), rj.SimpleRNN(I, H)], ids=type)
def test_time_major_and_several_batch_axes(cell, native_calls):
    """(T, 2, 3, I) time-major input with lengths of shape (2, 3): native equals the
    reference, outputs laid out like the input."""
    p = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, 2, 3, I))
    length = jnp.array([[0, 1, 5], [3, 5, 2]], jnp.int32)

    def run(p, xs):
        return rj.unroll_batch(cell, p, xs, length, reverse=True, time_major=True)

    got = _grads(run, p, xs)
    assert native_calls == [3]
    with fused.options(enabled=False):
        ref = _grads(run, p, xs)
    assert native_calls == [3]  # the reference did not go through fused.run
    _close(got, ref)
    (_, (st, ys)), _ = got
    assert ys.shape == (T, 2, 3, H)
    assert np.all(np.asarray(ys[:, 0, 0]) == 0.0) and np.all(np.asarray(ys[3:, 1, 0]) == 0.0)


@pytest.mark.parametrize("cell", [rj.LSTM(I, H), rj.GRU(I, H), rj.SimpleRNN(I, H)], ids=type)
def test_native_gradients_against_finite_differences(cell):
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64) + 0.1, cell.init(jax.random.key(0)))
        xs = jax.random.normal(jax.random.key(1), (3, T, I), jnp.float64)
        s0 = jax.tree_util.tree_map(
            lambda a: 0.3 * jnp.ones((3,) + a.shape, jnp.float64), cell.initial_state(jnp.float64))
        length = jnp.array([5, 2, 0])

        def f(p, xs, s0):
            return rj.unroll_batch(cell, p, xs, length, s0, reverse=True)

        assert fused.batch_applies(cell)
        check_grads(jax.jit(f), (p, xs, s0), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_dispatch():
    """Native for LSTM/GRU/SimpleRNN by default; not with enabled=False or remat, nor for
    a projected LSTM."""
    assert fused.batch_applies(rj.LSTM(I, H))
    assert fused.batch_applies(rj.GRU(I, H, reset_after=False))
    assert not fused.batch_applies(rj.LSTM(I, H, proj_size=2))
    assert not fused.batch_applies(rj.LSTM(I, H), fused.Options(enabled=False))
    assert not fused.batch_applies(rj.LSTM(I, H), fused.Options(remat=True))
    layer = rj.Recurrent(rj.LSTM(I, H), recurrent_dropout=0.2)
    assert layer.native_batch() and not layer.native_batch(jax.random.key(0))
    assert not rj.Recurrent(rj.LSTM(I, H), zoneout=0.1).native_batch()
    assert not rj.Bidirectional(rj.LSTM(I, H), merge=lambda a, b: a + b).native_batch()
    stacked = rj.Stacked([rj.LSTM(I, H), rj.GRU(H, H)], dropout=0.1)
    assert stacked.native_batch() and not stacked.native_batch(jax.random.key(0))
    assert rj.Stacked([rj.LSTM(I, H), rj.GRU(H, H)]).native_batch(jax.random.key(0))


LAYERS = {
    "bidirectional": rj.Bidirectional(rj.LSTM(I, H)),
    "bidirectional_sum": rj.Bidirectional(rj.GRU(I, H), merge="sum"),
    "stacked": rj.Stacked([rj.Bidirectional(rj.GRU(I, H)), rj.SimpleRNN(2 * H, H)]),
    "reverse": rj.Recurrent(rj.LSTM(I, H), reverse=True),
}


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_layers_native_equal_per_example(name, native_calls):
    layer = LAYERS[name]
    p = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (3, T, I))
    length = jnp.array([5, 0, 2], jnp.int32)
    s0 = jax.tree_util.tree_map(lambda a: 0.1 + jnp.zeros((3,) + a.shape), layer.initial_state())

    def run(p, xs, s0):
        return layer.apply_batch(p, xs, length, s0)

    got = _grads(run, p, xs, s0)
    assert native_calls and set(native_calls) == {3}
    # the per-example reference: vmap of layer.apply (the scan of cell.step, autodiff)
    per_example = jax.vmap(lambda p, x, n, s: layer.apply(p, x, n, s), (None, 0, 0, 0))
    with fused.options(enabled=False):
        ref = _grads(lambda p, xs, s0: per_example(p, xs, length, s0), p, xs, s0)
    _close(got, ref)


def test_dropout_with_a_key_falls_back_to_per_example(native_calls):
    """With dropout in play the layer keeps the per-example path and its random streams:
    the result equals vmap of apply with the split keys."""
    layer = rj.Stacked([rj.LSTM(I, H), rj.LSTM(H, H)], dropout=0.5)
    p = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (4, T, I))
    key = jax.random.key(7)
    st, ys = layer.apply_batch(p, xs, key=key)
    assert 3 not in native_calls
    keys = jax.random.split(key, 4)
    st_ref, ys_ref = jax.vmap(lambda x, k: layer.apply(p, x, key=k))(xs, keys)
    _close((st, ys), (st_ref, ys_ref), tol=1e-6)


@pytest.mark.parametrize("head", ["per_step", "final"])
def test_sequence_model_native_equals_per_example(head, native_calls):
    model = rj.SequenceModel(rj.GRU(6, H), vocab_size=7, output_size=7, head=head)
    p = model.init(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (3, T), 0, 7)
    length = jnp.array([5, 0, 3], jnp.int32)
    st, out = model.apply_batch(p, tokens, length)
    assert native_calls == [3]
    st_ref, out_ref = jax.vmap(lambda x, n: model.apply(p, x, n))(tokens, length)
    _close((st, out), (st_ref, out_ref))
    if head == "per_step":
        assert np.all(np.asarray(out[1]) == 0.0) and np.all(np.asarray(out[2, 3:]) == 0.0)


def test_run_batch_errors_name_the_argument():
    cell = rj.LSTM(I, H)
    p = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="xs must have feature size 3"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I + 1)))
    with pytest.raises(TypeError, match="xs must have a floating dtype"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I), jnp.int32))
    with pytest.raises(ValueError, match="length must have the batch shape"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), length=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"length must lie in \[0, T\]"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), length=jnp.array([1, T + 1]))
    with pytest.raises(ValueError, match="state must have the shapes"):
        bad = rj.LSTMState(jnp.zeros((2, H + 1)), jnp.zeros((2, H)))
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), state=bad)
    with pytest.raises(ValueError, match="state leaves must have leading batch axes"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), state=cell.initial_state())
    with pytest.raises(ValueError, match="params must have the shapes"):
        rj.unroll_batch(cell, rj.LSTM(I, H + 1).init(jax.random.key(0)), jnp.ones((2, T, I)))


def test_empty_batch_and_empty_sequence():
    cell = rj.GRU(I, H)
    p = cell.init(jax.random.key(0))
    st, ys = rj.unroll_batch(cell, p, jnp.ones((2, 0, I)))
    assert ys.shape == (2, 0, H) and np.all(np.asarray(st.h) == 0.0)
    st, ys = rj.unroll_batch(cell, p, jnp.ones((0, T, I)))
    assert ys.shape == (0, T, H) and st.h.shape == (0, H)
