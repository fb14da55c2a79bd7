"""rj.unroll against a plain Python loop over step; length semantics; padding invariance."""

import dataclasses
import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, I = 6, 3

CELLS = {
    "rnn_tanh": rj.SimpleRNN(I, 4),
    "rnn_relu": rj.SimpleRNN(I, 4, nonlinearity="relu"),
    "lstm": rj.LSTM(I, 4),
    "lstm_proj": rj.LSTM(I, 5, proj_size=2),
    "gru": rj.GRU(I, 4),
    "gru_cho": rj.GRU(I, 4, reset_after=False),
}


@functools.lru_cache(maxsize=None)
def _jitted_unroll(cell, reverse):
    return jax.jit(lambda p, xs, n: rj.unroll(cell, p, xs, length=n, reverse=reverse))


def _loop(cell, params, xs, length, reverse):
    """Reference: a plain Python loop over cell.step on the real steps only."""
    n = xs.shape[0] if length is None else length
    state = cell.initial_state()
    ys = np.zeros((xs.shape[0], cell.output_size), np.float32)
    order = range(n - 1, -1, -1) if reverse else range(n)
    for t in order:
        state, y = cell.step(params, state, xs[t])
        ys[t] = np.asarray(y)
    return state, ys


def _data(seed=1):
    return jax.random.normal(jax.random.key(seed), (T, I))


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [None, 0, 1, 4, T])
def test_unroll_equals_python_loop(name, reverse, length):
    cell = CELLS[name]
    params = cell.init(jax.random.key(0))
    xs = _data()
    if length is None:
        state, ys = rj.unroll(cell, params, xs, reverse=reverse)
    else:
        state, ys = _jitted_unroll(cell, reverse)(params, xs, jnp.asarray(length))
    ref_state, ref_ys = _loop(cell, params, xs, length, reverse)
    np.testing.assert_allclose(ys, ref_ys, rtol=1e-5, atol=1e-6)
    for a, b in zip(state, ref_state):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if length is not None:
        assert np.all(np.asarray(ys)[length:] == 0.0)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_length_zero_returns_initial_state(name):
    cell = CELLS[name]
    params = cell.init(jax.random.key(0))
    init = jax.tree_util.tree_map(lambda a: a + 0.5, cell.initial_state())
    for reverse in (False, True):
        state, ys = rj.unroll(cell, params, _data(), length=0, state=init, reverse=reverse)
        for a, b in zip(state, init):
            np.testing.assert_array_equal(a, b)
        assert np.all(np.asarray(ys) == 0)


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("reverse", [False, True])
def test_padding_changes_no_output_state_or_gradient(name, reverse):
    cell = CELLS[name]
    params = cell.init(jax.random.key(0))
    n = 4
    xs = _data()
    garbage = xs.at[n:].set(1e3 * jax.random.normal(jax.random.key(7), (T - n, I)))

    def loss(p, xs):
        state, ys = rj.unroll(cell, p, xs, length=n, reverse=reverse)
        return jnp.sum(ys**2) + sum(jnp.sum(s**3) for s in state), (state, ys)

    g = jax.jit(jax.grad(loss, has_aux=True))
    g1, (s1, y1) = g(params, xs)
    g2, (s2, y2) = g(params, garbage)
    for a, b in zip(
        jax.tree_util.tree_leaves((g1, s1, y1)), jax.tree_util.tree_leaves((g2, s2, y2))
    ):
        np.testing.assert_array_equal(a, b)
    # and the padded inputs get exactly zero gradient
    gx = jax.grad(lambda xs: loss(params, xs)[0])(garbage)
    assert np.all(np.asarray(gx)[n:] == 0.0)
    assert np.any(np.asarray(gx)[:n] != 0.0)


def test_nan_in_padding_is_harmless():
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0))
    xs = _data().at[3:].set(jnp.nan)
    grads = jax.grad(lambda p: jnp.sum(rj.unroll(cell, p, xs, length=3)[1]))(params)
    assert all(np.isfinite(np.asarray(g)).all() for g in jax.tree_util.tree_leaves(grads))


