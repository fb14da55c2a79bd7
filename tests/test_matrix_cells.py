"""The linear-attention family of cells (rnnjax.cells.linear_attention).

- Each cell against a float64 NumPy loop written here from its docstring's equations.
- The engine's chunkwise route against the step loop: lengths (0, 1, C-1, C, C+1, T), resets
  inside chunks and on their boundaries, padding-aware reverse, two batch axes; gradients,
  jvp and both Hessian-vector products.
- Bad arguments name the argument.
"""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

I, H, NH, T, C = 3, 4, 2, 7, 3


def _cells():
    return {
        "linear_attn": rj.LinearAttention(I, H, num_heads=NH),
        "retention": rj.Retention(I, H, num_heads=NH),
        "gla": rj.GLA(I, H, num_heads=NH),
        "mamba2": rj.Mamba2(I, H, num_heads=NH, key_size=3),
        "deltanet": rj.DeltaNet(I, H, num_heads=NH),
        "deltanet_neg": rj.DeltaNet(I, H, num_heads=NH, negative_eigenvalues=True),
        "gated_deltanet": rj.GatedDeltaNet(I, H, num_heads=NH),
        "kda": rj.KDA(I, H, num_heads=NH),
        "rwkv7": rj.RWKV7(I, H, num_heads=NH),
    }


CELLS = _cells()
FAST = ["gated_deltanet"]  # the derivative battery's representative in the default suite


def _f64(cell, seed=0):
    p = cell.init(jax.random.key(seed))
    # larger weights than the initialisation: decays and gates away from their centres
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64) * 1.5, p)


# ----------------------------------------------------------------- the NumPy reference


def _sig(x):
    return 1.0 / (1.0 + np.exp(-x))


def _softplus(x):
    return np.log1p(np.exp(x))


def _silu_l2(x):
    y = x * _sig(x)
    return y / np.sqrt(np.sum(y * y, -1, keepdims=True) + 1e-6)


def _reference(name, cell, p, xs):
    """Outputs ``(T, H)`` and the final ``S`` ``(NH, dk, dv)`` by the docstrings' equations."""
    dk, dv = cell.dk, cell.dv
    widths = {"q": dk, "k": dk, "v": dv}
    widths.update({n: {"k": dk, "v": dv, 1: 1}[u] for n, u in type(cell).extra})
    S = np.zeros((NH, dk, dv))
    ys = []
    for x in xs:
        z = x @ p["w"] + p["b"]
        parts, o = {}, 0
        for n, w in widths.items():
            parts[n] = z[o : o + NH * w].reshape(NH, w)
            o += NH * w
        q, k, v = parts["q"], parts["k"], parts["v"]
        scale = dk**-0.5
        eye = np.eye(dk)
        if name == "linear_attn":
            q, k = (np.where(a > 0, a + 1.0, np.exp(a)) for a in (q, k))
            M = np.broadcast_to(eye, (NH, dk, dk))
        elif name == "retention":
            gamma = 1.0 - 2.0 ** (-5.0 - np.arange(NH))
            M = gamma[:, None, None] * eye
        elif name == "gla":
            alpha = _sig(parts["gk"]) ** (1.0 / 16.0)
            M = np.stack([np.diag(a) for a in alpha])
        elif name == "mamba2":
            delta = _softplus(parts["dt"][:, 0] + p["dt_bias"])
            A = -np.exp(p["A_log"])
            M = np.exp(delta * A)[:, None, None] * eye
            xv = v
            v = v * delta[:, None]
            scale = 1.0
        elif name.startswith("deltanet") or name in ("gated_deltanet", "kda"):
            q, k = _silu_l2(q), _silu_l2(k)
            beta = _sig(parts["beta"][:, 0]) * (2.0 if name == "deltanet_neg" else 1.0)
            erase = eye - beta[:, None, None] * np.einsum("hi,hj->hij", k, k)
            if name == "gated_deltanet":
                g = -np.exp(p["A_log"]) * _softplus(parts["a"][:, 0] + p["dt_bias"][:, 0])
                M = np.exp(g)[:, None, None] * erase
            elif name == "kda":
                g = -np.exp(p["A_log"])[:, None] * _softplus(parts["a"] + p["dt_bias"])
                M = erase @ np.stack([np.diag(np.exp(gi)) for gi in g])
            else:
                M = erase
            k = beta[:, None] * k
        elif name == "rwkv7":
            w = np.exp(-math.exp(-0.5) * _sig(parts["w"]))
            kk = parts["k"] / np.sqrt(np.sum(parts["k"] ** 2, -1, keepdims=True) + 1e-6)
            a = _sig(parts["a"])
            M = np.stack([np.diag(wi) for wi in w]) - np.einsum("hi,hj->hij", kk * a, kk)
            scale = 1.0
        S = M @ S + np.einsum("hi,hj->hij", k, v)
        y = scale * np.einsum("hij,hi->hj", S, q)
        if name == "mamba2":
            y = y + p["D"][:, None] * xv
        ys.append(y.reshape(H))
    return np.stack(ys), S


