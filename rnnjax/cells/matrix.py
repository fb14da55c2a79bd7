r"""The base of matrix-state cells: cells whose recurrence is an operator of
:mod:`rnnjax.ops` on a per-head matrix memory (queries, keys, values and gates from the
input alone), so that the engine can run them chunkwise
(``rj.ScanConfig(method="chunkwise")``).

A matrix-state cell states, besides ``State``, ``init`` and ``project``:

- ``matrix_op`` (class attribute): the key of its operator in ``rnnjax.ops.OPERATORS``.
- ``matrix_inputs(params, xp) -> dict``: the operator's array arguments (by name) from
  projected inputs ``(..., P)`` (any leading axes: ``(T, *B)`` for the chunkwise form,
  none for a step), plus ``"scale"`` where not the operator's default.
- ``matrix_state(state) -> op_state`` and ``with_matrix_state(state, op_state, h) ->
  state`` (``h``: the output of the last step, for cells whose state keeps it).
- ``matrix_output(params, xp, o) -> y``: the cell's output from the operator's.

``recur`` (one step: the operator's ``step``) comes from :class:`MatrixCell`, so the step
and the chunkwise form share one copy of the maths. The engine applies lengths, resets and
the final state at the length; a matrix-state cell never sees a mask.
"""

from __future__ import annotations

import dataclasses

from rnnjax.cells.base import Cell
from rnnjax.ops import OPERATORS

__all__ = ["MatrixCell"]


@dataclasses.dataclass(frozen=True)
class MatrixCell(Cell):
    """The base of matrix-state cells (see the module docstring): ``recur`` from the
    operator's ``step``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.cells.matrix import MatrixCell
      >>> cell = rj.MLSTM(3, 4, num_heads=2)
      >>> isinstance(cell, MatrixCell), cell.matrix_op
      (True, 'mlstm')
      >>> p = cell.init(jax.random.key(0))
      >>> sorted(cell.matrix_inputs(p, cell.project(p, jnp.ones((5, 3)))))
      ['f', 'i', 'k', 'q', 'v']
    """

    matrix_op = None  # the operator's name in rnnjax.ops.OPERATORS; a class attribute

    def matrix_inputs(self, params: dict, xp) -> dict:  # pragma: no cover - overridden
        """The operator's array arguments from projected inputs ``(..., P)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement matrix_inputs")

    def matrix_state(self, state):  # pragma: no cover - overridden
        """The operator's state from the cell's."""
        raise NotImplementedError(f"{type(self).__name__} must implement matrix_state")

    def with_matrix_state(self, state, op_state, h):  # pragma: no cover - overridden
        """The cell's state holding ``op_state`` (and ``h``, the last output)."""
        raise NotImplementedError(f"{type(self).__name__} must implement with_matrix_state")

    def matrix_output(self, params: dict, xp, o):  # pragma: no cover - overridden
        """The cell's output from projected inputs and the operator's output."""
        raise NotImplementedError(f"{type(self).__name__} must implement matrix_output")

    def recur(self, params: dict, state, xp):
        """The recurrent part of a step: the operator's ``step`` on :meth:`matrix_inputs`,
        then :meth:`matrix_output`; returns ``(state, y)``."""
        op = OPERATORS[self.matrix_op]
        op_state, o = op.step(self.matrix_state(state), **self.matrix_inputs(params, xp))
        y = self.matrix_output(params, xp, o)
        return self.with_matrix_state(state, op_state, y), y
