"""Cells: parameter layout, initialisers, the project/recur split, float64 references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

I, H = 3, 4


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def test_param_shapes_and_state_names():
    lstm = rj.LSTM(I, H)
    p = lstm.init(jax.random.key(0))
    assert {k: v.shape for k, v in p.items()} == {
        "w_ih": (I, 4 * H),
        "w_hh": (H, 4 * H),
        "b": (4 * H,),
    }
    assert lstm.initial_state()._fields == ("h", "c")
    proj = rj.LSTM(I, 5, proj_size=2)
    p = proj.init(jax.random.key(0))
    assert p["w_hh"].shape == (2, 20) and p["w_hr"].shape == (5, 2)
    assert proj.initial_state().h.shape == (2,) and proj.initial_state().c.shape == (5,)
    gru = rj.GRU(I, H).init(jax.random.key(0))
    assert gru["b_hn"].shape == (H,) and gru["w_hh"].shape == (H, 3 * H)
    assert "b_hn" not in rj.GRU(I, H, reset_after=False).init(jax.random.key(0))
    assert rj.SimpleRNN(I, H).init(jax.random.key(0))["w_hh"].shape == (H, H)


@pytest.mark.parametrize(
    "cell",
    [
        rj.SimpleRNN(I, H),
        rj.LSTM(I, H),
        rj.LSTM(I, 6, proj_size=3),
        rj.GRU(I, H),
        rj.GRU(I, H, reset_after=False),
    ],
)
def test_step_is_recur_of_project(cell):
    p = cell.init(jax.random.key(0))
    state = jax.tree_util.tree_map(lambda a: a + 0.3, cell.initial_state())
    x = jnp.linspace(-1, 1, I)
    s1, y1 = cell.step(p, state, x)
    s2, y2 = cell.recur(p, state, cell.project(p, x))
    np.testing.assert_array_equal(y1, y2)
    # project batched over time equals per-step project
    xs = jnp.stack([x, 2 * x])
    np.testing.assert_allclose(cell.project(p, xs)[1], cell.project(p, 2 * x), rtol=1e-6)
    assert y1.shape == (cell.output_size,)


def test_cells_are_hashable_static_args():
    cell = rj.LSTM(I, H)
    assert hash(cell) == hash(rj.LSTM(I, H))
    f = jax.jit(lambda c, p, x: c.step(p, c.initial_state(), x)[1], static_argnums=0)
    p = cell.init(jax.random.key(0))
    assert f(cell, p, jnp.ones(I)).shape == (H,)


def test_lstm_biases_forget_and_chrono():
    b = np.asarray(rj.LSTM(I, H).init(jax.random.key(0))["b"])
    np.testing.assert_array_equal(b[H : 2 * H], 1.0)
    np.testing.assert_array_equal(np.delete(b, np.s_[H : 2 * H]), 0.0)
    b0 = np.asarray(rj.LSTM(I, H, forget_bias=0.0).init(jax.random.key(0))["b"])
    np.testing.assert_array_equal(b0, 0.0)
    t_max = 50.0
    bc = np.asarray(rj.LSTM(I, 64, chrono_t_max=t_max).init(jax.random.key(0))["b"])
    b_i, b_f = bc[:64], bc[64:128]
    np.testing.assert_allclose(b_i, -b_f)
    assert b_f.min() >= np.log(1.0) - 1e-6 and b_f.max() <= np.log(t_max - 1) + 1e-6
    assert b_f.std() > 0.3  # spread over timescales, not one constant
    bg = np.asarray(rj.GRU(I, 64, chrono_t_max=t_max).init(jax.random.key(0))["b"])
    assert bg[64:128].min() >= 0.0 and bg[64:128].max() <= np.log(t_max - 1) + 1e-6


def test_orthogonal_per_gate_block_and_alternatives():
    p = rj.LSTM(I, H).init(jax.random.key(0))
    for g in range(4):
        block = np.asarray(p["w_hh"][:, g * H : (g + 1) * H])
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    pu = rj.LSTM(I, H, recurrent_init="uniform", kernel_init="uniform").init(jax.random.key(0))
    assert np.abs(pu["w_hh"]).max() <= 1 / np.sqrt(H) + 1e-7
    pg = rj.SimpleRNN(I, 256, recurrent_init="gaussian").init(jax.random.key(0))
    assert abs(float(np.std(pg["w_hh"])) - 1 / 16) < 0.005
    const = lambda key, shape, dtype: jnp.full(shape, 0.5, dtype)
    pc = rj.GRU(I, H, kernel_init=const).init(jax.random.key(0))
    np.testing.assert_array_equal(pc["w_ih"], 0.5)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rj.LSTM(0, 4), "input_size must be an int >= 1"),
        (lambda: rj.LSTM(3, 4.0), "hidden_size must be an int >= 1"),
        (lambda: rj.LSTM(3, 4, proj_size=4), "proj_size must be smaller"),
        (lambda: rj.LSTM(3, 4, chrono_t_max=1.0), "chrono_t_max must be > 2"),
        (lambda: rj.SimpleRNN(3, 4, nonlinearity="sigmoid"), "nonlinearity must be"),
        (lambda: rj.GRU(3, 4, kernel_init="he"), "kernel_init must be one of"),
        (lambda: rj.GRU(3, 4, recurrent_init=3), "recurrent_init must be one of"),
    ],
)
def test_bad_hyperparameters_raise(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()
    with pytest.raises(TypeError, match="reset_after must be a bool"):
        rj.GRU(3, 4, reset_after=1)


def test_gru_cho_against_float64_reference():
    """GRU(reset_after=False) has no PyTorch twin: check it against its own equations."""
    cell = rj.GRU(I, H, reset_after=False)
    p = {k: np.asarray(v, np.float64) for k, v in cell.init(jax.random.key(3)).items()}
    p["b"] = np.random.default_rng(0).normal(size=3 * H)
    xs = np.random.default_rng(1).normal(size=(5, I))
    h = np.zeros(H)
    ref = []
    W_ir, W_iz, W_in = np.split(p["w_ih"], 3, axis=1)
    W_hr, W_hz, W_hn = np.split(p["w_hh"], 3, axis=1)
    b_r, b_z, b_n = np.split(p["b"], 3)
    for x in xs:
        r = _sigmoid(x @ W_ir + h @ W_hr + b_r)
        z = _sigmoid(x @ W_iz + h @ W_hz + b_z)
        n = np.tanh(x @ W_in + (r * h) @ W_hn + b_n)
        h = (1 - z) * n + z * h
        ref.append(h)
    p32 = {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}
    _, ys = rj.unroll(cell, p32, jnp.asarray(xs, jnp.float32))
    np.testing.assert_allclose(ys, np.stack(ref), rtol=1e-5, atol=1e-6)


def test_lstm_proj_against_float64_reference():
    cell = rj.LSTM(I, 5, proj_size=2)
    p = {k: np.asarray(v, np.float64) for k, v in cell.init(jax.random.key(4)).items()}
    xs = np.random.default_rng(2).normal(size=(4, I))
    h, c = np.zeros(2), np.zeros(5)
    for x in xs:
        i, f, g, o = np.split(x @ p["w_ih"] + h @ p["w_hh"] + p["b"], 4)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        h = (_sigmoid(o) * np.tanh(c)) @ p["w_hr"]
    state, _ = rj.unroll(
        cell, {k: jnp.asarray(v, jnp.float32) for k, v in p.items()}, jnp.asarray(xs, jnp.float32)
    )
    np.testing.assert_allclose(state.h, h, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.c, c, rtol=1e-5, atol=1e-6)


def test_float64_params_give_float64_state():
    with jax.enable_x64(True):
        cell = rj.GRU(I, H)
        p = jax.tree_util.tree_map(lambda a: a.astype(jnp.float64), cell.init(jax.random.key(0)))
        state, ys = rj.unroll(cell, p, jnp.ones((3, I), jnp.float64))
        assert ys.dtype == jnp.float64 and state.h.dtype == jnp.float64
