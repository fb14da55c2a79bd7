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

import functools
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
    "key",
    "pack_index",
    "model_params",
    "array",
    "mask",
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
    name: str,
    xs,
    input_size: Optional[int],
    batch_ndim: Optional[int] = 0,
    time_major: bool = False,
):
    """Inputs of a sequence: ``(T, I)`` with ``batch_ndim == 0``; ``(*B, T, I)`` (or
    ``(T, *B, I)`` time-major) with ``batch_ndim`` batch axes, or at least one batch axis
    when ``batch_ndim is None``. ``input_size=None`` leaves the feature size unchecked (a
    user-written layer that does not state it). Returns ``(xs, batch_shape, T)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> xs, batch, T = checks.sequence_inputs("xs", jnp.ones((2, 5, 3)), 3, batch_ndim=None)
      >>> xs.shape, batch, T                                # (*B, T, I)
      ((2, 5, 3), (2,), 5)
    """
    if input_size is None:  # a layer that does not state its input size
        input_size = "I"
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
    if input_size != "I" and xs.shape[-1] != input_size:
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


def key(name: str, value, optional: bool = False):
    """A PRNG key: a typed key (``jax.random.key(0)``, shape ``()``) or raw key data
    (``jax.random.PRNGKey(0)``, ``uint32``, shape ``(2,)`` for the default generator),
    returned as a typed key; ``None`` when ``optional``. An integer seed is a
    ``TypeError`` that shows ``jax.random.key(...)``. A traced key is checked by dtype
    and shape only.

    Example:
      >>> import jax
      >>> from rnnjax import checks
      >>> checks.key("key", jax.random.PRNGKey(0)).shape
      ()
      >>> try:
      ...     checks.key("key", 123)
      ... except TypeError as e:
      ...     print(str(e)[:62])
      key must be a PRNG key such as jax.random.key(123); got int 12
    """
    if value is None and optional:
        return None
    if isinstance(value, (bool, np.bool_)) or isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be a PRNG key such as jax.random.key({int(value)}); got "
            f"{describe(value)} (an integer seed is not a key)"
        )
    if isinstance(value, (np.ndarray, jax.Array)) and jnp.issubdtype(
        value.dtype, jax.dtypes.prng_key
    ):
        if value.shape != ():
            raise ValueError(
                f"{name} must be one PRNG key (shape ()), such as jax.random.key(0); got "
                f"{describe(value)}"
            )
        return value
    if isinstance(value, (np.ndarray, jax.Array)) and value.dtype == np.uint32:
        impl_shape = jax.eval_shape(lambda: jax.random.key_data(jax.random.key(0))).shape
        if tuple(value.shape) != tuple(impl_shape):
            raise ValueError(
                f"{name} must be one PRNG key: jax.random.key(0), or raw key data of shape "
                f"{tuple(impl_shape)} (jax.random.PRNGKey(0)); got {describe(value)}"
            )
        return jax.random.wrap_key_data(value)
    raise TypeError(f"{name} must be a PRNG key such as jax.random.key(0); got {describe(value)}")


def pack_index(name: str, index, rows: int, T: int) -> list:
    """The ``index`` of :func:`rnnjax.pack`: a list of ``(row, start, T_i)`` integer
    triples with ``0 <= row < rows``, ``start >= 0``, ``T_i >= 1`` and
    ``start + T_i <= T`` (nothing clamped, nothing cut short). Returned as a list of
    ``int`` triples.

    Example:
      >>> from rnnjax import checks
      >>> checks.pack_index("index", [(0, 0, 3), (1, 2, 2)], rows=2, T=5)
      [(0, 0, 3), (1, 2, 2)]
      >>> try:
      ...     checks.pack_index("index", [(5, 0, 3)], rows=2, T=5)
      ... except ValueError as e:
      ...     print(str(e)[:40])
      index[0] row must lie in [0, 2) (the row
    """
    what = "a list of (row, start, T_i) triples (what rnnjax.pack returns)"
    if isinstance(index, (str, bytes, dict)) or not isinstance(index, (list, tuple)):
        raise TypeError(f"{name} must be {what}; got {describe(index)}")
    out = []
    for i, entry in enumerate(index):
        if isinstance(entry, (np.ndarray, jax.Array)) and is_concrete(entry):
            entry = tuple(np.asarray(entry).tolist()) if np.ndim(entry) == 1 else entry
        if not isinstance(entry, (list, tuple)) or len(entry) != 3:
            raise TypeError(
                f"{name}[{i}] must be a (row, start, T_i) triple; got {describe(entry)}"
            )
        row, start, n = (
            integer(f"{name}[{i}] {part}", v, None)
            for part, v in zip(("row", "start", "T_i"), entry)
        )
        if not 0 <= row < rows:
            raise ValueError(f"{name}[{i}] row must lie in [0, {rows}) (the rows of ys); got {row}")
        if start < 0 or n < 1 or start + n > T:
            raise ValueError(
                f"{name}[{i}] must have start >= 0, T_i >= 1 and start + T_i <= T = {T}; got "
                f"(row, start, T_i) = ({row}, {start}, {n})"
            )
        out.append((row, start, n))
    return out


