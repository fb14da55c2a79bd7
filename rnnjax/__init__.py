"""rnnjax: recurrent networks for JAX with compiled recurrent scans.

Public names are re-exported flat: ``import rnnjax as rj``.
"""

from rnnjax import initializers, interop, metrics
from rnnjax.cells import GRU, LSTM, GRUState, LSTMState, SimpleRNN, SimpleRNNState
from rnnjax.layers import Bidirectional, BidirectionalState, Recurrent, Stacked, dropout
from rnnjax.sequence import unroll, unroll_batch

__version__ = "0.1.0"

__all__ = [
    "initializers",
    "metrics",
    "interop",
    "SimpleRNN",
    "SimpleRNNState",
    "LSTM",
    "LSTMState",
    "GRU",
    "GRUState",
    "unroll",
    "unroll_batch",
    "Recurrent",
    "Bidirectional",
    "BidirectionalState",
    "Stacked",
    "dropout",
]
