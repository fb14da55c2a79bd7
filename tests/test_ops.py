"""The matrix-state operators of family A (linear attention, simple GLA, retention, GLA,
SSD) and the shared machinery of ``rnnjax.ops``.

In float64: a Python loop of each family's ``step`` over every row and segment alone =
``recurrent`` = ``chunk`` (lengths 0, 1, C-1, C, C+1 and T; resets inside chunks and on
chunk boundaries; padding-aware reverse; a nonzero initial state); derivatives of every
order of ``chunk`` against ``recurrent``; fla's naive PyTorch functions (float64) and a
loop from the Mamba-2 paper as independent references; several batch axes; bfloat16
inputs with a float32 state; bad arguments.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax.ops as ops
from rnnjax.ops import OPERATORS
from tests.ops_reference import from_torch, load_naive, to_torch

C = 3  # chunk size of the tests
T = 7
LENGTHS = np.array([0, 1, C - 1, C, C + 1, T], np.int32)
NB = len(LENGTHS)
RESETS = np.zeros((T, NB), bool)
RESETS[1, 3] = True  # inside a chunk
RESETS[3, 4] = RESETS[2, 4] = True  # on a chunk boundary, and just before it
RESETS[3, 5] = RESETS[5, 5] = RESETS[6, 5] = True
RESETS[2, 1] = True  # in the padding of a length-1 row
H, DK, DV = 2, 3, 2


def _inputs(family, rng, T=T, batch=(NB,), dtype=np.float64):
    """The arrays of ``family``'s public function (time-major) and an initial state."""
    n = lambda *s: rng.normal(size=(T,) + batch + s).astype(dtype)  # noqa: E731
    u = lambda *s: rng.uniform(0.5, 0.99, size=(T,) + batch + s)  # noqa: E731
    logd = lambda *s: np.log(u(*s)).astype(dtype)  # noqa: E731
    q, k, v = n(H, DK), n(H, DK), n(H, DV)
    arrays = {
        "linear_attn": (q, k, v),
        "retention": (q, k, v),
        "simple_gla": (q, k, v, logd(H)),
        "gla": (q, k, v, logd(H, DK)),
        "ssd": (
            n(H, DV),
            rng.uniform(0.1, 1.0, size=(T,) + batch + (H,)).astype(dtype),
            -rng.uniform(0.2, 1.5, size=(H,)).astype(dtype),
            n(1, DK),
            n(1, DK),
        ),
    }[family]
    return arrays, rng.normal(size=batch + (H, DK, DV)).astype(dtype)


FAMILIES = ["linear_attn", "simple_gla", "retention", "gla", "ssd"]


def _module_args(family, arrays):
    """``(module, arrays)`` of the family module (retention: simple GLA with its decay)."""
    if family == "retention":
        q = arrays[0]
        g = jnp.broadcast_to(OPERATORS["simple_gla"].retention_log_decay(H, q.dtype), q.shape[:-1])
        return OPERATORS["simple_gla"], (*arrays, g)
    return OPERATORS[family], arrays


def reference(family, arrays, s0, lengths, resets, reverse):
    """Each row with Python control flow over ``step``: every segment alone from the
    initial state, outputs at input positions, zero past the length."""
    module, arrays = _module_args(family, arrays)
    timed = [a.ndim > 1 for a in arrays]
    os_, ss = [], []
    for b in range(len(lengths)):
        n = int(lengths[b])
        starts = [0] + [t for t in range(1, n) if resets is not None and resets[t, b]]
        segs = list(zip(starts, starts[1:] + [n]))
        o = np.zeros((T, H, DV))
        s = s0[b]
        for a, e in reversed(segs) if reverse else segs:
            s = s0[b]
            for t in range(e - 1, a - 1, -1) if reverse else range(a, e):
                xs = [x[t, b] if tm else x for x, tm in zip(arrays, timed)]
                s, o[t] = module.step(s, *xs)
        os_.append(o)
        ss.append(np.asarray(s))
    return np.stack(os_, 1), np.stack(ss)


def _public(family):
    return getattr(ops, family)


@jax.jit
def _run_all(arrays_by_family, s0s):
    """Every family's public function, both methods, forward and reversed, with lengths
    and resets: one compile for the value tests."""
    out = {}
    for family, arrays in arrays_by_family.items():
        for method in ("chunkwise", "recurrent"):
            for reverse in (False, True):
                out[family, method, reverse] = _public(family)(
                    *arrays,
                    initial_state=s0s[family],
                    length=jnp.asarray(LENGTHS),
                    resets=jnp.asarray(RESETS),
                    reverse=reverse,
                    method=method,
                    chunk=C,
                )
    return out


