"""The engine's paths in use: time-major and several batch axes, vmap of grad, remat,
empty batches and sequences, PyTorch's gradients, and the errors of the batched calls."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, I, H = 6, 3, 4
FUSED = rj.ScanConfig(backward="fused")
REFERENCE = rj.ScanConfig(backward="reference")


def _perturbed_params(cell, seed=0):
    """Non-trivial parameters: every bias non-zero, so a dropped bias term shows."""
    p = cell.init(jax.random.key(seed))
    keys = jax.random.split(jax.random.key(seed + 100), len(p))
    return {
        k: v + 0.3 * jax.random.normal(kk, v.shape) for (k, v), kk in zip(sorted(p.items()), keys)
    }


def _close(a, b, tol=2e-5):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("cell", [rj.LSTM(I, H), rj.GRU(I, H), rj.SimpleRNN(I, H)], ids=type)
def test_time_major_and_several_batch_axes(cell):
    """(T, 2, 3, I) time-major input with lengths of shape (2, 3): fused equals the
    reference and a vmap of one example, outputs laid out like the input."""
    p = _perturbed_params(cell)
    xs = jax.random.normal(jax.random.key(1), (T, 2, 3, I))
    length = jnp.array([[0, 1, 5], [3, 5, 2]], jnp.int32)

    def loss(p, xs, cfg):
        st, ys = rj.unroll_batch(cell, p, xs, length, reverse=True, time_major=True, config=cfg)
        return jnp.sum(jnp.sin(ys)) + sum(jnp.sum(l**2) for l in st), (st, ys)

    got = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(p, xs, FUSED)
    ref = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(p, xs, REFERENCE)
    _close(got, ref)
    (_, (st, ys)), _ = got
    assert ys.shape == (T, 2, 3, H)
    assert np.all(np.asarray(ys[:, 0, 0]) == 0.0) and np.all(np.asarray(ys[3:, 1, 0]) == 0.0)
    one = jax.vmap(
        jax.vmap(
            lambda x, n: rj.unroll(cell, p, x, n, reverse=True), in_axes=(1, 0), out_axes=(0, 1)
        ),
        in_axes=(1, 0),
        out_axes=(0, 1),
    )
    _close((st, ys), one(xs, length))


def test_per_example_gradients_under_vmap():
    """vmap of grad (per-example gradients) through the fused path equals the reference."""
    cell = rj.GRU(I, H)
    p = _perturbed_params(cell)
    xs = jax.random.normal(jax.random.key(1), (3, T, I))

    def per_example(p, xs, cfg):
        return jax.vmap(
            jax.grad(lambda p, x: jnp.sum(rj.unroll(cell, p, x, config=cfg)[1] ** 2)), (None, 0)
        )(p, xs)

    got, ref = per_example(p, xs, FUSED), per_example(p, xs, REFERENCE)
    assert all(a.shape[0] == 3 for a in jax.tree_util.tree_leaves(got))
    _close(got, ref)


def test_remat_of_a_cell_and_layer():
    cell = rj.LSTM(I, H, proj_size=2)
    p = _perturbed_params(cell)
    xs = jax.random.normal(jax.random.key(1), (T, I))

    def loss(p, cfg):
        return jnp.sum(jnp.sin(rj.unroll(cell, p, xs, length=5, config=cfg)[1]))

    _close(jax.grad(loss)(p, rj.ScanConfig(remat=4)), jax.grad(loss)(p, None))
    layer = rj.Recurrent(cell, config=rj.ScanConfig(remat=True), zoneout=0.3)
    layer_ref = rj.Recurrent(cell, zoneout=0.3)
    f = lambda l: jax.grad(lambda p: jnp.sum(l.apply(p, xs, 5, key=jax.random.key(1))[1]))(p)  # noqa: E731
    _close(f(layer), f(layer_ref))


def test_remat_saves_memory():
    """XLA's buffer assignment for a long sequence: checkpointing every sqrt(T) steps
    needs much less than saving every step's activations."""
    cell = rj.LSTM(4, 16)
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((2, 900, 4))

    def size(cfg):
        step = jax.jit(
            jax.grad(lambda p: jnp.mean(rj.unroll_batch(cell, p, xs, config=cfg)[1] ** 2))
        )
        return step.lower(p).compile().memory_analysis().temp_size_in_bytes

    default, remat = size(FUSED), size(rj.ScanConfig(remat=True))
    assert remat < 0.5 * default, (remat, default)


