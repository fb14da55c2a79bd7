"""RG-LRU (Griffin) and S6 (Mamba) against references written from the papers (float64):
step by step and in parallel, every length, reverse, resets, derivatives of order 1 and
2 in both modes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from modern_reference import T, compare_derivatives, compare_values, perturbed_params

import rnnjax as rj

H, NH, N = 4, 2, 3
B = 4
SEQ = None
PAR = rj.ScanConfig(method="parallel", parallel=rj.parallel.ParallelOptions(scan="associative"))


def _sig(x):
    return 1 / (1 + jnp.exp(-x))


def _blockdiag(blocks):
    d = blocks.shape[1]
    W = jnp.zeros((H, H), blocks.dtype)
    for k in range(blocks.shape[0]):
        W = W.at[k * d : (k + 1) * d, k * d : (k + 1) * d].set(blocks[k])
    return W


def rglru_ref(c=8.0):
    """Griffin's RG-LRU: ``a_t = sigma(Lambda)^(c r_t)``, ``h = a h + sqrt(1 - a^2) i x``;
    at a segment start (``fresh``) RecurrentGemma's ``h = i x``."""

    def step(p, s, x):
        r = _sig(x @ _blockdiag(p["w_a"]) + p["b_a"])
        i = _sig(x @ _blockdiag(p["w_x"]) + p["b_x"])
        a = _sig(p["a_param"]) ** (c * r)
        if_fresh = i * x
        normal = a * s.h + jnp.sqrt(1 - a**2) * (i * x)
        h = jnp.where(s.fresh > 0.5, if_fresh, normal)
        return rj.RGLRUState(h=h, fresh=jnp.zeros_like(s.fresh)), h

    return step


def s6_ref(zoh=True):
    """Mamba's S6, per channel ``d`` and state ``n``, written out."""

    def step(p, s, x):
        R = p["w_dt"].shape[0]
        z = x @ p["w_x"]
        delta = jnp.log1p(jnp.exp(z[:R] @ p["w_dt"] + p["b_dt"]))  # softplus
        Bv, Cv = z[R : R + N], z[R + N :]
        A = -jnp.exp(p["a_log"])
        h = s.h.reshape(H, N)
        rows, ys = [], []
        for d in range(H):
            abar = jnp.exp(delta[d] * A[d])
            bbar = (abar - 1) / A[d] * Bv if zoh else delta[d] * Bv
            hd = abar * h[d] + bbar * x[d]
            rows.append(hd)
            ys.append(jnp.sum(Cv * hd) + p["d"][d] * x[d])
        y = jnp.stack(ys)
        return rj.S6State(h=jnp.concatenate(rows)), y

    return step


def _data(cell, fresh=None):
    xs = jax.random.normal(jax.random.key(1), (B, T, H), jnp.float64)
    s0 = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(2), (B,) + a.shape, jnp.float64),
        cell.initial_state(),
    )
    if fresh is not None:  # some examples start a segment, some continue
        s0 = s0._replace(fresh=jnp.asarray(fresh, jnp.float64)[:, None])
    return xs, s0


RGLRU = rj.RGLRU(H, H, num_heads=NH)
FRESH = [1.0, 0.0, 1.0, 0.0]
S6_ZOH = rj.S6(H, H, state_dim=N, dt_rank=2)
S6_EULER = rj.S6(H, H, state_dim=N, dt_rank=2, discretisation="euler")


def _rglru_params():
    p = perturbed_params(RGLRU)
    return dict(p, a_param=jnp.abs(p["a_param"]))  # decays in (0.5, 1)


STEP_SLOW = pytest.param(SEQ, marks=pytest.mark.slow)


@pytest.mark.parametrize("cfg", [STEP_SLOW, PAR], ids=["step", "parallel"])
def test_rglru_values(cfg):
    with jax.enable_x64(True):
        xs, s0 = _data(RGLRU, FRESH)
        compare_values(RGLRU, rglru_ref(), _rglru_params(), xs, s0, cfg=cfg)


