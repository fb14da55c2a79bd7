# ruff: noqa: B023  (loop-local lambdas are called at once, inside their iteration)
"""Parallel in time: the linear cells (MinGRU, MinLSTM, LRU) and the Newton solve of the
nonlinear cells, against independent references.

- Values: a plain Python loop over ``cell.step`` (each segment run alone), float64, every
  length {0, 1, partial, T}, reverse, resets, every linear scan.
- Derivatives: the parallel path against autodiff of the sequential reference scan
  (grad, jvp, Hessian-vector products for the linear cells; grad for Newton, whose
  forward mode and second order must raise), and finite differences of order 2.
- Layers: Bidirectional, Stacked, dropout and zoneout, the linen module, mixed precision.
- Newton: full and diagonal Jacobians, the fallback of a chaotic configuration (warning
  and flag) and damping.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from rnnjax import engine, parallel

T, I, H = 5, 3, 4
LENGTHS = np.array([0, 1, 3, T], np.int32)
RESETS = np.zeros((len(LENGTHS), T), bool)
RESETS[1, 2] = True  # in the padding of a length-1 sequence
RESETS[2, 1] = True
RESETS[3, 2] = RESETS[3, 4] = True
VARIANTS = [(rev, res) for rev in (False, True) for res in (False, True)]

LINEAR = {"mingru": rj.MinGRU(I, H), "minlstm": rj.MinLSTM(I, H), "lru": rj.LRU(I, H)}
NONLINEAR = {
    "rnn": rj.SimpleRNN(I, H),
    "gru": rj.GRU(I, H),
    "gru_cho": rj.GRU(I, H, reset_after=False),
    "lstm": rj.LSTM(I, H),
    "lstm_proj": rj.LSTM(I, H, proj_size=2),
}


def _par(**kw):
    return rj.ScanConfig(method="parallel", parallel=parallel.ParallelOptions(**kw))


def _params(cell, dtype=jnp.float64):
    p = cell.init(jax.random.key(0))
    ks = jax.random.split(jax.random.key(7), len(p))
    return {
        k: (v + 0.3 * jax.random.normal(kk, v.shape)).astype(dtype)
        for (k, v), kk in zip(sorted(p.items()), ks)
    }


def _data(cell, dtype=jnp.float64):
    xs = jax.random.normal(jax.random.key(1), (len(LENGTHS), T, I), dtype)
    s0 = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(2), (len(LENGTHS),) + a.shape, dtype),
        cell.initial_state(),
    )
    return xs, s0


@functools.lru_cache(maxsize=None)
def _jitted_step(cell):
    return jax.jit(cell.step)


def _loop(cell, p, x, n, s0, reverse, resets):
    """Independent reference for one example: each segment run alone with a Python loop."""
    n = int(n)
    step = _jitted_step(cell)
    starts = [0] + [t for t in range(1, n) if resets is not None and resets[t]]
    segs = list(zip(starts, starts[1:] + [n]))
    ys = np.zeros((T, cell.output_size))
    state = s0
    for a, b in reversed(segs) if reverse else segs:
        state = s0
        for t in range(b - 1, a - 1, -1) if reverse else range(a, b):
            state, y = step(p, state, x[t])
            ys[t] = np.asarray(y)
    return state, ys


def _run_all(cell, cfg, per_example, p, xs, s0):
    out = []
    for rev, res in VARIANTS:
        r = jnp.asarray(RESETS) if res else None
        if per_example:
            f = lambda x, n, s, rr: rj.unroll(cell, p, x, n, s, rev, resets=rr, config=cfg)  # noqa: E731
            st, ys = jax.vmap(f, in_axes=(0, 0, 0, None if r is None else 0))(
                xs, jnp.asarray(LENGTHS), s0, r
            )
        else:
            st, ys = rj.unroll_batch(
                cell, p, xs, jnp.asarray(LENGTHS), s0, rev, resets=r, config=cfg
            )
        out.append((st, ys))
    return out


def _check_against_loop(cell, outs, p, xs, s0, rtol=1e-10, atol=1e-12):
    for (rev, res), (st, ys) in zip(VARIANTS, outs):
        for b in range(len(LENGTHS)):
            s0_b = jax.tree_util.tree_map(lambda a: a[b], s0)
            ref_s, ref_y = _loop(cell, p, xs[b], LENGTHS[b], s0_b, rev, RESETS[b] if res else None)
            np.testing.assert_allclose(ys[b], ref_y, rtol=rtol, atol=atol)
            for got, want in zip(st, ref_s):
                np.testing.assert_allclose(got[b], want, rtol=rtol, atol=atol)


def _loss(cell, cfg, per_example, p, xs, s0):
    total = 0.0
    for k, (st, ys) in enumerate(_run_all(cell, cfg, per_example, p, xs, s0)):
        w = jnp.arange(1, ys.shape[-1] + 1, dtype=ys.dtype) * (k + 1)
        total = total + jnp.sum(jnp.sin(ys) * w.reshape((1,) * (ys.ndim - 1) + w.shape))
        total = total + sum(jnp.sum(jnp.cos(leaf) * (k + 2)) for leaf in st)
    return total


# --------------------------------------------------------------------------- linear cells


# every cell with the associative scan; the other scans with MinGRU (slow-marked for the
# others: the scans are also checked against each other on full matrices below)
LOOP_CASES = [
    (n, s) if (s == "associative" or n == "mingru") else pytest.param(n, s, marks=pytest.mark.slow)
    for n in sorted(LINEAR)
    for s in ("associative", "chunked", "sequential")
]


@pytest.mark.parametrize("name,scan", LOOP_CASES)
def test_linear_cells_against_python_loop(name, scan):
    """Parallel scans (batched) and the step-by-step path (per example, vmapped) against
    a Python loop over ``step``, every length, reverse, resets, float64."""
    cell = LINEAR[name]
    with jax.enable_x64(True):
        p = _params(cell)
        xs, s0 = _data(cell)
        cfg = _par(scan=scan, chunk=2)
        _check_against_loop(
            cell, jax.jit(functools.partial(_run_all, cell, cfg, False))(p, xs, s0), p, xs, s0
        )
        if scan == "sequential":  # the sequential method: the cell's step in lax.scan
            outs = jax.jit(functools.partial(_run_all, cell, None, True))(p, xs, s0)
            _check_against_loop(cell, outs, p, xs, s0)


@pytest.mark.parametrize(
    "name",
    [n if n == "mingru" else pytest.param(n, marks=pytest.mark.slow) for n in sorted(LINEAR)],
)
def test_linear_cells_derivatives_parallel_equal_sequential(name):
    """grad, jvp, forward-over-reverse and reverse-over-reverse Hessian-vector products
    (parameters, inputs, initial state) of the parallel path equal autodiff of the
    sequential reference scan: batched, every length, reversed, with resets."""
    cell = LINEAR[name]
    with jax.enable_x64(True):
        p = _params(cell)
        xs, s0 = _data(cell)
        args = (p, xs, s0)
        v = jax.tree_util.tree_map(
            lambda a: jax.random.normal(jax.random.key(3), a.shape, a.dtype), args
        )

        def derivs(cfg):
            def f(p, xs, s0):
                st, ys = rj.unroll_batch(
                    cell,
                    p,
                    xs,
                    jnp.asarray(LENGTHS),
                    s0,
                    True,
                    resets=jnp.asarray(RESETS),
                    config=cfg,
                )
                return jnp.sum(jnp.sin(ys)) + jnp.sum(jnp.cos(st.h))

            g = jax.grad(f, argnums=(0, 1, 2))
            val, tan = jax.jvp(f, args, v)
            fwd_rev = jax.jvp(g, args, v)[1]
            rev_rev = jax.grad(
                lambda *a: jax.tree_util.tree_reduce(
                    jnp.add, jax.tree_util.tree_map(jnp.vdot, g(*a), v)
                ),
                argnums=(0, 1, 2),
            )(*args)
            return val, tan, g(*args), fwd_rev, rev_rev

        ref = jax.jit(lambda: derivs(rj.ScanConfig(backward="reference")))()
        got = jax.jit(lambda: derivs(_par(scan="associative")))()
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@pytest.mark.slow
def test_linear_scan_all_scans_agree_and_finite_differences_order_2():
    """The three scans agree on diagonal (complex) and full coefficients; check_grads of
    order 2, forward and reverse mode, of the associative and chunked scans."""
    with jax.enable_x64(True):
        k = jax.random.split(jax.random.key(4), 4)
        a = jax.lax.complex(*(0.6 * jax.random.normal(kk, (7, 2, 3), jnp.float64) for kk in k[:2]))
        b = jax.lax.complex(*(jax.random.normal(kk, (7, 2, 3), jnp.float64) for kk in k[2:]))
        ref = parallel.linear_scan(a, b, b[0], scan="sequential")
        for scan in ("associative", "chunked"):
            np.testing.assert_allclose(
                parallel.linear_scan(a, b, b[0], scan=scan, chunk=3), ref, rtol=1e-12, atol=1e-12
            )
        a = 0.4 * jax.random.normal(jax.random.key(4), (5, 2, 3, 3), jnp.float64)
        b = jax.random.normal(jax.random.key(5), (5, 2, 3), jnp.float64)
        h0 = jnp.ones((2, 3), jnp.float64)
        ref = parallel.linear_scan(a, b, h0, scan="sequential")
        for scan in ("associative", "chunked"):
            np.testing.assert_allclose(
                parallel.linear_scan(a, b, h0, scan=scan, chunk=4), ref, rtol=1e-12, atol=1e-12
            )
            check_grads(
                jax.jit(
                    lambda a, b, h: jnp.sum(
                        jnp.sin(parallel.linear_scan(a, b, h, scan=scan, chunk=4))
                    )
                ),
                (a, b, h0),
                order=2,
                modes=("fwd", "rev"),
                atol=1e-5,
                rtol=1e-5,
            )


def test_linear_cells_in_layers_with_dropout_and_zoneout():
    """Stacked bidirectional MinGRU/MinLSTM layers with input, recurrent and between-layer
    dropout and sampled zoneout (and zoneout's expectation without a key), and an LRU
    layer: parallel equals sequential in values and gradients."""

    def net(cfg):
        return rj.Stacked(
            [
                rj.Bidirectional(
                    rj.Recurrent(
                        rj.MinGRU(I, H, dtype=jnp.float64),
                        input_dropout=0.2,
                        recurrent_dropout=0.3,
                        zoneout=0.2,
                        config=cfg,
                    )
                ),
                rj.Recurrent(
                    rj.MinLSTM(2 * H, H),
                    recurrent_dropout=0.2,
                    recurrent_dropout_mode="per_step",
                    zoneout=0.3,
                    config=cfg,
                ),
                rj.Recurrent(rj.LRU(H, 2), config=cfg),
            ],
            dropout=0.2,
        )

    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64), net(None).init(jax.random.key(0))
        )
        xs = jax.random.normal(jax.random.key(1), (3, T, I), jnp.float64)
        length, resets = jnp.array([T, 3, 0]), jnp.asarray(RESETS[1:])
        key = jax.random.key(2)

        def f(p, cfg, k):
            st, ys = net(cfg).apply_batch(p, xs, length, resets=resets, key=k)
            return jnp.sum(jnp.sin(ys)) + jnp.sum(st[2].h ** 2), ys

        for k in (key, None):
            (v1, y1), g1 = jax.jit(jax.value_and_grad(lambda p: f(p, _par(), k), has_aux=True))(
                params
            )
            (v2, y2), g2 = jax.jit(jax.value_and_grad(lambda p: f(p, None, k), has_aux=True))(
                params
            )
            np.testing.assert_allclose(y1, y2, rtol=1e-10, atol=1e-12)
            for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
                np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
        assert np.all(np.asarray(y1)[2] == 0) and np.all(np.asarray(y1)[1, 3:] == 0)


def test_lru_refuses_masks_on_its_complex_state_in_parallel():
    layer = rj.Recurrent(rj.LRU(I, H), recurrent_dropout=0.3, config=_par())
    p = layer.init(jax.random.key(0))
    with pytest.raises(ValueError, match="complex state"):
        layer.apply(p, jnp.ones((T, I)), key=jax.random.key(1))
    layer.apply(p, jnp.ones((T, I)))  # no key: no mask, fine
    zoned = lambda cfg: rj.Recurrent(rj.LRU(I, H), zoneout=0.3, config=cfg)  # noqa: E731
    xs = jax.random.normal(jax.random.key(1), (T, I))
    np.testing.assert_allclose(
        zoned(_par()).apply(p, xs)[1], zoned(None).apply(p, xs)[1], rtol=1e-5, atol=1e-6
    )


def test_linear_cells_mixed_precision_and_linen():
    """bfloat16 parameters initialise and run in parallel with a float32 state, close to
    float32; the generic linen module runs each linear cell in parallel."""
    import rnnjax.linen as rl

    xs = jax.random.normal(jax.random.key(1), (2, T, I))
    for cls in (rj.MinGRU, rj.MinLSTM, rj.LRU):
        c32, c16 = cls(I, H), cls(I, H, param_dtype=jnp.bfloat16)
        p16 = c16.init(jax.random.key(0))
        assert all(v.dtype == jnp.bfloat16 for v in p16.values())
        st, ys = rj.unroll_batch(c16, p16, xs, config=_par())
        # outputs in the compute dtype (Flax's convention), the state in float32
        assert ys.dtype == jnp.bfloat16 and st.h.dtype == jnp.float32
        p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), p16)
        _, ref = rj.unroll_batch(c32, p32, xs)
        np.testing.assert_allclose(ys.astype(jnp.float32), ref, atol=5e-2)
        net = rl.Recurrent(cls(I, H), bidirectional=True, config=_par())
        variables = net.init(jax.random.key(0), xs)
        (state,), out = net.apply(variables, xs, jnp.array([T, 2]))
        seq = rl.Recurrent(cls(I, H), bidirectional=True)
        np.testing.assert_allclose(
            out, seq.apply(variables, xs, jnp.array([T, 2]))[1], rtol=1e-5, atol=1e-6
        )


# --------------------------------------------------------------------------- Newton


NEWTON_CASES = [
    (n, j)
    if (n, j) in (("gru", "diag"), ("lstm_proj", "full"), ("gru_cho", "full"))
    else pytest.param(n, j, marks=pytest.mark.slow)
    for n in sorted(NONLINEAR)
    for j in ("full", "diag")
]


@pytest.mark.parametrize("name,jacobian", NEWTON_CASES)
def test_newton_against_python_loop_and_sequential_gradients(name, jacobian):
    """Values against the Python loop (every length, reverse, resets) and reverse-mode
    gradients (parameters, inputs, initial state) against autodiff of the sequential scan."""
    cell = NONLINEAR[name]
    cfg = _par(jacobian=jacobian, tol=1e-12)
    with jax.enable_x64(True):
        p = _params(cell)
        xs, s0 = _data(cell)
        outs = jax.jit(functools.partial(_run_all, cell, cfg, False))(p, xs, s0)
        _check_against_loop(cell, outs, p, xs, s0, rtol=1e-9, atol=1e-10)
        g = jax.jit(jax.grad(lambda *a: _loss(cell, cfg, False, *a), argnums=(0, 1, 2)))(p, xs, s0)
        ref = jax.jit(
            jax.grad(
                lambda *a: _loss(cell, rj.ScanConfig(backward="reference"), False, *a),
                argnums=(0, 1, 2),
            )
        )(p, xs, s0)
        for a, b in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(ref)):
            np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-9)


def test_newton_in_regularised_stacked_bidirectional_layers():
    """Dropout (input, variational and per-step recurrent, between layers), sampled
    zoneout and its expectation, lengths and resets through Newton: values and gradients
    equal the sequential engine's."""
    cfg = _par(tol=1e-12)

    def net(c):
        return rj.Stacked(
            [
                rj.Bidirectional(
                    rj.Recurrent(
                        rj.GRU(I, H),
                        input_dropout=0.2,
                        recurrent_dropout=0.3,
                        zoneout=0.2,
                        config=c,
                    )
                ),
                rj.Recurrent(
                    rj.LSTM(2 * H, 3),
                    recurrent_dropout=0.2,
                    recurrent_dropout_mode="per_step",
                    zoneout=0.3,
                    config=c,
                ),
            ],
            dropout=0.2,
        )

    with jax.enable_x64(True):
        p = jax.tree_util.tree_map(
            lambda a: a.astype(jnp.float64), net(None).init(jax.random.key(0))
        )
        xs = jax.random.normal(jax.random.key(1), (3, T, I), jnp.float64)
        length, resets = jnp.array([T, 3, 0]), jnp.asarray(RESETS[1:])
        for k in (jax.random.key(2), None):
            f = lambda p, c: jnp.sum(
                jnp.sin(  # noqa: E731
                    net(c).apply_batch(p, xs, length, resets=resets, key=k)[1]
                )
            )
            va, ga = jax.jit(jax.value_and_grad(lambda p: f(p, cfg)))(p)
            vb, gb = jax.jit(jax.value_and_grad(lambda p: f(p, None)))(p)
            np.testing.assert_allclose(va, vb, rtol=1e-10)
            for a, b in zip(jax.tree_util.tree_leaves(ga), jax.tree_util.tree_leaves(gb)):
                np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-10)


