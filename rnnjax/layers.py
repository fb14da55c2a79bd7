"""Layers: a cell over a sequence, bidirectional and stacked layers, dropout variants.

A layer is a frozen dataclass with ``init(key)`` and
``apply(params, xs, length=None, state=None, *, key=None) -> (state, ys)`` for ONE
sequence ``xs`` of shape ``(T, I)``; ``apply_batch`` runs it over leading batch axes.
Every layer keeps :func:`rnnjax.unroll`'s length semantics (padded outputs exactly
zero, final state at the true length, padding-aware reverse, padding never changes an
output, state or gradient).

Randomness (dropout, zoneout) is used only when a ``key`` is given; without one a layer
is deterministic: dropout is off and zoneout takes its expectation.

Your own cells and layers are first-class. A cell's output may be any pytree of arrays
(``(y, state)``, ``[y, y]``, a dict): padding is zeroed, reversal and segments applied leaf
by leaf. A layer of your own needs only ``init(key)``, ``initial_state()`` and
``apply(params, xs, length=None, state=None, *, resets=None, key=None)`` on one sequence
``(T, I)``; inside :class:`Stacked` and :class:`Bidirectional` it runs one example at a
time under ``vmap`` and ``apply_batch`` keeps the documented layout ``(*B, T, H)``. Inside
:class:`Bidirectional` such a layer (it has no ``reverse`` field) is run on the reversed
sequence (padding-aware) as the backward direction. Something lacking one of these
methods is refused with an error naming what it lacks.

References:
  Gal & Ghahramani (2016). A theoretically grounded application of dropout in recurrent
  neural networks. (variational dropout: one mask per sequence)
  Krueger et al. (2017). Zoneout: regularizing RNNs by randomly preserving hidden
  activations.
  Zaremba, Sutskever & Vinyals (2014). Recurrent neural network regularization.
  (dropout between layers)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from rnnjax import checks, engine
from rnnjax import sequence as seq
from rnnjax._repr import short_repr

__all__ = ["Recurrent", "Bidirectional", "BidirectionalState", "Stacked", "dropout"]


def dropout(key, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by
    ``1 / (1 - rate)``. Identity when ``key`` is ``None`` or ``rate == 0``.

    Args:
      key: a PRNG key, or ``None``.
      x: any shape, e.g. a layer's outputs ``(T, H)``.
      rate: the probability of zeroing an entry, in ``[0, 1)``.

    Returns:
      An array of the shape and dtype of ``x``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> y = rj.dropout(jax.random.key(0), jnp.ones(1000), 0.5)
      >>> sorted(set(y.tolist()))
      [0.0, 2.0]
    """
    if checks.is_concrete(rate):
        rate = checks.rate("rate", rate)
    key = checks.key("key", key, optional=True)
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


_LAYER_PROTOCOL = ("init", "apply", "initial_state")
_CELL_PROTOCOL = ("init", "step", "initial_state", "input_size")


def _as_layer(layer_or_cell, reverse: bool = False, name: str = "layer"):
    """A cell becomes ``Recurrent(cell, reverse)``; a layer is returned as it is. Anything
    else is a ``TypeError`` naming the argument ``name`` and what it lacks.

    A layer needs ``init``, ``apply`` and ``initial_state`` (``input_size`` and
    ``output_size`` are optional: without them the sizes are not checked up front)."""
    if hasattr(layer_or_cell, "apply"):
        lacks = [a for a in _LAYER_PROTOCOL if not hasattr(layer_or_cell, a)]
        if not lacks:
            return layer_or_cell
        what = f"a layer needs {list(_LAYER_PROTOCOL)}"
    elif hasattr(layer_or_cell, "step"):
        lacks = [a for a in _CELL_PROTOCOL if not hasattr(layer_or_cell, a)]
        if not lacks:
            return Recurrent(layer_or_cell, reverse=reverse)
        what = f"a cell needs {list(_CELL_PROTOCOL)}"
    else:
        lacks = ["apply (a layer) or step (a cell)"]
        what = f"a layer needs {list(_LAYER_PROTOCOL)}, a cell {list(_CELL_PROTOCOL)}"
    raise TypeError(
        f"{name} must be an rnnjax layer or cell ({what}); got {short(layer_or_cell)}, "
        f"which lacks {', '.join(lacks)}"
    )