def test_empty_batch_and_empty_sequence():
    cell = rj.GRU(I, H)
    p = cell.init(jax.random.key(0))
    st, ys = rj.unroll_batch(cell, p, jnp.ones((2, 0, I)))
    assert ys.shape == (2, 0, H) and np.all(np.asarray(st.h) == 0.0)
    st, ys = rj.unroll_batch(cell, p, jnp.ones((0, T, I)))
    assert ys.shape == (0, T, H) and st.h.shape == (0, H)
    g = jax.grad(lambda p: rj.unroll_batch(cell, p, jnp.ones((2, 0, I)))[1].sum())(p)
    assert all(float(jnp.abs(v).sum()) == 0.0 for v in g.values())


def test_batched_errors_name_the_argument():
    cell = rj.LSTM(I, H)
    p = cell.init(jax.random.key(0))
    with pytest.raises(ValueError, match="xs must have feature size 3"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I + 1)))
    with pytest.raises(TypeError, match="xs must have a floating dtype"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I), jnp.int32))
    with pytest.raises(ValueError, match="length must have the batch shape"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), length=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"length must lie in \[0, T\]"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), length=[1, T + 1])
    with pytest.raises(TypeError, match="length must be integers of shape"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), length=[1.5, 2])
    with pytest.raises(ValueError, match="state must have the shapes"):
        bad = rj.LSTMState(jnp.zeros((2, H + 1)), jnp.zeros((2, H)))
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), state=bad)
    with pytest.raises(ValueError, match="state must have the shapes"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), state=cell.initial_state())
    with pytest.raises(ValueError, match="params must have the shapes"):
        rj.unroll_batch(cell, rj.LSTM(I, H + 1).init(jax.random.key(0)), jnp.ones((2, T, I)))
    with pytest.raises(ValueError, match=r"resets must have shape \(2, 6\)"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), resets=jnp.zeros((T, 2), bool))
    with pytest.raises(TypeError, match="resets must have dtype bool"):
        rj.unroll_batch(cell, p, jnp.ones((2, T, I)), resets=jnp.zeros((2, T)))
    with pytest.raises(TypeError, match="reverse must be a bool"):
        rj.unroll(cell, p, jnp.ones((T, I)), reverse="no")


def test_python_list_lengths_work():
    cell = rj.GRU(I, H)
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((3, T, I))
    a = rj.unroll_batch(cell, p, xs, length=[1, 2, 3])
    b = rj.unroll_batch(cell, p, xs, length=jnp.array([1, 2, 3]))
    _close(a, b)


# --------------------------------------------------------------------------- PyTorch

torch = pytest.importorskip("torch")


def _torch_model(name, p):
    if name == "lstm":
        m = torch.nn.LSTM(I, H, batch_first=True)
        bias_hh = np.zeros(4 * H, np.float32)
    else:
        m = torch.nn.GRU(I, H, batch_first=True)
        bias_hh = np.concatenate([np.zeros(2 * H, np.float32), np.asarray(p["b_hn"])])
    with torch.no_grad():
        m.weight_ih_l0.copy_(torch.from_numpy(np.asarray(p["w_ih"]).T.copy()))
        m.weight_hh_l0.copy_(torch.from_numpy(np.asarray(p["w_hh"]).T.copy()))
        m.bias_ih_l0.copy_(torch.from_numpy(np.array(p["b"])))
        m.bias_hh_l0.copy_(torch.from_numpy(bias_hh))
    return m


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_fused_against_pytorch(name):
    cell = rj.LSTM(I, H) if name == "lstm" else rj.GRU(I, H)
    p = _perturbed_params(cell)
    xs = jax.random.normal(jax.random.key(5), (3, T, I))
    m = _torch_model(name, p)
    xt = torch.from_numpy(np.array(xs)).requires_grad_(True)
    yt, _ = m(xt)
    (yt.sin().sum()).backward()

    def loss(p, xs):
        return jnp.sum(jnp.sin(rj.unroll_batch(cell, p, xs, config=FUSED)[1]))

    ys = rj.unroll_batch(cell, p, xs, config=FUSED)[1]
    g, gx = jax.grad(loss, argnums=(0, 1))(p, xs)
    np.testing.assert_allclose(np.asarray(ys), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        np.asarray(g["w_hh"]).T, m.weight_hh_l0.grad.numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(
        np.asarray(g["w_ih"]).T, m.weight_ih_l0.grad.numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(np.asarray(g["b"]), m.bias_ih_l0.grad.numpy(), rtol=1e-4, atol=1e-5)
    if name == "gru":
        np.testing.assert_allclose(
            np.asarray(g["b_hn"]), m.bias_hh_l0.grad.numpy()[2 * H :], rtol=1e-4, atol=1e-5
        )
