"""Property-based tests (hypothesis) of the sequence semantics over random cells, sizes,
lengths, directions, stacking, dropout and resets.

Properties:

- loop equality: :func:`rnnjax.unroll` equals a plain Python loop over ``cell.step``
  (segments, direction and length handled by the loop);
- padding invariance: NaN, Inf or 1e30 in the padding change no output, state or
  gradient (of the parameters and of the real inputs);
- batched equals per-example: ``apply_batch`` / ``unroll_batch`` equal ``apply`` /
  ``unroll`` on each example (with the per-example keys ``apply_batch`` documents);
- jit equals no jit;
- bad input: a generated malformed call raises ``ValueError``/``TypeError`` naming the
  argument.

Two profiles: a derandomised fixed one (``FAST``, a few examples per property, tiny
shapes) in the default run, and a long random one (``LONG``) marked slow. Every example
is counted in ``EXAMPLES`` (printed by the last test of each profile).
"""

from __future__ import annotations

import collections

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import rnnjax as rj

FAST = settings(
    derandomize=True,
    max_examples=6,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
LONG = settings(
    max_examples=25,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)
EXAMPLES = collections.Counter()
TOL = dict(rtol=2e-5, atol=2e-5)
JUNK = (float("nan"), float("inf"), 1e30)

# --------------------------------------------------------------------------- strategies


@st.composite
def cells(draw, input_size=None):
    kind = draw(st.sampled_from(["rnn", "lstm", "lstm_proj", "gru", "gru_cho"]))
    I = input_size or draw(st.integers(1, 3))
    H = draw(st.integers(2, 3))
    if kind == "rnn":
        return rj.SimpleRNN(I, H, nonlinearity=draw(st.sampled_from(["tanh", "relu"])))
    if kind == "lstm":
        return rj.LSTM(I, H)
    if kind == "lstm_proj":
        return rj.LSTM(I, H, proj_size=1)
    return rj.GRU(I, H, reset_after=(kind == "gru"))


@st.composite
def sequences(draw, I, T=None):
    T = T or draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**16))
    xs = jax.random.normal(jax.random.key(seed), (T, I))
    length = draw(st.none() | st.integers(0, T))
    resets = draw(st.none() | st.lists(st.booleans(), min_size=T, max_size=T))
    return xs, length, None if resets is None else jnp.asarray(resets)


@st.composite
def layers(draw):
    """A layer over input size 2 with its dropout settings: Recurrent, Bidirectional or
    Stacked (of either), random cells, directions and rates."""

    def recurrent(I):
        c = draw(cells(input_size=I))
        rate = draw(st.sampled_from([0.0, 0.0, 0.3]))
        return rj.Recurrent(
            c,
            reverse=draw(st.booleans()),
            input_dropout=rate,
            recurrent_dropout=draw(st.sampled_from([0.0, 0.25])),
            zoneout=draw(st.sampled_from([0.0, 0.2])),
        )

    def one(I):
        if draw(st.booleans()):
            fwd = recurrent(I)
            fwd = rj.Recurrent(fwd.cell, input_dropout=fwd.input_dropout)
            return rj.Bidirectional(fwd)
        return recurrent(I)

    first = one(2)
    if draw(st.booleans()):
        return rj.Stacked(
            [first, one(first.output_size)], dropout=draw(st.sampled_from([0.0, 0.5]))
        )
    return first


# --------------------------------------------------------------------------- references


def loop_reference(cell, params, xs, length, reverse, resets):
    """``(state, ys)`` by a Python loop over ``cell.step``, segment by segment."""
    T = xs.shape[0]
    n = T if length is None else length
    starts = [0] + [t for t in range(1, n) if resets is not None and bool(resets[t])]
    segments = [(a, b) for a, b in zip(starts, starts[1:] + [n]) if b > a]
    ys = [jnp.zeros((cell.output_size,), xs.dtype)] * T
    state = cell.initial_state()
    order = segments[::-1] if reverse else segments
    for a, b in order:
        state = cell.initial_state()
        steps = range(b - 1, a - 1, -1) if reverse else range(a, b)
        for t in steps:
            state, ys[t] = cell.step(params, state, xs[t])
    return state, jnp.stack(ys)


