"""scikit-learn's 8x8 digits as sequences: row by row (T = 8, I = 8) or pixel by pixel
(T = 64, I = 1), for the pixel-RNN experiment.

The data ship inside scikit-learn (``sklearn.datasets.load_digits``, 1797 images, no
download), an optional extra: ``pip install rnnjax[digits]`` (i.e. ``scikit-learn``).

Shapes: ``B`` images, ``T`` time, ``I`` input size.
"""

from __future__ import annotations

import numpy as np

__all__ = ["load_digit_sequences", "as_sequences"]

_MODES = {"rows": (8, 8), "pixels": (64, 1)}


def as_sequences(images: np.ndarray, mode: str = "rows") -> np.ndarray:
    """Images ``(B, 8, 8)`` (values 0..16) as sequences scaled to ``[0, 1]``.

    Args:
      images: ``(B, 8, 8)`` array.
      mode: ``"rows"`` -> ``(B, 8, 8)`` (one row per step) or ``"pixels"`` ->
        ``(B, 64, 1)`` (raster order, one pixel per step).

    Returns:
      float32 ``(B, T, I)``.

    Example:
      >>> import numpy as np
      >>> from rnnjax.tasks.digits import as_sequences
      >>> images = np.full((2, 8, 8), 16.0)
      >>> as_sequences(images, "rows").shape, as_sequences(images, "pixels").shape   # (B, T, I)
      ((2, 8, 8), (2, 64, 1))
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}; got {mode!r}")
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1:] != (8, 8):
        raise ValueError(f"images must have shape (B, 8, 8); got {images.shape}")
    T, I = _MODES[mode]
    return (images.reshape(images.shape[0], T, I) / 16.0).astype(np.float32)


def load_digit_sequences(mode: str = "rows", *, test_fraction: float = 0.25, seed: int = 0) -> dict:
    """scikit-learn's digits as sequences, split into train and test sets (seeded).

    Args:
      mode: ``"rows"`` or ``"pixels"`` (see :func:`as_sequences`).
      test_fraction: fraction of the 1797 images held out, in ``(0, 1)``.
      seed: seed of the permutation.

    Returns:
      ``{"train": {"inputs": (B, T, I), "targets": (B,)}, "test": {...}}`` with float32
      inputs in ``[0, 1]`` and int32 labels ``0..9``.

    Raises:
      ImportError: scikit-learn is missing (the ``digits`` extra).

    Example:
      >>> from rnnjax.tasks.digits import load_digit_sequences
      >>> data = load_digit_sequences("rows")              # needs scikit-learn
      >>> sorted(data)
      ['test', 'train']
      >>> data["train"]["inputs"].shape[1:]                 # (B, T, I)
      (8, 8)
    """
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {sorted(_MODES)}; got {mode!r}")
    if not 0.0 < float(test_fraction) < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1); got {test_fraction!r}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as err:
        raise ImportError(
            "load_digit_sequences needs scikit-learn, the optional extra 'digits': "
            "pip install 'rnnjax[digits]' (or pip install scikit-learn)"
        ) from err
    data = load_digits()
    x = as_sequences(data.images, mode)
    y = data.target.astype(np.int32)
    perm = np.random.default_rng(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = perm[:n_test], perm[n_test:]
    return {
        "train": {"inputs": x[tr], "targets": y[tr]},
        "test": {"inputs": x[te], "targets": y[te]},
    }
