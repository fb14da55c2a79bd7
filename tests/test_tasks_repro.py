"""Task generators of the reproductions and their baselines/bounds, against plain Python."""

import itertools
import math

import numpy as np
import pytest

from rnnjax.tasks.digits import as_sequences, load_digit_sequences
from rnnjax.tasks.long_range import (
    ADDING_BASELINE_MSE,
    adding_problem,
    copy_baseline,
    copy_delimiter,
    copy_task,
)
from rnnjax.tasks.tagging import future_blind_bound, future_tagging


def test_adding_problem_structure_and_baseline():
    b = adding_problem(4000, 30, seed=1)
    x, y = b["inputs"], b["targets"]
    assert x.shape == (4000, 30, 2) and y.shape == (4000, 1)
    assert x.dtype == np.float32
    marks = x[..., 1]
    assert np.all(marks.sum(1) == 2)
    for r in range(5):  # one mark per half, target = sum of the marked values (Python loop)
        idx = [t for t in range(30) if marks[r, t] == 1]
        assert idx[0] < 15 <= idx[1]
        assert math.isclose(float(y[r, 0]), float(x[r, idx[0], 0] + x[r, idx[1], 0]), rel_tol=1e-6)
    # predicting the mean 1: MSE near 1/6 (sampling error ~ 0.005 at 4000)
    assert abs(np.mean((y - 1.0) ** 2) - ADDING_BASELINE_MSE) < 0.015
    np.testing.assert_array_equal(
        adding_problem(3, 10, seed=5)["inputs"], adding_problem(3, 10, seed=5)["inputs"]
    )
    assert not np.array_equal(
        adding_problem(3, 10, seed=5)["inputs"], adding_problem(3, 10, seed=6)["inputs"]
    )


def test_copy_task_structure():
    T, n = 7, 3
    b = copy_task(5, T, n_symbols=4, n_copy=n, seed=0)
    x, y = b["inputs"], b["targets"]
    assert x.shape == y.shape == (5, T + 2 * n)
    for r in range(5):
        sym = list(x[r, :n])
        assert all(1 <= s <= 4 for s in sym)
        expect_x = sym + [0] * (T - 1) + [copy_delimiter(4)] + [0] * n
        expect_y = [0] * (T + n) + sym
        assert list(x[r]) == expect_x and list(y[r]) == expect_y


def test_copy_baseline_is_memoryless_optimum():
    """The cross-entropy of 'blank, then uniform over symbols' equals the formula."""
    T, n, k = 12, 10, 8
    b = copy_task(50, T, n_symbols=k, n_copy=n, seed=2)
    probs = np.zeros((T + 2 * n, k + 2))
    probs[: T + n, 0] = 1.0
    probs[T + n :, 1 : k + 1] = 1.0 / k
    ce = -np.log(
        np.take_along_axis(np.broadcast_to(probs, (50,) + probs.shape), b["targets"][..., None], -1)
    )
    np.testing.assert_allclose(ce.mean(), copy_baseline(T, n_symbols=k, n_copy=n), rtol=1e-12)
    assert math.isclose(copy_baseline(100), 10 * math.log(8) / 120)


def _brute_force_causal_bound(T, V, d):
    """Best causal accuracy by enumerating all V**T sequences: for each position t and each
    prefix x_{0..t}, the best label is the most frequent one among sequences with that prefix."""
    correct = 0
    for t in range(T):
        counts = {}
        for seq in itertools.product(range(V), repeat=T):
            y = (seq[t] + seq[t + d]) % V if t + d < T else seq[t]
            counts.setdefault(seq[: t + 1], {}).setdefault(y, 0)
            counts[seq[: t + 1]][y] += 1
        correct += sum(max(c.values()) for c in counts.values())
    return correct / (T * V**T)


@pytest.mark.parametrize("T,V,d", [(4, 2, 1), (4, 3, 2), (3, 3, 1), (5, 2, 3)])
def test_future_blind_bound_equals_brute_force(T, V, d):
    assert math.isclose(
        future_blind_bound(T, vocab_size=V, delay=d),
        _brute_force_causal_bound(T, V, d),
        rel_tol=1e-12,
    )


def test_future_tagging_labels_and_lengths():
    b = future_tagging(6, 9, vocab_size=5, delay=2, min_length=3, seed=0)
    x, y, n = b["inputs"], b["targets"], b["length"]
    assert x.shape == y.shape == (6, 9) and n.shape == (6,)
    for r in range(6):
        for t in range(9):
            if t >= n[r]:
                assert x[r, t] == 0 and y[r, t] == 0
            elif t + 2 < n[r]:
                assert y[r, t] == (x[r, t] + x[r, t + 2]) % 5
            else:
                assert y[r, t] == x[r, t]
    # bound over mixed lengths: token-weighted average of the per-length bounds
    lens = np.array([3, 9, 5])
    want = sum(future_blind_bound(int(L), vocab_size=5, delay=2) * L for L in lens) / lens.sum()
    assert math.isclose(future_blind_bound(lens, vocab_size=5, delay=2), want, rel_tol=1e-12)


def test_task_errors():
    with pytest.raises(ValueError, match="T must be an int >= 2; got 1"):
        adding_problem(2, 1)
    with pytest.raises(ValueError, match="n_copy must be an int >= 1"):
        copy_task(2, 5, n_copy=0)
    with pytest.raises(ValueError, match="min_length must be <= T"):
        future_tagging(2, 5, min_length=6)
    with pytest.raises(ValueError, match="vocab_size must be an int >= 2"):
        future_blind_bound(5, vocab_size=1)
    with pytest.raises(ValueError, match="mode must be one of"):
        as_sequences(np.zeros((2, 8, 8)), "columns")
    with pytest.raises(ValueError, match=r"images must have shape \(B, 8, 8\)"):
        as_sequences(np.zeros((2, 64)))


def test_digit_sequences():
    pytest.importorskip("sklearn")
    from sklearn.datasets import load_digits

    raw = load_digits()
    rows = load_digit_sequences("rows", seed=3)
    pix = load_digit_sequences("pixels", seed=3)
    assert rows["train"]["inputs"].shape[1:] == (8, 8) and pix["train"]["inputs"].shape[1:] == (
        64,
        1,
    )
    n_tr, n_te = len(rows["train"]["targets"]), len(rows["test"]["targets"])
    assert n_tr + n_te == 1797 and n_te == round(0.25 * 1797)
    # same split in both modes; pixels are the rows in raster order, scaled by 1/16
    np.testing.assert_array_equal(
        rows["train"]["inputs"].reshape(n_tr, 64), pix["train"]["inputs"][..., 0]
    )
    x0, y0 = rows["test"]["inputs"][0], rows["test"]["targets"][0]
    hits = [i for i in range(1797) if np.allclose(raw.images[i] / 16.0, x0) and raw.target[i] == y0]
    assert hits
    assert rows["train"]["inputs"].min() >= 0 and rows["train"]["inputs"].max() <= 1


def test_digits_missing_extra(monkeypatch):
    import builtins

    real = builtins.__import__

    def fake(name, *a, **k):
        if name.startswith("sklearn"):
            raise ImportError("no sklearn")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", fake)
    with pytest.raises(ImportError, match=r"rnnjax\[digits\]"):
        load_digit_sequences()
