"""Layers: a cell over a sequence, bidirectional and stacked layers, dropout variants.

A layer is a frozen dataclass with ``init(key)`` and
``apply(params, xs, length=None, state=None, *, key=None) -> (state, ys)`` for ONE
sequence ``xs`` of shape ``(T, I)``; ``apply_batch`` runs it over leading batch axes.
Every layer keeps :func:`rnnjax.unroll`'s length semantics (padded outputs exactly
zero, final state at the true length, padding-aware reverse, padding never changes an
output, state or gradient).

Randomness (dropout, zoneout) is used only when a ``key`` is given; without one a layer
is deterministic: dropout is off and zoneout takes its expectation.

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
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp

from rnnjax import sequence as seq

__all__ = ["Recurrent", "Bidirectional", "BidirectionalState", "Stacked", "dropout"]


def _check_rate(name: str, rate) -> None:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name} must be a float in [0, 1); got {rate!r}")


def dropout(key, x: jax.Array, rate: float) -> jax.Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by
    ``1 / (1 - rate)``. Identity when ``key`` is ``None`` or ``rate == 0``."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype))


def _as_layer(layer_or_cell, reverse: bool = False, name: str = "layer"):
    """A cell becomes ``Recurrent(cell, reverse)``; a layer is returned as it is. Anything
    else is a ``TypeError`` naming the argument ``name``."""
    if hasattr(layer_or_cell, "apply") and hasattr(layer_or_cell, "init"):
        return layer_or_cell
    if hasattr(layer_or_cell, "step") and hasattr(layer_or_cell, "init"):
        return Recurrent(layer_or_cell, reverse=reverse)
    raise TypeError(
        f"{name} must be an rnnjax layer or cell (with init and apply/step); got {layer_or_cell!r}"
    )


class _BatchMixin:
    def apply_batch(self, params, xs, length=None, state=None, *, key=None, time_major=False):
        """:meth:`apply` over leading batch axes.

        Args:
          xs: ``(*B, T, I)``, or ``(T, *B, I)`` with ``time_major=True``.
          length: optional integers of shape ``B``.
          state: optional state whose leaves have leading axes ``B``.
          key: optional PRNG key, split so that every example draws its own masks.

        Returns:
          ``(state, ys)`` with ``ys`` laid out like ``xs``.
        """
        return seq.apply_batch(
            lambda x, n, s, k: self.apply(params, x, n, s, key=k),
            xs,
            length,
            state,
            time_major,
            key,
        )


@dataclasses.dataclass(frozen=True)
class Recurrent(_BatchMixin):
    """One cell run over a sequence, with optional recurrent regularisation.

    Params are the cell's own params; state is the cell's state.

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
      unroll: passed to ``jax.lax.scan``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> layer = rj.Recurrent(rj.LSTM(2, 3), recurrent_dropout=0.25)
      >>> params = layer.init(jax.random.key(0))
      >>> state, ys = layer.apply(params, jnp.ones((4, 2)), length=3, key=jax.random.key(1))
      >>> ys.shape
      (4, 3)
    """

    cell: Any
    reverse: bool = False
    input_dropout: float = 0.0
    recurrent_dropout: float = 0.0
    recurrent_dropout_mode: str = "variational"
    zoneout: float = 0.0
    unroll: int = 1

    def __post_init__(self):
        if not (hasattr(self.cell, "step") and hasattr(self.cell, "init")):
            raise TypeError(f"cell must be an rnnjax cell; got {self.cell!r}")
        _check_rate("input_dropout", self.input_dropout)
        _check_rate("recurrent_dropout", self.recurrent_dropout)
        _check_rate("zoneout", self.zoneout)
        if self.recurrent_dropout_mode not in ("variational", "per_step"):
            raise ValueError(
                "recurrent_dropout_mode must be 'variational' or 'per_step'; "
                f"got {self.recurrent_dropout_mode!r}"
            )
        if not isinstance(self.reverse, bool):
            raise TypeError(f"reverse must be a bool; got {self.reverse!r}")

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    def init(self, key) -> dict:
        """The cell's parameters."""
        return self.cell.init(key)

    def native_batch(self, key=None) -> bool:
        """Whether :meth:`apply_batch` with this ``key`` runs natively batched
        (:func:`rnnjax.sequence.run_batch`): no dropout or zoneout in play, ``unroll=1``
        and a cell that :func:`rnnjax.fused.batch_applies` to."""
        from rnnjax import fused

        regularised = self.zoneout or (
            key is not None and (self.input_dropout or self.recurrent_dropout)
        )
        return not regularised and self.unroll == 1 and fused.batch_applies(self.cell)

    def apply_batch(self, params, xs, length=None, state=None, *, key=None, time_major=False):
        """:meth:`apply` over leading batch axes (see :meth:`_BatchMixin.apply_batch`);
        natively batched (:func:`rnnjax.sequence.run_batch`) where no dropout or zoneout
        is in play."""
        if self.native_batch(key):
            return seq.run_batch(self.cell, params, xs, length, state, self.reverse, time_major)
        return super().apply_batch(params, xs, length, state, key=key, time_major=time_major)

    def initial_state(self, dtype=jnp.float32):
        """The cell's zero state."""
        return self.cell.initial_state(dtype)

    def apply(self, params, xs, length=None, state=None, *, key=None):
        """Run over one sequence ``xs`` ``(T, I)``; returns ``(state, ys (T, output_size))``."""
        cell = self.cell
        seq.check_xs(xs, cell.input_size)
        seq.check_params(cell, params)
        dtype = seq.state_dtype(xs, params)
        if state is None:
            state = cell.initial_state(dtype)
        else:
            seq.check_state(cell.initial_state(dtype), state)
        xs, valid, order = seq.prepare(xs, length, self.reverse)
        train = key is not None
        if not self.zoneout and not (
            train and (self.input_dropout or self.recurrent_dropout)
        ):
            state, ys = seq.run_cell(cell, params, state, xs, valid, self.unroll)
        else:
            state, ys = self._run_regularised(params, state, xs, valid, key)
        return state, seq.restore_order(ys, length, self.reverse, order)

    def _run_regularised(self, params, state, xs, valid, key):
        cell, T = self.cell, xs.shape[0]
        k_in, k_rec, k_zone = jax.random.split(key, 3) if key is not None else (None,) * 3
        if k_in is not None and self.input_dropout:
            # one mask per sequence, shared by every step
            xs = xs * dropout(k_in, jnp.ones((1, xs.shape[1]), xs.dtype), self.input_dropout)
        rec_fixed, rec_steps = None, None
        if key is not None and self.recurrent_dropout:
            ones = jnp.ones_like(state.h)
            if self.recurrent_dropout_mode == "variational":
                rec_fixed = dropout(k_rec, ones, self.recurrent_dropout)
            else:
                rec_steps = dropout(k_rec, jnp.ones((T,) + ones.shape, ones.dtype),
                                    self.recurrent_dropout)
        z = self.zoneout
        keep_steps = None
        if z and key is not None:
            leaves, treedef = jax.tree_util.tree_flatten(state)
            ks = jax.random.split(k_zone, len(leaves))
            keep_steps = jax.tree_util.tree_unflatten(
                treedef,
                [jax.random.bernoulli(k, z, (T,) + l.shape) for k, l in zip(ks, leaves)],
            )

        def fn(s, inp):
            x, rec_mask, keep = inp
            if rec_fixed is not None:
                rec_mask = rec_fixed
            s_in = s if rec_mask is None else s._replace(h=s.h * rec_mask)
            new, y = cell.step(params, s_in, x)
            if z:
                if keep is not None:
                    new = jax.tree_util.tree_map(jnp.where, keep, s, new)
                else:
                    new = jax.tree_util.tree_map(lambda o, n: z * o + (1.0 - z) * n, s, new)
                y = new.h
            return new, y

        return seq.scan_masked(fn, state, (xs, rec_steps, keep_steps), valid, self.unroll)


