"""CausalConv against the convolution written out (float64): dense and depthwise, every
length, reverse, resets, a non-zero initial state, derivatives of order 1 and 2 in both
modes; NumPy's ``convolve``; the xLSTM and Griffin blocks with ``conv=K``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from modern_reference import T, compare_derivatives, compare_values, perturbed_params

import rnnjax as rj

B = 4


def _taps(cell, p):
    """``W_k`` as ``(I, H)`` matrices (diagonal for a depthwise convolution)."""
    return [jnp.diag(p["w"][k]) if cell.depthwise else p["w"][k] for k in range(cell.width)]


def _conv_step(cell):
    """``y_t = b + sum_k W_k^T x_{t-k}`` from a window of the last ``K - 1`` inputs,
    plus what the initial state still owes the first ``K - 1`` outputs (``pending``).
    The state also carries ``owed``, the library's state written from its definition:
    slot ``j`` is what the inputs so far (and the initial state) add to the output
    ``j + 1`` steps ahead."""
    K, H = cell.width, cell.hidden_size

    def step(p, s, x):
        pending, window, _ = s  # window[j] = x_{t-1-j}
        W = _taps(cell, p)
        y = p["b"] + x @ W[0] + pending[0]
        for k in range(1, K):
            y = y + window[k - 1] @ W[k]
        pending = jnp.concatenate([pending[1:], jnp.zeros((1, H), x.dtype)])
        window = jnp.concatenate([x[None], window[:-1]])
        owed = jnp.stack(
            [
                pending[j] + sum(window[k - j - 1] @ W[k] for k in range(j + 1, K))
                for j in range(K - 1)
            ]
        )
        return (pending, window, owed), y

    return step


def _to_ref(cell):
    K, I, H = cell.width, cell.input_size, cell.hidden_size

    def f(s0):  # the library's state is what the inputs before t=0 owe the outputs
        a = s0.a.reshape(s0.a.shape[:-1] + (K - 1, H))
        return a, jnp.zeros(s0.a.shape[:-1] + (K - 1, I), s0.a.dtype), a

    return f


def _from_ref(st):
    owed = st[2]
    return [owed.reshape(owed.shape[:-2] + (owed.shape[-2] * owed.shape[-1],))]


CELLS = [
    rj.CausalConv(3, 2, width=3),
    rj.CausalConv(3, 3, width=2, depthwise=True),
    rj.CausalConv(2, 2, width=4, depthwise=True),
]
IDS = ["dense3", "depthwise2", "depthwise4"]


def _against_the_convolution(compare, cell, cfg=None):
    """``compare`` (values or derivatives) of the library against :func:`_conv_step` in
    float64, from a non-zero initial state."""
    with jax.enable_x64(True):
        p = perturbed_params(cell)
        xs = jax.random.normal(jax.random.key(1), (B, T, cell.input_size), jnp.float64)
        a = 0.5 * jax.random.normal(jax.random.key(2), (B, cell.state_size), jnp.float64)
        s0 = rj.CausalConvState(a=a)
        compare(
            cell, _conv_step(cell), p, xs, s0, cfg, ref_s0_map=_to_ref(cell), state_map=_from_ref
        )


@pytest.mark.parametrize("cell", CELLS, ids=IDS)
def test_values_against_the_convolution(cell):
    _against_the_convolution(compare_values, cell)


@pytest.mark.parametrize(
    "cell",
    CELLS,
    ids=IDS,
)
def test_derivatives_against_the_convolution(cell):
    """grad, jvp and both Hessian-vector products in params, inputs and initial state."""
    _against_the_convolution(compare_derivatives, cell)


def test_hoisted_projection_derivatives_against_the_convolution():
    """The same derivatives with the input products hoisted out of the loop."""
    _against_the_convolution(compare_derivatives, CELLS[0], rj.ScanConfig(projection="hoist"))


def test_depthwise_equals_numpy_convolve():
    """Each feature is ``numpy.convolve`` of its input with its filter, cut to ``T``."""
    cell = rj.CausalConv(3, 3, width=4, depthwise=True)
    p = cell.init(jax.random.key(0))
    p["b"] = jnp.array([0.1, -0.2, 0.3])
    xs = jax.random.normal(jax.random.key(1), (9, 3))
    _, ys = rj.unroll(cell, p, xs)
    w, x = np.asarray(p["w"], np.float64), np.asarray(xs, np.float64)
    want = np.stack([np.convolve(x[:, i], w[:, i])[:9] for i in range(3)], 1) + np.asarray(p["b"])
    np.testing.assert_allclose(ys, want, rtol=1e-5, atol=1e-5)


def test_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="width"):
        rj.CausalConv(3, 3, width=1)
    with pytest.raises(ValueError, match="hidden_size must equal input_size"):
        rj.CausalConv(3, 4, depthwise=True)
    with pytest.raises(TypeError, match="depthwise"):
        rj.CausalConv(3, 3, depthwise="yes")
    with pytest.raises(ValueError, match="conv"):
        rj.xlstm_block(4, "mlstm", num_heads=2, conv=1)
    with pytest.raises(ValueError, match="conv"):
        rj.griffin_block(4, conv=-1)


@pytest.mark.parametrize(
    "make",
    [
        lambda c: rj.xlstm_block(4, "mlstm", num_heads=2, conv=c),
        lambda c: rj.xlstm_block(4, "slstm", num_heads=2, conv=c),
        lambda c: rj.griffin_block(4, num_heads=2, conv=c),
    ],
    ids=["mlstm", "slstm", "griffin"],
)
def test_block_with_conv_is_the_convolution_then_the_block(make):
    """With the filter set to pass each input through unchanged (tap 0 the identity),
    the block with ``conv=4`` equals the block without it; a filter that reads the step
    before changes the output; padding stays exactly zero."""
    with_conv, without = make(4), make(0)
    p = with_conv.init(jax.random.key(0))
    q = without.init(jax.random.key(0))
    conv_p = p["layer"][0]
    assert set(conv_p) == {"w", "b"} and conv_p["w"].shape == (4, 4)
    identity = {"w": jnp.zeros((4, 4)).at[0].set(1.0), "b": jnp.zeros(4)}
    p = dict(p, layer=(identity, q["layer"]))
    p.update({k: v for k, v in q.items() if k != "layer"})
    xs = jax.random.normal(jax.random.key(1), (2, 6, 4))
    lengths = jnp.array([6, 3])
    _, got = with_conv.apply_batch(p, xs, lengths)
    _, want = without.apply_batch(q, xs, lengths)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    shift = {"w": jnp.zeros((4, 4)).at[1].set(1.0), "b": jnp.zeros(4)}
    shifted = dict(p, layer=(shift, q["layer"]))
    _, moved = with_conv.apply_batch(shifted, xs, lengths)
    assert not np.allclose(moved, want, atol=1e-3)
    assert bool((moved[1, 3:] == 0).all()) and bool((got[1, 3:] == 0).all())


@pytest.mark.parametrize(
    "cfg",
    [rj.ScanConfig(projection="hoist"), rj.ScanConfig(method="parallel")],
    ids=["hoisted", "newton"],
)
def test_other_scan_paths_give_the_convolution(cfg):
    """The hoisted projection and the parallel-in-time (Newton) path give the same values
    as the reference, every length, reverse and resets."""
    _against_the_convolution(compare_values, CELLS[0], cfg)