def _close(a, b):
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_allclose(x, y, **TOL), a, b)


def _finite_grads(tree):
    for leaf in jax.tree_util.tree_leaves(tree):
        assert np.all(np.isfinite(np.asarray(leaf)))


# --------------------------------------------------------------------------- properties


def loop_equality(data):
    cell = data.draw(cells(), "cell")
    params = cell.init(jax.random.key(data.draw(st.integers(0, 99), "seed")))
    xs, length, resets = data.draw(sequences(cell.input_size), "sequence")
    reverse = data.draw(st.booleans(), "reverse")
    state, ys = rj.unroll(cell, params, xs, length, reverse=reverse, resets=resets)
    ref_state, ref_ys = loop_reference(cell, params, xs, length, reverse, resets)
    _close(ys, ref_ys)
    _close(state, ref_state)
    if length is not None:
        assert not np.any(np.asarray(ys[length:])), "outputs past length must be exactly zero"
    EXAMPLES["loop equality"] += 1


def padding_invariance(data):
    layer = data.draw(layers(), "layer")
    params = layer.init(jax.random.key(0))
    T = data.draw(st.integers(2, 5), "T")
    length = data.draw(st.integers(0, T - 1), "length")
    junk = data.draw(st.sampled_from(JUNK), "junk")
    key = data.draw(st.none() | st.just(jax.random.key(3)), "key")
    xs = jax.random.normal(jax.random.key(1), (T, 2))
    bad = xs.at[length:].set(junk)
    w = jax.random.normal(jax.random.key(2), (T, layer.output_size))

    def loss(p, x):
        state, ys = layer.apply(p, x, length, key=key)
        s = sum(jnp.sum(l) for l in jax.tree_util.tree_leaves(state))
        return jnp.sum(ys * w) + s, (state, ys)

    (l1, (s1, y1)), (gp1, gx1) = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, xs)
    (l2, (s2, y2)), (gp2, gx2) = jax.value_and_grad(loss, (0, 1), has_aux=True)(params, bad)
    _finite_grads((l2, s2, y2, gp2, gx2))
    _close((l1, s1, y1, gp1, gx1[:length]), (l2, s2, y2, gp2, gx2[:length]))
    assert not np.any(np.asarray(gx2[length:])), "no gradient may reach the padding"
    assert not np.any(np.asarray(y2[length:]))
    EXAMPLES["padding invariance"] += 1


def batched_equals_per_example(data):
    layer = data.draw(layers(), "layer")
    params = layer.init(jax.random.key(0))
    B = data.draw(st.integers(1, 3), "B")
    T = data.draw(st.integers(1, 4), "T")
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), "lengths")
    use_key = data.draw(st.booleans(), "key")
    key = jax.random.key(7) if use_key else None
    xs = jax.random.normal(jax.random.key(1), (B, T, 2))
    state, ys = layer.apply_batch(params, xs, jnp.asarray(lengths), key=key)
    keys = jax.random.split(key, B) if use_key else [None] * B
    for b in range(B):
        s_b, y_b = layer.apply(params, xs[b], lengths[b], key=keys[b])
        _close(y_b, ys[b])
        _close(s_b, jax.tree_util.tree_map(lambda a, b=b: a[b], state))
    EXAMPLES["batched == per-example"] += 1


def unroll_batch_equals_unroll(data):
    cell = data.draw(cells(), "cell")
    params = cell.init(jax.random.key(0))
    B = data.draw(st.integers(1, 3), "B")
    T = data.draw(st.integers(1, 4), "T")
    lengths = data.draw(st.lists(st.integers(0, T), min_size=B, max_size=B), "lengths")
    reverse = data.draw(st.booleans(), "reverse")
    resets = data.draw(
        st.none() | st.just(jax.random.bernoulli(jax.random.key(5), 0.3, (B, T))), "resets"
    )
    xs = jax.random.normal(jax.random.key(1), (B, T, cell.input_size))
    state, ys = rj.unroll_batch(
        cell, params, xs, jnp.asarray(lengths), reverse=reverse, resets=resets
    )
    for b in range(B):
        r = None if resets is None else resets[b]
        s_b, y_b = rj.unroll(cell, params, xs[b], lengths[b], reverse=reverse, resets=r)
        _close(y_b, ys[b])
        _close(s_b, jax.tree_util.tree_map(lambda a, b=b: a[b], state))
    EXAMPLES["unroll_batch == unroll"] += 1


