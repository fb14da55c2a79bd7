"""Small reusable sequence models: an rnnjax layer with a token embedding and a dense head.

A model is a frozen dataclass of hyperparameters (hashable, so it can be a static
argument of ``jit``) with ``init(key)`` and ``apply(params, xs, length=None, state=None,
*, key=None) -> (state, outputs)`` for ONE sequence, like the layers it wraps, and
``apply_batch`` over leading batch axes.

Shapes: ``T`` time, ``B`` batch, ``I`` input size, ``H`` the layer's output size,
``V`` vocabulary size, ``O`` output size.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax._repr import short_repr as _short_repr
from rnnjax.blocks.residual import step_layer
from rnnjax.layers import _as_layer

__all__ = ["SequenceModel"]

_HEADS = ("per_step", "final")


@dataclasses.dataclass(frozen=True)
class SequenceModel:
    r"""Token embedding (optional) -> recurrent layer -> dense head.

    .. math::

        e_t = E[x_t] \text{ (tokens) or } x_t, \qquad
        (s, h_{1:T}) = \mathrm{layer}(e_{1:T}), \qquad
        y_t = W^\top h_t + b

    With ``head="per_step"`` the head is applied at every step (many-to-many: language
    models, sequence labelling) and outputs are exactly zero at padded steps; with
    ``head="final"`` it is applied once to the layer's output at the last real step,
    ``h_{length-1}`` (many-to-one: classification or regression of a whole sequence).

    Params: ``{"embed": (V, I)`` (only with ``vocab_size``), ``"layer": ...,
    "head": {"w": (H, O), "b": (O,)}}``. State: the layer's state.

    Args:
      layer: an rnnjax layer (``rj.Recurrent``, ``rj.Stacked``, ...) or a cell (wrapped
        in ``rj.Recurrent``).
      output_size: ``O``, the number of classes or regression targets.
      vocab_size: ``V`` for integer token inputs (an embedding of size
        ``layer.input_size`` is learnt); ``None`` for float inputs ``(T, I)``.
      head: ``"per_step"`` or ``"final"``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.blocks import SequenceModel
      >>> model = SequenceModel(rj.LSTM(8, 16), output_size=5, vocab_size=5)
      >>> params = model.init(jax.random.key(0))
      >>> state, logits = model.apply(params, jnp.array([1, 2, 3, 0]), length=3)
      >>> logits.shape
      (4, 5)
    """

    __repr__ = _short_repr
    min_prompt_len = 1  # generation predicts from the last prompt token (not a field)

    layer: Any
    output_size: int
    vocab_size: Optional[int] = None
    head: str = "per_step"

    def __post_init__(self):
        object.__setattr__(self, "layer", _as_layer(self.layer, name="layer"))
        object.__setattr__(self, "output_size", checks.integer("output_size", self.output_size, 1))
        if self.vocab_size is not None:
            object.__setattr__(self, "vocab_size", checks.integer("vocab_size", self.vocab_size, 1))
        if self.head not in _HEADS:
            raise ValueError(f"head must be one of {_HEADS}; got {self.head!r}")
        if self.layer.output_size is None:
            raise ValueError(
                "the layer's output_size must be known (a Bidirectional layer with a callable "
                "merge has none); got None"
            )

    @property
    def input_size(self) -> int:
        """Feature size ``I`` of float inputs (the embedding size with ``vocab_size``)."""
        return self.layer.input_size

    def init(self, key) -> dict:
        """Parameters: ``{"embed"?, "layer", "head": {"w", "b"}}``."""
        k_e, k_l, k_h = jax.random.split(checks.key("key", key), 3)
        params = {}
        if self.vocab_size is not None:
            params["embed"] = jax.random.normal(k_e, (self.vocab_size, self.input_size)) * (
                self.input_size**-0.5
            )
        params["layer"] = self.layer.init(k_l)
        H, O = self.layer.output_size, self.output_size
        params["head"] = {
            "w": inits.glorot_uniform(k_h, (H, O), jnp.float32),
            "b": jnp.zeros((O,), jnp.float32),
        }
        return params

    def initial_state(self, dtype=jnp.float32):
        """The layer's initial state."""
        return self.layer.initial_state(dtype)

    def _check_inputs(self, xs):
        if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
            raise TypeError(f"xs must be an array; got {type(xs).__name__}")
        if self.vocab_size is not None:
            if not jnp.issubdtype(xs.dtype, jnp.integer) or xs.ndim != 1:
                raise ValueError(
                    f"xs must be integer tokens of shape (T,) for a model with vocab_size="
                    f"{self.vocab_size}; got shape {tuple(xs.shape)} and dtype {xs.dtype}"
                )
            checks.token_ids("xs", xs, self.vocab_size)
        else:
            checks.sequence_inputs("xs", xs, self.input_size, batch_ndim=0)

    def _embed(self, params, xs):
        """Token embeddings; traced ids outside ``[0, vocab_size)`` (which cannot be
        checked) get a zero embedding rather than a clamped or wrapped row."""
        e = params["embed"][xs]
        if checks.is_concrete(xs):  # checked by checks.token_ids
            return e
        return jnp.where(
            checks.valid_tokens(xs, self.vocab_size)[..., None], e, jnp.zeros((), e.dtype)
        )

    def apply(self, params: dict, xs, length=None, state=None, *, resets=None, key=None):
        """Run the model over one sequence.

        Args:
          params: from :meth:`init`.
          xs: tokens ``(T,)`` (int, with ``vocab_size``) or features ``(T, I)``. Concrete
            tokens outside ``[0, vocab_size)`` raise; traced ones cannot be checked and
            get a zero embedding.
          length: optional integer scalar true length (see :func:`rnnjax.unroll`).
          state: optional initial state of the layer.
          resets: optional bool ``(T,)`` segment starts (see :func:`rnnjax.unroll`).
          key: optional PRNG key for the layer's dropout.

        Returns:
          ``(state, outputs)``: the layer's final state, and ``(T, O)`` (per step, zero past
          ``length``) or ``(O,)`` (final head).
        """
        checks.model_params("params", self, params)
        self._check_inputs(xs)
        if self.vocab_size is not None:
            xs = self._embed(params, xs)
        kw = {} if resets is None else {"resets": resets}
        state, hs = self.layer.apply(params["layer"], xs, length, state, key=key, **kw)
        return state, self._head(params["head"], hs, length)

    def _head(self, head, hs, length):
        """The dense head on the layer's outputs ``hs`` ``(*B, T, H)`` (no batch axes for
        one example; ``length`` of shape ``B`` or ``None``): at every step, zero past
        ``length``, or once at the last real step."""
        w, b = head["w"], head["b"]
        T = hs.shape[-2]
        if self.head == "final":
            last = (
                jnp.full(hs.shape[:-2], T - 1) if length is None else jnp.clip(length - 1, 0, T - 1)
            )
            h_last = jnp.take_along_axis(hs, jnp.reshape(last, last.shape + (1, 1)), axis=-2)[
                ..., 0, :
            ]
            out = h_last @ w
            return out + b.reshape((1,) * (out.ndim - 1) + b.shape)
        ys = hs @ w
        ys = ys + b.reshape((1,) * (ys.ndim - 1) + b.shape)
        if length is not None:
            steps = jnp.arange(T).reshape((1,) * jnp.ndim(length) + (T,))
            valid = steps < jnp.reshape(length, jnp.shape(length) + (1,))
            ys = jnp.where(valid[..., None], ys, jnp.zeros((), ys.dtype))
        return ys

    def apply_batch(self, params: dict, xs, length=None, state=None, *, resets=None, key=None):
        """:meth:`apply` over one leading batch axis.

        Args:
          xs: ``(B, T)`` tokens or ``(B, T, I)`` features.
          length: optional ``(B,)`` integers.
          state: optional state whose leaves have a leading ``B`` axis.
          resets: optional bool ``(B, T)`` segment starts (packed rows, :func:`rnnjax.pack`).
          key: optional PRNG key, split into one key per example.

        Returns:
          ``(state, outputs)`` with outputs ``(B, T, O)`` or ``(B, O)``.
        """
        checks.model_params("params", self, params)
        if not hasattr(xs, "ndim") or xs.ndim < (2 if self.vocab_size is not None else 3):
            raise ValueError(
                "xs must have a leading batch axis: (B, T) tokens or (B, T, I) features; got "
                f"shape {getattr(xs, 'shape', type(xs).__name__)}"
            )
        if xs.ndim != (2 if self.vocab_size is not None else 3):
            raise ValueError(
                "xs must have one leading batch axis: (B, T) tokens or (B, T, I) features; got "
                f"shape {tuple(xs.shape)}"
            )
        if self.vocab_size is not None:
            if not jnp.issubdtype(xs.dtype, jnp.integer):
                raise ValueError(
                    f"xs must be integer tokens of shape (B, T) for a model with vocab_size="
                    f"{self.vocab_size}; got shape {tuple(xs.shape)} and dtype {xs.dtype}"
                )
            checks.token_ids("xs", xs, self.vocab_size)
            xs = self._embed(params, xs)
        kw = {} if resets is None else {"resets": resets}
        state, hs = self.layer.apply_batch(params["layer"], xs, length, state, key=key, **kw)
        return state, self._head(params["head"], hs, length)

    # ------------------------------------------------------------------ generation

    def _check_generative(self):
        if self.vocab_size is None or self.head != "per_step":
            raise ValueError(
                "generation needs a model with token inputs and a per-step head (vocab_size "
                f"set, head='per_step'); got vocab_size={self.vocab_size!r}, head={self.head!r}"
            )
        if self.output_size > self.vocab_size:
            raise ValueError(
                f"generation feeds the output tokens back: output_size must be <= vocab_size "
                f"= {self.vocab_size}; got {self.output_size}"
            )

    def decode_start(self, params: dict, prompt, prompt_len=None):
        """Read a batch of prompts (the stepping protocol of :mod:`rnnjax.decoding`).

        The prompt runs through the layer natively batched (one engine scan).

        Args:
          params: from :meth:`init`.
          prompt: ``(B, P)`` integer tokens.
          prompt_len: optional ``(B,)`` lengths in ``[1, P]`` (right padding).

        Returns:
          ``(state, logits)``: the layer's state after the last prompt token (leaves
          ``(B, ...)``) and the logits ``(B, O)`` that it predicts for the next token.
        """
        self._check_generative()
        B, P = prompt.shape
        state, logits = self.apply_batch(params, prompt, prompt_len)
        last = jnp.full((B,), P - 1) if prompt_len is None else jnp.clip(prompt_len - 1, 0, P - 1)
        return state, jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0]

    def decode_step(self, params: dict, state, token):
        """Feed one token per sequence (the stepping protocol of :mod:`rnnjax.decoding`).

        The layer steps one position with the state carried (the work of one token
        whatever the prompt's length; see :func:`rnnjax.blocks.step_layer`): any causal
        layer generates, a forward :class:`rnnjax.Recurrent` of any cell, a
        :class:`rnnjax.Stacked` of causal layers, :class:`rnnjax.ResidualBlock` and
        :class:`rnnjax.DeepRecurrent` (the xLSTM and Griffin blocks among them); a
        reverse or bidirectional layer reads the future and cannot (``ValueError``
        naming it).

        Args:
          params: from :meth:`init`.
          state: the layer state, leaves ``(B, ...)``.
          token: ``(B,)`` integer tokens.

        Returns:
          ``(state, logits (B, O))``.
        """
        self._check_generative()
        one = lambda s, x: step_layer(self.layer, params["layer"], s, x, name="layer")
        state, h = jax.vmap(one)(state, params["embed"][token])
        return state, h @ params["head"]["w"] + params["head"]["b"][None, :]
