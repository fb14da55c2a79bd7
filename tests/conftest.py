"""Test configuration: rank promotion raises, so silent broadcasting is an error.

The slow tests fall into profiles, each a marker added here by file (see
``pytest --markers``): ``properties`` (the long hypothesis profile), ``faults`` (kills
and damaged files), ``multiprocess`` (several JAX processes) and ``parallel`` (the
parallel-scan combinations). ``python -m pytest -m "slow and faults"`` runs one;
``-m "slow and not (properties or faults or multiprocess or parallel)"`` the rest.

The suite compiles with XLA:CPU's backend optimisation level 0 (see ``XLA_FLAGS`` below):
faster compiles, the same HLO.

After every test module the compiled programs are dropped (``jax.clear_caches``): a
single process that keeps every executable of the whole suite runs out of memory
mappings (XLA:CPU maps each program's code; Linux allows 65,530 mappings per process)
and aborts inside the compiler.
"""

import gc
import os

# The suite compiles thousands of small programs and runs each on tiny shapes, so compile
# time is most of its time: XLA:CPU's backend optimisation level 0 (the HLO passes still
# run; only LLVM's code generation optimises less) cut a derivative test from 57 s to 39 s.
# Set before JAX starts its backend; subprocesses inherit it. An XLA_FLAGS already set wins.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
)

import jax  # noqa: E402
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")

# the slow tests of these files form the profiles .ci/run runs (in one run); the other slow
# tests (experiment presets, long derivative compiles) run by hand: -m "slow and not (...)"
PROFILES = {
    "test_properties.py": "properties",
    "test_faults.py": "faults",
    "test_multiprocess.py": "multiprocess",
    "test_distributed.py": "multiprocess",
    "test_parallel.py": "parallel",
}


def pytest_collection_modifyitems(config, items):
    for item in items:
        profile = PROFILES.get(item.path.name)
        if profile is not None and item.get_closest_marker("slow") is not None:
            item.add_marker(getattr(pytest.mark, profile))


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def key():
    return jax.random.key(0)
