"""Conversion between Flax's recurrent cells and rnnjax's, parameters and states.

A model trained with ``flax.linen.LSTMCell``, ``flax.linen.OptimizedLSTMCell`` or
``flax.linen.GRUCell`` switches to rnnjax (and back) without retraining:

====================================  ==============================================
Flax (per gate, ``kernel (F, H)``)    rnnjax (fused, gate blocks side by side)
====================================  ==============================================
LSTM ``ii if ig io`` kernels          ``w_ih`` ``(I, 4H)``, blocks ``[i|f|g|o]``
LSTM ``hi hf hg ho`` kernels          ``w_hh`` ``(H, 4H)``
LSTM ``hi hf hg ho`` biases           ``b`` ``(4H,)`` (Flax's input denses have none)
LSTM carry ``(c, h)``                 :class:`rnnjax.LSTMState` ``(h, c)``
GRU ``ir iz in`` kernels              ``w_ih`` ``(I, 3H)``, blocks ``[r|z|n]``
GRU ``hr hz hn`` kernels              ``w_hh`` ``(H, 3H)``
GRU ``ir iz in`` biases               ``b`` ``(3H,)``
GRU ``hn`` bias                       ``b_hn`` ``(H,)``
GRU carry ``h``                       :class:`rnnjax.GRUState` ``(h,)``
====================================  ==============================================

Both of Flax's LSTM cells compute, with gate order (i, f, g, o) and the bias on the
hidden-to-hidden denses only, exactly rnnjax's :class:`rnnjax.LSTM` without projection.
Flax's GRU cell computes ``n = tanh(W_in x + b_in + r * (W_hn h + b_hn))`` and
``h' = (1 - z) * n + z * h``: exactly rnnjax's :class:`rnnjax.GRU` with
``reset_after=True``. Not representable in Flax's cells, and refused with a
``ValueError``: an LSTM with a projection (``proj_size > 0``, param ``w_hr``) and a GRU
with ``reset_after=False``. Flax cells with another ``gate_fn`` / ``activation_fn``
than sigmoid / tanh have no rnnjax counterpart (:func:`cell_from_flax` refuses them).

Shapes: ``I`` input, ``H`` hidden. The functions take and return the cell's own
parameter dict (for ``nn.RNN(cell)`` that is ``variables["params"]["cell"]``).

Example:
  >>> import jax, jax.numpy as jnp, flax.linen as nn, rnnjax as rj
  >>> from rnnjax import flax_convert as fc
  >>> rnn = nn.RNN(nn.OptimizedLSTMCell(4))
  >>> xs = jnp.ones((2, 5, 3))
  >>> variables = rnn.init(jax.random.key(0), xs)
  >>> params = fc.lstm_from_flax(variables["params"]["cell"])
  >>> cell = fc.cell_from_flax(rnn.cell, input_size=3)
  >>> _, ys = rj.unroll_batch(cell, params, xs)
  >>> bool(jnp.allclose(ys, rnn.apply(variables, xs), atol=1e-5))
  True
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from rnnjax import cells

__all__ = [
    "lstm_from_flax",
    "lstm_to_flax",
    "gru_from_flax",
    "gru_to_flax",
    "lstm_state_from_flax",
    "lstm_state_to_flax",
    "gru_state_from_flax",
    "gru_state_to_flax",
    "cell_from_flax",
]

_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")


def _describe_tree(tree) -> str:
    return str(jax.tree_util.tree_map(jnp.shape, tree))


def _dense(params: Mapping, name: str, bias: bool, where: str):
    """``(kernel, bias or None)`` of the Flax dense ``name``, checked."""
    if not isinstance(params, Mapping) or name not in params:
        raise ValueError(
            f"{where} params must hold the dense {name!r} (Flax's per-gate names); got "
            f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
        )
    dense = params[name]
    want = {"kernel", "bias"} if bias else {"kernel"}
    if not isinstance(dense, Mapping) or set(dense) != want:
        raise ValueError(
            f"{where} params[{name!r}] must have the keys {sorted(want)}; got "
            f"{sorted(dense) if isinstance(dense, Mapping) else type(dense).__name__}"
        )
    kernel = jnp.asarray(dense["kernel"])
    if kernel.ndim != 2:
        raise ValueError(
            f"{where} params[{name!r}]['kernel'] must have shape (F, H); got {kernel.shape}"
        )
    b = jnp.asarray(dense["bias"]) if bias else None
    if b is not None and b.shape != kernel.shape[1:]:
        raise ValueError(
            f"{where} params[{name!r}]['bias'] must have shape {kernel.shape[1:]}; got {b.shape}"
        )
    return kernel, b


def _fused(kernels, where: str, what: str):
    shapes = {k.shape for k in kernels}
    if len(shapes) != 1:
        raise ValueError(f"{where} {what} kernels must share one shape; got {sorted(shapes)}")
    return jnp.concatenate(kernels, axis=-1)


def _check_keys(params, expected: set, name: str, hint: str = "") -> None:
    if not isinstance(params, Mapping) or set(params) != expected:
        raise ValueError(
            f"{name} must be a dict with keys {sorted(expected)}{hint}; got "
            f"{sorted(params) if isinstance(params, Mapping) else type(params).__name__}"
        )


def _split(a, gates: int, name: str):
    a = jnp.asarray(a)
    if a.shape[-1] % gates:
        raise ValueError(
            f"{name} must have a last axis divisible by {gates} gates; got shape {a.shape}"
        )
    return jnp.split(a, gates, axis=-1)


def _split_fused(params: Mapping, gates: int):
    """``(w_ih, w_hh, b)`` of rnnjax params, each split into its ``gates`` blocks."""
    w_ih = _split(params["w_ih"], gates, "params['w_ih']")
    w_hh = _split(params["w_hh"], gates, "params['w_hh']")
    b = _split(params["b"], gates, "params['b']")
    if w_hh[0].shape != (w_hh[0].shape[1],) * 2:
        raise ValueError(
            f"params['w_hh'] must have shape (H, {gates}H); got {jnp.shape(params['w_hh'])}"
        )
    return w_ih, w_hh, b


def lstm_from_flax(flax_params: Mapping) -> dict:
    """rnnjax :class:`rnnjax.LSTM` params from ``nn.LSTMCell`` / ``nn.OptimizedLSTMCell`` params.

    Args:
      flax_params: the cell's params ``{"ii": {"kernel": (I, H)}, ..., "hi": {"kernel":
        (H, H), "bias": (H,)}, ...}`` (both Flax LSTM cells use these names).

    Returns:
      ``{"w_ih": (I, 4H), "w_hh": (H, 4H), "b": (4H,)}`` for ``rnnjax.LSTM(I, H)``.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from rnnjax import flax_convert
      >>> flax_cell = nn.LSTMCell(4)
      >>> carry = flax_cell.initialize_carry(jax.random.key(1), (3,))
      >>> fp = flax_cell.init(jax.random.key(0), carry, jnp.ones(3))["params"]
      >>> {k: v.shape for k, v in flax_convert.lstm_from_flax(fp).items()}  # LSTM(3, 4)
      {'w_ih': (3, 16), 'w_hh': (4, 16), 'b': (16,)}
    """
    where = "Flax LSTM cell"
    ins = [_dense(flax_params, f"i{g}", False, where)[0] for g in _LSTM_GATES]
    hs = [_dense(flax_params, f"h{g}", True, where) for g in _LSTM_GATES]
    expected = {f"i{g}" for g in _LSTM_GATES} | {f"h{g}" for g in _LSTM_GATES}
    _check_keys(flax_params, expected, "flax_params")
    w_hh = _fused([k for k, _ in hs], where, "hidden")
    if w_hh.shape[0] * 4 != w_hh.shape[1]:
        raise ValueError(f"{where} hidden kernels must be (H, H); got {hs[0][0].shape}")
    return {
        "w_ih": _fused(ins, where, "input"),
        "w_hh": w_hh,
        "b": jnp.concatenate([b for _, b in hs]),
    }


def lstm_to_flax(params: Mapping) -> dict:
    """``nn.LSTMCell`` / ``nn.OptimizedLSTMCell`` params from rnnjax LSTM params.

    Args:
      params: ``{"w_ih": (I, 4H), "w_hh": (H, 4H), "b": (4H,)}``. An LSTM with a
        projection (``"w_hr"``) has no Flax counterpart and raises ``ValueError``.

    Returns:
      The Flax cell's params (see :func:`lstm_from_flax`).

    Example:
      >>> import jax
      >>> import rnnjax as rj
      >>> from rnnjax import flax_convert
      >>> fp = flax_convert.lstm_to_flax(rj.LSTM(3, 4).init(jax.random.key(0)))
      >>> sorted(fp)
      ['hf', 'hg', 'hi', 'ho', 'if', 'ig', 'ii', 'io']
    """
    if isinstance(params, Mapping) and "w_hr" in params:
        raise ValueError(
            "params has a projection 'w_hr' (proj_size > 0): Flax's LSTM cells cannot represent it"
        )
    _check_keys(params, {"w_ih", "w_hh", "b"}, "params", " (rnnjax.LSTM without projection)")
    w_ih, w_hh, b = _split_fused(params, 4)
    out = {}
    for j, g in enumerate(_LSTM_GATES):
        out[f"i{g}"] = {"kernel": w_ih[j]}
        out[f"h{g}"] = {"kernel": w_hh[j], "bias": b[j]}
    return out


def gru_from_flax(flax_params: Mapping) -> dict:
    """rnnjax ``GRU(reset_after=True)`` params from ``nn.GRUCell`` params.

    Args:
      flax_params: ``{"ir"|"iz"|"in": {"kernel": (I, H), "bias": (H,)}, "hr"|"hz":
        {"kernel": (H, H)}, "hn": {"kernel": (H, H), "bias": (H,)}}``.

    Returns:
      ``{"w_ih": (I, 3H), "w_hh": (H, 3H), "b": (3H,), "b_hn": (H,)}`` for
      ``rnnjax.GRU(I, H, reset_after=True)``.

    Example:
      >>> import jax, jax.numpy as jnp, flax.linen as nn
      >>> from rnnjax import flax_convert
      >>> flax_cell = nn.GRUCell(4)
      >>> fp = flax_cell.init(jax.random.key(0), jnp.zeros(4), jnp.ones(3))["params"]
      >>> {k: v.shape for k, v in flax_convert.gru_from_flax(fp).items()}   # GRU(3, 4)
      {'w_ih': (3, 12), 'w_hh': (4, 12), 'b': (12,), 'b_hn': (4,)}
    """
    where = "Flax GRU cell"
    ins = [_dense(flax_params, f"i{g}", True, where) for g in _GRU_GATES]
    hs = [_dense(flax_params, f"h{g}", g == "n", where) for g in _GRU_GATES]
    _check_keys(
        flax_params, {f"i{g}" for g in _GRU_GATES} | {f"h{g}" for g in _GRU_GATES}, "flax_params"
    )
    w_hh = _fused([k for k, _ in hs], where, "hidden")
    if w_hh.shape[0] * 3 != w_hh.shape[1]:
        raise ValueError(f"{where} hidden kernels must be (H, H); got {hs[0][0].shape}")
    return {
        "w_ih": _fused([k for k, _ in ins], where, "input"),
        "w_hh": w_hh,
        "b": jnp.concatenate([b for _, b in ins]),
        "b_hn": hs[2][1],
    }


def gru_to_flax(params: Mapping) -> dict:
    """``nn.GRUCell`` params from rnnjax ``GRU(reset_after=True)`` params.

    Args:
      params: ``{"w_ih": (I, 3H), "w_hh": (H, 3H), "b": (3H,), "b_hn": (H,)}``. A
        ``reset_after=False`` GRU (no ``"b_hn"``) applies the reset gate before the
        recurrent product, which Flax's cell cannot represent: ``ValueError``.

    Returns:
      The Flax cell's params (see :func:`gru_from_flax`).

    Example:
      >>> import jax, rnnjax as rj
      >>> from rnnjax import flax_convert
      >>> params = rj.GRU(3, 4).init(jax.random.key(0))       # reset_after=True
      >>> sorted(flax_convert.gru_to_flax(params))
      ['hn', 'hr', 'hz', 'in', 'ir', 'iz']
    """
    if isinstance(params, Mapping) and set(params) == {"w_ih", "w_hh", "b"}:
        raise ValueError(
            "params are those of a GRU with reset_after=False (no 'b_hn'); Flax's GRUCell "
            "applies the reset gate after the recurrent product (reset_after=True) and "
            "cannot represent it"
        )
    _check_keys(params, {"w_ih", "w_hh", "b", "b_hn"}, "params", " (rnnjax.GRU, reset_after=True)")
    w_ih, w_hh, b = _split_fused(params, 3)
    b_hn = jnp.asarray(params["b_hn"])
    if b_hn.shape != b[2].shape:
        raise ValueError(f"params['b_hn'] must have shape {b[2].shape}; got {b_hn.shape}")
    out = {}
    for j, g in enumerate(_GRU_GATES):
        out[f"i{g}"] = {"kernel": w_ih[j], "bias": b[j]}
        out[f"h{g}"] = {"kernel": w_hh[j]}
    out["hn"]["bias"] = b_hn
    return out


def lstm_state_from_flax(carry) -> cells.LSTMState:
    """:class:`rnnjax.LSTMState` ``(h, c)`` from a Flax LSTM carry ``(c, h)``; each leaf
    ``(*B, H)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import flax_convert
      >>> state = flax_convert.lstm_state_from_flax((jnp.zeros(4), jnp.ones(4)))   # (c, h)
      >>> state.h.tolist(), state.c.tolist()
      ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    """
    if not isinstance(carry, (tuple, list)) or len(carry) != 2:
        raise ValueError(f"carry must be Flax's LSTM carry (c, h); got {_describe_tree(carry)}")
    c, h = carry
    return cells.LSTMState(h=h, c=c)


def lstm_state_to_flax(state: cells.LSTMState) -> tuple:
    """Flax's LSTM carry ``(c, h)`` from an :class:`rnnjax.LSTMState`; each leaf ``(*B, H)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax import flax_convert
      >>> c, h = flax_convert.lstm_state_to_flax(rj.LSTMState(h=jnp.ones(4), c=jnp.zeros(4)))
      >>> h.tolist(), c.tolist()
      ([1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0])
    """
    if not isinstance(state, cells.LSTMState):
        raise TypeError(f"state must be an rnnjax.LSTMState; got {type(state).__name__}")
    return (state.c, state.h)


def gru_state_from_flax(carry) -> cells.GRUState:
    """:class:`rnnjax.GRUState` from a Flax GRU carry ``h`` ``(*B, H)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax import flax_convert
      >>> flax_convert.gru_state_from_flax(jnp.ones(4)).h.shape
      (4,)
    """
    if not hasattr(carry, "shape"):
        raise TypeError(f"carry must be Flax's GRU carry, an array h; got {type(carry).__name__}")
    return cells.GRUState(h=carry)


def gru_state_to_flax(state: cells.GRUState) -> jax.Array:
    """Flax's GRU carry ``h`` ``(*B, H)`` from an :class:`rnnjax.GRUState`.

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax import flax_convert
      >>> flax_convert.gru_state_to_flax(rj.GRU(3, 4).initial_state()).shape
      (4,)
    """
    if not isinstance(state, cells.GRUState):
        raise TypeError(f"state must be an rnnjax.GRUState; got {type(state).__name__}")
    return state.h


def cell_from_flax(flax_cell: Any, input_size: int, **kwargs):
    """The rnnjax cell computing what a Flax cell computes.

    Args:
      flax_cell: an ``nn.LSTMCell``, ``nn.OptimizedLSTMCell`` or ``nn.GRUCell`` with the
        default ``gate_fn`` (sigmoid) and ``activation_fn`` (tanh).
      input_size: ``I`` (Flax infers it from the input; rnnjax cells need it).
      **kwargs: further fields of the rnnjax cell (e.g. ``kernel_init``); the
        ``param_dtype`` defaults to the Flax cell's.

    Returns:
      ``rnnjax.LSTM(I, H, proj_size=0)`` or ``rnnjax.GRU(I, H, reset_after=True)``,
      whose params :func:`lstm_from_flax` / :func:`gru_from_flax` make.

    Example:
      >>> import flax.linen as nn
      >>> from rnnjax import flax_convert
      >>> flax_convert.cell_from_flax(nn.GRUCell(4), input_size=3)
      GRU(3->4)
    """
    if not isinstance(flax_cell, (nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell)):
        raise TypeError(
            "flax_cell must be a flax.linen LSTMCell, OptimizedLSTMCell or GRUCell; got "
            f"{type(flax_cell).__name__}"
        )
    if flax_cell.gate_fn is not nn.sigmoid or flax_cell.activation_fn is not nn.tanh:
        raise ValueError(
            "flax_cell must use gate_fn=sigmoid and activation_fn=tanh (rnnjax's cells); got "
            f"gate_fn={flax_cell.gate_fn!r}, activation_fn={flax_cell.activation_fn!r}"
        )
    kwargs.setdefault("param_dtype", flax_cell.param_dtype)
    if isinstance(flax_cell, nn.GRUCell):
        return cells.GRU(input_size, flax_cell.features, reset_after=True, **kwargs)
    return cells.LSTM(input_size, flax_cell.features, **kwargs)
