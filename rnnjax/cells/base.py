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

__all__ = [
    "Cell",
    "GatedCell",
    "DiagonalLinearCell",
    "Kernel",
    "state_dtype",
    "matmul",
    "matmul_t",
    "lead",
    "check_heads",
    "param_shapes",
]


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


def check_heads(hidden_size: int, num_heads) -> None:
    """``num_heads`` an int >= 1 that divides ``hidden_size`` (a ``ValueError`` naming
    both otherwise).

    Example:
      >>> from rnnjax.cells.base import check_heads
      >>> check_heads(4, 2)
      >>> check_heads(5, 2)
      Traceback (most recent call last):
      ...
      ValueError: hidden_size must be divisible by num_heads; got hidden_size=5, num_heads=2
    """
    checks.integer("num_heads", num_heads, 1)
    if hidden_size % num_heads:
        raise ValueError(
            f"hidden_size must be divisible by num_heads; got hidden_size={hidden_size}, "
            f"num_heads={num_heads}"
        )


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
      with the coefficients of the step's local linear map (``res``), formed inside the
      loop where the step's values are still in cache.
    - ``constants(params) -> C``: loop-invariant arrays (e.g. ``w_hh`` transposed).
    - ``drive(params, dparams, state_in, res, dxp) -> D``: the step's tangent input from
      the parameter and input tangents, for all steps at once (outside the loop), linear
      in ``(dparams, dxp)``. The engine calls it on 2-D views ``(N, .)`` of the stacked
      ``(T, *B, .)`` arrays, so that the weight gradients of its transpose are single 2-D
      products with no relayout; one array (or a small tuple) so that the transposed
      loop emits one cotangent per step.
    - ``tangent(C, res, dstate_in, D) -> dstate``: one step of the tangent recurrence,
      linear in ``(dstate_in, D)``.

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

    def constants(self, params): ...

    def drive(self, params, dparams, state_in, res, dxp): ...

    def tangent(self, consts, res, dstate_in, drive): ...


