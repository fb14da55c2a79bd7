"""mLSTM against the paper's equations (float64, unstabilised matrix memory): the
recurrent form and the parallel form (whole and chunkwise), every length, reverse,
resets, derivatives of order 1 and 2 in both modes; the forms against each other."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from modern_reference import T, compare_derivatives, compare_values, perturbed_params

import rnnjax as rj

I, H, NH = 3, 4, 2
D = H // NH
B = 4
CELL = rj.MLSTM(I, H, num_heads=NH)

SEQ = None
WHOLE = rj.ScanConfig(method="parallel")
CHUNKED = rj.ScanConfig(method="parallel", parallel=rj.parallel.ParallelOptions(chunk=2))


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
        rj.ScanConfig(method="parallel", parallel=rj.parallel.ParallelOptions(chunk=64)),
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
