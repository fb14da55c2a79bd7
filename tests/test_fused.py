"""The fast paths of rnnjax.fused against the reference scan (autodiff), finite
differences and PyTorch: values, gradients, padding, reverse, vmap, rematerialisation."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from rnnjax import fused

T, I, H = 6, 3, 4
LENGTHS = np.array([0, 3, T], np.int32)

CELLS = {
    "lstm": rj.LSTM(I, H),
    "gru": rj.GRU(I, H),
    "gru_cho": rj.GRU(I, H, reset_after=False),
    "rnn_tanh": rj.SimpleRNN(I, H),
    "rnn_relu": rj.SimpleRNN(I, H, nonlinearity="relu"),
}
MODES = {
    "loop": dict(enabled=True, projection="loop"),
    "carry": dict(enabled=True, projection="carry"),
    "hoist": dict(enabled=True, projection="hoist"),
    "remat": dict(remat=2),
}


def _perturbed_params(cell, seed=0):
    """Non-trivial parameters: every bias non-zero, so a dropped bias term shows."""
    p = cell.init(jax.random.key(seed))
    keys = jax.random.split(jax.random.key(seed + 100), len(p))
    return {k: v + 0.3 * jax.random.normal(kk, v.shape) for (k, v), kk in zip(sorted(p.items()), keys)}


def _inputs(cell):
    xs = jax.random.normal(jax.random.key(1), (len(LENGTHS), T, I))
    s0 = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(2), (len(LENGTHS),) + a.shape),
        cell.initial_state(),
    )
    return xs, s0


ALL_VARIANTS = ((False, "len"), (True, "len"), (False, "none"), (True, "none"))
FAST_VARIANTS = ((True, "len"), (False, "none"))


def _everything(cell, variants=ALL_VARIANTS):
    """Outputs, final states and gradients (params, xs, initial state) for batched
    lengths 0 / 3 / T and length=None, forwards and reversed."""

    def loss(p, xs, s0, length, reverse):
        st, ys = rj.unroll_batch(cell, p, xs, length=length, state=s0, reverse=reverse)
        w = jnp.arange(1, ys.shape[-1] + 1, dtype=ys.dtype)
        lin = sum(jnp.sum(leaf * w[None, : leaf.shape[-1]]) for leaf in st)
        return jnp.sum(jnp.sin(ys) * w[None, None, :]) + lin, (st, ys)

    def run(p, xs, s0):
        out = {}
        for reverse, name in variants:
            if True:
                length = jnp.asarray(LENGTHS) if name == "len" else None
                (_, aux), g = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
                    p, xs, s0, length, reverse
                )
                out[(reverse, name)] = (aux, g)
        return out

    return jax.jit(run)


@pytest.fixture(scope="module")
def reference():
    cache = {}

    def get(name, variants):
        if (name, variants) not in cache:
            cell = CELLS[name]
            with fused.options(enabled=False):
                f = _everything(cell, variants)
                p = _perturbed_params(cell)
                xs, s0 = _inputs(cell)
                cache[name, variants] = f(p, xs, s0)
        return cache[name, variants]

    return get


def _case(name, mode):
    # the default placement on this backend and remat in the default run; every other
    # combination (all four length/reverse variants) under -m slow
    fast = mode in ("remat", fused.default_projection())
    marks = () if fast else (pytest.mark.slow,)
    return pytest.param(name, mode, FAST_VARIANTS if fast else ALL_VARIANTS, marks=marks,
                        id=f"{name}-{mode}")


@pytest.mark.parametrize("name,mode,variants", [_case(n, m) for n in sorted(CELLS) for m in sorted(MODES)])
def test_fast_path_equals_reference(name, mode, variants, reference):
    cell = CELLS[name]
    assert fused.supports(cell)
    with fused.options(**MODES[mode]):
        f = _everything(cell, variants)
        p = _perturbed_params(cell)
        xs, s0 = _inputs(cell)
        got = f(p, xs, s0)
    ref = reference(name, variants)
    for key in got:
        for a, b in zip(jax.tree_util.tree_leaves(ref[key]), jax.tree_util.tree_leaves(got[key])):
            np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-5,
                                       err_msg=f"{name} {mode} {key}")
    # padding semantics survive: outputs past each length exactly zero
    (st, ys), _ = got[(True, "len")]
    for b, n in enumerate(LENGTHS):
        assert np.all(np.asarray(ys[b, n:]) == 0.0)


@pytest.mark.parametrize("name", ["lstm", "gru", "gru_cho", "rnn_tanh"])
def test_custom_vjp_against_finite_differences(name):
    cell = CELLS[name]
    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), _perturbed_params(cell))
        xs = jax.random.normal(jax.random.key(3), (T, I), jnp.float64)
        s0 = jax.tree_util.tree_map(lambda a: a + 0.2, cell.initial_state(jnp.float64))

        def f(p, xs, s0):
            st, ys = rj.unroll(cell, p, xs, length=jnp.asarray(4), state=s0, reverse=True)
            return ys, st

        with fused.options(enabled=True, projection="loop"):
            check_grads(jax.jit(f), (p, xs, s0), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_dispatch_follows_the_options():
    """The LSTM goes through the custom VJP (its jaxpr holds a custom_vjp call) exactly
    when enabled, by default per backend; remat takes any cell."""
    cell = CELLS["lstm"]
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((T, I))

    def jaxpr(**opts):
        with fused.options(**opts):
            # a new function each time: traces are cached per function, options are
            # read at trace time
            return str(jax.make_jaxpr(lambda p: rj.unroll(cell, p, xs)[1].sum())(p))

    assert "custom_vjp_call" in jaxpr(enabled=True)
    assert "custom_vjp_call" not in jaxpr(enabled=False)
    assert ("custom_vjp_call" in jaxpr()) == fused.default_enabled()
    assert fused.default_enabled("cpu") is False and fused.default_enabled("gpu") is True
    assert "checkpoint" in jaxpr(remat=3) or "remat" in jaxpr(remat=3)
    proj = rj.LSTM(I, H, proj_size=2)  # no fast path, but remat applies
    assert fused.applies(proj, fused.Options(remat=True))
    assert not fused.applies(proj, fused.Options(enabled=True))


def test_remat_of_a_cell_without_fast_path():
    cell = rj.LSTM(I, H, proj_size=2)
    p = _perturbed_params(cell)
    xs = jax.random.normal(jax.random.key(1), (T, I))

    def loss(p):
        return jnp.sum(jnp.sin(rj.unroll(cell, p, xs, length=jnp.asarray(5))[1]))

    with fused.options(remat=4):
        g = jax.grad(lambda p: loss(p))(p)
    g_ref = jax.grad(loss)(p)
    for a, b in zip(jax.tree_util.tree_leaves(g_ref), jax.tree_util.tree_leaves(g)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-5)


def test_per_example_gradients_under_vmap(reference):
    """vmap of grad (per-example gradients) through the fast path equals the reference."""
    cell = CELLS["gru"]
    p = _perturbed_params(cell)
    xs, _ = _inputs(cell)

    def per_example(p, xs):
        return jax.vmap(jax.grad(lambda p, x: jnp.sum(rj.unroll(cell, p, x)[1] ** 2)), (None, 0))(p, xs)

    with fused.options(enabled=True):
        got = jax.jit(per_example)(p, xs)
    with fused.options(enabled=False):
        ref = jax.jit(per_example)(p, xs)
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got)):
        assert a.shape[0] == len(LENGTHS)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-5)


def test_layers_go_through_the_fast_path():
    layer = rj.Bidirectional(rj.LSTM(I, H))
    p = layer.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, I))
    loss = lambda p: jnp.sum(layer.apply(p, xs, length=jnp.asarray(4))[1] ** 2)  # noqa: E731
    with fused.options(enabled=True):
        assert "custom_vjp_call" in str(jax.make_jaxpr(lambda p: loss(p))(p))
        g = jax.grad(lambda p: loss(p))(p)
    with fused.options(enabled=False):
        g_ref = jax.grad(lambda p: loss(p))(p)
    for a, b in zip(jax.tree_util.tree_leaves(g_ref), jax.tree_util.tree_leaves(g)):
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=2e-5, atol=2e-5)


def test_remat_saves_memory():
    """XLA's buffer assignment for a long sequence: checkpointing every sqrt(T) steps
    needs much less than saving every step's activations."""
    cell = rj.LSTM(4, 16)
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((2, 900, 4))

    def size(**opts):
        with fused.options(enabled=True, **opts):
            step = jax.jit(jax.grad(lambda p: jnp.mean(rj.unroll_batch(cell, p, xs)[1] ** 2)))
            return step.lower(p).compile().memory_analysis().temp_size_in_bytes

    default, remat = size(), size(remat=True)
    assert remat < 0.5 * default, (remat, default)


