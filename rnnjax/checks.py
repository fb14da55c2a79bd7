"""Every argument check of rnnjax, one function per kind of argument.

Each check raises a ``ValueError`` (wrong value or shape) or ``TypeError`` (wrong kind)
whose message names the argument, what it got and what was expected. Public entry points
call these and nothing else, so one kind of argument is checked one way everywhere.

Numbers: Python and NumPy scalars (``np.float32(0.5)``, ``np.int64(3)``) are accepted
wherever a number is; ``bool`` is never a number; NaN and Inf are refused unless a range
says otherwise.

Arrays: a concrete array (not a tracer) can be range-checked; a traced one cannot, and
each check documents what it does then.

Shapes: ``T`` time, ``B`` batch (any number of axes), ``I`` input size.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = [
    "describe",
    "integer",
    "number",
    "rate",
    "boolean",
    "choice",
    "floating_dtype",
    "is_concrete",
    "floating_array",
    "sequence_inputs",
    "lengths",
    "resets",
    "state",
    "params",
    "token_ids",
    "valid_tokens",
    "learning_rate",
    "step_position",
    "series",
]


def describe(x) -> str:
    """``"shape (..) and dtype .."`` of an array, or the type name of anything else.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.describe(jnp.ones((2, 3)))
      'shape (2, 3) and dtype float32'
      >>> checks.describe("abc")
      "str 'abc'"
    """
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        return f"shape {tuple(x.shape)} and dtype {x.dtype}"
    return f"{type(x).__name__} {x!r}"


def floating_dtype(name: str, dtype) -> jnp.dtype:
    """A floating dtype (``jnp.float32``, ``"bfloat16"``, ``np.float16``...).

    Example:
      >>> from rnnjax import checks
      >>> checks.floating_dtype("param_dtype", "bfloat16")
      dtype(bfloat16)
    """
    try:
        dt = jnp.dtype(dtype)
    except TypeError:
        raise TypeError(f"{name} must be a floating dtype; got {dtype!r}") from None
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating dtype; got {dt}")
    if dt == jnp.float64 and not jax.config.jax_enable_x64:
        raise ValueError(
            f"{name}=float64 needs 64-bit mode (jax.config.update('jax_enable_x64', True)); "
            "without it arrays are silently float32"
        )
    return dt


def is_concrete(x) -> bool:
    """Whether ``x`` holds values known to this process: not a tracer inside
    ``jit``/``vmap``/``grad``, nor a global array with parts on other processes only.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.is_concrete(jnp.ones(2))
      True
      >>> @jax.jit
      ... def f(x):
      ...     print(checks.is_concrete(x))
      ...     return x
      >>> _ = f(jnp.ones(2))
      False
    """
    for leaf in jax.tree_util.tree_leaves(x):
        if isinstance(leaf, jax.core.Tracer):
            return False
        if isinstance(leaf, jax.Array) and not (
            leaf.is_fully_addressable or leaf.is_fully_replicated
        ):
            return False
    return True


def integer(name: str, value, minimum: Optional[int] = None, maximum: Optional[int] = None) -> int:
    """An ``int`` (Python or NumPy, not ``bool``) in ``[minimum, maximum]``; returned as ``int``.

    Example:
      >>> import numpy as np
      >>> from rnnjax import checks
      >>> checks.integer("hidden_size", np.int64(8), minimum=1)
      8
      >>> try:
      ...     checks.integer("hidden_size", 0, minimum=1)
      ... except ValueError as e:
      ...     print("ValueError")
      ValueError
    """
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        at_least = "" if minimum is None else f" >= {minimum}"
        raise TypeError(f"{name} must be an int{at_least}; got {describe(value)}")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        if maximum is None:
            raise ValueError(f"{name} must be an int >= {minimum}; got {value}")
        lo = "-inf" if minimum is None else minimum
        raise ValueError(f"{name} must be an int in [{lo}, {maximum}]; got {value}")
    return value


def number(
    name: str,
    value,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    *,
    min_open: bool = False,
    max_open: bool = False,
    finite: bool = True,
) -> float:
    """A real number (Python or NumPy scalar, or a 0-d concrete array), finite unless
    ``finite=False``, in the given range (open ends with ``min_open``/``max_open``);
    returned as ``float``.

    Example:
      >>> from rnnjax import checks
      >>> checks.number("ridge", 1e-6, minimum=0.0)
      1e-06
    """
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a number; got {describe(value)}")
    if isinstance(value, (np.ndarray, jax.Array)) and np.ndim(value) == 0 and is_concrete(value):
        value = value.item()
    if not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number; got {describe(value)}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be a finite number; got {value}")
    below = minimum is not None and (value <= minimum if min_open else value < minimum)
    above = maximum is not None and (value >= maximum if max_open else value > maximum)
    if below or above:
        if maximum is None:
            raise ValueError(f"{name} must be {'>' if min_open else '>='} {minimum:g}; got {value}")
        if minimum is None:
            raise ValueError(f"{name} must be {'<' if max_open else '<='} {maximum:g}; got {value}")
        lo = "(" if min_open else "["
        hi = ")" if max_open else "]"
        raise ValueError(f"{name} must be in {lo}{minimum:g}, {maximum:g}{hi}; got {value}")
    return value


def rate(name: str, value) -> float:
    """A probability in ``[0, 1)`` (dropout, zoneout).

    Example:
      >>> from rnnjax import checks
      >>> checks.rate("dropout", 0.25)
      0.25
    """
    try:
        return number(name, value, 0.0, 1.0, max_open=True)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a float in [0, 1); got {describe(value)}") from None


def boolean(name: str, value) -> bool:
    """A ``bool`` (Python or NumPy); anything else (``"no"``, ``0``) is a ``TypeError``.

    Example:
      >>> from rnnjax import checks
      >>> checks.boolean("reverse", True)
      True
      >>> try:
      ...     checks.boolean("reverse", 0)
      ... except TypeError as e:
      ...     print("TypeError")
      TypeError
    """
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {describe(value)}")
    return bool(value)


def choice(name: str, value, options: Iterable) -> Any:
    """One of ``options``.

    Example:
      >>> from rnnjax import checks
      >>> checks.choice("merge", "sum", ("concat", "sum", "mean"))
      'sum'
    """
    options = tuple(options)
    if not any(value is o or (type(value) is type(o) and value == o) for o in options):
        raise ValueError(f"{name} must be one of {options}; got {value!r}")
    return value


def floating_array(name: str, x, ndim: Optional[int] = None, shape_hint: str = "") -> jax.Array:
    """An array (or nested list) of a floating dtype, with ``ndim`` axes if given.

    Example:
      >>> from rnnjax import checks
      >>> checks.floating_array("xs", [[1.0, 2.0]], ndim=2).shape
      (1, 2)
    """
    if isinstance(x, (list, tuple)):
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(
                f"{name} must be an array{shape_hint}; got a ragged list ({e})"
            ) from None
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array{shape_hint}; got {describe(x)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype{shape_hint}; got {describe(x)}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have shape{shape_hint}; got {describe(x)}")
    return x


def sequence_inputs(
    name: str, xs, input_size: int, batch_ndim: Optional[int] = 0, time_major: bool = False
):
    """Inputs of a sequence: ``(T, I)`` with ``batch_ndim == 0``; ``(*B, T, I)`` (or
    ``(T, *B, I)`` time-major) with ``batch_ndim`` batch axes, or at least one batch axis
    when ``batch_ndim is None``. Returns ``(xs, batch_shape, T)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> xs, batch, T = checks.sequence_inputs("xs", jnp.ones((2, 5, 3)), 3, batch_ndim=None)
      >>> xs.shape, batch, T                                # (*B, T, I)
      ((2, 5, 3), (2,), 5)
    """
    if batch_ndim == 0:
        hint = f" (T, {input_size}) for one sequence (batch it with rnnjax.unroll_batch or apply_batch)"
    else:
        hint = f" (T, *B, {input_size})" if time_major else f" (*B, T, {input_size})"
        if batch_ndim is None:
            hint += " with at least one batch axis"
    xs = floating_array(name, xs, shape_hint=hint)
    min_ndim = 2 if batch_ndim == 0 else 3
    if (batch_ndim is not None and xs.ndim != batch_ndim + 2) or xs.ndim < min_ndim:
        raise ValueError(f"{name} must have shape{hint}; got {describe(xs)}")
    if xs.shape[-1] != input_size:
        raise ValueError(
            f"{name} must have feature size {input_size} (the input_size); got {describe(xs)}"
        )
    if time_major or xs.ndim == 2:
        return xs, tuple(xs.shape[1:-1]), xs.shape[0]
    return xs, tuple(xs.shape[:-2]), xs.shape[-2]


def lengths(name: str, length, T: int, batch_shape: Sequence[int] = ()):
    """Sequence lengths: ``None``, or integers of shape ``batch_shape`` (a Python int or
    list is converted). A concrete value outside ``[0, T]`` raises; a traced one cannot
    be checked and is clipped to ``[0, T]`` (documented in :func:`rnnjax.unroll`).
    Returns ``None`` or an int32 array.

    Example:
      >>> from rnnjax import checks
      >>> checks.lengths("length", [3, 1], T=4, batch_shape=(2,)).tolist()   # (B,)
      [3, 1]
      >>> checks.lengths("length", None, T=4) is None
      True
    """
    if length is None:
        return None
    batch_shape = tuple(batch_shape)
    what = "an integer scalar" if not batch_shape else f"integers of shape {batch_shape}"
    if isinstance(length, (bool, np.bool_)):
        raise TypeError(f"{name} must be {what}; got {describe(length)}")
    if isinstance(length, (list, tuple, numbers.Number)):
        try:
            length = np.asarray(length)
        except ValueError as e:
            raise TypeError(f"{name} must be {what}; got a ragged list ({e})") from None
    if not hasattr(length, "dtype"):
        raise TypeError(f"{name} must be {what}; got {describe(length)}")
    if not jnp.issubdtype(length.dtype, jnp.integer):
        raise TypeError(f"{name} must be {what}; got {describe(length)}")
    if tuple(jnp.shape(length)) != batch_shape:
        if not batch_shape:
            raise ValueError(
                f"{name} must be a scalar for one sequence (batch lengths go through "
                f"unroll_batch or apply_batch); got {describe(length)}"
            )
        raise ValueError(f"{name} must have the batch shape {batch_shape}; got {describe(length)}")
    if is_concrete(length):
        lv = np.asarray(length)
        if not batch_shape and not 0 <= int(lv) <= T:
            raise ValueError(f"{name} must be in [0, T] = [0, {T}]; got {int(lv)}")
        if lv.size and (lv.min() < 0 or lv.max() > T):
            raise ValueError(
                f"{name} must lie in [0, T] = [0, {T}]; got values in [{lv.min()}, {lv.max()}]"
            )
        return jnp.asarray(lv, jnp.int32)
    return jnp.clip(length, 0, T).astype(jnp.int32)


def resets(name: str, value, shape: Sequence[int]):
    """Segment starts: ``None`` or a bool array of ``shape`` (``(T, *B)``).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.resets("resets", jnp.zeros((5, 2), bool), (5, 2)).shape    # (T, B)
      (5, 2)
    """
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = np.asarray(value)
    if not hasattr(value, "dtype"):
        raise TypeError(
            f"{name} must be a bool array of shape {tuple(shape)}; got {describe(value)}"
        )
    if value.dtype != jnp.bool_:
        raise TypeError(f"{name} must have dtype bool; got {describe(value)}")
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)} (T, *B); got {describe(value)}")
    return jnp.asarray(value)


def state(name: str, expected, value, batch_shape: Sequence[int] = (), dtype=None):
    """A recurrent state: the structure of ``expected`` (one example's state), each leaf
    with the shape ``batch_shape + expected.shape`` and a floating dtype. Returned cast to
    ``dtype`` (default: ``expected``'s dtypes), never refused for its floating dtype.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import checks
      >>> cell = rj.GRU(3, 4)
      >>> s = checks.state("state", cell.initial_state(), rj.GRUState(h=jnp.ones((2, 4))),
      ...                  batch_shape=(2,))
      >>> s.h.shape                                         # (*B, H)
      (2, 4)
    """
    exp_def = jax.tree_util.tree_structure(expected)
    got_def = jax.tree_util.tree_structure(value)
    if exp_def != got_def:
        raise ValueError(f"{name} must have the structure {exp_def}; got {got_def}")
    batch_shape = tuple(batch_shape)
    leaves = []
    for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(value)):
        if not hasattr(g, "shape"):
            g = jnp.asarray(g)
        if tuple(jnp.shape(g)) != batch_shape + tuple(jnp.shape(e)):
            shapes = jax.tree_util.tree_map(lambda a: batch_shape + tuple(jnp.shape(a)), expected)
            got = jax.tree_util.tree_map(jnp.shape, value)
            raise ValueError(f"{name} must have the shapes {shapes}; got {got}")
        if not jnp.issubdtype(jnp.result_type(g), jnp.floating):
            raise TypeError(f"{name} must hold floating arrays; got {describe(g)}")
        leaves.append(g.astype(dtype or e.dtype))
    return jax.tree_util.tree_unflatten(exp_def, leaves)


def params(name: str, expected, value, owner: str = "") -> None:
    """Parameters with the structure and shapes of ``expected`` (e.g. ``jax.eval_shape``
    of ``init``) and floating dtypes.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import checks
      >>> cell = rj.SimpleRNN(3, 4)
      >>> expected = jax.eval_shape(cell.init, jax.random.key(0))
      >>> checks.params("params", expected, cell.init(jax.random.key(1)))     # fine
      >>> try:
      ...     checks.params("params", expected, {"w_ih": jnp.ones((3, 4))})
      ... except (TypeError, ValueError) as e:
      ...     print(type(e).__name__)
      ValueError
    """
    shapes = lambda t: jax.tree_util.tree_map(lambda a: tuple(jnp.shape(a)), t)  # noqa: E731
    of = f" of {owner}" if owner else ""
    if jax.tree_util.tree_structure(expected) != jax.tree_util.tree_structure(value):
        raise ValueError(
            f"{name} must have the keys and structure{of} {shapes(expected)}; got {shapes(value)}"
        )
    for e, g in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(value)):
        if tuple(jnp.shape(e)) != tuple(jnp.shape(g)):
            raise ValueError(
                f"{name} must have the shapes{of} {shapes(expected)}; got {shapes(value)}"
            )
        if not jnp.issubdtype(jnp.result_type(g), jnp.floating):
            raise TypeError(f"{name} must hold floating arrays; got {describe(g)}")


def series(name: str, x, size: int, what: str = "", T: Optional[int] = None):
    """A time series ``(T, size)`` of a floating dtype (``T`` steps when given): the
    inputs, targets and teacher signals of the reservoir drivers.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.series("us", jnp.ones((5, 1)), 1).shape
      (5, 1)
      >>> checks.series("us", jnp.ones((5, 2)), 1, "inputs")
      Traceback (most recent call last):
      ValueError: us must have shape (T, 1) (inputs); got shape (5, 2) and dtype float32
    """
    hint = f" (T, {size})" + (f" ({what})" if what else "")
    x = floating_array(name, x, shape_hint=hint)
    if x.ndim != 2 or x.shape[1] != size:
        raise ValueError(f"{name} must have shape{hint}; got {describe(x)}")
    if T is not None and x.shape[0] != T:
        raise ValueError(f"{name} must have T = {T} steps (as the inputs); got {describe(x)}")
    return x


def token_ids(name: str, ids, vocab_size: int):
    """Integer token ids in ``[0, vocab_size)``. Concrete ids outside raise; traced ids
    cannot be checked and are returned as they are, with the caller masking the
    out-of-range ones (see :func:`valid_tokens`).

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.token_ids("tokens", jnp.array([0, 4, 2]), vocab_size=5).tolist()
      [0, 4, 2]
    """
    if isinstance(ids, (list, tuple)):
        ids = np.asarray(ids)
    if not hasattr(ids, "dtype") or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name} must be integer token ids; got {describe(ids)}")
    if is_concrete(ids):
        v = np.asarray(ids)
        if v.size and (v.min() < 0 or v.max() >= vocab_size):
            raise ValueError(
                f"{name} must lie in [0, vocab_size) = [0, {vocab_size}); "
                f"got values in [{v.min()}, {v.max()}]"
            )
    return jnp.asarray(ids)


def valid_tokens(ids, vocab_size: int) -> jax.Array:
    """Where (traced) token ids lie in ``[0, vocab_size)`` (the mask for :func:`token_ids`).

    Callers that take traced ids use it to mask out-of-range ones: an embedding row of
    zeros for an input token, no contribution (and no count) in a loss for a target.
    ``jnp.sum(~valid_tokens(ids, V))`` counts them.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.valid_tokens(jnp.array([-1, 0, 3, 4]), 4).tolist()
      [False, True, True, False]
    """
    return (ids >= 0) & (ids < vocab_size)


def learning_rate(name: str, value) -> Any:
    """A learning rate: a finite number ``> 0`` (Python or NumPy scalar), returned as
    ``float``, or a callable schedule (``step -> rate``), returned as it is.

    Example:
      >>> import numpy as np
      >>> from rnnjax import checks
      >>> checks.learning_rate("lr", np.float32(0.5))
      0.5
      >>> try:
      ...     checks.learning_rate("lr", float("inf"))
      ... except ValueError as e:
      ...     print(str(e)[:46])
      lr must be a positive finite number or an opta
    """
    if callable(value):
        return value
    try:
        return number(name, value, 0.0, min_open=True)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a positive finite number or an optax schedule; got {describe(value)}"
        ) from None


def step_position(name: str, value) -> int:
    """A step or data position: an integer ``>= 0`` (Python, NumPy or a concrete 0-d
    integer array), returned as ``int``.

    Example:
      >>> import numpy as np
      >>> from rnnjax import checks
      >>> checks.step_position("position", np.int64(3))
      3
      >>> try:
      ...     checks.step_position("position", -3)
      ... except ValueError as e:
      ...     print("refused")
      refused
    """
    if hasattr(value, "shape") and np.ndim(value) == 0 and is_concrete(value):
        if not jnp.issubdtype(jnp.result_type(value), jnp.integer):
            raise TypeError(f"{name} must be an integer >= 0; got {describe(value)}")
        value = np.asarray(value).item()
    return integer(name, value, 0)
