r"""The cell protocol: what :mod:`rnnjax.engine` may rely on, and nothing else.

A cell is a frozen dataclass of hyperparameters (hashable: a static argument of ``jit``);
its parameters live outside it in a plain ``dict`` of arrays. A cell describes ONE time
step of ONE example; the engine runs it over time and over any number of batch axes.

Required (every cell):

- ``input_size``, ``output_size``; ``init(key) -> params``;
  ``initial_state(dtype=None) -> State`` (a NamedTuple with named fields, e.g. ``h``, ``c``).
- ``project(params, x) -> xp``: the part of a step that depends only on the input, so the
  engine may compute it for all steps at once; ``recur(params, state, xp) -> (state, y)``:
  the part that recurs. Both accept leading batch axes on ``x``/``state``.
- ``step(params, state, x) == recur(params, state, project(params, x))``: the checked
  entry point for one example (shapes checked at trace time; nothing is broadcast).

Optional, for the fused path (:class:`Kernel`): ``cell.kernel()`` returns an object that
tells the engine what the forward pass saves and how to form the step's local derivative
as a linear map of tangents. The engine builds the forward-mode derivative of the whole
scan from it (a :func:`jax.custom_jvp`); reverse mode is its transpose, in which the
weight gradients come out as single large products outside the time loop, and every
higher order is autodiff of these two scans. A cell without a kernel runs on the
reference path (autodiff of ``lax.scan``), with every guarantee but the speed.

Precision: ``param_dtype`` is the dtype of the parameters (initialised in float32, then
cast, so bfloat16 and float16 initialise on every backend); ``dtype`` is the compute dtype
of the matrix products (default: that of the parameters); the recurrent state is float32
unless the parameters or inputs are float64 (:func:`state_dtype`).

Shapes: ``I`` input size, ``H`` hidden size, ``G`` number of gate blocks, ``B`` batch axes.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Protocol

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits

__all__ = ["Cell", "Kernel", "state_dtype", "matmul", "matmul_t", "lead", "param_shapes"]


def state_dtype(*arrays) -> jnp.dtype:
    """The dtype of the recurrent state for these inputs and parameters: float32, or
    float64 when any of them is float64 (reduced precision never reaches the state).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.cells.base import state_dtype
      >>> state_dtype(jnp.ones(2, jnp.bfloat16))           # reduced precision: float32 state
      dtype('float32')
    """
    leaves = [a for a in jax.tree_util.tree_leaves(arrays) if hasattr(a, "dtype")]
    return jnp.promote_types(jnp.float32, jnp.result_type(*leaves)) if leaves else jnp.float32


def lead(b: jax.Array, ndim: int) -> jax.Array:
    """``b`` with leading unit axes up to ``ndim`` (explicit broadcasting: rank promotion
    may be set to raise).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.cells.base import lead
      >>> lead(jnp.ones(4), 3).shape                       # a bias (H,) against (T, B, H)
      (1, 1, 4)
    """
    return b.reshape((1,) * (ndim - b.ndim) + b.shape)


def matmul(a: jax.Array, w: jax.Array, dtype=None) -> jax.Array:
    """``a @ w`` in the compute dtype ``dtype`` (default: ``w``'s), accumulated and returned
    in at least float32 (float64 stays float64).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.cells.base import matmul
      >>> y = matmul(jnp.ones((2, 3)), jnp.ones((3, 4), jnp.bfloat16))   # (B, I) @ (I, 4)
      >>> y.shape, y.dtype, float(y[0, 0])
      ((2, 4), dtype('float32'), 3.0)
    """
    cd = jnp.dtype(dtype) if dtype is not None else w.dtype
    out = jnp.promote_types(jnp.float32, jnp.promote_types(cd, a.dtype))
    return jnp.matmul(a.astype(cd), w.astype(cd), preferred_element_type=out)


def matmul_t(a: jax.Array, w_t: jax.Array, dtype=None) -> jax.Array:
    """``a @ w_t.T`` for a weight stored transposed (as :func:`matmul` otherwise). Kernels
    use it in the tangent step: its transpose, the backward pass's per-step product, then
    reads ``w_t`` in its natural layout (a transposed operand inside the loop was measured
    to cost about 10% on XLA:CPU).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.cells.base import matmul_t
      >>> matmul_t(jnp.ones((2, 4)), jnp.ones((3, 4))).shape   # (B, H) @ (3, H).T
      (2, 3)
    """
    cd = jnp.dtype(dtype) if dtype is not None else w_t.dtype
    out = jnp.promote_types(jnp.float32, jnp.promote_types(cd, a.dtype))
    return jax.lax.dot_general(
        a.astype(cd),
        w_t.astype(cd),
        (((a.ndim - 1,), (1,)), ((), ())),
        preferred_element_type=out,
    )


class Kernel(Protocol):
    """What a cell tells the engine for the fused path (see the module docstring).

    All functions accept leading axes: ``(*B,)`` for one step, ``(T, *B)`` for all steps.
    The step's output is always the new state's ``h``.

    - ``forward(params, state, xp) -> (state, res)``: one step from the projected input,
      with what the derivative needs (``res``).
    - ``factors(params, state_in, res) -> F``: the coefficients of the step's local linear
      map, for all steps at once (outside the loop).
    - ``constants(params) -> C``: loop-invariant arrays (e.g. ``w_hh`` transposed).
    - ``inject(params, dparams, state_in, res) -> U``: the step's tangent from the
      recurrent parameters' tangents, for all steps at once (linear in ``dparams``: the
      weight gradients of the transpose are single products).
    - ``tangent(C, F, dstate_in, dxp, U) -> dstate``: one step of the tangent recurrence,
      linear in ``(dstate_in, dxp, U)``.

    Example:
      A cell with a kernel runs the fused path of :class:`rnnjax.ScanConfig`'s ``"auto"``:

      >>> import rnnjax as rj
      >>> from rnnjax.engine import resolve_backward
      >>> rj.LSTM(3, 4).kernel() is not None
      True
      >>> resolve_backward(rj.LSTM(3, 4), rj.ScanConfig())
      'fused'
    """

    def forward(self, params, state, xp): ...

    def factors(self, params, state_in, res): ...

    def constants(self, params): ...

    def inject(self, params, dparams, state_in, res): ...

    def tangent(self, consts, factors, dstate_in, dxp, inject): ...


@dataclasses.dataclass(frozen=True)
class Cell:
    """Shared fields, initialisation and checks of the built-in gated and plain cells.

    Subclasses set the class attribute ``gates`` (number of fused gate blocks ``G``) and
    the ``State`` NamedTuple, and implement ``recur`` (and, for the fused path, ``kernel``).

    Example:
      Every built-in cell is a subclass; the fields are shared:

      >>> import jax, rnnjax as rj
      >>> from rnnjax.cells.base import Cell
      >>> cell = rj.GRU(3, 4)
      >>> isinstance(cell, Cell), cell.input_size, cell.output_size
      (True, 3, 4)
      >>> {k: v.shape for k, v in cell.init(jax.random.key(0)).items()}
      {'w_ih': (3, 12), 'w_hh': (4, 12), 'b': (12,), 'b_hn': (4,)}
    """

    input_size: int
    hidden_size: int
    kernel_init: inits.InitSpec = "glorot_uniform"
    recurrent_init: inits.InitSpec = "orthogonal"
    param_dtype: Any = jnp.float32
    dtype: Any = None

    gates = 1  # number of fused gate blocks; a class attribute, not a field
    State = None  # the state NamedTuple; a class attribute, not a field

    def __init_subclass__(cls, **kwargs):
        # a short repr (sizes as I->H, non-default fields only) that the dataclass
        # decorator keeps, since the class then defines __repr__ itself
        super().__init_subclass__(**kwargs)
        if "__repr__" not in cls.__dict__:
            from rnnjax._repr import short_repr

            cls.__repr__ = short_repr
        if "init" in cls.__dict__:  # an integer key is named as `key` (rnnjax.checks.key)
            cls.init = _checked_key_init(cls.__dict__["init"])

    def __post_init__(self):
        checks.integer("input_size", self.input_size, 1)
        checks.integer("hidden_size", self.hidden_size, 1)
        inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        inits.resolve(self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init")
        checks.floating_dtype("param_dtype", self.param_dtype)
        if self.dtype is not None:
            checks.floating_dtype("dtype", self.dtype)

    # ------------------------------------------------------------------ sizes

    @property
    def output_size(self) -> int:
        """Size of the output ``y`` of one step."""
        return self.hidden_size

    @property
    def state_size(self) -> int:
        """Size of the recurrent vector ``h`` (the ``fan_in`` of ``w_hh``)."""
        return self.hidden_size

    # ------------------------------------------------------------------ init

    def _init_dtype(self):
        """Draw in float32 (float64 for float64 parameters), cast afterwards: QR and the
        samplers do not support every reduced precision on every backend."""
        return jnp.promote_types(jnp.float32, self.param_dtype)

    def _cast(self, params: dict) -> dict:
        return {k: v.astype(self.param_dtype) for k, v in params.items()}

    def _init_weights(self, key) -> dict:
        k_ih, k_hh = jax.random.split(key)
        kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        recurrent = inits.resolve(
            self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init"
        )
        H, G, dt = self.hidden_size, self.gates, self._init_dtype()
        return {
            "w_ih": inits.per_gate(kernel, k_ih, self.input_size, H, G, dt),
            "w_hh": inits.per_gate(recurrent, k_hh, self.state_size, H, G, dt),
            "b": jnp.zeros((G * H,), dt),
        }

    def initial_state(self, dtype=None):
        """The zero state, float32 unless ``dtype`` says otherwise."""
        dtype = jnp.float32 if dtype is None else checks.floating_dtype("dtype", dtype)
        return self.State(**{k: jnp.zeros((n,), dtype) for k, n in self._state_sizes().items()})

    def _state_sizes(self) -> dict:
        return {"h": self.hidden_size}

    # ------------------------------------------------------------------ step

    def mm(self, a, w):
        """``a @ w`` in this cell's compute dtype (see :func:`matmul`)."""
        return matmul(a, w, self.dtype)

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_ih + b``, shape ``(..., G * H)``."""
        y = self.mm(x, params["w_ih"])
        return y + lead(params["b"], y.ndim).astype(y.dtype)

    def step(self, params: dict, state, x: jax.Array):
        """One time step of one example: ``(state, x) -> (state', y)``.

        Args:
          params: ``init``'s dict.
          state: the state NamedTuple, leaves of one example (no batch axes); a floating
            dtype other than the state dtype is cast.
          x: ``(I,)``.

        Returns:
          ``(state', y)`` with ``y`` of shape ``(output_size,)``.

        Shapes are checked when traced; a batch axis is refused (use
        :func:`rnnjax.unroll_batch` or :func:`jax.vmap`), nothing is broadcast.
        """
        checks.params("params", _param_shapes(self), params, type(self).__name__)
        x = checks.floating_array("x", x, ndim=1, shape_hint=f" ({self.input_size},)")
        if x.shape[0] != self.input_size:
            raise ValueError(
                f"x must have shape ({self.input_size},) (input_size); got {checks.describe(x)}"
            )
        sd = state_dtype(x, params)
        state = checks.state("state", self.initial_state(sd), state, dtype=sd)
        return self.recur(params, state, self.project(params, x))

    def kernel(self) -> Optional[Kernel]:
        """The fused-path kernel (see :class:`Kernel`), or ``None``: reference path only."""
        return None


_SHAPES: dict = {}


def _checked_key_init(init):
    """``init(self, key, ...)`` with ``key`` checked first (:func:`rnnjax.checks.key`)."""

    @functools.wraps(init)
    def checked(self, key, *args, **kwargs):
        return init(self, checks.key("key", key), *args, **kwargs)

    return checked


def _param_shapes(cell):
    """``jax.eval_shape`` of ``cell.init`` (cached per cell: cells are hashable)."""
    try:
        return _SHAPES[cell]
    except KeyError:
        shapes = jax.eval_shape(cell.init, jax.random.key(0))
        _SHAPES[cell] = shapes
        return shapes


def param_shapes(cell):
    """The shapes and dtypes ``cell.init`` gives (cached), for checks.

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.cells.base import param_shapes
      >>> sorted((k, v.shape) for k, v in param_shapes(rj.LSTM(3, 4)).items())
      [('b', (16,)), ('w_hh', (4, 16)), ('w_ih', (3, 16))]
    """
    return _param_shapes(cell)
