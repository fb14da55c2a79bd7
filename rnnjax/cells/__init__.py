"""Functional recurrent cells: one time step of one example, one module per cell.

A cell is a frozen dataclass of hyperparameters (hashable, so it can be a static argument
of ``jit``); its parameters live outside it in a plain ``dict`` of arrays. The protocol
that the engine relies on, and nothing else, is in :mod:`rnnjax.cells.base`.

Adding a cell is one module here (the dataclass, its state NamedTuple and, for the fused
path, its kernel) plus one import line and its two names in ``__all__`` below: this list is
the only one, :mod:`rnnjax` re-exports it and the documentation lists the cells from it.
"""

from rnnjax.cells import linear_attention
from rnnjax.cells.base import Cell, Kernel
from rnnjax.cells.conv import CausalConv, CausalConvState
from rnnjax.cells.gru import GRU, GRUState
from rnnjax.cells.linear_attention import *  # noqa: F403  (the linear-attention family)
from rnnjax.cells.lru import LRU, LRUState
from rnnjax.cells.lstm import LSTM, LSTMState
from rnnjax.cells.mingru import MinGRU, MinGRUState
from rnnjax.cells.minlstm import MinLSTM, MinLSTMState
from rnnjax.cells.mlstm import MLSTM, MLSTMState
from rnnjax.cells.rglru import RGLRU, RGLRUState
from rnnjax.cells.simple_rnn import SimpleRNN, SimpleRNNState
from rnnjax.cells.slstm import SLSTM, SLSTMState
from rnnjax.cells.ssm import S6, S6State

__all__ = [
    "Cell",
    "Kernel",
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
    # the modern recurrent cells (xLSTM, Griffin, Mamba)
    "SLSTM",
    "SLSTMState",
    "MLSTM",
    "MLSTMState",
    "RGLRU",
    "RGLRUState",
    "S6",
    "S6State",
    "CausalConv",
    "CausalConvState",
    # the matrix-state cells of the linear-attention family (chunkwise: rnnjax.ops)
    *linear_attention.__all__,
]

#: the cells and their states, in the order the documentation lists them (``__all__``
#: without the protocol's base classes); :mod:`rnnjax` re-exports them flat
CELLS = [name for name in __all__ if name not in ("Cell", "Kernel")]
