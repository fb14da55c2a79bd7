"""rnnjax: recurrent networks for JAX with compiled recurrent scans.

Public names are re-exported flat: ``import rnnjax as rj``. The modules that pull in
heavier libraries (``checkpoint``: orbax; ``linen``, ``nnx``, ``flax_convert``: flax) are
imported on first use, so ``import rnnjax`` stays quick. The cells are listed once, in
:mod:`rnnjax.cells`, and re-exported from there. Deprecated modules (``rnnjax.esn``: use
:mod:`rnnjax.reservoir`; ``rnnjax.fused``: use :class:`rnnjax.ScanConfig`) stay importable
for one release and warn when imported.
"""

import importlib as _importlib

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
    models,
    parallel,
    reservoir,
    schedules,
    seq2seq,
    train,
)
from rnnjax.attention import AdditiveAttention, DotAttention, GeneralAttention
from rnnjax.blocks import DeepRecurrent, ResidualBlock, count_params
from rnnjax.cells import *  # noqa: F403  (the cells and their states: rnnjax.cells.CELLS)
from rnnjax.decoding import beam_search, generate, greedy_decode, sample
from rnnjax.diagnostics import gradient_norms_through_time, pascanu_bound
from rnnjax.engine import ScanConfig
from rnnjax.layers import Bidirectional, BidirectionalState, Recurrent, Stacked, dropout
from rnnjax.models import SequenceModel
from rnnjax.modern_blocks import griffin_block, xlstm_block
from rnnjax.reservoir import EchoState, EchoStateState
from rnnjax.seq2seq import Seq2Seq
from rnnjax.sequence import pack, parallel_solve, unpack, unroll, unroll_batch
from rnnjax.train import EarlyStopping, Trainer, TrainState, fit, make_optimizer

__version__ = "0.1.0"

_LAZY_MODULES = ("checkpoint", "linen", "nnx", "flax_convert")
# deprecated modules: importing them warns and names the replacement
_DEPRECATED_MODULES = ("esn", "fused")
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
    "models",
    "parallel",
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
]
