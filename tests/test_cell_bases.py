"""The cells' bases: the protocol base, the dense gated base and the diagonal linear base
(each cell states only the fields and parameters it uses)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.cells.base import Cell, DiagonalLinearCell, GatedCell


def _fields(cls):
    return {f.name for f in dataclasses.fields(cls)}


def test_split_bases():
    for cls in (rj.SimpleRNN, rj.GRU, rj.LSTM):
        assert issubclass(cls, GatedCell) and {"kernel_init", "recurrent_init"} <= _fields(cls)
    for cls in (rj.MinGRU, rj.MinLSTM, rj.LRU):
        assert issubclass(cls, DiagonalLinearCell) and not issubclass(cls, GatedCell)
        assert "recurrent_init" not in _fields(cls)
    assert "kernel_init" not in _fields(rj.LRU)  # the LRU draws its own Gaussian B
    assert _fields(Cell) == {"input_size", "hidden_size", "param_dtype", "dtype"}
    with pytest.raises(TypeError):
        rj.MinGRU(2, 3, recurrent_init="orthogonal")


@pytest.mark.parametrize("cell", [rj.MinGRU(2, 3), rj.MinLSTM(2, 3), rj.LRU(2, 3)])
def test_diagonal_recur_is_the_linear_form(cell):
    """The base's ``recur`` is ``a * h + b`` in the scan's variable, as the scan uses."""
    p = cell.init(jax.random.key(0))
    x = jax.random.normal(jax.random.key(1), (2,))
    s = cell.initial_state()._replace(h=jax.random.normal(jax.random.key(2), (cell.state_size,)))
    s2, y = cell.step(p, s, x)
    a, b = cell.coefficients(p, cell.project(p, x))
    want = cell.from_scan(a * cell.to_scan(s.h) + b)
    np.testing.assert_allclose(s2.h, want, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(y, s2.h)


def test_linen_recurrent_leaves_out_undeclared_initialisers():
    import rnnjax.linen as rl

    net = rl.Recurrent(4, cell=rj.MinGRU)
    xs = jnp.ones((1, 3, 2))
    v = net.init(jax.random.key(0), xs)
    assert net.apply(v, xs)[1].shape == (1, 3, 4)
    with pytest.raises(ValueError, match="recurrent_init is not a field of MinGRU"):
        rl.Recurrent(4, cell=rj.MinGRU, recurrent_init="gaussian").init(jax.random.key(0), xs)
