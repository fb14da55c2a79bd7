"""The matrix-state operators of the delta-rule family (delta rule, gated delta rule, KDA,
the diagonal-plus-low-rank generalised delta rule of RWKV-7).

In float64: a Python loop of each family's ``step`` over every row and segment alone =
``recurrent`` = ``chunk`` (lengths 0, 1, C-1, C, C+1 and T; resets inside chunks and on
chunk boundaries; padding-aware reverse; a nonzero initial state; any pattern of valid
steps and a reset state of its own); derivatives of order 1 and 2 of ``chunk`` against
``recurrent``; fla's naive PyTorch functions (float64) as independent references; several
batch axes and none; bfloat16 inputs with a float32 state; bad arguments.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax.ops as ops
from tests.ops_reference import from_torch, load_naive, to_torch
from tests.test_ops import (  # the shared harness of the operator tests
    DK,
    DV,
    LENGTHS,
    NB,
    RESETS,
    C,
    H,
    T,
    _derivatives,
    _loss_fn,
    _modules_masked,
    _run_all,
    reference,
)

FAMILIES = ["delta_rule", "gated_delta_rule", "kda", "dplr_delta_rule"]


def _inputs(family, rng, T=T, batch=(NB,), dtype=np.float64):
    """The arrays of ``family``'s public function (time-major) and an initial state: unit
    keys, ``beta`` in (0.1, 1.9) (negative eigenvalues too), decays in (0.5, 0.99), and
    RWKV-7's ``a = -kappa``, ``b = kappa * alpha`` for the generalised rule."""
    shape = (T,) + batch
    n = lambda *s: rng.normal(size=shape + s)  # noqa: E731
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    logd = lambda *s: np.log(rng.uniform(0.5, 0.99, size=shape + s))  # noqa: E731
    q, k, v = n(H, DK), unit(n(H, DK)), n(H, DV)
    beta = rng.uniform(0.1, 1.9, size=shape + (H,))
    kappa = unit(n(H, DK))
    arrays = {
        "delta_rule": (q, k, v, beta),
        "gated_delta_rule": (q, k, v, logd(H), beta),
        "kda": (q, k, v, logd(H, DK), beta),
        "dplr_delta_rule": (
            q,
            k,
            v,
            -kappa,
            kappa * rng.uniform(0, 1, size=kappa.shape),
            logd(H, DK),
        ),
    }[family]
    s0 = rng.normal(size=batch + (H, DK, DV))
    return tuple(a.astype(dtype) for a in arrays), s0.astype(dtype)


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


def test_module_masks_any_pattern():
    """Each module's ``chunk`` equals its ``recurrent`` (checked against a loop over ``step``
    by the shared tests) with any pattern of valid steps, resets on invalid steps and a
    reset state of its own; outputs of invalid steps are exactly 0."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(1)
        data = {f: _inputs(f, rng)[0] for f in FAMILIES}
        s0, r0 = rng.normal(size=(2, NB, H, DK, DV))
        valid = rng.random((T, NB)) < 0.7
        resets = RESETS | (rng.random((T, NB)) < 0.2)
        resets[0, 0] = True
        out = _modules_masked(data, s0, r0, valid, resets)
        for family in FAMILIES:
            (o, s), (want_o, want_s) = out[family]
            np.testing.assert_allclose(o, want_o, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(s, want_s, rtol=1e-10, atol=1e-12)
            assert (np.asarray(o)[~valid] == 0).all()
            assert not np.allclose(s, s0)


def _head_major(a):
    """Time-major ``(T, B, H, ...)`` as a float64 torch tensor ``(B, H, T, ...)``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.asarray(a), 0, 2)))


def _fla(family, arrays, s0, naive_chunk):
    """fla's naive function of ``family`` on time-major float64 arrays: ``(o, final)``."""
    import torch

    s0_t = torch.from_numpy(np.asarray(s0))
    if family == "delta_rule":
        naive = load_naive("delta_rule")
        o, s = naive.delta_rule_recurrence(*map(_head_major, arrays), initial_state=s0_t)
        return np.moveaxis(o.numpy(), 2, 0), s
    if family == "dplr_delta_rule":
        naive = load_naive("generalized_delta_rule/dplr")
        f = naive.dplr_chunkwise if naive_chunk else naive.dplr_recurrence
        kw = dict(chunk_size=4) if naive_chunk else {}
        default = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # its chunk function allocates in the default
        try:
            o, s = f(*map(_head_major, arrays), initial_state=s0_t, output_final_state=True, **kw)
        finally:
            torch.set_default_dtype(default)
        return np.moveaxis(o.numpy(), 2, 0), s
    q, k, v, g, beta = map(to_torch, arrays)
    kw = dict(initial_state=s0_t, output_final_state=True)
    if family == "gated_delta_rule":
        naive = load_naive("gated_delta_rule")
        if naive_chunk:
            o, s = naive.naive_chunk_gated_delta_rule(q, k, v, g, beta, chunk_size=4, **kw)
        else:
            o, s = naive.naive_recurrent_gated_delta_rule(q, k, v, beta, g, **kw)
    else:
        naive = load_naive("kda")
        f = naive.naive_chunk_kda if naive_chunk else naive.naive_recurrent_kda
        o, s = f(q, k, v, g, beta, **kw, **(dict(chunk_size=4) if naive_chunk else {}))
    return from_torch(o), s


