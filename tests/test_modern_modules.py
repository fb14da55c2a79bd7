"""The modern cells through the generic Flax modules (linen, NNX) and the xLSTM and
Griffin blocks."""

import dataclasses
from typing import NamedTuple

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
    """``rnnjax.linen.Recurrent(cell)`` equals ``rj.unroll_batch`` of the cell on the
    module's own parameters; the parallel config (where the cell has one) agrees."""
    import rnnjax.linen as rl

    xs = jax.random.normal(jax.random.key(1), (2, 5, H))
    lengths = jnp.array([5, 2])
    cell = cls(H, H, **dict(options))
    net = rl.Recurrent(cell)
    v = net.init(jax.random.key(0), xs)
    _, ys = net.apply(v, xs, lengths)
    leaves = jax.tree_util.tree_leaves(v["params"]["layer_0"])
    keys = sorted(cell.init(jax.random.key(0)))
    assert len(leaves) == len(keys)
    params = jax.tree_util.tree_map(lambda a: a, v["params"]["layer_0"])
    params = params.get("cell", params)
    _, want = rj.unroll_batch(cell, dict(params), xs, lengths)
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-6)
    assert bool((ys[1, 2:] == 0).all())
    if hasattr(cell, "parallel_form") or hasattr(cell, "matrix_op"):  # a parallel form
        _, ys_par = rl.Recurrent(cell, config=PAR).apply(v, xs, lengths)
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


class _LeakyState(NamedTuple):
    h: jax.Array


@dataclasses.dataclass(frozen=True)
class _Leaky:
    """A user's cell: the protocol only, no rnnjax base class."""

    input_size: int
    hidden_size: int

    @property
    def output_size(self):
        return self.hidden_size

    def init(self, key):
        return {"w": 0.5 * jax.random.normal(key, (self.input_size, self.hidden_size))}

    def initial_state(self, dtype=None):
        return _LeakyState(jnp.zeros(self.hidden_size, dtype or jnp.float32))

    def step(self, params, state, x):
        h = 0.5 * state.h + jnp.tanh(x @ params["w"])
        return _LeakyState(h), h


STACK = dict(num_layers=2, bidirectional=True)
SAME = {
    "LSTM-proj": (lambda: rj.LSTM(3, H, proj_size=2), {}),
    "GRU-cho": (lambda: rj.GRU(3, H, reset_after=False), dict(time_major=True)),
    "EchoState-fixed": (lambda: rj.EchoState(3, H), dict(trainable=False)),
    "MinGRU-sum": (lambda: rj.MinGRU(3, H), dict(STACK, merge="sum", config=PAR)),
    "user": (lambda: _Leaky(3, H), dict(STACK, merge="mean")),
    # the modern cells one layer deep (their compiles are long)
    **{cls.__name__: (lambda c=cls, o=options: c(H, H, **dict(o)), {}) for cls, options in CELLS},
}


def _shapes(tree):
    return jax.tree_util.tree_map(jnp.shape, tree)


@pytest.mark.parametrize("name", sorted(SAME))
def test_linen_and_nnx_take_the_same_cell_and_options(name):
    """One cell instance, the same options: linen and NNX run the same functional network,
    declare the same variables, and give identical outputs and states for the same
    parameters (NNX's, handed to linen)."""
    from flax import nnx

    import rnnjax.linen as rl
    import rnnjax.nnx as rn

    make, options = SAME[name]
    cell = make()
    mod_nnx = rn.Recurrent(cell, rngs=nnx.Rngs(0), **options)
    mod_linen = rl.Recurrent(cell, **options)
    assert mod_nnx.cell is cell and mod_linen.cell is cell
    assert mod_linen.functional() == mod_nnx.functional()
    collection = "params" if options.get("trainable", True) else "reservoir"
    variables = {collection: {f"layer_{i}": p for i, p in enumerate(mod_nnx.layer_params())}}
    I = cell.input_size
    xs = jax.random.normal(jax.random.key(1), (5, 2, I) if options.get("time_major") else (2, 5, I))
    lengths = jnp.array([5, 2])
    assert _shapes(jax.eval_shape(mod_linen.init, jax.random.key(0), xs)) == _shapes(variables)
    s_nnx, y_nnx = mod_nnx(xs, lengths)
    s_linen, y_linen = mod_linen.apply(variables, xs, lengths)
    np.testing.assert_array_equal(y_linen, y_nnx)
    assert float(jnp.max(jnp.abs(y_nnx))) > 0.0
    assert jax.tree_util.tree_structure(s_linen) == jax.tree_util.tree_structure(s_nnx)
    for a, b in zip(jax.tree_util.tree_leaves(s_linen), jax.tree_util.tree_leaves(s_nnx)):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(
        jax.tree_util.tree_leaves(mod_linen.initial_state((2,))),
        jax.tree_util.tree_leaves(mod_nnx.initial_state((2,))),
    ):
        np.testing.assert_array_equal(a, b)


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