@pytest.mark.parametrize(
    "cell,ref",
    [(S6_ZOH, s6_ref(True)), pytest.param(S6_EULER, s6_ref(False), marks=pytest.mark.slow)],
    ids=["zoh", "euler"],
)
@pytest.mark.parametrize("cfg", [STEP_SLOW, PAR], ids=["step", "parallel"])
def test_s6_values(cell, ref, cfg):
    with jax.enable_x64(True):
        xs, s0 = _data(cell)
        compare_values(cell, ref, perturbed_params(cell), xs, s0, cfg=cfg)


@pytest.mark.slow
@pytest.mark.parametrize("cfg", [SEQ, PAR], ids=["step", "parallel"])
@pytest.mark.parametrize("name", ["rglru", "s6"])
def test_derivatives_against_reference(name, cfg):
    """Order 1 and 2, forward and reverse mode, in parameters, inputs and initial state."""
    with jax.enable_x64(True):
        if name == "rglru":
            cell, ref, p = RGLRU, rglru_ref(), _rglru_params()
            xs, s0 = _data(cell, FRESH)
        else:
            cell, ref, p = S6_ZOH, s6_ref(True), perturbed_params(S6_ZOH)
            xs, s0 = _data(cell)
        compare_derivatives(cell, ref, p, xs, s0, cfg=cfg)


def test_rglru_segment_start_and_init():
    """The first step from the initial state is RecurrentGemma's ``h = i x``; a reset
    does it again; the decay at ``r = 1`` starts on the ring [0.9, 0.999]."""
    cell = rj.RGLRU(H, H)
    p = cell.init(jax.random.key(0))
    a_c = np.asarray(jax.nn.sigmoid(p["a_param"]) ** 8.0)
    assert (a_c >= 0.9 - 1e-6).all() and (a_c <= 0.999 + 1e-6).all()
    xs = jax.random.normal(jax.random.key(1), (6, H))
    i = jax.nn.sigmoid(cell.project(p, xs)[:, H : 2 * H])
    resets = jnp.zeros(6, bool).at[3].set(True)
    for cfg in (SEQ, PAR):
        _, ys = rj.unroll(cell, p, xs, resets=resets, config=cfg)
        np.testing.assert_allclose(ys[0], i[0] * xs[0], rtol=1e-6)
        np.testing.assert_allclose(ys[3], i[3] * xs[3], rtol=1e-6)
        assert not np.allclose(ys[1], i[1] * xs[1])
    plain = rj.RGLRU(H, H, unnormalised_start=False)
    _, ys = rj.unroll(plain, p, xs)
    a = jax.nn.sigmoid(p["a_param"]) ** (8.0 * jax.nn.sigmoid(cell.project(p, xs)[0, :H]))
    np.testing.assert_allclose(ys[0], jnp.sqrt(1 - a**2) * i[0] * xs[0], rtol=1e-5, atol=1e-7)


def test_s6_parallel_long_float32():
    """T=4096: the parallel scan and the step agree in float32 and stay finite."""
    cell = rj.S6(8, 8, state_dim=4)
    p = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (4096, 8))
    f = jax.jit(lambda p, xs, cfg: rj.unroll(cell, p, xs, config=cfg)[1], static_argnums=2)
    a, b = f(p, xs, None), f(p, xs, PAR)
    assert bool(jnp.isfinite(a).all())
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rj.RGLRU(3, 4), "input_size must equal hidden_size"),
        (lambda: rj.RGLRU(4, 4, num_heads=3), "hidden_size must be divisible by num_heads"),
        (lambda: rj.RGLRU(4, 4, r_min=0.99, r_max=0.9), "r_min must be smaller than r_max"),
        (lambda: rj.S6(3, 4), "input_size must equal hidden_size"),
        (lambda: rj.S6(4, 4, discretisation="bilinear"), "discretisation must be one of"),
        (lambda: rj.S6(4, 4, state_dim=0), "state_dim must be an int >= 1"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