@dataclasses.dataclass(frozen=True)
class Cell:
    """The protocol base of every built-in cell: sizes, precision, state, checked step.

    It draws no parameters and states no initialiser: a subclass declares the fields it
    uses and implements ``init``, ``project`` and ``recur`` (and, for the fused path,
    ``kernel``). Two bases build on it: :class:`GatedCell` (dense input and recurrent
    weights in ``G`` fused gate blocks: :class:`~rnnjax.SimpleRNN`, :class:`~rnnjax.GRU`,
    :class:`~rnnjax.LSTM`) and :class:`DiagonalLinearCell` (``h_t = a_t h_{t-1} + b_t``
    with coefficients from the input alone: :class:`~rnnjax.MinGRU`,
    :class:`~rnnjax.MinLSTM`, :class:`~rnnjax.LRU`).

    Args:
      input_size: ``I``.
      hidden_size: ``H``.
      param_dtype: the dtype of the parameters (float32 default).
      dtype: the compute dtype of the matrix products (default: the parameters').

    Example:
      Every built-in cell is a subclass; a new one states only what it uses:

      >>> import dataclasses, typing, jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.cells.base import Cell
      >>> isinstance(rj.GRU(3, 4), Cell), isinstance(rj.MinGRU(3, 4), Cell)
      (True, True)
      >>> class DecayState(typing.NamedTuple):
      ...     h: jax.Array
      >>> @dataclasses.dataclass(frozen=True)
      ... class Decay(Cell):                       # h_t = 0.5 h_{t-1} + x_t w
      ...     State = DecayState
      ...     def init(self, key):
      ...         return {"w": jax.random.normal(key, (self.input_size, self.hidden_size))}
      ...     def project(self, params, x):
      ...         return self.mm(x, params["w"])
      ...     def recur(self, params, state, xp):
      ...         h = 0.5 * state.h + xp
      ...         return DecayState(h), h
      >>> cell = Decay(2, 3)
      >>> _, ys = rj.unroll(cell, cell.init(jax.random.key(0)), jnp.ones((4, 2)))
      >>> ys.shape
      (4, 3)
    """

    input_size: int
    hidden_size: int
    param_dtype: Any = jnp.float32
    dtype: Any = None

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
        checks.floating_dtype("param_dtype", self.param_dtype)
        if self.dtype is not None:
            checks.floating_dtype("dtype", self.dtype)

    def _check_square(self, why: str) -> None:
        """``input_size == hidden_size`` (a ``ValueError`` saying ``why`` otherwise)."""
        if self.input_size != self.hidden_size:
            raise ValueError(
                f"{type(self).__name__} {why}: input_size must equal hidden_size; got "
                f"input_size={self.input_size}, hidden_size={self.hidden_size}"
            )

    # ------------------------------------------------------------------ sizes

    @property
    def output_size(self) -> int:
        """Size of the output ``y`` of one step."""
        return self.hidden_size

    @property
    def state_size(self) -> int:
        """Size of the recurrent vector ``h``."""
        return self.hidden_size

    # ------------------------------------------------------------------ init

    def _init_dtype(self):
        """Draw in float32 (float64 for float64 parameters), cast afterwards: QR and the
        samplers do not support every reduced precision on every backend."""
        return jnp.promote_types(jnp.float32, self.param_dtype)

    def _cast(self, params: dict) -> dict:
        return {k: v.astype(self.param_dtype) for k, v in params.items()}

    def _input_weights(self, key, gates: int) -> dict:
        """``{"w_ih": (I, G H), "b": (G H,)}`` drawn with the field ``kernel_init`` (of
        the subclasses that declare it), in the initialisation dtype."""
        kernel = inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        H, dt = self.hidden_size, self._init_dtype()
        return {
            "w_ih": inits.per_gate(kernel, key, self.input_size, H, gates, dt),
            "b": jnp.zeros((gates * H,), dt),
        }

    def init(self, key) -> dict:  # pragma: no cover - every cell overrides it
        """The parameters (a ``dict`` of arrays)."""
        raise NotImplementedError(f"{type(self).__name__} must implement init")

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

    def _affine(self, params: dict, x: jax.Array) -> jax.Array:
        """``x @ w_ih + b`` in the compute dtype, shape ``(..., G * H)``."""
        y = self.mm(x, params["w_ih"])
        return y + lead(params["b"], y.ndim).astype(y.dtype)

    def project(self, params: dict, x: jax.Array):  # pragma: no cover - overridden
        """The input part of a step (depends on ``x`` only)."""
        raise NotImplementedError(f"{type(self).__name__} must implement project")

    def recur(self, params: dict, state, xp):  # pragma: no cover - overridden
        """The recurrent part of a step."""
        raise NotImplementedError(f"{type(self).__name__} must implement recur")

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


