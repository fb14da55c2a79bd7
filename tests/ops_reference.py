"""Independent references for the operator tests: fla's naive PyTorch functions, in float64.

fla (``fla-core`` on PyPI) ships one ``naive.py`` of plain PyTorch per operator family
(``fla/ops/<family>/naive.py``). Importing the ``fla`` package itself pulls Triton, so each
file is read by path and run on its own. The naive functions cast to float32
(``.float()``, ``torch.float32``); the loader switches those casts to float64, so the
reference is a float64 computation the library is compared with at float64 tolerances.

Layout: fla is batch-first, ``(B, T, H, d)`` for most naive functions (``naive_retention``:
``(B, H, T, d)``); :func:`to_torch` and :func:`from_torch` convert rnnjax's time-major
``(T, B, H, d)``.
"""

import importlib.util
import re
import types

import numpy as np
import pytest


def load_naive(family: str) -> types.ModuleType:
    """``fla/ops/<family>/naive.py`` as a module, its float32 casts made float64. Skips the
    test when torch or fla-core is not installed."""
    pytest.importorskip("torch")
    pytest.importorskip("einops")
    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed (the test extra)")
    path = f"{spec.submodule_search_locations[0]}/ops/{family}/naive.py"
    file_spec = importlib.util.spec_from_file_location(f"fla_naive_{family}", path)
    with open(file_spec.origin) as f:
        source = f.read()
    source = source.replace(".float()", ".double()").replace("torch.float32", "torch.float64")
    source = re.sub(r"torch\.float\b(?!\d)", "torch.float64", source)
    module = importlib.util.module_from_spec(file_spec)
    exec(compile(source, path, "exec"), module.__dict__)
    return module


def to_torch(x, batch_first_axis: int = 1):
    """A time-major ``(T, B, ...)`` array as a float64 torch tensor ``(B, T, ...)``."""
    import torch

    return torch.from_numpy(np.moveaxis(np.asarray(x, np.float64), 0, batch_first_axis).copy())


def from_torch(t, time_axis: int = 1):
    """A torch tensor ``(B, T, ...)`` as a time-major numpy array ``(T, B, ...)``."""
    return np.moveaxis(t.detach().numpy(), time_axis, 0)
