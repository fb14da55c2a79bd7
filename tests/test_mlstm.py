"""mLSTM against the paper's equations (float64, unstabilised matrix memory): the
recurrent form and the parallel form (whole and chunkwise), every length, reverse,
resets, derivatives of order 1 and 2 in both modes; the forms against each other; the
engine's chunkwise route against a Python loop over the step at the chunk's edges."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from modern_reference import (
    T,
    compare_derivatives,
    compare_values,
    perturbed_params,
    reference_run,
)

import rnnjax as rj

I, H, NH = 3, 4, 2
D = H // NH
B = 4
CELL = rj.MLSTM(I, H, num_heads=NH)

SEQ = None
WHOLE = rj.ScanConfig(method="parallel")
CHUNKED = rj.ScanConfig(method="chunkwise", chunk=2)


def _sig(x):
    return 1 / (1 + jnp.exp(-x))


def ref_step(p, s, x):
    """The paper's mLSTM without the stabiliser: per head
    ``C = f C + exp(i~) v k^T``, ``n = f n + exp(i~) k``, ``h = o C q / max(|n q|, 1)``
    (``m`` tracked only to map the state to the stabilised one)."""
    h, c, n, m = s  # c (NH, D, D), n (NH, D) unstabilised
    pre = x @ p["w_ih"] + p["b"]
    q = pre[:H].reshape(NH, D)
    k = pre[H : 2 * H].reshape(NH, D) / math.sqrt(D)
    v = pre[2 * H : 3 * H].reshape(NH, D)
    o = _sig(pre[3 * H : 4 * H])
    i_t = pre[4 * H : 4 * H + NH]
    f = _sig(pre[4 * H + NH :])
    hs, cs, ns = [], [], []
    for j in range(NH):
        cj = f[j] * c[j] + jnp.exp(i_t[j]) * jnp.outer(v[j], k[j])
        nj = f[j] * n[j] + jnp.exp(i_t[j]) * k[j]
        hs.append(cj @ q[j] / jnp.maximum(jnp.abs(nj @ q[j]), 1.0))
        cs.append(cj)
        ns.append(nj)
    h = o * jnp.concatenate(hs)
    m = jnp.maximum(jnp.log(f) + m, i_t)
    return (h, jnp.stack(cs), jnp.stack(ns), m), h


def _to_unstab(s0):
    e = jnp.exp(s0.m)  # (B, NH)
    c = s0.c.reshape(B, NH, D, D) * e[..., None, None]
    n = s0.n.reshape(B, NH, D) * e[..., None]
    return (s0.h, c, n, s0.m)


def _stab(st):
    h, c, n, m = st
    e = jnp.exp(-m)
    return [h, (c * e[..., None, None]).reshape(B, -1), (n * e[..., None]).reshape(B, H), m]


def _data():
    xs = jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
    k = jax.random.split(jax.random.key(2), 4)
    s0 = rj.MLSTMState(
        h=0.5 * jax.random.normal(k[0], (B, H), jnp.float64),
        c=0.5 * jax.random.normal(k[1], (B, NH * D * D), jnp.float64),
        n=0.5 * jax.random.normal(k[2], (B, H), jnp.float64),
        m=0.5 * jax.random.normal(k[3], (B, NH), jnp.float64),
    )
    return xs, s0


def _params():
    # forget gates around 0.5 and input gates of both signs: every term matters
    p = perturbed_params(CELL, scale=0.5)
    return dict(p, b=p["b"].at[4 * H + NH :].set(jnp.array([0.0, 1.0])))


@pytest.mark.parametrize(
    "cfg",
    [
        pytest.param(SEQ, marks=pytest.mark.slow),
        WHOLE,
        pytest.param(CHUNKED, marks=pytest.mark.slow),
    ],
    ids=["recurrent", "parallel", "chunkwise"],
)
def test_values_against_reference(cfg):
    with jax.enable_x64(True):
        xs, s0 = _data()
        compare_values(
            CELL, ref_step, _params(), xs, s0, cfg=cfg, state_map=_stab, ref_s0_map=_to_unstab
        )


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [SEQ, WHOLE, CHUNKED], ids=["recurrent", "parallel", "chunkwise"])
def test_derivatives_against_reference(cfg):
    """Order 1 and 2, forward and reverse mode, in parameters, inputs and initial state."""
    with jax.enable_x64(True):
        xs, s0 = _data()
        compare_derivatives(
            CELL, ref_step, _params(), xs, s0, cfg=cfg, state_map=_stab, ref_s0_map=_to_unstab
        )


@pytest.mark.slow
def test_forms_agree_long_and_derivatives():
    """Recurrent, whole and chunkwise (chunk not dividing T) agree at T=200 with strong
    input gates (the stabiliser at work): values in float32 (finite), values and
    gradients in float64."""
    cell = rj.MLSTM(I, 8, num_heads=2)
    p32 = cell.init(jax.random.key(0))
    p32 = dict(p32, b=p32["b"].at[32:34].set(6.0))  # large exponential input gates
    lengths = jnp.array([200, 137])
    resets = jnp.zeros((2, 200), bool).at[1, 50].set(True)
    cfgs = [
        None,
        WHOLE,
        rj.ScanConfig(method="chunkwise", chunk=64),
    ]

    def loss(p, xs, cfg):
        st, ys = rj.unroll_batch(cell, p, xs, lengths, None, True, resets=resets, config=cfg)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(st.h), (st, ys)

    f = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=2)
    for dtype, tol, gtol in ((jnp.float32, 2e-4, None), (jnp.float64, 1e-9, 1e-8)):
        with jax.enable_x64(dtype == jnp.float64):
            p = jax.tree_util.tree_map(lambda a: a.astype(dtype), p32)
            xs = jax.random.normal(jax.random.key(1), (2, 200, I), dtype)
            (_, (st0, ys0)), g0 = f(p, xs, cfgs[0])
            assert bool(jnp.isfinite(ys0).all())
            for cfg in cfgs[1:]:
                (_, (st, ys)), g = f(p, xs, cfg)
                np.testing.assert_allclose(ys, ys0, rtol=tol, atol=tol / 10)
                for a, b in zip(st, st0):
                    np.testing.assert_allclose(a, b, rtol=tol, atol=tol / 10)
                if gtol:
                    for k in g:
                        np.testing.assert_allclose(g[k], g0[k], rtol=gtol, atol=gtol)


def test_parallel_form_refuses_dropout_and_zoneout():
    layer = rj.Recurrent(CELL, config=WHOLE, zoneout=0.1)
    p = layer.init(jax.random.key(0))
    with pytest.raises(ValueError, match="MLSTM's parallel form takes no"):
        layer.apply(p, jnp.ones((4, I)))


def test_bad_hyperparameters():
    with pytest.raises(ValueError, match="hidden_size must be divisible by num_heads"):
        rj.MLSTM(3, 5, num_heads=2)
    with pytest.raises(TypeError, match="forget_bias must be a number"):
        rj.MLSTM(3, 4, forget_bias=(1.0,))


def test_chunkwise_form_refuses_dropout_and_zoneout():
    for layer, match in (
        (rj.Recurrent(CELL, config=CHUNKED, zoneout=0.1), "zoneout"),
        (rj.Recurrent(CELL, config=CHUNKED, recurrent_dropout=0.5), "recurrent dropout"),
    ):
        p = layer.init(jax.random.key(0))
        with pytest.raises(ValueError, match="MLSTM's chunkwise form takes no") as e:
            layer.apply(p, jnp.ones((4, I)), key=jax.random.key(1))
        assert match in str(e.value)


def test_bad_chunk_raises_naming_it():
    from rnnjax.ops import mlstm

    for bad in (0, -3, 2.5, True):
        with pytest.raises((ValueError, TypeError), match="chunk must be an int >= 1"):
            rj.ScanConfig(method="chunkwise", chunk=bad)
    with pytest.raises(ValueError, match="chunk=8 is the chunk length of method='chunkwise'"):
        rj.ScanConfig(method="sequential", chunk=8)
    with pytest.raises(ValueError, match="parallel options are used only"):
        rj.ScanConfig(method="chunkwise", parallel=rj.parallel.ParallelOptions())
    with pytest.raises(ValueError, match="remat=2 applies to the sequential scan"):
        rj.ScanConfig(method="chunkwise", remat=2)
    gru = rj.GRU(I, H)
    with pytest.raises(ValueError, match="method='chunkwise'.*GRU has none"):
        rj.unroll(gru, gru.init(jax.random.key(0)), jnp.ones((3, I)), config=CHUNKED)
    s0 = mlstm.State(jnp.zeros((1, 2, 2)), jnp.zeros((1, 2)), jnp.zeros(1))
    z = jnp.zeros((3, 1, 2))
    with pytest.raises(ValueError, match="chunk must be an int >= 1; got 0"):
        mlstm.chunk(z, z, z, z[..., 0], z[..., 0], state=s0, chunk=0)


def test_deprecated_parallel_chunk_spelling_runs_the_chunkwise_route():
    """``method="parallel"`` with ``ParallelOptions(chunk=L)`` still runs (chunks of
    ``L``) and says what to use instead; ``method="parallel"`` alone is one chunk."""
    p = CELL.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (7, I))
    old = rj.ScanConfig(method="parallel", parallel=rj.parallel.ParallelOptions(chunk=3))
    with pytest.warns(DeprecationWarning, match=r"method='chunkwise', chunk=3"):
        st_old, ys_old = rj.unroll(CELL, p, xs, config=old)
    st, ys = rj.unroll(CELL, p, xs, config=rj.ScanConfig(method="chunkwise", chunk=3))
    np.testing.assert_array_equal(ys_old, ys)
    for a, b in zip(st_old, st):
        np.testing.assert_array_equal(a, b)
    _, ys_seq = rj.unroll(CELL, p, xs)
    np.testing.assert_allclose(ys, ys_seq, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------- chunkwise route at the chunk edges

TC = 8  # steps; batch axes (2, 3)
EDGE_VARIANTS = [(rev, res) for rev in (False, True) for res in (False, True)]


def _edge_case(C):
    """Lengths 0, 1, C-1, C, C+1, T on batch axes (2, 3); resets inside chunks and on
    chunk boundaries (and one in the padding)."""
    lengths = np.minimum([0, 1, max(C - 1, 0), C, C + 1, TC], TC).reshape(2, 3)
    resets = np.zeros((6, TC), bool)
    resets[1, 2] = True  # in the padding of a length-1 sequence
    resets[3, [1, C]] = True  # inside the first chunk, on the second chunk's first row
    resets[5, [1, C, C + 1, TC - 1]] = True
    resets = resets.reshape(2, 3, TC)
    xs = jax.random.normal(jax.random.key(1), (2, 3, TC, I), jnp.float64)
    k = jax.random.split(jax.random.key(2), 4)
    s0 = rj.MLSTMState(
        *(0.5 * jax.random.normal(kk, (2, 3) + a.shape, jnp.float64)
          for kk, a in zip(k, CELL.initial_state()))
    )  # fmt: skip
    return lengths, resets, xs, s0


def _edge_library(cfg, lengths, resets, rev, res):
    def run(p, xs, s0):
        r = jnp.asarray(resets) if res else None
        return rj.unroll_batch(CELL, p, xs, jnp.asarray(lengths), s0, rev, resets=r, config=cfg)

    return run


def _edge_reference(lengths, resets, rev, res):
    """A Python loop over ``cell.step``, each example alone (batch axes flattened)."""

    def run(p, xs, s0):
        flat = lambda a: a.reshape((6,) + a.shape[2:])  # noqa: E731
        st, ys = reference_run(
            CELL.step,
            p,
            flat(xs),
            jax.tree_util.tree_map(flat, s0),
            lengths.reshape(6),
            rev,
            resets.reshape(6, TC) if res else None,
        )
        unflat = lambda a: a.reshape((2, 3) + a.shape[1:])  # noqa: E731
        return jax.tree_util.tree_map(unflat, st), unflat(ys)

    return run


def _edge_loss(run):
    def loss(p, xs, s0):
        st, ys = run(p, xs, s0)
        w = jnp.arange(1, H + 1, dtype=ys.dtype).reshape((1,) * (ys.ndim - 1) + (H,))
        return jnp.sum(jnp.sin(ys) * w) + sum(jnp.sum(jnp.cos(a)) for a in st)

    return loss


def _derivatives(f, args):
    """value, jvp, grad, forward-over-reverse and reverse-over-reverse Hessian-vector
    products of ``f`` at ``args`` along a fixed random direction."""
    v = jax.tree_util.tree_map(
        lambda a: jax.random.normal(jax.random.key(3), a.shape, a.dtype), args
    )
    g = jax.grad(f, argnums=(0, 1, 2))
    val, tan = jax.jvp(f, args, v)
    fwd_rev = jax.jvp(g, args, v)[1]
    rev_rev = jax.grad(
        lambda *a: jax.tree_util.tree_reduce(jnp.add, jax.tree_util.tree_map(jnp.vdot, g(*a), v)),
        argnums=(0, 1, 2),
    )(*args)
    return val, tan, g(*args), fwd_rev, rev_rev


def _check_edges(C, variants, derivative_reference):
    """Values against the Python loop; every derivative against ``derivative_reference``
    (``"loop"``: the Python loop; ``"scan"``: autodiff of the sequential engine's scan of
    the step, cheaper to compile)."""
    cfg = rj.ScanConfig(method="chunkwise", chunk=C)
    with jax.enable_x64(True):
        lengths, resets, xs, s0 = _edge_case(C)
        p = _params()
        for rev, res in variants:
            lib = _edge_library(cfg, lengths, resets, rev, res)
            ref = _edge_reference(lengths, resets, rev, res)
            got, want = jax.jit(lib)(p, xs, s0), jax.jit(ref)(p, xs, s0)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)
            # one example through rj.unroll (the padding-aware reverse of one sequence)
            b = (1, 2)
            one = rj.unroll(CELL, p, xs[b], int(lengths[b]), jax.tree_util.tree_map(
                lambda a: a[b], s0), rev, resets=jnp.asarray(resets[b]) if res else None,
                config=cfg)  # fmt: skip
            np.testing.assert_allclose(one[1], want[1][b], rtol=1e-9, atol=1e-11)
            if derivative_reference == "scan":
                ref = _edge_library(rj.ScanConfig(), lengths, resets, rev, res)
            args = (p, xs, s0)
            got = jax.jit(lambda *a: _derivatives(_edge_loss(lib), a))(*args)
            want = jax.jit(lambda *a: _derivatives(_edge_loss(ref), a))(*args)
            for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
                np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9)


def test_chunkwise_route_at_chunk_edges():
    """Chunk 3, T = 8, batch axes (2, 3): lengths 0, 1, C-1, C, C+1, T, resets inside
    chunks and on their boundaries, reversed: values and every derivative against a
    Python loop over the step (float64; the derivatives against autodiff of the
    sequential scan of the step, itself checked against the paper's equations above)."""
    _check_edges(3, [(True, True)], "scan")


@pytest.mark.slow  # CI's parallel profile runs C=3; the rest before a release
@pytest.mark.parametrize("C", [1, 2, pytest.param(3, marks=pytest.mark.parallel), 4, 8, 16])
def test_chunkwise_route_at_chunk_edges_grid(C):
    """Every chunk length against the loop (values and every derivative), forwards and
    reversed, with and without resets."""
    _check_edges(C, EDGE_VARIANTS, "loop")


def test_auto_picks_the_chunkwise_route():
    """``"auto"``: chunkwise for a matrix-state cell, the linear scan for diagonal linear
    cells, sequential for the others; ``"parallel"`` on the MLSTM is chunkwise too."""
    from rnnjax import engine

    route = lambda cell, method: engine._parallel_route(cell, rj.ScanConfig(method=method))  # noqa: E731
    assert [route(CELL, m) for m in ("auto", "chunkwise", "parallel")] == ["chunkwise"] * 3
    assert route(CELL, "sequential") is None
    assert route(rj.RGLRU(4, 4), "auto") == route(rj.S6(4, 4), "auto") == "linear"
    assert route(rj.GRU(2, 3), "auto") is None