def test_unroll_batch_nested_batch_axes_and_time_major():
    cell = CELLS["gru"]
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(2), (2, 3, T, I))
    lengths = jnp.array([[0, 3, 6], [1, 2, 5]])
    state, ys = rj.unroll_batch(cell, params, xs, length=lengths, reverse=True)
    assert ys.shape == (2, 3, T, 4) and state.h.shape == (2, 3, 4)
    for i in range(2):
        for j in range(3):
            s, y = rj.unroll(cell, params, xs[i, j], length=int(lengths[i, j]), reverse=True)
            np.testing.assert_allclose(ys[i, j], y, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(state.h[i, j], s.h, rtol=1e-5, atol=1e-6)
    # nested vmap gives the same
    nested = jax.vmap(jax.vmap(lambda x, n: rj.unroll(cell, params, x, n, reverse=True)[1]))
    np.testing.assert_allclose(nested(xs, lengths), ys, rtol=1e-6, atol=1e-6)
    # time-major layout
    s_tm, ys_tm = rj.unroll_batch(
        cell, params, jnp.moveaxis(xs, 2, 0), length=lengths, reverse=True, time_major=True
    )
    np.testing.assert_allclose(jnp.moveaxis(ys_tm, 0, 2), ys, rtol=1e-6, atol=1e-6)


def test_traced_length_is_clipped():
    cell = CELLS["rnn_tanh"]
    params = cell.init(jax.random.key(0))
    f = _jitted_unroll(cell, False)
    s_big, y_big = f(params, _data(), jnp.asarray(T + 5))
    s_t, y_t = f(params, _data(), jnp.asarray(T))
    np.testing.assert_array_equal(y_big, y_t)
    s_neg, y_neg = f(params, _data(), jnp.asarray(-3))
    assert np.all(np.asarray(y_neg) == 0) and np.all(np.asarray(s_neg.h) == 0)


def test_compiled_program_size_independent_of_T():
    cell = rj.LSTM(I, 4)
    params = cell.init(jax.random.key(0))

    def hlo_lines(T_):
        f = jax.jit(lambda p, xs: rj.unroll(cell, p, xs, length=3))
        grad = jax.grad(lambda p, xs: jnp.sum(f(p, xs)[1]))
        return len(jax.jit(grad).lower(params, jnp.ones((T_, I))).as_text().splitlines())

    assert hlo_lines(8) == hlo_lines(4096)


@pytest.mark.parametrize(
    "xs, length, match, err",
    [
        (jnp.ones((T,)), None, "xs must have shape", ValueError),
        (jnp.ones((2, T, I)), None, "xs must have shape", ValueError),
        (jnp.ones((T, I + 1)), None, "feature size 3", ValueError),
        (jnp.ones((T, I), jnp.int32), None, "floating dtype", TypeError),
        (jnp.ones((T, I)), T + 1, r"length must be in \[0, T\]", ValueError),
        (jnp.ones((T, I)), -1, r"length must be in \[0, T\]", ValueError),
        (jnp.ones((T, I)), 2.5, "integer scalar", TypeError),
        (jnp.ones((T, I)), jnp.array([1, 2]), "must be a scalar", ValueError),
    ],
)
def test_bad_inputs_raise_clear_errors(xs, length, match, err):
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0))
    with pytest.raises(err, match=match):
        rj.unroll(cell, params, xs, length=length)


def test_bad_state_and_params_raise():
    cell = CELLS["lstm"]
    params = cell.init(jax.random.key(0))
    xs = _data()
    with pytest.raises(ValueError, match="state must have the structure"):
        rj.unroll(cell, params, xs, state=rj.GRUState(h=jnp.zeros(4)))
    with pytest.raises(ValueError, match="state must have the shapes"):
        rj.unroll(cell, params, xs, state=rj.LSTMState(h=jnp.zeros(5), c=jnp.zeros(4)))
    with pytest.raises(ValueError, match="params must have the shapes"):
        rj.unroll(cell, rj.LSTM(I, 5).init(jax.random.key(0)), xs)
    with pytest.raises(ValueError, match="params must have the keys"):
        rj.unroll(cell, {"w_ih": params["w_ih"]}, xs)
    with pytest.raises(ValueError, match="unroll must be an int"):
        rj.unroll(cell, params, xs, unroll=0)
    with pytest.raises(ValueError, match="length must have the batch shape"):
        rj.unroll_batch(cell, params, jnp.ones((2, T, I)), length=jnp.array([1, 2, 3]))
    with pytest.raises(ValueError, match=r"length must lie in \[0, T\]"):
        rj.unroll_batch(cell, params, jnp.ones((2, T, I)), length=jnp.array([1, 9]))
    with pytest.raises(ValueError, match="at least one batch axis"):
        rj.unroll_batch(cell, params, jnp.ones((T, I)))


