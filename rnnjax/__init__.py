"""rnnjax: recurrent networks for JAX with compiled recurrent scans.

Public names are re-exported flat: ``import rnnjax as rj``. The modules that pull in
heavier libraries (``checkpoint``: orbax; ``linen``, ``nnx``, ``flax_convert``: flax) are
imported on first use, so ``import rnnjax`` stays quick.
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
    esn,
    fused,
    initializers,
    interop,
    metrics,
    models,
    parallel,
    schedules,
    seq2seq,
    train,
)
from rnnjax.attention import AdditiveAttention, DotAttention, GeneralAttention
from rnnjax.blocks import DeepRecurrent, ResidualBlock, count_params
from rnnjax.cells import (
    GRU,
    LRU,
    LSTM,
    GRUState,
    LRUState,
    LSTMState,
    MinGRU,
    MinGRUState,
    MinLSTM,
    MinLSTMState,
    SimpleRNN,
    SimpleRNNState,
)
from rnnjax.decoding import beam_search, generate, greedy_decode, sample
from rnnjax.diagnostics import gradient_norms_through_time, pascanu_bound
from rnnjax.engine import ScanConfig
from rnnjax.esn import EchoState, EchoStateState
from rnnjax.layers import Bidirectional, BidirectionalState, Recurrent, Stacked, dropout
from rnnjax.models import SequenceModel
from rnnjax.seq2seq import Seq2Seq
from rnnjax.sequence import pack, parallel_solve, unpack, unroll, unroll_batch
from rnnjax.train import EarlyStopping, Trainer, TrainState, fit, make_optimizer

__version__ = "0.1.0"

_LAZY_MODULES = ("checkpoint", "linen", "nnx", "flax_convert")
_LAZY_NAMES = {
    "Checkpointer": "checkpoint",
    "CheckpointError": "checkpoint",
    "load_run": "checkpoint",
}


def __getattr__(name):
    if name in _LAZY_MODULES:
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
    "fused",
    "esn",
    "models",
    "parallel",
    "train",
    "distributed",
    "checkpoint",
    "attention",
    "decoding",
    "schedules",
    "seq2seq",
    "linen",
    "nnx",
    "flax_convert",
    # cells and states
    "SimpleRNN",
    "SimpleRNNState",
    "LSTM",
    "LSTMState",
    "GRU",
    "GRUState",
    "MinGRU",
    "MinGRUState",
    "MinLSTM",
    "MinLSTMState",
    "LRU",
    "LRUState",
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
    "load_run",
    "Checkpointer",
    "CheckpointError",
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
]

# the modern recurrent cells (xLSTM, Griffin, Mamba)
from rnnjax.cells import (  # noqa: E402
    MLSTM,
    RGLRU,
    S6,
    SLSTM,
    CausalConv,
    CausalConvState,
    MLSTMState,
    RGLRUState,
    S6State,
    SLSTMState,
)

__all__ += ["SLSTM", "SLSTMState", "MLSTM", "MLSTMState", "RGLRU", "RGLRUState", "S6", "S6State"]
__all__ += ["CausalConv", "CausalConvState"]
from rnnjax.modern_blocks import griffin_block, xlstm_block  # noqa: E402

__all__ += ["xlstm_block", "griffin_block"]
