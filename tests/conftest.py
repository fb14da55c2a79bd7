"""Test configuration: rank promotion raises, so silent broadcasting is an error.

After every test module the compiled programs are dropped (``jax.clear_caches``): a
single process that keeps every executable of the whole suite runs out of memory
mappings (XLA:CPU maps each program's code; Linux allows 65,530 mappings per process)
and aborts inside the compiler.
"""

import gc

import jax
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture(autouse=True, scope="module")
def _drop_compiled_programs():
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def key():
    return jax.random.key(0)