class BidirectionalState(NamedTuple):
    """State of :class:`Bidirectional`: the final states of both directions."""

    forward: Any
    backward: Any


_MERGES = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": lambda f, b: f + b,
    "mean": lambda f, b: 0.5 * (f + b),
}


@dataclasses.dataclass(frozen=True)
class Bidirectional(_BatchMixin):
    """A forward and a padding-aware backward layer over the same sequence, merged.

    The backward direction reads ``xs[length-1], ..., xs[0]`` (the padding is never
    read), and its outputs stay aligned with the input positions, as PyTorch's
    bidirectional RNNs over packed sequences.

    Params: ``{"forward": ..., "backward": ...}``. State: :class:`BidirectionalState`.

    Args:
      forward: a cell or a forward :class:`Recurrent` layer.
      backward: a cell or a ``reverse=True`` :class:`Recurrent`; default: a reversed copy
        of ``forward`` (independent parameters).
      merge: ``"concat"`` (default, ``(T, 2H)``), ``"sum"``, ``"mean"``, or a callable
        ``(ys_forward, ys_backward) -> ys``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> layer = rj.Bidirectional(rj.GRU(2, 3))
      >>> params = layer.init(jax.random.key(0))
      >>> state, ys = layer.apply(params, jnp.ones((4, 2)), length=2)
      >>> ys.shape
      (4, 6)
    """

    forward: Any
    backward: Any = None
    merge: Union[str, Callable] = "concat"

    def __post_init__(self):
        fwd = _as_layer(self.forward, reverse=False, name="forward")
        if getattr(fwd, "reverse", False):
            raise ValueError("forward must run forwards (reverse=False); got a reversed layer")
        if self.backward is None:
            if not isinstance(fwd, Recurrent):
                raise ValueError(
                    "backward must be given when forward is not a cell or Recurrent layer"
                )
            bwd = dataclasses.replace(fwd, reverse=True)
        else:
            bwd = _as_layer(self.backward, reverse=True, name="backward")
            if not getattr(bwd, "reverse", False):
                raise ValueError("backward must be a reverse=True layer or a cell")
        if fwd.input_size != bwd.input_size:
            raise ValueError(
                f"forward and backward must share input_size; got {fwd.input_size} and "
                f"{bwd.input_size}"
            )
        if not callable(self.merge) and self.merge not in _MERGES:
            raise ValueError(
                f"merge must be one of {sorted(_MERGES)} or a callable; got {self.merge!r}"
            )
        if self.merge in ("sum", "mean") and fwd.output_size != bwd.output_size:
            raise ValueError(
                f"merge={self.merge!r} needs equal output sizes; got {fwd.output_size} and "
                f"{bwd.output_size}"
            )
        object.__setattr__(self, "forward", fwd)
        object.__setattr__(self, "backward", bwd)

    @property
    def input_size(self) -> int:
        return self.forward.input_size

    @property
    def output_size(self) -> Optional[int]:
        """Merged output size (``None`` for a callable merge)."""
        if self.merge == "concat":
            return self.forward.output_size + self.backward.output_size
        if self.merge in ("sum", "mean"):
            return self.forward.output_size
        return None

    def init(self, key) -> dict:
        k_f, k_b = jax.random.split(key)
        return {"forward": self.forward.init(k_f), "backward": self.backward.init(k_b)}

    def initial_state(self, dtype=jnp.float32) -> BidirectionalState:
        return BidirectionalState(
            self.forward.initial_state(dtype), self.backward.initial_state(dtype)
        )

    @staticmethod
    def _check(params, state) -> None:
        if not isinstance(params, dict) or set(params) != {"forward", "backward"}:
            raise ValueError(
                "params must be a dict with keys 'forward' and 'backward'; got "
                f"{type(params).__name__} with keys {sorted(params) if isinstance(params, dict) else None}"
            )
        if state is not None and not isinstance(state, BidirectionalState):
            raise ValueError(f"state must be a BidirectionalState; got {type(state).__name__}")

    def apply(self, params, xs, length=None, state=None, *, key=None):
        """Run both directions over ``xs`` ``(T, I)``; returns ``(state, merged ys)``."""
        call = lambda layer, p, s, k: layer.apply(p, xs, length, s, key=k)  # noqa: E731
        return self._run(call, params, state, key)

    def _run(self, call, params, state, key):
        """Both directions, ``call(layer, params, state, key)`` running one (per example
        or batched), merged."""
        self._check(params, state)
        k_f, k_b = jax.random.split(key) if key is not None else (None, None)
        s_f = None if state is None else state.forward
        s_b = None if state is None else state.backward
        s_f, y_f = call(self.forward, params["forward"], s_f, k_f)
        s_b, y_b = call(self.backward, params["backward"], s_b, k_b)
        merge = _MERGES[self.merge] if isinstance(self.merge, str) else self.merge
        return BidirectionalState(s_f, s_b), merge(y_f, y_b)

    def native_batch(self, key=None) -> bool:
        """Whether :meth:`apply_batch` runs both directions natively batched: a named
        merge and two layers that can (see :meth:`Recurrent.native_batch`)."""
        return isinstance(self.merge, str) and all(
            hasattr(l, "native_batch") and l.native_batch(key) for l in (self.forward, self.backward)
        )

    def apply_batch(self, params, xs, length=None, state=None, *, key=None, time_major=False):
        """:meth:`apply` over leading batch axes (see :meth:`_BatchMixin.apply_batch`);
        each direction natively batched where both can be (see :meth:`native_batch`; then
        no key is needed: nothing draws from it)."""
        if not self.native_batch(key):
            return super().apply_batch(params, xs, length, state, key=key, time_major=time_major)
        call = lambda layer, p, s, k: layer.apply_batch(  # noqa: E731
            p, xs, length, s, key=k, time_major=time_major)
        return self._run(call, params, state, None)