def short(obj) -> str:
    """A one-line description of ``obj`` for error messages."""
    text = repr(obj)
    return text if len(text) <= 120 else text[:117] + "..."


def _size(layer, attr):
    """``layer.input_size`` / ``output_size``, or ``None`` for a layer that does not say."""
    value = getattr(layer, attr, None)
    return value if isinstance(value, int) else None


def per_example(fn, batch, *args):
    """``fn(*args)`` for every example: ``args`` (keys first) have leading axes ``batch``
    (none when ``batch == ()``), and so do the outputs. The random streams of a batch are
    those of its examples run one by one."""
    if not batch:
        return fn(*args)
    n = math.prod(batch)
    flat = [a.reshape((n,) + a.shape[len(batch) :]) for a in args]
    out = jax.vmap(fn)(*flat)
    return jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), out)


def _time_first(a, nb: int):
    """``(*B, T, ...)`` -> ``(T, *B, ...)``."""
    return jnp.moveaxis(a, nb, 0)


class _Layer:
    """``apply`` and ``apply_batch`` of every layer: one body (``_run``) on time-major
    arrays with any number of batch axes (none for one example)."""

    def apply(self, params, xs, length=None, state=None, *, resets=None, key=None):
        """Run over one sequence.

        Args:
          params: from :meth:`init`.
          xs: ``(T, I)``.
          length: optional integer scalar, the true length (see :func:`rnnjax.unroll`).
          state: optional initial state (default :meth:`initial_state`).
          resets: optional bool ``(T,)``, segment starts (see :func:`rnnjax.unroll`).
          key: optional PRNG key: dropout and zoneout masks are drawn only with one.

        Returns:
          ``(state, ys)`` with ``ys`` ``(T, output_size)``, zero past ``length``.
        """
        return self._call(params, xs, length, state, resets, key, batch_ndim=0, time_major=True)

    def apply_batch(
        self, params, xs, length=None, state=None, *, resets=None, key=None, time_major=False
    ):
        """:meth:`apply` over leading batch axes, natively batched (one scan over
        ``(T, *B, .)`` arrays, dropout and zoneout included).

        Args:
          xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
          length: optional integers of shape ``B``.
          state: optional state whose leaves have leading axes ``B``.
          resets: optional bool laid out like ``xs`` without the feature axis.
          key: optional PRNG key, split into one key per example (``jax.random.split(key,
            prod(B))``): every example draws the masks it would draw alone with its key.

        Returns:
          ``(state, ys)`` with ``ys`` laid out like ``xs``.
        """
        checks.boolean("time_major", time_major)
        return self._call(
            params, xs, length, state, resets, key, batch_ndim=None, time_major=time_major
        )

    def _call(self, params, xs, length, state, resets, key, batch_ndim, time_major):
        xs, batch, T = checks.sequence_inputs(
            "xs", xs, self.input_size, batch_ndim=batch_ndim, time_major=time_major
        )
        length = checks.lengths("length", length, T, batch)
        res_shape = (T,) + batch if (time_major or not batch) else batch + (T,)
        resets = checks.resets("resets", resets, res_shape)
        nb = len(batch)
        if batch and not time_major:
            xs = _time_first(xs, nb)
            resets = None if resets is None else _time_first(resets, nb)
        keys = None
        key = checks.key("key", key, optional=True)  # typed; raw uint32 data is wrapped
        if key is not None:
            keys = key if not batch else jax.random.split(key, math.prod(batch)).reshape(batch)
        state, ys = self._run(params, xs, length, state, resets, keys)
        if batch and not time_major:
            ys = seq.batch_first(ys, nb)
        return state, ys


