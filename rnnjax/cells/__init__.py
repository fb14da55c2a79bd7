"""Functional recurrent cells: one time step of one example, one module per cell.

A cell is a frozen dataclass of hyperparameters (hashable, so it can be a static argument
of ``jit``); its parameters live outside it in a plain ``dict`` of arrays. The protocol
that the engine relies on, and nothing else, is in :mod:`rnnjax.cells.base`.

Adding a cell is one module here (the dataclass, its state NamedTuple and, for the fused
path, its kernel) plus a re-export in this file and in :mod:`rnnjax`.
"""

from rnnjax.cells.base import Cell, Kernel
from rnnjax.cells.gru import GRU, GRUState
from rnnjax.cells.lru import LRU, LRUState
from rnnjax.cells.lstm import LSTM, LSTMState
from rnnjax.cells.mingru import MinGRU, MinGRUState
from rnnjax.cells.minlstm import MinLSTM, MinLSTMState
from rnnjax.cells.simple_rnn import SimpleRNN, SimpleRNNState

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
]

# the modern recurrent cells (xLSTM, Griffin, Mamba)
from rnnjax.cells.slstm import SLSTM, SLSTMState  # noqa: E402

__all__ += ["SLSTM", "SLSTMState"]
from rnnjax.cells.mlstm import MLSTM, MLSTMState  # noqa: E402

__all__ += ["MLSTM", "MLSTMState"]
from rnnjax.cells.rglru import RGLRU, RGLRUState  # noqa: E402

__all__ += ["RGLRU", "RGLRUState"]
from rnnjax.cells.ssm import S6, S6State  # noqa: E402

__all__ += ["S6", "S6State"]
from rnnjax.cells.conv import CausalConv, CausalConvState  # noqa: E402

__all__ += ["CausalConv", "CausalConvState"]