@dataclasses.dataclass(frozen=True)
class Stacked(_BatchMixin):
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

    layers: Sequence[Any]
    dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.layers, (str, bytes)) or not hasattr(self.layers, "__len__"):
            raise TypeError(f"layers must be a sequence of cells or layers; got {self.layers!r}")
        layers = tuple(_as_layer(l, name=f"layers[{i}]") for i, l in enumerate(self.layers))
        if not layers:
            raise ValueError("layers must hold at least one cell or layer; got none")
        for i in range(1, len(layers)):
            prev = layers[i - 1].output_size
            if prev is not None and layers[i].input_size != prev:
                raise ValueError(
                    f"layers[{i}].input_size must equal layers[{i - 1}].output_size = {prev}; "
                    f"got {layers[i].input_size}"
                )
        _check_rate("dropout", self.dropout)
        object.__setattr__(self, "layers", layers)

    @property
    def input_size(self) -> int:
        return self.layers[0].input_size

    @property
    def output_size(self):
        return self.layers[-1].output_size

    def init(self, key) -> tuple:
        keys = jax.random.split(key, len(self.layers))
        return tuple(layer.init(k) for layer, k in zip(self.layers, keys))

    def initial_state(self, dtype=jnp.float32) -> tuple:
        return tuple(layer.initial_state(dtype) for layer in self.layers)

    def _check(self, params, state) -> None:
        n = len(self.layers)
        if not isinstance(params, (tuple, list)) or len(params) != n:
            raise ValueError(
                f"params must be a tuple of {n} per-layer params; got {type(params).__name__}"
                + (f" of length {len(params)}" if isinstance(params, (tuple, list)) else "")
            )
        if state is not None and (not isinstance(state, (tuple, list)) or len(state) != n):
            raise ValueError(f"state must be a tuple of {n} per-layer states; got {state!r}")

    def native_batch(self, key=None) -> bool:
        """Whether :meth:`apply_batch` runs layer by layer, natively batched: no dropout
        between layers in play, and every layer can (see :meth:`Recurrent.native_batch`)."""
        return (key is None or not self.dropout) and all(
            hasattr(l, "native_batch") and l.native_batch(key) for l in self.layers
        )

    def apply_batch(self, params, xs, length=None, state=None, *, key=None, time_major=False):
        """:meth:`apply` over leading batch axes (see :meth:`_BatchMixin.apply_batch`);
        layer by layer, natively batched, where :meth:`native_batch` (then no key is
        needed: nothing draws from it)."""
        if not self.native_batch(key):
            return super().apply_batch(params, xs, length, state, key=key, time_major=time_major)
        call = lambda layer, p, ys, s, k: layer.apply_batch(  # noqa: E731
            p, ys, length, s, key=k, time_major=time_major)
        return self._run(call, params, xs, state, None)

    def apply(self, params, xs, length=None, state=None, *, key=None):
        """Run every layer over ``xs`` ``(T, I)``; returns ``(states, ys of the last layer)``."""
        call = lambda layer, p, ys, s, k: layer.apply(p, ys, length, s, key=k)  # noqa: E731
        return self._run(call, params, xs, state, key)

    def _run(self, call, params, xs, state, key):
        """The layers one after another, ``call(layer, params, ys, state, key)`` running
        one (per example or batched), with dropout between them."""
        n = len(self.layers)
        self._check(params, state)
        keys = [None] * (2 * n) if key is None else list(jax.random.split(key, 2 * n))
        states, ys = [], xs
        for i, layer in enumerate(self.layers):
            s_i = None if state is None else state[i]
            s_i, ys = call(layer, params[i], ys, s_i, keys[2 * i])
            states.append(s_i)
            if i < n - 1:
                ys = dropout(keys[2 * i + 1], ys, self.dropout)
        return tuple(states), ys
