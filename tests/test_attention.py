"""Attention: masked weights, numpy float64 references of the scores, padding invariance."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rnnjax.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    masked_softmax,
    source_mask,
)

Q, K, S = 3, 4, 6


def _np_softmax(e):
    e = e - e.max()
    w = np.exp(e)
    return w / w.sum()


def _ref_scores(kind, params, q, keys):
    p = {k: np.asarray(v, np.float64) for k, v in params.items()}
    q, keys = np.asarray(q, np.float64), np.asarray(keys, np.float64)
    if kind == "additive":
        return np.array([p["v"] @ np.tanh(q @ p["w_q"] + k @ p["w_k"] + p["b"]) for k in keys])
    if kind == "general":
        return np.array([q @ p["w"] @ k for k in keys])
    return np.array([q @ k for k in keys])


MODULES = {
    "additive": AdditiveAttention(Q, K, attention_size=5),
    "general": GeneralAttention(Q, K),
    "dot": DotAttention(K),
}


@pytest.fixture(scope="module")
def data():
    kq, kk = jax.random.split(jax.random.key(1))
    return jax.random.normal(kq, (K,)), jax.random.normal(kk, (S, K))


@pytest.mark.parametrize("kind", list(MODULES))
@pytest.mark.parametrize("length", [1, 3, S])
def test_weights_sum_to_one_zero_on_padding_and_match_float64(kind, length, data):
    attn = MODULES[kind]
    query, keys = data
    query = query[: attn.query_size]
    params = attn.init(jax.random.key(2))
    ctx, w = attn.apply(params, query, keys, length=jnp.asarray(length))
    w = np.asarray(w)
    assert w.shape == (S,)
    np.testing.assert_allclose(w.sum(), 1.0, rtol=1e-6)
    assert (w[length:] == 0).all()
    assert (w[:length] > 0).all()
    ref_w = _np_softmax(_ref_scores(kind, params, query, keys)[:length])
    np.testing.assert_allclose(w[:length], ref_w, rtol=1e-5, atol=1e-6)
    ref_ctx = ref_w @ np.asarray(keys, np.float64)[:length]
    np.testing.assert_allclose(np.asarray(ctx), ref_ctx, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", list(MODULES))
def test_padding_never_changes_context_weights_or_gradient(kind, data):
    attn = MODULES[kind]
    query, keys = data
    query = query[: attn.query_size]
    params = attn.init(jax.random.key(3))
    other = keys.at[4:].set(100.0 * jax.random.normal(jax.random.key(4), (S - 4, K)))

    def f(p, k):
        ctx, w = attn.apply(p, query, k, length=jnp.asarray(4))
        return jnp.sum(ctx**2), (ctx, w)

    (l1, (c1, w1)), g1 = jax.value_and_grad(f, has_aux=True)(params, keys)
    (l2, (c2, w2)), g2 = jax.value_and_grad(f, has_aux=True)(params, other)
    np.testing.assert_array_equal(np.asarray(w1), np.asarray(w2))
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))
    for a, b in zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(g2)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_masked_softmax_empty_row_is_zero_with_finite_gradient():
    scores = jnp.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    mask = jnp.array([[True, True, False], [False, False, False]])
    w = masked_softmax(scores, mask)
    np.testing.assert_allclose(
        np.asarray(w[0]), _np_softmax(np.array([1.0, 2.0])).tolist() + [0.0], rtol=1e-6
    )
    assert (np.asarray(w[1]) == 0).all()
    g = jax.grad(lambda s: jnp.sum(masked_softmax(s, mask) * jnp.arange(3.0)[None, :]))(scores)
    assert np.isfinite(np.asarray(g)).all()
    assert (np.asarray(g)[:, 2] == 0).all() and (np.asarray(g)[1] == 0).all()


def test_masked_softmax_extreme_scores_stay_finite():
    scores = jnp.array([1e30, -1e30, 3.0])
    w = masked_softmax(scores, jnp.array([False, True, True]))
    np.testing.assert_allclose(np.asarray(w), [0.0, 0.0, 1.0])


def test_works_under_vmap_and_jit(data):
    attn = MODULES["additive"]
    params = attn.init(jax.random.key(0))
    queries = jax.random.normal(jax.random.key(5), (2, Q))
    keys = jnp.stack([data[1], data[1][::-1]])
    lengths = jnp.array([2, 5])
    ctx, w = jax.jit(jax.vmap(lambda q, k, n: attn.apply(params, q, k, n)))(queries, keys, lengths)
    assert ctx.shape == (2, K) and w.shape == (2, S)
    for b in range(2):
        c_b, w_b = attn.apply(params, queries[b], keys[b], lengths[b])
        np.testing.assert_allclose(np.asarray(w[b]), np.asarray(w_b), rtol=1e-6, atol=1e-7)


def test_source_mask():
    np.testing.assert_array_equal(np.asarray(source_mask(jnp.asarray(2), 4)), [1, 1, 0, 0])
    assert np.asarray(source_mask(None, 3)).all()
    with pytest.raises(TypeError, match="length"):
        source_mask(jnp.array([1, 2]), 3)


def test_bad_input_errors(data):
    with pytest.raises(ValueError, match="key_size == query_size"):
        DotAttention(3, 4)
    with pytest.raises(ValueError, match="query_size"):
        AdditiveAttention(0, 4)
    attn = MODULES["general"]
    params = attn.init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"keys must have shape \(S, 4\)"):
        attn.apply(params, jnp.ones(Q), jnp.ones((S, 5)))
    with pytest.raises(ValueError, match=r"query must have shape \(3,\)"):
        attn.apply(params, jnp.ones(4), jnp.ones((S, K)))
    with pytest.raises(ValueError, match="mask"):
        masked_softmax(jnp.ones(3), jnp.ones(4, bool))
