"""rnnjax: recurrent networks for JAX with compiled recurrent scans.

Public names are re-exported flat: ``import rnnjax as rj``. The modules that pull in
heavier libraries (``checkpoint``: orbax; ``linen``, ``nnx``, ``flax_convert``: flax) are
imported on first use, so ``import rnnjax`` stays quick. The cells are listed once, in
:mod:`rnnjax.cells`, and re-exported from there. Deprecated modules (``rnnjax.esn``: use
:mod:`rnnjax.reservoir`; ``rnnjax.fused``: use :class:`rnnjax.ScanConfig`;
``rnnjax.models`` and ``rnnjax.modern_blocks``: use :mod:`rnnjax.blocks`) stay importable for
one release and warn when imported.
"""

import importlib as _importlib
import importlib.abc as _abc
import sys as _sys
import warnings as _warnings

from rnnjax import (
    attention,
    blocks,
    cells,
    checks,
    decoding,
    diagnostics,
    distributed,
    engine,
    initializers,
    interop,
    metrics,
    ops,
    parallel,
    reservoir,
    schedules,
    seq2seq,
    train,
)
from rnnjax.attention import AdditiveAttention, DotAttention, GeneralAttention
from rnnjax.blocks import (
    DeepRecurrent,
    ResidualBlock,
    SequenceModel,
    count_params,
    griffin_block,
    linear_attention_block,
    xlstm_block,
)
from rnnjax.cells import *  # noqa: F403  (the cells and their states: rnnjax.cells.CELLS)
from rnnjax.decoding import beam_search, generate, greedy_decode, sample
from rnnjax.diagnostics import gradient_norms_through_time, pascanu_bound
from rnnjax.engine import ScanConfig
from rnnjax.layers import Bidirectional, BidirectionalState, Recurrent, Stacked, dropout
from rnnjax.reservoir import EchoState, EchoStateState
from rnnjax.seq2seq import Seq2Seq
from rnnjax.sequence import pack, parallel_solve, unpack, unroll, unroll_batch
from rnnjax.train import EarlyStopping, Trainer, TrainState, fit, make_optimizer

__version__ = "0.1.0"

_LAZY_MODULES = ("checkpoint", "linen", "nnx", "flax_convert", "tasks")
# deprecated modules: importing them warns and names the replacement
_DEPRECATED_MODULES = ("esn", "fused", "models", "modern_blocks")
# modules that moved: their old paths stay importable for one release, as aliases that warn
_MOVED_MODULES = {
    "rnnjax.models": "rnnjax.blocks.models",
    "rnnjax.modern_blocks": "rnnjax.blocks.modern",
}


class _MovedModules(_abc.MetaPathFinder, _abc.Loader):
    """Imports ``rnnjax.models`` (moved to ``rnnjax.blocks.models``) and the like: a module
    that re-exports the new one's names, with a ``DeprecationWarning`` naming the new path."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _MOVED_MODULES:
            return None
        return _importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        return None  # a plain new module

    def exec_module(self, module):
        new = _MOVED_MODULES[module.__name__]
        _warnings.warn(
            f"{module.__name__} is deprecated and goes in the next release: use {new} "
            "(the same names, also flat in rnnjax)",
            DeprecationWarning,
            stacklevel=2,
        )
        target = _importlib.import_module(new)
        module.__dict__.update({name: getattr(target, name) for name in target.__all__})
        module.__all__ = list(target.__all__)
        module.__doc__ = f"Deprecated alias of :mod:`{new}`."


if not any(isinstance(f, _MovedModules) for f in _sys.meta_path):
    _sys.meta_path.insert(0, _MovedModules())

_LAZY_NAMES = {
    "load_run": "checkpoint",
    "Checkpointer": "checkpoint",
    "CheckpointError": "checkpoint",
}


def __getattr__(name):
    if name in _LAZY_MODULES or name in _DEPRECATED_MODULES:
        return _importlib.import_module(f"rnnjax.{name}")
    if name in _LAZY_NAMES:
        return getattr(_importlib.import_module(f"rnnjax.{_LAZY_NAMES[name]}"), name)
    raise AttributeError(f"module 'rnnjax' has no attribute {name!r}")


__all__ = [
    # modules
    "cells",
    "checks",
    "engine",
    "initializers",
    "metrics",
    "interop",
    "diagnostics",
    "reservoir",
    "parallel",
    "ops",
    "train",
    "distributed",
    "attention",
    "decoding",
    "schedules",
    "seq2seq",
    *_LAZY_MODULES,
    # cells and states
    *cells.CELLS,
    "EchoState",
    "EchoStateState",
    # sequences and layers
    "unroll",
    "unroll_batch",
    "parallel_solve",
    "ScanConfig",
    "pack",
    "unpack",
    "Recurrent",
    "Bidirectional",
    "BidirectionalState",
    "Stacked",
    "dropout",
    # models and training
    "SequenceModel",
    "Trainer",
    "TrainState",
    "fit",
    "make_optimizer",
    "EarlyStopping",
    *_LAZY_NAMES,
    # diagnostics
    "gradient_norms_through_time",
    "pascanu_bound",
    # sequence to sequence
    "Seq2Seq",
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
    "greedy_decode",
    "beam_search",
    # generation for every model
    "generate",
    "sample",
    # deep residual recurrent blocks
    "blocks",
    "ResidualBlock",
    "DeepRecurrent",
    "count_params",
    "xlstm_block",
    "griffin_block",
    "linear_attention_block",
]
