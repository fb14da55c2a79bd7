"""sLSTM against the paper's equations (float64): unstabilised reference, stabiliser,
heads, lengths, reverse, resets, derivatives of order 1 and 2 in both modes, T=4096."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from modern_reference import T, compare_derivatives, compare_values, perturbed_params

import rnnjax as rj

I, H, NH = 3, 4, 2
B = 4


def _unstabilised_step(cell):
    """The paper's sLSTM without the stabiliser: ``c_t = f c + exp(i~) z``,
    ``n_t = f n + exp(i~)``, ``h = o c / n``; ``R`` block-diagonal written as a dense
    matrix. The state carries ``m`` only to map it to the stabilised one."""
    d = H // NH

    def step(p, s, x):
        h, c, n, m = s  # c, n unstabilised here
        R = jnp.zeros((H, 4 * H), x.dtype)
        for k in range(NH):
            for g in range(4):
                R = R.at[k * d : (k + 1) * d, g * H + k * d : g * H + (k + 1) * d].set(
                    p["r_hh"][k][:, g * d : (g + 1) * d]
                )
        pre = x @ p["w_ih"] + h @ R + p["b"]
        i_t, f_t, z_t, o_t = jnp.split(pre, 4)
        f = 1 / (1 + jnp.exp(-f_t)) if cell.forget == "sigmoid" else jnp.exp(f_t)
        c = f * c + jnp.exp(i_t) * jnp.tanh(z_t)
        n = f * n + jnp.exp(i_t)
        h = 1 / (1 + jnp.exp(-o_t)) * c / n
        m = jnp.maximum(jnp.log(f) + m, i_t)
        return rj.SLSTMState(h, c, n, m), h

    return step


def _to_unstab(s0):
    return (s0.h, s0.c * jnp.exp(s0.m), s0.n * jnp.exp(s0.m), s0.m)


def _stab(st):
    h, c, n, m = st
    return [h, c * jnp.exp(-m), n * jnp.exp(-m), m]


def _data(cell, scale=1.0):
    xs = scale * jax.random.normal(jax.random.key(1), (B, T, I), jnp.float64)
    k = jax.random.split(jax.random.key(2), 4)
    s0 = rj.SLSTMState(
        h=0.5 * jax.random.normal(k[0], (B, H), jnp.float64),
        c=0.5 * jax.random.normal(k[1], (B, H), jnp.float64),
        n=0.2 + jnp.abs(jax.random.normal(k[2], (B, H), jnp.float64)),
        m=0.5 * jax.random.normal(k[3], (B, H), jnp.float64),
    )
    return xs, s0


CELLS = [rj.SLSTM(I, H, num_heads=NH), rj.SLSTM(I, H, num_heads=NH, forget="exp")]


@pytest.mark.parametrize(
    "cell", [CELLS[0], pytest.param(CELLS[1], marks=pytest.mark.slow)], ids=["sigmoid", "exp"]
)
def test_values_against_unstabilised_reference(cell):
    """The stabilised cell equals the unstabilised equations (mapped by ``exp(-m)``),
    every length, reverse, resets, batched and vmapped, float64."""
    with jax.enable_x64(True):
        p = perturbed_params(cell)
        xs, s0 = _data(cell)
        compare_values(
            cell,
            _unstabilised_step(cell),
            p,
            xs,
            s0,
            state_map=_stab,
            ref_s0_map=lambda s: rj.SLSTMState(*_to_unstab(s)),
        )


@pytest.mark.slow
def test_derivatives_against_reference():
    """Order 1 and 2, forward and reverse mode, in parameters, inputs and initial state."""
    cell = CELLS[0]
    with jax.enable_x64(True):
        p = perturbed_params(cell)
        xs, s0 = _data(cell)
        compare_derivatives(
            cell,
            _unstabilised_step(cell),
            p,
            xs,
            s0,
            state_map=_stab,
            ref_s0_map=lambda s: rj.SLSTMState(*_to_unstab(s)),
        )


def test_step_is_recur_of_project_and_heads_are_blocks():
    cell = rj.SLSTM(I, H, num_heads=NH)
    p = cell.init(jax.random.key(0))
    s = jax.tree_util.tree_map(lambda a: a + 0.3, cell.initial_state())
    x = jnp.linspace(-1, 1, I)
    s1, y1 = cell.step(p, s, x)
    s2, y2 = cell.recur(p, s, cell.project(p, x))
    np.testing.assert_array_equal(y1, y2)
    # head 0's units do not read head 1's previous h
    s_b = s._replace(h=s.h.at[H // NH :].add(1.0))
    _, y3 = cell.step(p, s_b, x)
    np.testing.assert_array_equal(y3[: H // NH], y1[: H // NH])
    assert not np.allclose(y3[H // NH :], y1[H // NH :])
    b = np.asarray(p["b"])
    np.testing.assert_allclose(b[H : 2 * H], np.linspace(3, 6, H), rtol=1e-6)
    assert p["r_hh"].shape == (NH, H // NH, 4 * H // NH)


def test_long_sequence_stays_finite_where_unstabilised_overflows():
    """T=4096 with large input gates: the stabilised cell stays finite (float32) and
    equals the float64 unstabilised form as long as that one is finite."""
    cell = rj.SLSTM(I, H, num_heads=NH, forget="exp")
    p = cell.init(jax.random.key(0))
    p = dict(p, b=p["b"].at[:H].set(8.0).at[H : 2 * H].set(5.0))  # exp gates grow
    xs = jax.random.normal(jax.random.key(1), (4096, I))
    st, ys = jax.jit(lambda p, xs: rj.unroll(cell, p, xs))(p, xs)
    assert bool(jnp.isfinite(ys).all()) and all(bool(jnp.isfinite(a).all()) for a in st)
    with jax.enable_x64(True):
        p64 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), p)
        step = jax.jit(_unstabilised_step(cell))
        s = rj.SLSTMState(*(jnp.zeros(H) for _ in range(4)))
        ref, finite = [], 0
        for t in range(200):
            s, y = step(p64, s, xs[t].astype(jnp.float64))
            if not bool(jnp.isfinite(y).all()):
                break
            ref.append(y)
            finite += 1
        assert 5 < finite < 200  # the unstabilised form overflows within 200 steps
        np.testing.assert_allclose(ys[:finite], np.stack(ref), rtol=2e-4, atol=1e-5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rj.SLSTM(3, 5, num_heads=2), "hidden_size must be divisible by num_heads"),
        (lambda: rj.SLSTM(3, 4, forget="tanh"), "forget must be one of"),
        (lambda: rj.SLSTM(3, 4, forget_bias="big"), "forget_bias must be a number"),
        (lambda: rj.SLSTM(3, 4, num_heads=0), "num_heads must be an int >= 1"),
    ],
)
def test_bad_hyperparameters(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