@pytest.mark.slow
def test_newton_echo_state_per_example_and_random_configs():
    """EchoState (a cell without a kernel) per example under vmap; random small SimpleRNN
    and GRU configurations in float32 at the default tolerance."""
    esn = rj.EchoState(I, 6, leak_rate=0.5)
    pe = esn.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (2, 12, I))
    f = lambda cfg: jax.vmap(lambda x: rj.unroll(esn, pe, x, config=cfg)[1])(xs)  # noqa: E731
    np.testing.assert_allclose(f(_par()), f(None), atol=1e-5)
    rng = np.random.default_rng(0)
    for k in range(3):
        h = int(rng.integers(2, 9))
        cell = [rj.SimpleRNN, rj.GRU][k % 2](I, h)
        p = cell.init(jax.random.key(k))
        x = jax.random.normal(jax.random.key(10 + k), (3, int(rng.integers(5, 40)), I))
        st, ys, info = rj.parallel_solve(cell, p, x, options=parallel.ParallelOptions(tol=1e-6))
        _, ref = rj.unroll_batch(cell, p, x)
        assert bool(info.converged) and not bool(info.fell_back)
        np.testing.assert_allclose(ys, ref, atol=1e-5)
        gp = jax.grad(lambda p: jnp.sum(rj.unroll_batch(cell, p, x, config=_par())[1] ** 2))(p)
        gs = jax.grad(lambda p: jnp.sum(rj.unroll_batch(cell, p, x)[1] ** 2))(p)
        for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gs)):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_newton_forward_mode_and_second_order_raise():
    cell = rj.GRU(I, H)
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((T, I))
    f = lambda p: jnp.sum(rj.unroll(cell, p, xs, config=_par())[1] ** 2)  # noqa: E731
    jax.grad(f)(p)  # first-order reverse mode works
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jvp(f, (p,), (p,))
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jacfwd(f)(p)
    with pytest.raises(NotImplementedError, match="second order are not available"):
        jax.hessian(f)(p)
    with pytest.raises(NotImplementedError, match="second order are not available"):
        jax.grad(lambda p: jnp.sum(jax.grad(f)(p)["w_hh"]))(p)