def test_options_validate_and_restore():
    with pytest.raises(ValueError, match="projection"):
        with fused.options(projection="sideways"):
            pass
    with pytest.raises(ValueError, match="remat"):
        fused.Options(remat=0)
    with pytest.raises(TypeError, match="enabled"):
        fused.Options(enabled="yes")
    with fused.options(remat=5, projection="carry") as o:
        assert fused.current_options() == o == fused.Options(projection="carry", remat=5)
        with fused.options(enabled=True):
            assert fused.current_options() == fused.Options(True, "carry", 5)
        assert fused.current_options() == o
    assert fused.current_options() == fused.Options()
    assert fused.default_projection("cpu") == "loop" and fused.default_projection("gpu") == "hoist"
    assert not fused.supports(rj.LSTM(I, H, proj_size=2))
    with pytest.raises(ValueError, match="cell"):
        fused.run(rj.LSTM(I, H, proj_size=2), None, None, jnp.ones((T, I)), None)


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
def test_against_pytorch(name):
    cell = CELLS[name]
    p = _perturbed_params(cell)
    xs = jax.random.normal(jax.random.key(5), (3, T, I))
    m = _torch_model(name, p)
    xt = torch.from_numpy(np.array(xs)).requires_grad_(True)
    yt, _ = m(xt)
    (yt.sin().sum()).backward()

    def loss(p, xs):
        return jnp.sum(jnp.sin(rj.unroll_batch(cell, p, xs)[1]))

    with fused.options(enabled=True):
        ys = rj.unroll_batch(cell, p, xs)[1]
        g, gx = jax.grad(lambda p, xs: loss(p, xs), argnums=(0, 1))(p, xs)
    np.testing.assert_allclose(np.asarray(ys), yt.detach().numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(gx), xt.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g["w_hh"]).T, m.weight_hh_l0.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(g["w_ih"]).T, m.weight_ih_l0.grad.numpy(), rtol=1e-4, atol=1e-5)
    # rnnjax's b is PyTorch's bias_ih (+ bias_hh for the gates where they only add)
    np.testing.assert_allclose(np.asarray(g["b"]), m.bias_ih_l0.grad.numpy(), rtol=1e-4, atol=1e-5)
    if name == "gru":
        np.testing.assert_allclose(np.asarray(g["b_hn"]), m.bias_hh_l0.grad.numpy()[2 * H :],
                                   rtol=1e-4, atol=1e-5)