@dataclasses.dataclass(frozen=True)
class GatedCell(Cell):
    """The dense gated base: input weights ``w_ih`` ``(I, G H)``, recurrent weights
    ``w_hh`` ``(S, G H)`` and a bias ``b`` ``(G H,)`` in ``G`` fused gate blocks.

    Subclasses set the class attribute ``gates`` (``G``) and the ``State`` NamedTuple,
    and implement ``recur`` (and, for the fused path, ``kernel``).

    Args:
      input_size, hidden_size, param_dtype, dtype: as in :class:`Cell`.
      kernel_init: initialiser of ``w_ih`` (per gate block; default Glorot uniform).
      recurrent_init: initialiser of ``w_hh`` (per gate block; default orthogonal).

    Example:
      >>> import jax, rnnjax as rj
      >>> from rnnjax.cells.base import GatedCell
      >>> cell = rj.GRU(3, 4)
      >>> isinstance(cell, GatedCell), cell.gates
      (True, 3)
      >>> {k: v.shape for k, v in cell.init(jax.random.key(0)).items()}
      {'w_ih': (3, 12), 'w_hh': (4, 12), 'b': (12,), 'b_hn': (4,)}
    """

    kernel_init: inits.InitSpec = "glorot_uniform"
    recurrent_init: inits.InitSpec = "orthogonal"

    gates = 1  # number of fused gate blocks; a class attribute, not a field

    def __post_init__(self):
        super().__post_init__()
        inits.resolve(self.kernel_init, inits.KERNEL_INITIALIZERS, "kernel_init")
        inits.resolve(self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init")

    @property
    def state_size(self) -> int:
        """Size of the recurrent vector ``h`` (the ``fan_in`` of ``w_hh``)."""
        return self.hidden_size

    def _init_weights(self, key) -> dict:
        k_ih, k_hh = jax.random.split(key)
        recurrent = inits.resolve(
            self.recurrent_init, inits.RECURRENT_INITIALIZERS, "recurrent_init"
        )
        H, G, dt = self.hidden_size, self.gates, self._init_dtype()
        p = self._input_weights(k_ih, G)
        return {
            "w_ih": p["w_ih"],
            "w_hh": inits.per_gate(recurrent, k_hh, self.state_size, H, G, dt),
            "b": p["b"],
        }

    def project(self, params: dict, x: jax.Array) -> jax.Array:
        """The input part of a step: ``x @ w_ih + b``, shape ``(..., G * H)``."""
        return self._affine(params, x)


@dataclasses.dataclass(frozen=True)
class DiagonalLinearCell(Cell):
    r"""The base of diagonal linear cells: :math:`h_t = a_t \odot h_{t-1} + b_t` with
    ``(a_t, b_t)`` formed from the projected input alone, so every step's coefficients
    are known at once and the engine can solve the recurrence with a parallel scan
    (:func:`rnnjax.parallel.linear_scan`, ``ScanConfig(method="parallel")``), applying
    lengths, resets and the final state itself: the cell never sees a mask.

    A subclass states ``State`` (a NamedTuple whose field ``h`` is the recurrent vector),
    ``init``, ``project`` and ``coefficients(params, xp) -> (a, b)``. Optional:

    - ``to_scan`` and ``from_scan``: map the real state ``h`` to the scan's variable and
      back (identity here; the LRU's is complex).
    - ``read_out(params, xp, h) -> y``: the output from the new state (default: ``h``
      itself; S6 reads its states out).
    - ``entry_coefficients(params, state, xp) -> (a, b)``: the coefficients of a step that
      reads ``state`` as given (the first step, and the step after a reset), where they
      differ from ``coefficients`` (the RG-LRU's unnormalised segment start).
    - ``with_h(state, h)``: the state after a step that ends in ``h`` (default: ``h``
      replaced).

    ``recur`` (one step) and ``parallel_form`` (what the engine reads) come from this
    base, so the step and the parallel scan share one copy of the maths.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.cells.base import DiagonalLinearCell
      >>> cell = rj.MinGRU(3, 4)
      >>> isinstance(cell, DiagonalLinearCell), cell.parallel_form() is cell
      (True, True)
      >>> p = cell.init(jax.random.key(0))
      >>> a, b = cell.coefficients(p, cell.project(p, jnp.ones((5, 3))))
      >>> a.shape, b.shape                          # all steps at once
      ((5, 4), (5, 4))
    """

    read_out = None  # optional hook (a method in a subclass), see the class docstring
    entry_coefficients = None  # optional hook (a method in a subclass)

    def coefficients(self, params: dict, xp):  # pragma: no cover - overridden
        """``(a, b)`` of ``h_t = a_t h_{t-1} + b_t`` for projected inputs ``(..., .)``."""
        raise NotImplementedError(f"{type(self).__name__} must implement coefficients")

    def recur(self, params: dict, state, xp):
        """The recurrent part of a step, given ``xp = project(params, x)``:
        ``h = a * h_prev + b`` (in the scan's variable), returned as ``(state, y)``."""
        if self.entry_coefficients is None:
            a, b = self.coefficients(params, xp)
        else:
            a, b = self.entry_coefficients(params, state, xp)
        h = self.from_scan(a * self.to_scan(state.h) + b).astype(state.h.dtype)
        y = h if self.read_out is None else self.read_out(params, xp, h).astype(h.dtype)
        return self.with_h(state, h), y

    def with_h(self, state, h):
        """The state after a step that ends in ``h``."""
        return state._replace(h=h)

    def parallel_form(self):
        """The linear form the engine reads: this cell (``coefficients``, ``to_scan``,
        ``from_scan``, ``read_out``, ``entry_coefficients``, ``with_h``)."""
        return self

    def to_scan(self, h):
        """The real state ``(..., S)`` as the scan's variable (identity here)."""
        return h

    def from_scan(self, h):
        """The scan's variable back to the real state (identity here)."""
        return h


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