def model_params(name: str, model, value) -> None:
    """Parameters that belong to ``model``: a dict with the top-level keys of
    ``model.init`` (evaluated abstractly, no values drawn). A missing or extra key is a
    ``ValueError`` naming the model and the keys; a model without ``init`` or whose
    params are not a dict is not checked.

    Example:
      >>> import jax, rnnjax as rj
      >>> from rnnjax import checks
      >>> lm = rj.SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5)
      >>> try:
      ...     checks.model_params("params", lm, {"encoder": {}})
      ... except ValueError as e:
      ...     print(str(e)[:40])
      params must be the params of SequenceMod
    """
    if not callable(getattr(model, "init", None)):
        return
    try:
        expected = _init_keys(model)
    except TypeError:  # an unhashable model: no cache
        expected = _init_keys.__wrapped__(model)
    if expected is None:
        return
    model_name = type(model).__name__
    if not isinstance(value, dict):
        raise TypeError(
            f"{name} must be the params of {model_name} (a dict with keys "
            f"{sorted(expected)}); got {describe(value)}"
        )
    missing = sorted(set(expected) - set(value))
    extra = sorted(set(value) - set(expected))
    if missing or extra:
        raise ValueError(
            f"{name} must be the params of {model_name} (keys {sorted(expected)}); missing "
            f"keys {missing}"
            + (f", unexpected keys {extra}" if extra else "")
            + " (params of another model?)"
        )


@functools.lru_cache(maxsize=256)
def _init_keys(model):
    """The top-level keys of ``model.init`` (abstract evaluation, cached per model), or
    ``None`` when its params are not a dict or its ``init`` cannot be traced."""
    try:
        expected = jax.eval_shape(model.init, jax.random.key(0))
    except Exception:  # noqa: BLE001 - a model whose init cannot be traced is not checked
        return None
    return tuple(expected) if isinstance(expected, dict) else None


def array(name: str, x, kind: str = "number", min_ndim: int = 0) -> jax.Array:
    """An array (a nested list is converted) of ``kind`` ``"number"`` (integer, floating
    or bool), ``"floating"`` or ``"integer"``, with at least ``min_ndim`` axes.

    Example:
      >>> from rnnjax import checks
      >>> checks.array("values", [1.0, 2.0]).shape
      (2,)
      >>> try:
      ...     checks.array("values", None)
      ... except TypeError as e:
      ...     print(str(e))
      values must be an array of numbers; got NoneType None
    """
    what = {"number": "numbers", "floating": "floats", "integer": "integers"}[kind]
    if isinstance(x, (list, tuple, numbers.Number)) and not isinstance(x, (bool, np.bool_)):
        try:
            x = jnp.asarray(x)
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be an array of {what}; got a ragged list ({e})") from None
    if not (hasattr(x, "shape") and hasattr(x, "dtype")) or isinstance(x, str):
        raise TypeError(f"{name} must be an array of {what}; got {describe(x)}")
    dt = jnp.result_type(x)
    ok = {
        "number": jnp.issubdtype(dt, jnp.number) or dt == jnp.bool_,
        "floating": jnp.issubdtype(dt, jnp.floating),
        "integer": jnp.issubdtype(dt, jnp.integer),
    }[kind]
    if not ok:
        raise TypeError(f"{name} must be an array of {what}; got {describe(x)}")
    if len(x.shape) < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} axes; got {describe(x)}")
    return x if isinstance(x, jax.Array) else jnp.asarray(x)


def mask(name: str, value, shape: Sequence[int]):
    """A mask: ``None``, or an array of ``shape``, bool or numbers 0/1 (concrete values
    other than 0 and 1, which would weight rather than select, are refused). Returned
    as given (``None``) or as an array.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import checks
      >>> checks.mask("mask", [1, 0, 1], (3,)).tolist()
      [1, 0, 1]
    """
    if value is None:
        return None
    value = array(name, value)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {describe(value)}")
    if value.dtype != jnp.bool_ and is_concrete(value):
        v = np.asarray(value)
        if v.size and not np.all((v == 0) | (v == 1)):
            raise ValueError(
                f"{name} must be bool or 0/1 (it selects, it does not weight); got values "
                f"other than 0 and 1 in {describe(value)}"
            )
    return value
