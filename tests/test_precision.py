"""Mixed precision: every cell and module initialises and runs with bfloat16 and float16
parameters; a compute dtype apart from the parameter dtype; the state stays float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
import rnnjax.linen as rl

I, H, T = 3, 4, 5
CELLS = {
    "lstm": lambda **kw: rj.LSTM(I, H, **kw),
    "lstm_proj": lambda **kw: rj.LSTM(I, H, proj_size=2, **kw),
    "gru": lambda **kw: rj.GRU(I, H, **kw),
    "gru_cho": lambda **kw: rj.GRU(I, H, reset_after=False, **kw),
    "rnn": lambda **kw: rj.SimpleRNN(I, H, **kw),
}
DTYPES = [jnp.bfloat16, jnp.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "f16"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_cells_init_and_run_in_reduced_precision(name, dtype):
    cell = CELLS[name](param_dtype=dtype)
    ref_cell = CELLS[name]()
    p = cell.init(jax.random.key(0))
    assert all(v.dtype == dtype for v in p.values())
    # initialised in float32, then cast: the same draw as the float32 cell's
    p32 = ref_cell.init(jax.random.key(0))
    for k in p:
        np.testing.assert_array_equal(p[k], p32[k].astype(dtype))
    xs = jax.random.normal(jax.random.key(1), (2, T, I))
    for backward in ("reference", "fused"):
        st, ys = rj.unroll_batch(
            cell, p, xs, length=[T, 2], config=rj.ScanConfig(backward=backward)
        )
        # outputs in the compute dtype (Flax's convention), the state in float32
        assert ys.dtype == dtype and all(l.dtype == jnp.float32 for l in st)
        # the same maths as float32 parameters holding the rounded values
        st32, ys32 = rj.unroll_batch(
            ref_cell, jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p), xs, length=[T, 2]
        )
        np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=3e-2)
    g = jax.grad(lambda p: rj.unroll_batch(cell, p, xs)[1].sum())(p)
    assert all(
        v.dtype == dtype and bool(jnp.all(jnp.isfinite(v.astype(jnp.float32)))) for v in g.values()
    )


@pytest.mark.parametrize("name", sorted(CELLS))
def test_compute_dtype_is_separate_from_param_dtype(name):
    cell = CELLS[name](dtype=jnp.bfloat16)  # float32 parameters, bfloat16 products
    p = cell.init(jax.random.key(0))
    assert all(v.dtype == jnp.float32 for v in p.values())
    xs = jax.random.normal(jax.random.key(1), (T, I))
    st, ys = rj.unroll(cell, p, xs)
    assert ys.dtype == jnp.bfloat16 and st.h.dtype == jnp.float32
    jaxpr = str(jax.make_jaxpr(lambda p: rj.unroll(cell, p, xs))(p))
    assert "bf16" in jaxpr
    _, ys32 = rj.unroll(CELLS[name](), p, xs)
    assert 0 < float(jnp.max(jnp.abs(ys.astype(jnp.float32) - ys32))) < 5e-2


def test_initial_state_of_another_dtype_is_cast():
    cell = rj.LSTM(I, H)
    p = cell.init(jax.random.key(0))
    s16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float16) + 0.5, cell.initial_state())
    st, ys = rj.unroll(cell, p, jnp.ones((T, I)), state=s16)
    assert st.c.dtype == jnp.float32
    st2, _ = rj.unroll(
        cell,
        p,
        jnp.ones((T, I)),
        state=jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), s16),
    )
    np.testing.assert_array_equal(st.c, st2.c)
    # and for one step
    st3, _ = cell.step(p, s16, jnp.ones(I))
    assert st3.h.dtype == jnp.float32


def test_echo_state_in_reduced_precision():
    cell = rj.EchoState(1, 20, param_dtype=jnp.bfloat16)
    p = cell.init(jax.random.key(0))
    st, ys = rj.unroll(cell, p, jnp.ones((T, 1)))
    assert bool(jnp.all(jnp.isfinite(ys)))


@pytest.mark.parametrize("module", [rl.LSTM, rl.GRU, rl.RNN])
@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "f16"])
def test_linen_modules_in_reduced_precision(module, dtype):
    m = module(H, num_layers=2, param_dtype=dtype, dtype=dtype)
    xs = jnp.ones((2, T, I))
    variables = m.init(jax.random.key(0), xs)
    leaves = jax.tree_util.tree_leaves(variables)
    assert leaves and all(l.dtype == dtype for l in leaves)
    st, ys = m.apply(variables, xs, jnp.array([T, 2]))
    assert ys.dtype == dtype and bool(jnp.all(jnp.isfinite(ys.astype(jnp.float32))))
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(st))


def test_float64_parameters_need_x64():
    with pytest.raises(ValueError, match="param_dtype=float64 needs 64-bit mode"):
        rj.LSTM(I, H, param_dtype=jnp.float64)
    with jax.enable_x64(True):
        p = rj.LSTM(I, H, param_dtype=jnp.float64).init(jax.random.key(0))
        assert p["w_hh"].dtype == jnp.float64
        st, ys = rj.unroll(rj.LSTM(I, H, param_dtype=jnp.float64), p, jnp.ones((T, I)))
        assert ys.dtype == jnp.float64 and st.c.dtype == jnp.float64


def test_reduced_precision_stack_stays_in_the_compute_dtype_between_layers():
    """A bfloat16 stack: each layer's outputs are bfloat16, so the next layer's products
    read bfloat16 inputs (no float32 product in the jaxpr's dots); states stay float32."""
    net = rj.Stacked(
        [
            rj.Recurrent(rj.LSTM(I, H, param_dtype=jnp.bfloat16)),
            rj.Recurrent(rj.GRU(H, H, param_dtype=jnp.bfloat16)),
        ]
    )
    p = net.init(jax.random.key(0))
    xs = jnp.ones((2, T, I), jnp.bfloat16)
    st, ys = net.apply_batch(p, xs, length=jnp.array([T, 3]))
    assert ys.dtype == jnp.bfloat16
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(st))

    def dots(jaxpr):
        for e in jaxpr.eqns:
            if e.primitive.name == "dot_general":
                yield e
            for v in e.params.values():
                for sub in v if isinstance(v, (tuple, list)) else (v,):
                    inner = getattr(sub, "jaxpr", sub)
                    if hasattr(inner, "eqns"):
                        yield from dots(inner)

    dots = list(dots(jax.make_jaxpr(lambda p: net.apply_batch(p, xs)[1])(p).jaxpr))
    assert dots and all(v.aval.dtype == jnp.bfloat16 for e in dots for v in e.invars)
    # the float32 outputs of the same stack, computed with the rounded parameters
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p)
    net32 = rj.Stacked([rj.Recurrent(rj.LSTM(I, H)), rj.Recurrent(rj.GRU(H, H))])
    _, ys32 = net32.apply_batch(p32, xs.astype(jnp.float32), length=jnp.array([T, 3]))
    np.testing.assert_allclose(ys.astype(jnp.float32), ys32, atol=5e-2)