def _chaotic():
    cell = rj.SimpleRNN(I, 8)
    p = cell.init(jax.random.key(0))
    return cell, {**p, "w_hh": 3.0 * p["w_hh"]}, jax.random.normal(jax.random.key(1), (60, I))


def test_newton_that_does_not_converge_falls_back_and_flags_it():
    """A chaotic configuration (orthogonal recurrent weights times 3): undamped DEER
    overflows; the result is the sequential scan's, with a warning and the flag."""
    cell, p, xs = _chaotic()
    opts = parallel.ParallelOptions(jacobian="full", max_iter=8)
    run = jax.jit(lambda p: rj.parallel_solve(cell, p, xs, options=opts))
    with pytest.warns(parallel.NotConvergedWarning, match="did not converge"):
        st, ys, info = run(p)
        jax.effects_barrier()
    assert not bool(info.converged) and bool(info.fell_back)
    ref_st, ref = rj.unroll(cell, p, xs)
    np.testing.assert_allclose(ys, ref, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(st.h, ref_st.h, rtol=1e-6, atol=1e-6)
    with pytest.warns(parallel.NotConvergedWarning):  # through unroll: the warning only
        _, ys2 = rj.unroll(cell, p, xs, config=rj.ScanConfig(method="parallel", parallel=opts))
        jax.effects_barrier()
    np.testing.assert_allclose(ys2, ref, rtol=1e-6, atol=1e-6)
    g = jax.grad(
        lambda p: jnp.sum(
            rj.unroll(cell, p, xs, config=rj.ScanConfig(method="parallel", parallel=opts))[1]
        )
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", parallel.NotConvergedWarning)
        gp = g(p)
    gs = jax.grad(lambda p: jnp.sum(rj.unroll(cell, p, xs)[1]))(p)
    for a, b in zip(jax.tree_util.tree_leaves(gp), jax.tree_util.tree_leaves(gs)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)


def test_damping_converges_where_undamped_newton_fails():
    cell, p, _ = _chaotic()
    xs = jax.random.normal(jax.random.key(1), (200, I))  # long enough to overflow undamped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", parallel.NotConvergedWarning)
        _, _, plain = rj.parallel_solve(
            cell, p, xs, options=parallel.ParallelOptions(jacobian="full", max_iter=xs.shape[0])
        )
        _, ys, damped = rj.parallel_solve(
            cell,
            p,
            xs,
            options=parallel.ParallelOptions(jacobian="full", max_iter=xs.shape[0], damping=0.0),
        )
    assert not bool(plain.converged) and bool(damped.converged)
    assert float(damped.residual) <= 1e-5
    # chaotic: float32 rounding grows along the sequence in any evaluation order; the
    # first steps agree with the sequential scan
    np.testing.assert_allclose(ys[:20], rj.unroll(cell, p, xs)[1][:20], atol=1e-4)


# --------------------------------------------------------------------------- config


def test_config_and_options_checks_and_auto(monkeypatch):
    with pytest.raises(TypeError, match="parallel must be an rnnjax.parallel.ParallelOptions"):
        rj.ScanConfig(method="parallel", parallel={"tol": 1e-3})
    with pytest.raises(ValueError, match="scan must be one of"):
        parallel.ParallelOptions(scan="fast")
    with pytest.raises(ValueError, match="jacobian must be one of"):
        parallel.ParallelOptions(jacobian="dense")
    with pytest.raises(ValueError, match="tol"):
        parallel.ParallelOptions(tol=0.0)
    with pytest.raises(ValueError, match="max_iter"):
        parallel.ParallelOptions(max_iter=0)
    with pytest.raises(ValueError, match="damping"):
        parallel.ParallelOptions(damping=-1.0)
    with pytest.raises(TypeError, match="options must be"):
        rj.parallel_solve(
            rj.GRU(1, 2),
            rj.GRU(1, 2).init(jax.random.key(0)),
            jnp.ones((3, 1)),
            options={"tol": 1e-3},
        )
    with pytest.raises(ValueError, match="r_min must be smaller than r_max"):
        rj.LRU(2, 3, r_min=0.99, r_max=0.9)
    routes = []
    real = engine._run_parallel

    def spy(route, cell, *a):
        routes.append((route, type(cell).__name__))
        return real(route, cell, *a)

    monkeypatch.setattr(engine, "_run_parallel", spy)
    auto = rj.ScanConfig(method="auto")
    for cell in (rj.MinGRU(1, 2), rj.GRU(1, 2), rj.LRU(1, 2)):
        rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((3, 1)), config=auto)
    rj.unroll(
        rj.GRU(1, 2),
        rj.GRU(1, 2).init(jax.random.key(0)),
        jnp.ones((3, 1)),
        config=rj.ScanConfig(method="parallel"),
    )
    assert routes == [("linear", "MinGRU"), ("linear", "LRU"), ("newton", "GRU")]
    assert parallel.default_scan("cpu") == "sequential"
    assert parallel.default_scan("gpu") == "associative"