def jit_equals_no_jit(data):
    layer = data.draw(layers(), "layer")
    params = layer.init(jax.random.key(0))
    T = data.draw(st.integers(1, 4), "T")
    length = data.draw(st.integers(0, T), "length")
    key = data.draw(st.none() | st.just(jax.random.key(3)), "key")
    xs = jax.random.normal(jax.random.key(1), (2, T, 2))
    n = jnp.asarray([length, T])
    eager = layer.apply_batch(params, xs, n, key=key)
    jitted = jax.jit(lambda p, x, n, k: layer.apply_batch(p, x, n, key=k))(params, xs, n, key)
    _close(eager, jitted)
    EXAMPLES["jit == no jit"] += 1


# --------------------------------------------------------------------------- bad input


def _bad_unroll(data):
    cell = rj.GRU(2, 3)
    params = cell.init(jax.random.key(0))
    T = data.draw(st.integers(1, 4))
    good = dict(cell=cell, params=params, xs=jnp.ones((T, 2)))
    arg = data.draw(
        st.sampled_from(["length", "xs", "reverse", "resets", "state", "params", "unroll"])
    )
    if arg == "length":
        bad = data.draw(st.sampled_from([T + 1, -1, T + 100, 2.0, True, "3", jnp.array([1, 1])]))
    elif arg == "xs":
        bad = data.draw(
            st.sampled_from(
                [
                    jnp.ones((T,)),
                    jnp.ones((T, 3)),
                    jnp.ones((T, 2), jnp.int32),
                    "xs",
                    jnp.ones((1, T, 2)),
                ]
            )
        )
    elif arg == "reverse":
        bad = data.draw(st.sampled_from(["no", 1, 0, None, np.array([True])]))
    elif arg == "resets":
        bad = data.draw(
            st.sampled_from([jnp.zeros((T + 1,), bool), jnp.zeros((T,), jnp.int32), "x"])
        )
    elif arg == "state":
        bad = data.draw(
            st.sampled_from(
                [rj.GRUState(jnp.zeros(4)), (jnp.zeros(3),), rj.GRUState(jnp.zeros(3, jnp.int32))]
            )
        )
    elif arg == "params":
        bad = data.draw(
            st.sampled_from(
                [
                    {"w_ih": params["w_ih"]},
                    {**params, "w_hh": jnp.zeros((3, 4))},
                    {**params, "b": jnp.zeros(params["b"].shape, jnp.int32)},
                ]
            )
        )
    else:
        bad = data.draw(st.sampled_from([0, -1, 1.5, True]))
    return arg, lambda: rj.unroll(**{**good, arg: bad})