def test_step_loop_recurrent_chunk_values():
    with jax.enable_x64(True):
        rng = np.random.default_rng(0)
        data = {f: _inputs(f, rng) for f in FAMILIES}
        out = _run_all({f: d[0] for f, d in data.items()}, {f: d[1] for f, d in data.items()})
        for family, (arrays, s0) in data.items():
            for reverse in (False, True):
                want_o, want_s = reference(family, arrays, s0, LENGTHS, RESETS, reverse)
                for method in ("chunkwise", "recurrent"):
                    o, s = out[family, method, reverse]
                    assert o.dtype == s.dtype == jnp.float64
                    np.testing.assert_allclose(o, want_o, rtol=1e-10, atol=1e-12)
                    np.testing.assert_allclose(s, want_s, rtol=1e-10, atol=1e-12)


@jax.jit
def _modules_masked(arrays_by_family, s0, r0, valid, resets):
    """Each family module's ``chunk`` and ``recurrent`` with any valid pattern (not only a
    prefix) and a reset state other than the initial state."""
    out = {}
    for family, arrays in arrays_by_family.items():
        module, arrays = _module_args(family, arrays)
        kw = dict(state=s0, reset_state=r0, valid=valid, resets=resets)
        out[family] = (module.chunk(*arrays, **kw, chunk=C), module.recurrent(*arrays, **kw))
    return out


