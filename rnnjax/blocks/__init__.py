"""Models built from layers: the residual blocks, the papers' blocks and the sequence models.

- :mod:`~rnnjax.blocks.residual`: :class:`~rnnjax.ResidualBlock` and
  :class:`~rnnjax.DeepRecurrent` (pre-norm, any cell or layer, GLU or MLP, residual,
  stacked: the deep models of the linear-recurrence papers), :func:`~rnnjax.count_params`,
  :func:`~rnnjax.blocks.step_layer` (one position of any causal layer: generation).
- :mod:`~rnnjax.blocks.modern`: the xLSTM and Griffin blocks (:func:`~rnnjax.xlstm_block`,
  :func:`~rnnjax.griffin_block`) and the linear-attention papers' block around a
  matrix-state cell (:func:`~rnnjax.linear_attention_block`), composed of those.
- :mod:`~rnnjax.blocks.models`: :class:`~rnnjax.SequenceModel` (embedding, any layer,
  per-step or final head).

Every name here is also flat in :mod:`rnnjax`.
"""

from rnnjax.blocks import models, modern, residual
from rnnjax.blocks.models import SequenceModel
from rnnjax.blocks.modern import griffin_block, linear_attention_block, xlstm_block
from rnnjax.blocks.residual import DeepRecurrent, ResidualBlock, count_params, step_layer

__all__ = [
    "residual",
    "modern",
    "models",
    "ResidualBlock",
    "DeepRecurrent",
    "count_params",
    "step_layer",
    "xlstm_block",
    "griffin_block",
    "linear_attention_block",
    "SequenceModel",
]
