"""Shared harness of the modern-cell tests: the library (``rj.unroll_batch`` and
``rj.unroll`` under ``vmap``) against a reference written in the test from a paper's
equations, run with Python control flow (each segment alone, every length, reverse,
resets), in values and derivatives of order 1 and 2 in both modes."""

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj

T = 5
LENGTHS = np.array([0, 1, 3, T], np.int32)
RESETS = np.zeros((len(LENGTHS), T), bool)
RESETS[1, 2] = True  # in the padding of a length-1 sequence
RESETS[2, 1] = True
RESETS[3, 2] = RESETS[3, 4] = True
VARIANTS = [(rev, res) for rev in (False, True) for res in (False, True)]


def reference_run(ref_step, p, xs, s0, lengths, reverse, resets):
    """Each example with Python control flow: segments alone, ``ys`` aligned, zero past
    the length; the returned state is that of the last segment processed."""
    out_states, out_ys = [], []
    for b in range(xs.shape[0]):
        n = int(lengths[b])
        s0_b = jax.tree_util.tree_map(lambda a: a[b], s0)
        starts = [0] + [t for t in range(1, n) if resets is not None and resets[b, t]]
        segs = list(zip(starts, starts[1:] + [n]))
        ys = [None] * xs.shape[1]
        state = s0_b
        for a, e in reversed(segs) if reverse else segs:
            state = s0_b
            for t in range(e - 1, a - 1, -1) if reverse else range(a, e):
                state, ys[t] = ref_step(p, state, xs[b, t])
        y_like = jax.eval_shape(lambda: ref_step(p, s0_b, xs[b, 0])[1])
        ys = [jnp.zeros(y_like.shape, y_like.dtype) if y is None else y for y in ys]
        out_states.append(state)
        out_ys.append(jnp.stack(ys))
    return jax.tree_util.tree_map(lambda *a: jnp.stack(a), *out_states), jnp.stack(out_ys)


def library_run(cell, cfg, per_example, p, xs, s0, reverse, resets):
    r = None if resets is None else jnp.asarray(resets)
    if per_example:

        def f(x, n, s, rr):
            return rj.unroll(cell, p, x, n, s, reverse, resets=rr, config=cfg)

        return jax.vmap(f, in_axes=(0, 0, 0, None if r is None else 0))(
            xs, jnp.asarray(LENGTHS), s0, r
        )
    return rj.unroll_batch(cell, p, xs, jnp.asarray(LENGTHS), s0, reverse, resets=r, config=cfg)


def compare_values(
    cell, ref_step, p, xs, s0, cfg=None, state_map=None, ref_s0_map=None, rtol=1e-9, atol=1e-11
):
    """Every (reverse, resets) variant, batched and per example (vmapped ``unroll``).
    ``ref_s0_map`` maps the initial state to the reference's representation,
    ``state_map`` the reference's final state back to a list of the library's leaves."""
    state_map = state_map or (lambda s: jax.tree_util.tree_leaves(s))
    ref_s0 = s0 if ref_s0_map is None else ref_s0_map(s0)
    run = jax.jit(
        lambda p, xs, s0: [
            library_run(cell, cfg, per, p, xs, s0, rev, RESETS if res else None)
            for rev, res in VARIANTS
            for per in (False, True)
        ]
    )
    outs = run(p, xs, s0)
    k = 0
    for rev, res in VARIANTS:
        want_s, want_y = reference_run(
            ref_step, p, xs, ref_s0, LENGTHS, rev, RESETS if res else None
        )
        for _ in (False, True):
            got_s, got_y = outs[k]
            k += 1
            np.testing.assert_allclose(got_y, want_y, rtol=rtol, atol=atol)
            for g, w in zip(jax.tree_util.tree_leaves(got_s), state_map(want_s)):
                np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def _loss(ys, leaves):
    w = jnp.arange(1, ys.shape[-1] + 1, dtype=ys.dtype)
    total = jnp.sum(jnp.sin(ys) * w.reshape((1,) * (ys.ndim - 1) + w.shape))
    return total + sum(jnp.sum(jnp.cos(leaf)) for leaf in leaves)


def compare_derivatives(
    cell, ref_step, p, xs, s0, cfg=None, state_map=None, ref_s0_map=None, rtol=1e-8, atol=1e-9
):
    """grad, jvp, forward-over-reverse and reverse-over-reverse Hessian-vector products
    in (params, inputs, initial state), reversed with resets, library against reference."""
    state_map = state_map or (lambda s: jax.tree_util.tree_leaves(s))

    def f_lib(p, xs, s0):
        st, ys = library_run(cell, cfg, False, p, xs, s0, True, RESETS)
        return _loss(ys, jax.tree_util.tree_leaves(st))

    def f_ref(p, xs, s0):
        s0 = s0 if ref_s0_map is None else ref_s0_map(s0)
        st, ys = reference_run(ref_step, p, xs, s0, LENGTHS, True, RESETS)
        return _loss(ys, state_map(st))

    args = (p, xs, s0)
    v = jax.tree_util.tree_map(
        lambda a: jax.random.normal(jax.random.key(3), a.shape, a.dtype), args
    )

    def derivs(f):
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

    got = jax.jit(lambda: derivs(f_lib))()
    want = jax.jit(lambda: derivs(f_ref))()
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def perturbed_params(cell, key=7, scale=0.3, dtype=jnp.float64):
    p = cell.init(jax.random.key(0))
    ks = jax.random.split(jax.random.key(key), len(p))
    return {
        k: (v + scale * jax.random.normal(kk, v.shape)).astype(dtype)
        for (k, v), kk in zip(sorted(p.items()), ks)
    }