def _run_layer(layer, params, xs, length, state, resets, keys):
    """``layer._run`` for rnnjax layers, on time-major ``xs`` ``(T, *B, I)``; returns
    ``(state, ys)`` with ``ys`` time-major ``(T, *B, ...)``.

    A user-written layer (``init``/``apply``/``initial_state`` only) runs one example at a
    time under ``vmap`` (its ``apply`` takes one sequence ``(T, I)``), its outputs put
    back time-major and zeroed past ``length`` leaf by leaf (the layer contract). Only the
    arguments given are passed on (``resets`` and ``key`` as keywords)."""
    if hasattr(layer, "_run"):
        return layer._run(params, xs, length, state, resets, keys)
    nb = xs.ndim - 2

    def one(x, n, s, k, r):
        args = (n, s) if s is not None else ((n,) if n is not None else ())
        kw = {}
        if r is not None:
            kw["resets"] = r
        if k is not None:
            kw["key"] = k
        return layer.apply(params, x, *args, **kw)

    f = one
    for _ in range(nb):
        f = jax.vmap(f, in_axes=(1, 0, 0, 0, 1), out_axes=(0, 1))
    state, ys = f(xs, length, state, keys, resets)
    if length is not None:
        T = xs.shape[0]
        valid = jnp.arange(T).reshape((T,) + (1,) * nb) < length[None]
        ys = jax.tree_util.tree_map(
            lambda y: jnp.where(seq._bcast(valid, y), y, jnp.zeros((), y.dtype)), ys
        )
    return state, ys


@dataclasses.dataclass(frozen=True)
class _Reversed:
    """A user-written layer run backwards inside :class:`Bidirectional`: it reads
    ``xs[length-1], ..., xs[0]`` (padding-aware; segments reversed as
    :func:`rnnjax.unroll` does) and its outputs are put back at the input positions."""

    layer: Any
    reverse = True

    @property
    def input_size(self):
        return _size(self.layer, "input_size")

    @property
    def output_size(self):
        return _size(self.layer, "output_size")

    def init(self, key):
        return self.layer.init(key)

    def initial_state(self, dtype=None):
        return _initial_state(self.layer, dtype)

    def _run(self, params, xs, length, state, resets, keys):
        xs, _, resets, order = seq.prepare(xs, length, resets, reverse=True)
        state, ys = _run_layer(self.layer, params, xs, length, state, resets, keys)
        return state, seq.restore_order(ys, order)


def _initial_state(layer, dtype):
    """``layer.initial_state(dtype)``; without a dtype, ``initial_state()`` (a
    user-written layer need not take one)."""
    return layer.initial_state() if dtype is None else layer.initial_state(dtype)


