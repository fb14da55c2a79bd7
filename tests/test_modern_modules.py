"""The modern cells through the generic Flax modules (linen, NNX) and the xLSTM and
Griffin blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

H = 4
CELLS = [
    (rj.SLSTM, (("num_heads", 2),)),
    (rj.MLSTM, (("num_heads", 2),)),
    (rj.RGLRU, (("num_heads", 2),)),
    (rj.S6, (("state_dim", 3),)),
    (rj.CausalConv, (("width", 3),)),
]
PAR = rj.ScanConfig(method="parallel")


@pytest.mark.parametrize("cls,options", CELLS, ids=[c.__name__ for c, _ in CELLS])
def test_linen_recurrent_runs_each_cell(cls, options):
    """``rnnjax.linen.Recurrent(H, cell=...)`` equals ``rj.unroll_batch`` of the cell on
    the module's own parameters; the parallel config (where the cell has one) agrees."""
    import rnnjax.linen as rl

    xs = jax.random.normal(jax.random.key(1), (2, 5, H))
    lengths = jnp.array([5, 2])
    net = rl.Recurrent(H, cell=cls, options=options)
    v = net.init(jax.random.key(0), xs)
    _, ys = net.apply(v, xs, lengths)
    cell = cls(H, H, **dict(options))
    leaves = jax.tree_util.tree_leaves(v["params"]["layer_0"])
    keys = sorted(cell.init(jax.random.key(0)))
    assert len(leaves) == len(keys)
    params = jax.tree_util.tree_map(lambda a: a, v["params"]["layer_0"])
    params = params.get("cell", params)
    _, want = rj.unroll_batch(cell, dict(params), xs, lengths)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    assert bool((ys[1, 2:] == 0).all())
    if hasattr(cell, "parallel_form") or hasattr(cell, "matrix_op"):  # a parallel form
        _, ys_par = rl.Recurrent(H, cell=cls, options=options, config=PAR).apply(v, xs, lengths)
        np.testing.assert_allclose(ys_par, ys, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cls,options", CELLS, ids=[c.__name__ for c, _ in CELLS])
def test_nnx_recurrent_runs_each_cell(cls, options):
    import rnnjax.nnx as rn

    if not hasattr(rn, "Recurrent"):
        pytest.skip("rnnjax.nnx has no generic Recurrent module in this tree")
    from flax import nnx

    cell = cls(H, H, **dict(options))
    net = rn.Recurrent(cell, rngs=nnx.Rngs(0))
    xs = jax.random.normal(jax.random.key(1), (2, 5, H))
    _, ys = net(xs, jnp.array([5, 2]))
    assert ys.shape == (2, 5, H) and bool(jnp.isfinite(ys).all())
    assert bool((ys[1, 2:] == 0).all())


@pytest.mark.parametrize(
    "make",
    [
        lambda cfg: rj.xlstm_block(8, "mlstm", num_heads=2, config=cfg),
        lambda cfg: rj.xlstm_block(8, "slstm", num_heads=2, config=None),
        lambda cfg: rj.griffin_block(8, num_heads=2, config=cfg),
    ],
    ids=["xlstm_m", "xlstm_s", "griffin"],
)
def test_blocks(make):
    """The blocks run (lengths: zero past them, padding inert), their parallel and
    sequential configs agree, and gradients are finite; stacked in DeepRecurrent."""
    seq, par = make(None), make(PAR)
    p = seq.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 6, 8))
    lengths = jnp.array([6, 3])
    _, ys = seq.apply_batch(p, xs, lengths)
    _, yp = par.apply_batch(p, xs, lengths)
    np.testing.assert_allclose(yp, ys, rtol=1e-5, atol=1e-5)
    assert bool((ys[1, 3:] == 0).all())
    _, y_nan = seq.apply_batch(p, xs.at[1, 3:].set(jnp.nan), lengths)
    np.testing.assert_array_equal(y_nan, ys)
    g = jax.grad(lambda p: jnp.sum(seq.apply_batch(p, xs, lengths)[1] ** 2))(p)
    assert all(bool(jnp.isfinite(a).all()) for a in jax.tree_util.tree_leaves(g))
    deep = rj.DeepRecurrent([seq, seq], head_size=3)
    _, out = deep.apply_batch(deep.init(jax.random.key(2)), xs, lengths)
    assert out.shape == (2, 6, 3)