def test_check_grads_float64():
    from jax.test_util import check_grads

    with jax.enable_x64(True):
        for name in ("rnn_tanh", "lstm", "lstm_proj", "gru", "gru_cho"):
            cell = CELLS[name]
            params = jax.tree_util.tree_map(
                lambda a: a.astype(jnp.float64), cell.init(jax.random.key(0))
            )
            xs = _data().astype(jnp.float64)
            for reverse in (False, True):
                f = lambda p, x: rj.unroll(cell, p, x, length=4, reverse=reverse)[1]
                check_grads(f, (params, xs), order=1, modes=["rev"], eps=1e-6)


@pytest.mark.parametrize("name", ["lstm_proj", "gru", "gru_cho", "rnn_relu"])
def test_hoisted_projection_path_equals_in_loop(name, monkeypatch):
    """The accelerator path (input projection for all steps before the scan) on CPU: the
    values and the derivatives of order 1 and 2, forward and reverse mode, of the in-loop
    path."""

    cell = CELLS[name]
    params = cell.init(jax.random.key(0))
    xs = _data()

    def run(p):
        return rj.unroll(cell, p, xs, length=4, reverse=True)

    def derivatives(run):
        """Values, grad, forward mode and a forward-over-reverse Hessian-vector product."""
        loss = lambda p: jnp.sum(run(p)[1] ** 2)  # noqa: E731
        tangent = jax.jvp(loss, (params,), (params,))[1]
        hvp = jax.jvp(jax.grad(loss), (params,), (params,))[1]
        return run(params), jax.grad(loss)(params), tangent, hvp

    ref = derivatives(run)
    cfg = rj.ScanConfig(projection="hoist")
    got = derivatives(lambda p: rj.unroll(cell, p, xs, length=4, reverse=True, config=cfg))
    for a, b in zip(jax.tree_util.tree_leaves(ref), jax.tree_util.tree_leaves(got)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- user cells
# A user-written cell (only init / initial_state / step / input_size, no project/recur,
# no kernel) whose output is a pytree, as Haiku's "all states" and nested-output cores:
# every leaf padded, reversed and reset as an array output would be.


class PairState(NamedTuple):
    h: jax.Array


@dataclasses.dataclass(frozen=True)
class PairCell:
    input_size: int = 2
    hidden_size: int = 3

    @property
    def output_size(self):
        return self.hidden_size

    def init(self, key):
        k1, k2 = jax.random.split(key)
        return {
            "w": 0.5 * jax.random.normal(k1, (self.input_size, self.hidden_size)),
            "u": 0.5 * jax.random.normal(k2, (self.hidden_size, self.hidden_size)),
        }

    def initial_state(self, dtype=None):
        return PairState(jnp.zeros((self.hidden_size,), dtype or jnp.float32))

    def step(self, params, state, x):
        h = jnp.tanh(x @ params["w"] + state.h @ params["u"])
        return PairState(h), (h, {"sq": h * h, "total": jnp.sum(h)})


def _loop_reference(cell, params, xs, length=None, reverse=False, resets=None):
    """One sequence by a plain Python loop over ``step``: the documented semantics."""
    T = xs.shape[0]
    n = T if length is None else int(length)
    order = list(range(n))[::-1] if reverse else list(range(n))
    resets = np.zeros(T, bool) if resets is None else np.asarray(resets)
    if reverse:  # a segment starts (in processing order) where the next one starts
        resets = np.concatenate([resets[1:], [False]])
    s = s0 = cell.initial_state()
    _, y0 = cell.step(params, s0, xs[0])
    ys = [jax.tree_util.tree_map(jnp.zeros_like, y0) for _ in range(T)]
    for t in order:
        if resets[t]:
            s = s0
        s, ys[t] = cell.step(params, s, xs[t])
    return s, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *ys)