@dataclasses.dataclass(frozen=True)
class Recurrent(_Layer):
    """One cell run over a sequence, with optional recurrent regularisation.

    Params are the cell's own params; state is the cell's state. Every variant runs in
    the fused engine: dropout and zoneout masks are drawn up front and handed to it as
    arrays.

    Args:
      cell: any rnnjax cell.
      reverse: run backwards (padding-aware; outputs stay aligned with the inputs).
      input_dropout: rate of dropout on the inputs ``x_t``; with a key, one mask per
        sequence reused at every step (Gal & Ghahramani 2016).
      recurrent_dropout: rate of dropout on the hidden vector ``h_{t-1}`` that is fed
        back into the cell. The carried state itself is not masked.
      recurrent_dropout_mode: ``"variational"`` (default; one mask per sequence, reused
        at every step) or ``"per_step"`` (a fresh mask at every step: the naive variant
        that Gal & Ghahramani show to hurt).
      zoneout: probability that each state unit keeps its previous value at a step
        (Krueger et al. 2017); applied to every state field (``h`` and, for the LSTM,
        ``c``). Without a key the expectation ``z * s_{t-1} + (1 - z) * s_t`` is used.
        With zoneout the step's output is the zoned-out ``h``.
      unroll: deprecated: use ``config=ScanConfig(unroll=...)`` (steps per ``lax.scan``
        iteration); given, it warns and overrides ``config.unroll``.
      config: a :class:`rnnjax.ScanConfig` (default ``ScanConfig()``).

    Random streams: an example's key ``k`` is split into ``(k_in, k_rec, k_zone)``; the
    input mask is ``(1, I)``, the variational recurrent mask has the shape of ``h``, the
    per-step one ``(T,) + h.shape``, and zoneout draws one ``(T,) + leaf.shape`` mask per
    state field (keys split from ``k_zone``), in processing order.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> layer = rj.Recurrent(rj.LSTM(2, 3), recurrent_dropout=0.25)
      >>> params = layer.init(jax.random.key(0))
      >>> state, ys = layer.apply(params, jnp.ones((4, 2)), length=3, key=jax.random.key(1))
      >>> ys.shape
      (4, 3)
    """

    __repr__ = short_repr

    cell: Any
    reverse: bool = False
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    recurrent_dropout_mode: str = "variational"
    zoneout: float = 0.0
    unroll: Optional[int] = None
    config: Optional[engine.ScanConfig] = None

    def __post_init__(self):
        if not (hasattr(self.cell, "step") and hasattr(self.cell, "init")):
            raise TypeError(f"cell must be an rnnjax cell; got {self.cell!r}")
        checks.rate("input_dropout", self.input_dropout)
        checks.rate("recurrent_dropout", self.recurrent_dropout)
        checks.rate("zoneout", self.zoneout)
        checks.choice(
            "recurrent_dropout_mode", self.recurrent_dropout_mode, ("variational", "per_step")
        )
        checks.boolean("reverse", self.reverse)
        seq.deprecated_unroll(self.unroll, "Recurrent(unroll=...)")
        if self.config is not None and not isinstance(self.config, engine.ScanConfig):
            raise TypeError(f"config must be an rnnjax.ScanConfig; got {self.config!r}")

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    def init(self, key) -> dict:
        """The cell's parameters."""
        return self.cell.init(checks.key("key", key))

    def initial_state(self, dtype=None):
        """The cell's zero state (float32 unless ``dtype`` says otherwise)."""
        return self.cell.initial_state(dtype)

    def scan_config(self) -> engine.ScanConfig:
        """The :class:`rnnjax.ScanConfig` this layer runs with."""
        cfg = self.config or engine.ScanConfig()
        return cfg if self.unroll is None else dataclasses.replace(cfg, unroll=self.unroll)

    def _masks(self, key, xs_shape, h_shape, state_shapes):
        """One example's dropout and zoneout masks from its key (see the class docstring)."""
        T, I = xs_shape
        k_in, k_rec, k_zone = jax.random.split(key, 3)
        out = {}
        if self.input_dropout:
            out["in"] = dropout(k_in, jnp.ones((1, I)), self.input_dropout)
        if self.recurrent_dropout:
            shape = h_shape if self.recurrent_dropout_mode == "variational" else (T,) + h_shape
            out["rec"] = dropout(k_rec, jnp.ones(shape), self.recurrent_dropout)
        if self.zoneout:
            leaves, treedef = jax.tree_util.tree_flatten(state_shapes)
            ks = jax.random.split(k_zone, len(leaves))
            out["keep"] = jax.tree_util.tree_unflatten(
                treedef,
                [jax.random.bernoulli(k, self.zoneout, (T,) + l.shape) for k, l in zip(ks, leaves)],
            )
        return out

    def _run(self, params, xs, length, state, resets, keys):
        cell = self.cell
        T, batch = xs.shape[0], xs.shape[1:-1]
        checks.params("params", seq.param_shapes(cell), params, type(cell).__name__)
        sd = seq.state_dtype(xs, params)
        init = cell.initial_state(sd)
        if state is None:
            state = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch + a.shape), init)
        else:
            state = checks.state("state", init, state, batch, dtype=sd)
        masks = {}
        if keys is not None and (self.input_dropout or self.recurrent_dropout or self.zoneout):
            m = per_example(
                lambda k: self._masks(k, (T, xs.shape[-1]), init.h.shape, init), batch, keys
            )
            nb = len(batch)
            if "in" in m:  # (*B, 1, I) -> (1, *B, I)
                xs = xs * _time_first(m["in"], nb).astype(xs.dtype)
            if "rec" in m:
                rec = m["rec"]
                masks["rec_mask"] = rec if rec.ndim == nb + 1 else _time_first(rec, nb)
            if "keep" in m:
                masks["zoneout"] = jax.tree_util.tree_map(lambda a: _time_first(a, nb), m["keep"])
        elif self.zoneout:
            masks["zoneout"] = self.zoneout
        return seq.run(
            cell, params, xs, length, state, self.reverse, resets, self.scan_config(), **masks
        )