def _bad_constructor(data):
    NAN, INF = float("nan"), float("inf")
    which = data.draw(st.sampled_from(["cell", "recurrent", "esn", "optimizer", "scan"]))
    if which == "cell":
        make = data.draw(st.sampled_from([rj.SimpleRNN, rj.LSTM, rj.GRU]))
        arg = data.draw(st.sampled_from(["input_size", "hidden_size", "param_dtype"]))
        bad = {
            "input_size": [0, -2, 2.5, True, "2", None],
            "hidden_size": [0, -1, 3.0, False],
            "param_dtype": [jnp.int32, "nope", bool],
        }[arg]
        v = data.draw(st.sampled_from(bad))
        kw = {"input_size": 2, "hidden_size": 3, arg: v}
        return arg, lambda: make(**kw)
    if which == "recurrent":
        arg = data.draw(
            st.sampled_from(["input_dropout", "recurrent_dropout", "zoneout", "unroll", "reverse"])
        )
        bad = {"unroll": [0, -3, 1.5], "reverse": ["no", 1]}.get(arg, [1.0, -0.1, NAN, INF, "0.5"])
        v = data.draw(st.sampled_from(bad))
        return arg, lambda: rj.Recurrent(rj.GRU(2, 3), **{arg: v})
    if which == "esn":
        arg = data.draw(
            st.sampled_from(
                [
                    "spectral_radius",
                    "input_scaling",
                    "leak_rate",
                    "density",
                    "noise",
                    "bias_scaling",
                ]
            )
        )
        v = data.draw(
            st.sampled_from(
                [NAN, INF, -1.0, "1"] + ([0.0, 1.5] if arg in ("leak_rate", "density") else [])
            )
        )
        return arg, lambda: rj.EchoState(1, 4, **{arg: v})
    if which == "optimizer":
        arg = data.draw(st.sampled_from(["learning_rate", "clip_norm"]))
        v = data.draw(st.sampled_from([NAN, INF, -1.0, 0.0, "1e-3"]))
        kw = {"learning_rate": v} if arg == "learning_rate" else {"clip_norm": v}
        return arg, lambda: rj.make_optimizer("adam", **kw)
    arg = data.draw(st.sampled_from(["backward", "method", "unroll", "remat"]))
    v = data.draw(
        st.sampled_from(
            {
                "backward": ["fast", 1],
                "method": ["x", None],
                "unroll": [0, -1, 2.5],
                "remat": [0, -2, "x"],
            }[arg]
        )
    )
    return arg, lambda: rj.ScanConfig(**{arg: v})


def bad_input(data):
    family = data.draw(st.sampled_from([_bad_unroll, _bad_constructor]), "family")
    arg, call = family(data)
    with pytest.raises((ValueError, TypeError)) as info:
        call()
    assert arg in str(info.value), f"message must name {arg!r}: {info.value}"
    EXAMPLES["bad input"] += 1


# --------------------------------------------------------------------------- tests

# (property, examples in the default profile, examples in the long profile): the long
# profile (``-m "slow and properties"``) runs 150 examples of the semantic properties
# together and 150 generated bad calls (sized to CI's budget: 300 + 300 took 11 minutes of
# the two cores' 45)
PROPERTIES = {
    "loop_equality": (loop_equality, 6, 50),
    "padding_invariance": (padding_invariance, 4, 30),
    "batched_equals_per_example": (batched_equals_per_example, 3, 20),
    "unroll_batch_equals_unroll": (unroll_batch_equals_unroll, 4, 30),
    "jit_equals_no_jit": (jit_equals_no_jit, 3, 20),
    "bad_input": (bad_input, 40, 150),
}
LONG_EXAMPLES = collections.Counter()  # examples run by the long profile's tests


def _make(name, fn, n, profile):
    s = settings(profile, max_examples=n)
    if profile is LONG:

        def counted(data):
            LONG_EXAMPLES[name] += 1
            return fn(data)

        counted.__name__ = fn.__name__
        test = s(given(st.data())(counted))
    else:
        test = s(given(st.data())(fn))
    test.__name__ = f"test_{name}" + ("_long" if profile is LONG else "")
    return pytest.mark.slow(test) if profile is LONG else test


for _name, (_fn, _n, _n_long) in PROPERTIES.items():
    globals()[f"test_{_name}"] = _make(_name, _fn, _n, FAST)
    globals()[f"test_{_name}_long"] = _make(_name, _fn, _n_long, LONG)


def test_zz_report_examples():
    """Print the examples run so far (the count is reported with ``-s``): the default
    profile ran at least one example of every property."""
    print(f"\nproperty examples run: {dict(EXAMPLES)} total {sum(EXAMPLES.values())}")
    assert len(EXAMPLES) == len(PROPERTIES), dict(EXAMPLES)


@pytest.mark.slow
def test_zz_long_profile_ran_150_examples():
    """The long profile ran its examples: at least 150 semantic examples, and the generated
    bad calls as far as hypothesis goes with them (it ran 227 of 300 asked for in the run
    that set this bound: it stops early when it finds no new distinct calls), so at least
    75 of those."""
    semantic = sum(v for k, v in LONG_EXAMPLES.items() if k != "bad_input")
    print(f"\nlong-profile examples: {dict(LONG_EXAMPLES)}; semantic {semantic}")
    assert semantic >= 150 and LONG_EXAMPLES["bad_input"] >= 75, dict(LONG_EXAMPLES)