PAIR = PairCell()
PAIR_P = PAIR.init(jax.random.key(0))


def _leaves_close(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        assert x.shape == y.shape
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("length", [None, 3, 0])
def test_pytree_output_cell_equals_python_loop(reverse, length):
    xs = jax.random.normal(jax.random.key(1), (5, 2))
    got = rj.unroll(PAIR, PAIR_P, xs, length=length, reverse=reverse)
    _leaves_close(got, _loop_reference(PAIR, PAIR_P, xs, length, reverse))
    if length is not None:  # padding zeroed leaf by leaf, exactly
        for leaf in jax.tree_util.tree_leaves(got[1]):
            assert bool(jnp.all(leaf[length:] == 0))


def test_pytree_output_cell_with_resets_remat_and_empty_sequence():
    xs = jax.random.normal(jax.random.key(2), (6, 2))
    resets = np.array([False, False, True, False, False, True])
    for reverse in (False, True):
        got = rj.unroll(PAIR, PAIR_P, xs, length=5, reverse=reverse, resets=resets)
        _leaves_close(got, _loop_reference(PAIR, PAIR_P, xs, 5, reverse, resets))
    remat = rj.unroll(PAIR, PAIR_P, xs, length=4, config=rj.ScanConfig(remat=4))
    _leaves_close(remat, _loop_reference(PAIR, PAIR_P, xs, 4))
    _, empty = rj.unroll_batch(PAIR, PAIR_P, jnp.ones((2, 0, 2)))
    assert jax.tree_util.tree_map(jnp.shape, empty) == (
        (2, 0, 3),
        {"sq": (2, 0, 3), "total": (2, 0)},
    )


def test_pytree_output_cell_batched_layouts_and_gradient():
    xs = jax.random.normal(jax.random.key(3), (3, 5, 2))
    length = jnp.array([5, 2, 0])
    for time_major in (False, True):
        x_in = jnp.swapaxes(xs, 0, 1) if time_major else xs
        st, ys = rj.unroll_batch(PAIR, PAIR_P, x_in, length, time_major=time_major, reverse=True)
        for b in range(3):
            ref = _loop_reference(PAIR, PAIR_P, xs[b], int(length[b]), reverse=True)
            y_b = jax.tree_util.tree_map(lambda y: y[:, b] if time_major else y[b], ys)
            _leaves_close((jax.tree_util.tree_map(lambda a: a[b], st), y_b), ref)

    def loss(p, run):
        _, (h, extra) = run(p)
        return jnp.sum(h**2) + jnp.sum(extra["total"] * 0.3) + jnp.sum(extra["sq"])

    engine = lambda p: rj.unroll(PAIR, p, xs[0], length=4)[1]  # noqa: E731
    loop = lambda p: _loop_reference(PAIR, p, xs[0], 4)[1]  # noqa: E731
    _leaves_close(
        jax.grad(lambda p: loss(p, lambda q: (None, engine(q))))(PAIR_P),
        jax.grad(lambda p: loss(p, lambda q: (None, loop(q))))(PAIR_P),
    )


def test_unroll_argument_is_deprecated_and_still_works():
    """``rj.unroll(..., unroll=k)`` warns (``ScanConfig(unroll=k)`` replaces it), still checks
    its value and gives the numbers of the config."""
    cell = rj.SimpleRNN(2, 3)
    p = cell.init(jax.random.key(0))
    xs = jnp.ones((5, 2))
    want = rj.unroll(cell, p, xs, config=rj.ScanConfig(unroll=2))[1]
    with pytest.warns(DeprecationWarning, match=r"ScanConfig\(unroll=2\)"):
        got = rj.unroll(cell, p, xs, unroll=2)[1]
    np.testing.assert_array_equal(got, want)
    with pytest.warns(DeprecationWarning, match="unroll"):
        got = rj.unroll_batch(cell, p, xs[None], None, None, False, 2)[1]
    np.testing.assert_array_equal(got[0], want)
    with pytest.raises(ValueError, match="unroll"):
        rj.unroll(cell, p, xs, unroll=0)