def test_module_masks_any_pattern():
    """``valid`` false anywhere: the step changes nothing, the output is 0; a reset puts
    ``reset_state`` back (ignored on an invalid step)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        data = {f: _inputs(f, rng)[0] for f in FAMILIES}
        s0, r0 = rng.normal(size=(2, NB, H, DK, DV))
        valid = rng.random((T, NB)) < 0.7
        resets = RESETS | (rng.random((T, NB)) < 0.2)
        resets[0, 0] = True
        out = _modules_masked(data, s0, r0, valid, resets)
        for family, arrays in data.items():
            module, arrays = _module_args(family, arrays)
            want_o = np.zeros((T, NB, H, DV))
            s = s0.copy()
            for t in range(T):
                s_in = np.where(resets[t, :, None, None, None], r0, s)
                xs = [x[t] if x.ndim > 1 else x for x in arrays]
                new, o = module.step(s_in, *xs)
                s = np.where(valid[t, :, None, None, None], new, s)
                want_o[t] = np.where(valid[t, :, None, None], o, 0.0)
            for o, fs in out[family]:
                np.testing.assert_allclose(o, want_o, rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(fs, s, rtol=1e-10, atol=1e-12)
                assert (np.asarray(o)[~valid] == 0).all()


NAIVE = {
    # family: (fla folder, function, its arguments from rnnjax's, time axis of its output)
    "linear_attn": ("linear_attn", "naive_recurrent_linear_attn"),
    "simple_gla": ("simple_gla", "naive_recurrent_simple_gla"),
    "gla": ("gla", "naive_recurrent_gla"),
}


@pytest.mark.parametrize("family", ["linear_attn", "simple_gla", "gla", "simple_gla_chunk"])
def test_against_fla_naive(family):
    """fla's naive recurrences (float64), batch-first, with an initial state."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        fam = "simple_gla" if family == "simple_gla_chunk" else family
        arrays, s0 = _inputs(fam, rng, T=T, batch=(2,))
        o, s = _public(fam)(*arrays, initial_state=s0, chunk=C)
        naive = load_naive(fam)
        t = [to_torch(a) for a in arrays]
        s0_t = to_torch(s0, 0)
        if family == "linear_attn":
            want_o, want_s = naive.naive_recurrent_linear_attn(
                *t, initial_state=s0_t, output_final_state=True
            )
        elif family == "simple_gla":
            want_o, want_s = naive.naive_recurrent_simple_gla(*t, initial_state=s0_t)
        elif family == "simple_gla_chunk":
            want_o, want_s = naive.naive_chunk_simple_gla(
                *t, initial_state=s0_t, output_final_state=True, chunk_size=4
            )
        else:
            want_o, want_s = naive.naive_recurrent_gla(
                *t, initial_state=s0_t, output_final_state=True
            )
        np.testing.assert_allclose(o, from_torch(want_o), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(s, want_s.numpy(), rtol=1e-10, atol=1e-12)


def test_retention_against_fla_naive():
    """fla's ``naive_retention`` (its layout is ``(B, H, T, d)``; zero initial state)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(3)
        (q, k, v), _ = _inputs("retention", rng, T=T, batch=(2,))
        o, _ = ops.retention(q, k, v, chunk=C)
        naive = load_naive("retention")
        import torch

        hm = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(1, 2, 0, 3)))  # noqa: E731
        want = naive.naive_retention(hm(q), hm(k), hm(v)).numpy()  # (B, H, T, d)
        np.testing.assert_allclose(o, want.transpose(2, 0, 1, 3), rtol=1e-10, atol=1e-12)


def test_ssd_against_mamba2_loop():
    """SSD against a float64 loop written from the Mamba-2 paper (no fla reference):
    h_t = exp(dt_t A) h_{t-1} + dt_t B_t x_t^T, y_t = h_t^T C_t, groups shared by heads."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(4)
        T2, Bsz, heads, groups, n, p = 9, 2, 4, 2, 3, 2
        x = rng.normal(size=(T2, Bsz, heads, p))
        dt = rng.uniform(0.1, 1.0, size=(T2, Bsz, heads))
        A = -rng.uniform(0.2, 1.5, size=(heads,))
        Bm, Cm = rng.normal(size=(2, T2, Bsz, groups, n))
        h0 = rng.normal(size=(Bsz, heads, n, p))
        y, hT = ops.ssd(x, dt, A, Bm, Cm, initial_state=h0, chunk=4)
        want_y = np.zeros_like(x)
        hs = h0.copy()
        for t in range(T2):
            for b in range(Bsz):
                for i in range(heads):
                    j = i // (heads // groups)
                    hs[b, i] = np.exp(dt[t, b, i] * A[i]) * hs[b, i] + dt[t, b, i] * np.outer(
                        Bm[t, b, j], x[t, b, i]
                    )
                    want_y[t, b, i] = hs[b, i].T @ Cm[t, b, j]
        np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(hT, hs, rtol=1e-10, atol=1e-12)


def _loss_fn(family, method, reverse, chunk=C):
    def loss(arrays, s0):
        o, s = _public(family)(
            *arrays,
            initial_state=s0,
            length=jnp.asarray(LENGTHS),
            resets=jnp.asarray(RESETS),
            reverse=reverse,
            method=method,
            chunk=chunk,
        )
        w = jnp.arange(1, o.shape[-1] + 1, dtype=o.dtype)
        return jnp.sum(jnp.sin(o) * w.reshape((1,) * (o.ndim - 1) + w.shape)) + jnp.sum(jnp.cos(s))

    return loss


def _derivatives(f, args, tangents):
    g = jax.grad(f, argnums=(0, 1))
    val, tan = jax.jvp(f, args, tangents)
    fwd_rev = jax.jvp(g, args, tangents)[1]
    rev_rev = jax.grad(
        lambda *a: sum(
            jnp.vdot(x, y)
            for x, y in zip(jax.tree_util.tree_leaves(g(*a)), jax.tree_util.tree_leaves(tangents))
        ),
        argnums=(0, 1),
    )(*args)
    return val, tan, g(*args), fwd_rev, rev_rev


def check_derivatives(family, reverse, chunk=C):
    """chunk against recurrent: value, jvp, grad, forward-over-reverse and
    reverse-over-reverse Hessian-vector products in every input and the initial state;
    gradients past each row's length are exactly 0."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(5)
        arrays, s0 = _inputs(family, rng)
        args = (tuple(jnp.asarray(a) for a in arrays), jnp.asarray(s0))
        tangents = jax.tree_util.tree_map(lambda a: jnp.asarray(rng.normal(size=a.shape)), args)
        got = jax.jit(
            lambda a, t: _derivatives(_loss_fn(family, "chunkwise", reverse, chunk), a, t)
        )(args, tangents)
        want = jax.jit(lambda a, t: _derivatives(_loss_fn(family, "recurrent", reverse), a, t))(
            args, tangents
        )
        for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-10)
        grads = got[2][0]
        pad = np.arange(T)[:, None] >= LENGTHS[None]
        for gr in grads:
            if gr.ndim > 1:
                assert (np.asarray(gr)[pad] == 0).all()


def test_derivatives_gla():
    check_derivatives("gla", reverse=True)


@pytest.mark.slow  # CI's parallel profile runs chunk 2; the rest before a release
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [1, pytest.param(2, marks=pytest.mark.parallel), 3, 8])
def test_derivatives_grid(family, reverse, chunk):
    check_derivatives(family, reverse, chunk)


def test_batch_axes_and_flip():
    """Two batch axes equal the flattened batch; ``reverse`` without lengths flips time."""
    rng = np.random.default_rng(6)
    arrays, s0 = _inputs("gla", rng, batch=(2, 3), dtype=np.float32)
    o, s = ops.gla(*arrays, initial_state=s0, reverse=True, chunk=C)
    flat = [a.reshape((T, 6) + a.shape[3:]) for a in arrays]
    o2, s2 = ops.gla(*[a[::-1] for a in flat], initial_state=s0.reshape((6, H, DK, DV)), chunk=C)
    np.testing.assert_allclose(o.reshape(o2.shape), o2[::-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.reshape(s2.shape), s2, rtol=1e-5, atol=1e-5)


def test_no_batch_axis():
    rng = np.random.default_rng(7)
    arrays, s0 = _inputs("simple_gla", rng, batch=(), dtype=np.float32)
    o, s = ops.simple_gla(*arrays, initial_state=s0, length=4, chunk=C)
    o2, s2 = ops.simple_gla(*[a[:4] for a in arrays], initial_state=s0, method="recurrent")
    np.testing.assert_allclose(o[:4], o2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s, s2, rtol=1e-5, atol=1e-5)
    assert (o[4:] == 0).all()


def test_bfloat16_inputs_float32_state():
    """bfloat16 inputs: a float32 state, bfloat16 outputs, close to the float32 run."""
    rng = np.random.default_rng(8)
    arrays, s0 = _inputs("gla", rng, dtype=np.float32)
    lo = [jnp.asarray(a, jnp.bfloat16) for a in arrays]
    want_o, want_s = ops.gla(*[a.astype(jnp.float32) for a in lo], chunk=C, method="recurrent")
    for method in ("chunkwise", "recurrent"):
        o, s = ops.gla(*lo, chunk=C, method=method)
        assert o.dtype == jnp.bfloat16 and s.dtype == jnp.float32
        np.testing.assert_allclose(o.astype(np.float32), want_o, rtol=5e-2, atol=5e-2)
        np.testing.assert_allclose(s, want_s, rtol=2e-2, atol=2e-2)


def _bad(**change):
    q = jnp.ones((4, 2, 2, 3))
    args = dict(q=q, k=q, v=jnp.ones((4, 2, 2, 5)), g=jnp.zeros((4, 2, 2)))
    kw = {n: change.pop(n) for n in list(change) if n not in args}
    args.update(change)
    return lambda: ops.simple_gla(**args, **kw)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (_bad(chunk=0), ValueError, "chunk"),
        (_bad(chunk=2.5), TypeError, "chunk"),
        (_bad(k=jnp.ones((4, 2, 2, 4))), ValueError, "k must have shape"),
        (_bad(v=jnp.ones((4, 2, 3, 5))), ValueError, "v must have shape"),
        (_bad(g=jnp.zeros((4, 2))), ValueError, "g must have shape"),
        (_bad(v=jnp.ones((5, 2, 2, 5))), ValueError, "v must have shape"),
        (_bad(length=jnp.array([5, 1])), ValueError, "length"),
        (_bad(length=jnp.array([-1, 1])), ValueError, "length"),
        (_bad(q=jnp.ones((4, 2, 2, 3), jnp.int32)), TypeError, "q must have a floating dtype"),
        (_bad(method="fast"), ValueError, "method"),
        (_bad(initial_state=jnp.ones((2, 2, 3, 4))), ValueError, "initial_state"),
        (_bad(resets=jnp.zeros((4, 2), jnp.int32)), TypeError, "resets"),
        (_bad(reverse=1), TypeError, "reverse"),
        (
            lambda: ops.ssd(
                jnp.ones((4, 3, 2)),
                jnp.ones((4, 3)),
                -jnp.ones(3),
                jnp.ones((4, 2, 2)),
                jnp.ones((4, 2, 2)),
            ),
            ValueError,
            "groups",
        ),
        (
            lambda: ops.ssd(
                jnp.ones((4, 3, 2)),
                jnp.ones((4, 3)),
                -jnp.ones(2),
                jnp.ones((4, 3, 2)),
                jnp.ones((4, 3, 2)),
            ),
            ValueError,
            "A must have shape",
        ),
    ],
)
def test_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()