@pytest.mark.parametrize("name", list(CELLS))
def test_cell_against_numpy_loop(name):
    cell = CELLS[name]
    with jax.enable_x64(True):
        p = _f64(cell)
        xs = np.asarray(jax.random.normal(jax.random.key(1), (T, I), jnp.float64))
        want_y, want_S = _reference(name, cell, p, xs)
        for config in (None, rj.ScanConfig(method="chunkwise", chunk=C)):
            st, ys = rj.unroll(cell, p, jnp.asarray(xs), config=config)
            np.testing.assert_allclose(ys, want_y, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(st.S.reshape(want_S.shape), want_S, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(st.h, want_y[-1], rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------- chunkwise = step loop


@functools.lru_cache(maxsize=None)
def _runner(name, method):
    cell = CELLS[name]
    config = rj.ScanConfig(method=method, chunk=C) if method == "chunkwise" else None

    def run(p, xs, length, resets, s0, reverse):
        return rj.unroll_batch(
            cell, p, xs, length, s0, reverse, resets=resets, config=config, time_major=True
        )

    return jax.jit(run, static_argnums=5)


def _batch_case(cell, seed=2):
    """Two batch axes ``(2, 3)``; lengths 0, 1, C-1, C, C+1, T; resets inside chunks and
    on a chunk boundary (step C); a nonzero initial state."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    xs = jax.random.normal(k1, (T, 2, 3, I), jnp.float64)
    length = jnp.array([[0, 1, C - 1], [C, C + 1, T]])
    resets = jnp.zeros((T, 2, 3), bool).at[C, :, :].set(True).at[1, 1, :].set(True)
    resets = resets.at[5, 0, 2].set(True)
    s0 = jax.tree_util.tree_map(
        lambda a: 0.3 * jax.random.normal(k2, (2, 3) + a.shape, jnp.float64),
        cell.initial_state(jnp.float64),
    )
    return xs, length, resets, s0


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("name", list(CELLS))
def test_chunkwise_equals_step_loop(name, reverse):
    cell = CELLS[name]
    with jax.enable_x64(True):
        p = _f64(cell)
        args = _batch_case(cell)
        want = _runner(name, "sequential")(p, *args, reverse)
        got = _runner(name, "chunkwise")(p, *args, reverse)
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def _loss(name, method, reverse=False):
    def f(p, xs, length, resets, s0):
        st, ys = _runner(name, method)(p, xs, length, resets, s0, reverse)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(st.S**2)

    return f


def _derivative_battery(name):
    cell = CELLS[name]
    with jax.enable_x64(True):
        p = _f64(cell)
        args = _batch_case(cell)
        fs = {m: _loss(name, m, reverse=True) for m in ("sequential", "chunkwise")}
        dp = jax.tree_util.tree_map(lambda a: jnp.cos(jnp.arange(a.size)).reshape(a.shape), p)
        out = {}
        for m, f in fs.items():
            g = jax.grad(f)(p, *args)
            t = jax.jvp(lambda q: f(q, *args), (p,), (dp,))[1]
            gf = lambda q: jax.grad(f)(q, *args)  # noqa: E731
            hv_rev = jax.grad(
                lambda q: jnp.vdot(
                    jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(gf(q))]),
                    jnp.concatenate([a.ravel() for a in jax.tree_util.tree_leaves(dp)]),
                )
            )(p)
            hv_fwd = jax.jvp(gf, (p,), (dp,))[1]
            out[m] = (g, t, hv_rev, hv_fwd)
        for a, b in zip(
            jax.tree_util.tree_leaves(out["chunkwise"]),
            jax.tree_util.tree_leaves(out["sequential"]),
        ):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", FAST)
def test_chunkwise_derivatives_equal_step_loop(name):
    _derivative_battery(name)


@pytest.mark.slow  # CI's parallel profile runs two of them; the rest before a release
@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=[pytest.mark.parallel] if n in ("deltanet", "rwkv7") else [])
        for n in CELLS
        if n not in FAST
    ],
)
def test_chunkwise_derivatives_equal_step_loop_every_cell(name):
    _derivative_battery(name)


# ----------------------------------------------------------------- precision, bad input


def test_bfloat16_compute_keeps_a_float32_state():
    cell = rj.GatedDeltaNet(I, H, num_heads=NH, param_dtype=jnp.bfloat16)
    p = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, I))
    ref = rj.GatedDeltaNet(I, H, num_heads=NH)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p)
    want = rj.unroll(ref, p32, xs)[1]
    for config in (None, rj.ScanConfig(method="chunkwise", chunk=C)):
        st, ys = rj.unroll(cell, p, xs, config=config)
        assert ys.dtype == jnp.bfloat16 and st.S.dtype == jnp.float32
        np.testing.assert_allclose(ys.astype(jnp.float32), want, atol=5e-2)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: rj.DeltaNet(3, 5, num_heads=2), "hidden_size must be a multiple of num_heads"),
        (lambda: rj.DeltaNet(3, 4, num_heads=0), "num_heads"),
        (lambda: rj.GLA(3, 4, key_size=0), "key_size"),
        (lambda: rj.GLA(3, 4, gate_normalizer=0.0), "gate_normalizer"),
        (lambda: rj.LinearAttention(3, 4, feature_map="tanh"), "feature_map"),
        (lambda: rj.DeltaNet(3, 4, negative_eigenvalues=1), "negative_eigenvalues"),
    ],
)
def test_bad_arguments_name_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_recurrent_dropout_is_refused_by_the_chunkwise_route():
    cell = CELLS["deltanet"]
    layer = rj.Recurrent(
        cell, config=rj.ScanConfig(method="chunkwise", chunk=C), recurrent_dropout=0.5
    )
    with pytest.raises(ValueError, match="dropout"):
        layer.apply(layer.init(jax.random.key(0)), jnp.ones((T, I)), key=jax.random.key(1))