class BidirectionalState(NamedTuple):
    """State of :class:`Bidirectional`: the final states of both directions.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> bi = rj.Bidirectional(rj.GRU(3, 4))
      >>> state, ys = bi.apply(bi.init(jax.random.key(0)), jnp.ones((5, 3)), length=3)
      >>> state.forward.h.shape, state.backward.h.shape, ys.shape   # (H,), (H,), (T, 2H)
      ((4,), (4,), (5, 8))
    """

    forward: Any
    backward: Any


_MERGES = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": lambda f, b: f + b,
    "mean": lambda f, b: 0.5 * (f + b),
}


@dataclasses.dataclass(frozen=True)
class Bidirectional(_Layer):
    """A forward and a padding-aware backward layer over the same sequence, merged.

    The backward direction reads ``xs[length-1], ..., xs[0]`` (the padding is never
    read), and its outputs stay aligned with the input positions, as PyTorch's
    bidirectional RNNs over packed sequences.

    Params: ``{"forward": ..., "backward": ...}``. State: :class:`BidirectionalState`.

    Args:
      forward: a cell, a forward :class:`Recurrent` layer or a layer of your own.
      backward: a cell, a ``reverse=True`` :class:`Recurrent`, or a layer of your own
        (run on the reversed sequence); default: a reversed copy of ``forward``
        (independent parameters).
      merge: ``"concat"`` (default, ``(T, 2H)``; array outputs only, a pytree output is a
        ``ValueError`` naming ``merge``), ``"sum"``, ``"mean"`` (leaf by leaf, any
        pytree), or a callable ``(ys_forward, ys_backward) -> ys``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> layer = rj.Bidirectional(rj.GRU(2, 3))
      >>> params = layer.init(jax.random.key(0))
      >>> state, ys = layer.apply(params, jnp.ones((4, 2)), length=2)
      >>> ys.shape
      (4, 6)
    """

    __repr__ = short_repr

    forward: Any
    backward: Any = None
    merge: Union[str, Callable] = "concat"

    def __post_init__(self):
        fwd = _as_layer(self.forward, reverse=False, name="forward")
        if getattr(fwd, "reverse", False):
            raise ValueError("forward must run forwards (reverse=False); got a reversed layer")
        if self.backward is None:
            if isinstance(fwd, Recurrent):
                bwd = dataclasses.replace(fwd, reverse=True)
            elif not hasattr(fwd, "reverse") and not hasattr(fwd, "_run"):
                bwd = _Reversed(fwd)  # a user-written layer, run on the reversed sequence
            else:
                raise ValueError(
                    "backward must be given when forward is not a cell, a Recurrent layer "
                    f"or a user-written layer; got forward={short(fwd)}"
                )
        else:
            bwd = _as_layer(self.backward, reverse=True, name="backward")
            if not hasattr(bwd, "reverse") and not hasattr(bwd, "_run"):
                bwd = _Reversed(bwd)  # a user-written layer, run on the reversed sequence
            if not getattr(bwd, "reverse", False):
                raise ValueError("backward must be a reverse=True layer or a cell")
        f_in, b_in = _size(fwd, "input_size"), _size(bwd, "input_size")
        if f_in is not None and b_in is not None and f_in != b_in:
            raise ValueError(f"forward and backward must share input_size; got {f_in} and {b_in}")
        if not callable(self.merge) and self.merge not in _MERGES:
            raise ValueError(
                f"merge must be one of {sorted(_MERGES)} or a callable; got {self.merge!r}"
            )
        f_out, b_out = _size(fwd, "output_size"), _size(bwd, "output_size")
        if self.merge in ("sum", "mean") and None not in (f_out, b_out) and f_out != b_out:
            raise ValueError(
                f"merge={self.merge!r} needs equal output sizes; got {fwd.output_size} and "
                f"{bwd.output_size}"
            )
        object.__setattr__(self, "forward", fwd)
        object.__setattr__(self, "backward", bwd)

    @property
    def input_size(self) -> Optional[int]:
        """The input size (``None`` when neither direction states it)."""
        f = _size(self.forward, "input_size")
        return f if f is not None else _size(self.backward, "input_size")

    @property
    def output_size(self) -> Optional[int]:
        """Merged output size (``None`` for a callable merge, or a direction that does not
        state its size)."""
        f, b = _size(self.forward, "output_size"), _size(self.backward, "output_size")
        if f is None or b is None:
            return None
        if self.merge == "concat":
            return f + b
        if self.merge in ("sum", "mean"):
            return f
        return None

    def init(self, key) -> dict:
        k_f, k_b = jax.random.split(checks.key("key", key))
        return {"forward": self.forward.init(k_f), "backward": self.backward.init(k_b)}

    def initial_state(self, dtype=None) -> BidirectionalState:
        return BidirectionalState(
            _initial_state(self.forward, dtype), _initial_state(self.backward, dtype)
        )

    def _merge(self, y_f, y_b):
        """The two directions' outputs merged: ``concat`` joins arrays on the last axis;
        ``sum``/``mean`` work leaf by leaf on any matching pytrees; a callable gets both."""
        if callable(self.merge):
            return self.merge(y_f, y_b)
        arrays = all(isinstance(y, jax.Array) for y in (y_f, y_b))
        if self.merge == "concat":
            if not arrays:
                raise ValueError(
                    "merge='concat' joins array outputs; got outputs of the structure "
                    f"{jax.tree_util.tree_structure(y_f)} and "
                    f"{jax.tree_util.tree_structure(y_b)} (pytrees): pass merge='sum', "
                    "'mean' or a callable (ys_forward, ys_backward) -> ys"
                )
            return _MERGES["concat"](y_f, y_b)
        s_f, s_b = jax.tree_util.tree_structure(y_f), jax.tree_util.tree_structure(y_b)
        if s_f != s_b:
            raise ValueError(
                f"merge={self.merge!r} needs outputs of one structure in both directions; "
                f"got {s_f} and {s_b}"
            )
        return jax.tree_util.tree_map(_MERGES[self.merge], y_f, y_b)

    @staticmethod
    def _check(params, state) -> None:
        if not isinstance(params, dict) or set(params) != {"forward", "backward"}:
            raise ValueError(
                "params must be a dict with keys 'forward' and 'backward'; got "
                f"{type(params).__name__} with keys {sorted(params) if isinstance(params, dict) else None}"
            )
        if state is not None and not isinstance(state, BidirectionalState):
            raise ValueError(f"state must be a BidirectionalState; got {type(state).__name__}")

    def _run(self, params, xs, length, state, resets, keys):
        self._check(params, state)
        k_f = k_b = None
        if keys is not None:
            k2 = per_example(jax.random.split, xs.shape[1:-1], keys)
            k_f, k_b = k2[..., 0], k2[..., 1]
        s_f = None if state is None else state.forward
        s_b = None if state is None else state.backward
        s_f, y_f = _run_layer(self.forward, params["forward"], xs, length, s_f, resets, k_f)
        s_b, y_b = _run_layer(self.backward, params["backward"], xs, length, s_b, resets, k_b)
        return BidirectionalState(s_f, s_b), self._merge(y_f, y_b)


