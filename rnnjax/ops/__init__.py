"""Operators on arrays in rnnjax's time-major layout ``(T, *B, heads, d)``.

``OPERATORS`` maps an operator's name to its module (``step``, ``recurrent``, ``chunk``);
the engine's chunkwise strategy reads it.
"""

from rnnjax.ops import mlstm

OPERATORS = {"mlstm": mlstm}