@pytest.mark.parametrize("family", FAMILIES)
def test_against_fla_naive(family):
    """fla's naive recurrences (float64) with an initial state, values and final state;
    and its naive chunk function where it takes an initial state (T a multiple of 4)."""
    with jax.enable_x64(True):
        rng = np.random.default_rng(2)
        arrays, s0 = _inputs(family, rng, T=8, batch=(2,))
        o, s = getattr(ops, family)(*arrays, initial_state=s0, chunk=C)
        for naive_chunk in (False, True) if family != "delta_rule" else (False,):
            want_o, want_s = _fla(family, arrays, s0, naive_chunk)
            np.testing.assert_allclose(o, want_o, rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(s, want_s.numpy(), rtol=1e-10, atol=1e-12)


def check_derivatives(family, reverse, chunk=C):
    """chunk against recurrent in every derivative, in every input and the initial state;
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
        pad = np.arange(T)[:, None] >= LENGTHS[None]
        for gr in got[2][0]:
            assert (np.asarray(gr)[pad] == 0).all()


def test_derivatives_dplr():
    """The general path (``b`` apart from ``k``, per-channel decays) reversed."""
    check_derivatives("dplr_delta_rule", reverse=True)


@pytest.mark.slow  # CI's parallel profile runs chunk 2; the rest before a release
@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("chunk", [1, pytest.param(2, marks=pytest.mark.parallel), 3, 8])
def test_derivatives_grid(family, reverse, chunk):
    check_derivatives(family, reverse, chunk)


@jax.jit
def _batch_axes(arrays, s0):
    """Two batch axes, the same flattened, and the first row without a batch axis."""
    f = functools.partial(ops.gated_delta_rule, chunk=C)
    flat = [a.reshape((T, 6) + a.shape[3:]) for a in arrays]
    return (
        f(*arrays, initial_state=s0),
        f(*flat, initial_state=s0.reshape((6, H, DK, DV))),
        f(*[a[:, 0, 0] for a in arrays], initial_state=s0[0, 0]),
    )


def test_batch_axes_and_none():
    """Two batch axes equal the flattened batch; no batch axis equals a batch of one."""
    rng = np.random.default_rng(6)
    arrays, s0 = _inputs("gated_delta_rule", rng, batch=(2, 3), dtype=np.float32)
    (o, s), (o2, s2), (o3, s3) = _batch_axes(arrays, s0)
    np.testing.assert_allclose(o.reshape(o2.shape), o2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.reshape(s2.shape), s2, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(o3, o[:, 0, 0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s3, s[0, 0], rtol=1e-5, atol=1e-5)


def test_bfloat16_inputs_float32_state():
    """bfloat16 inputs: a float32 state, bfloat16 outputs, close to the float32 run."""
    rng = np.random.default_rng(8)
    arrays, s0 = _inputs("kda", rng, dtype=np.float32)
    lo = [jnp.asarray(a, jnp.bfloat16) for a in arrays]
    want_o, want_s = ops.kda(*[a.astype(jnp.float32) for a in lo], method="recurrent")
    for method in ("chunkwise", "recurrent"):
        o, s = ops.kda(*lo, chunk=C, method=method)
        assert o.dtype == jnp.bfloat16 and s.dtype == jnp.float32
        np.testing.assert_allclose(o.astype(np.float32), want_o, rtol=5e-2, atol=5e-2)
        np.testing.assert_allclose(s, want_s, rtol=2e-2, atol=2e-2)


def _bad(family="gated_delta_rule", **change):
    q = jnp.ones((4, 2, 2, 3))
    args = dict(q=q, k=q, v=jnp.ones((4, 2, 2, 5)), beta=jnp.full((4, 2, 2), 0.5))
    args.update(
        {"gated_delta_rule": dict(g=jnp.zeros((4, 2, 2))), "kda": dict(gk=q)}.get(family, {})
    )
    if family == "dplr_delta_rule":
        args = dict(q=q, k=q, v=args["v"], a=q, b=q, gk=-q)
    kw = {n: change.pop(n) for n in list(change) if n not in args}
    args.update(change)
    return lambda: getattr(ops, family)(**args, **kw)


@pytest.mark.parametrize(
    "call, error, words",
    [
        (_bad(chunk=0), ValueError, "chunk"),
        (_bad(chunk=2.5), TypeError, "chunk"),
        (_bad(k=jnp.ones((4, 2, 2, 4))), ValueError, "k must have shape"),
        (_bad("dplr_delta_rule", a=jnp.ones((4, 2, 2, 4))), ValueError, "a must have shape"),
        (_bad("kda", gk=jnp.ones((4, 2, 3, 3))), ValueError, "gk must have shape"),
        (_bad(beta=jnp.zeros((4, 2, 3))), ValueError, "beta must have shape"),
        (_bad(beta=jnp.full((4, 2, 2), 2.5)), ValueError, r"beta must lie in \[0, 2\]"),
        (_bad("delta_rule", beta=jnp.full((4, 2, 2), -0.1)), ValueError, "beta must lie"),
        (_bad("kda", beta=jnp.full((4, 2, 2), 3.0)), ValueError, "beta must lie"),
        (_bad(length=jnp.array([5, 1])), ValueError, "length"),
        (_bad(initial_state=jnp.ones((2, 2, 3, 4))), ValueError, "initial_state"),
    ],
)
def test_bad_arguments(call, error, words):
    with pytest.raises(error, match=words):
        call()