@dataclasses.dataclass(frozen=True)
class Stacked(_Layer):
    """Layers applied one after another, with dropout between them.

    Params: a tuple with one entry per layer. State: a tuple of the layers' states.

    Args:
      layers: a sequence of cells (each becomes a :class:`Recurrent`) or layers; each
        layer's ``input_size`` must equal the previous layer's ``output_size``.
      dropout: rate of dropout on the outputs of every layer but the last (Zaremba et
        al. 2014; PyTorch's ``dropout`` argument); active only with a key.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> net = rj.Stacked([rj.Bidirectional(rj.LSTM(2, 3)), rj.LSTM(6, 4)], dropout=0.1)
      >>> params = net.init(jax.random.key(0))
      >>> state, ys = net.apply(params, jnp.ones((5, 2)), length=4)
      >>> ys.shape
      (5, 4)
    """

    __repr__ = short_repr

    layers: Sequence[Any]
    dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__len__"):
            raise TypeError(f"layers must be a sequence of cells or layers; got {self.layers!r}")
        layers = tuple(_as_layer(l, name=f"layers[{i}]") for i, l in enumerate(self.layers))
        if not layers:
            raise ValueError("layers must hold at least one cell or layer; got none")
        for i in range(1, len(layers)):
            prev = _size(layers[i - 1], "output_size")
            this = _size(layers[i], "input_size")
            if prev is not None and this is not None and this != prev:
                raise ValueError(
                    f"layers[{i}].input_size must equal layers[{i - 1}].output_size = {prev}; "
                    f"got {layers[i].input_size}"
                )
        checks.rate("dropout", self.dropout)
        object.__setattr__(self, "layers", layers)

    @property
    def input_size(self) -> Optional[int]:
        """The first layer's input size (``None`` when it does not state it)."""
        return _size(self.layers[0], "input_size")

    @property
    def output_size(self) -> Optional[int]:
        """The last layer's output size (``None`` when it does not state it)."""
        return _size(self.layers[-1], "output_size")

    def init(self, key) -> tuple:
        keys = jax.random.split(checks.key("key", key), len(self.layers))
        return tuple(layer.init(k) for layer, k in zip(self.layers, keys))

    def initial_state(self, dtype=None) -> tuple:
        return tuple(_initial_state(layer, dtype) for layer in self.layers)

    def _check(self, params, state) -> None:
        n = len(self.layers)
        if not isinstance(params, (tuple, list)) or len(params) != n:
            raise ValueError(
                f"params must be a tuple of {n} per-layer params; got {type(params).__name__}"
                + (f" of length {len(params)}" if isinstance(params, (tuple, list)) else "")
            )
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != n):
            raise ValueError(f"state must be a tuple of {n} per-layer states; got {state!r}")

    def _run(self, params, xs, length, state, resets, keys):
        """The layers one after another, with dropout between them (per example: an
        example's key ``k`` is split into ``2 n`` keys, layer ``i`` gets key ``2 i`` and the
        dropout after it key ``2 i + 1``)."""
        n = len(self.layers)
        self._check(params, state)
        batch = xs.shape[1:-1]
        nb = len(batch)
        ks = (
            None if keys is None else per_example(lambda k: jax.random.split(k, 2 * n), batch, keys)
        )
        states, ys = [], xs
        for i, layer in enumerate(self.layers):
            s_i = None if state is None else state[i]
            k_i = None if ks is None else ks[..., 2 * i]
            s_i, ys = _run_layer(layer, params[i], ys, length, s_i, resets, k_i)
            states.append(s_i)
            if i < n - 1 and not isinstance(ys, jax.Array):
                raise ValueError(
                    f"layers[{i}] must output an array, the input of layers[{i + 1}]; got "
                    f"outputs of the structure {jax.tree_util.tree_structure(ys)} (only the "
                    "last layer may output a pytree)"
                )
            if i < n - 1 and ks is not None and self.dropout:
                # per example, on its (T, H) outputs, as when run alone
                ys = jnp.moveaxis(
                    per_example(
                        lambda k, y: dropout(k, y, self.dropout),
                        batch,
                        ks[..., 2 * i + 1],
                        jnp.moveaxis(ys, 0, nb),
                    ),
                    nb,
                    0,
                )
        return tuple(states), ys
