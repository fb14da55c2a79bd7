r"""Encoder-decoder (sequence-to-sequence) models with optional attention.

:class:`Seq2Seq` joins an encoder (any rnnjax cell or layer: uni- or bidirectional,
stacked) to a decoder cell run step by step under ``jax.lax.scan``, with source and
target token embeddings and an output projection. It is composed of small pieces:

- the **encoder**: the rnnjax layer, run natively batched by the engine
  (``layer.apply_batch``) over the embedded source;
- a **bridge** from the encoder's final state to the decoder's initial state:
  :class:`ZeroBridge`, :class:`CopyBridge` or :class:`LinearBridge`;
- the **attention** (a module from :mod:`rnnjax.attention`) or, without one, the fixed
  context vector;
- a **decoder step**: :class:`BahdanauDecoder` (also the attention-free RNN-encdec) or
  :class:`LuongDecoder`.

The constructor's strings (``bridge="auto"``, ``wiring="luong"``) only choose pieces.

The class holds the hyperparameters, the parameters' layout, the encoder, the decoder step
and the stepping protocol of :mod:`rnnjax.decoding` (``decode_start``, ``decode_step``);
:func:`build` makes the common configurations, and teacher-forced decoding
(:func:`decode`, :func:`decode_train`, :func:`decode_train_batch`) and the losses
(:func:`token_losses`, :func:`log_prob`, :func:`loss_batch`) are functions that take the
model first.

The decoder, at target step ``t`` (``y_{-1}`` is the begin token ``bos_id``):

.. math::

    c_t &= \mathrm{attend}(s_{t-1}, \text{encoder outputs}) \;\text{(or the fixed } c
          \text{ without attention)} \\
    s_t, h_t &= \mathrm{cell}(s_{t-1}, [E_y y_{t-1}; c_t]) \\
    \text{logits}_t &= W_o^\top [h_t; c_t] + b_o

This is the wiring of Bahdanau et al. (2015) (``wiring="bahdanau"``, the default), with
the attention query the previous decoder output ``h_{t-1}``; the scoring function is any
of :mod:`rnnjax.attention` (additive, or Luong et al.'s ``dot`` and ``general``).
``wiring="luong"`` is the global attention model of Luong et al. (2015) with input
feeding: the query is the current output ``h_t``, and

.. math::

    s_t, h_t &= \mathrm{cell}(s_{t-1}, [E_y y_{t-1}; \tilde h_{t-1}]), \quad
    c_t = \mathrm{attend}(h_t, \cdot), \quad
    \tilde h_t = \tanh(W_c^\top [c_t; h_t]), \quad
    \text{logits}_t = W_o^\top \tilde h_t + b_o

with :math:`\tilde h_0 = 0` (the state is a :class:`LuongState`). Without attention the decoder
sees only the fixed context vector ``c``: the final ``h`` of the encoder's top layer
(both directions concatenated for a bidirectional encoder), fed at every step as in
Cho et al. (2014), the RNN-encdec baseline of Bahdanau et al. The decoder's initial
state is bridged from the encoder's final state (see ``bridge``).

Targets hold the output tokens followed by the end token ``eos_id``; ``tgt_len`` counts
the end token. Positions ``t >= tgt_len`` are padding: they are left out of the loss, and
since the decoder is causal they never change a real position's output or gradient.

Training modes, all one function (:func:`decode`): the token fed at step ``t >= 1`` is
the ground truth ``y_{t-1}`` with probability ``teacher_prob`` (drawn per step and per
example) and the model's own prediction at step ``t-1`` otherwise. ``teacher_prob=1`` is
teacher forcing, ``0`` free running, and a decaying ``teacher_prob = eps_i``
(:mod:`rnnjax.schedules`) scheduled sampling (Bengio et al. 2015). No gradient flows
through the choice of the fed token.

Training with :class:`rnnjax.Trainer` and :func:`rnnjax.fit`: the model exposes
:meth:`Seq2Seq.trainer_loss`, which reads batches ``{"inputs": src (B, S),
"input_length": (B,), "targets": tgt (B, T), "target_length": (B,), "teacher_prob":
scalar}`` (the lengths and ``teacher_prob`` optional); scheduled sampling puts the
schedule's value for the batch's position in ``"teacher_prob"``. The Trainer's optimiser,
clipping, checkpoints and logs then serve seq2seq like every other model.
:func:`make_train_step` is kept as a thin step for scripts that drive their own loop.

Shapes: ``S`` source length, ``T`` target length, ``B`` batch, ``V`` vocabulary size,
``E`` embedding size, ``H`` decoder hidden size, ``C`` context size.

References:
  Sutskever, Vinyals & Le (2014). Sequence to sequence learning with neural networks.
  Cho et al. (2014). Learning phrase representations using RNN encoder-decoder for
  statistical machine translation.
  Bahdanau, Cho & Bengio (2015). Neural machine translation by jointly learning to
  align and translate.
  Luong, Pham & Manning (2015). Effective approaches to attention-based neural machine
  translation.
  Bengio, Vinyals, Jaitly & Shazeer (2015). Scheduled sampling for sequence prediction
  with recurrent neural networks.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any, NamedTuple, Optional

import jax
import jax.numpy as jnp
import optax

from rnnjax import attention as attn_lib
from rnnjax import cells as cells_lib
from rnnjax import checks
from rnnjax import initializers as inits
from rnnjax import layers as layers_lib
from rnnjax._repr import short_repr

__all__ = [
    "Seq2Seq",
    "build",
    "decode",
    "decode_train",
    "decode_train_batch",
    "token_losses",
    "log_prob",
    "loss_batch",
    "Memory",
    "LuongState",
    "ZeroBridge",
    "CopyBridge",
    "LinearBridge",
    "BahdanauDecoder",
    "LuongDecoder",
    "make_train_step",
]


class Memory(NamedTuple):
    """What the decoder reads from the encoder for one source sequence (leading batch
    axes ``B`` when batched).

    Attributes:
      values: ``(S, K)`` encoder outputs (zero past the source length).
      keys: attention's precomputed keys (``None`` without attention).
      mask: ``(S,)`` bool, True at real source positions.
      context: ``(C,)`` the fixed context vector (used without attention).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.seq2seq import build
      >>> model = build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4,
      ...               attention="additive")
      >>> memory, state = model.encode(model.init(jax.random.key(0)), jnp.array([3, 4, 0]), 2)
      >>> memory.values.shape, memory.mask.tolist()         # (S, C), (S,)
      ((3, 4), [True, True, False])
    """

    values: jax.Array
    keys: Any
    mask: jax.Array
    context: jax.Array


class LuongState(NamedTuple):
    """Decoder state with Luong et al.'s input feeding: the cell's state and the previous
    attentional vector ``h~_{t-1}`` of shape ``(H,)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.seq2seq import build
      >>> model = build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4,
      ...               attention="general", wiring="luong")
      >>> memory, state = model.encode(model.init(jax.random.key(0)), jnp.array([3, 4, 0]), 2)
      >>> type(state).__name__, state.attentional.shape     # (H,): fed to the next step
      ('LuongState', (4,))
    """

    cell: Any
    attentional: jax.Array


def _top_states(layer, state) -> list:
    """The final cell states of the encoder's top layer (both directions when bidirectional)."""
    if isinstance(layer, layers_lib.Stacked):
        return _top_states(layer.layers[-1], state[-1])
    if isinstance(layer, layers_lib.Bidirectional):
        return _top_states(layer.forward, state.forward) + _top_states(
            layer.backward, state.backward
        )
    return [state]


def _flat(tree, batch_ndim: int = 0) -> jax.Array:
    """Every leaf's entries, concatenated per example: ``(*B, D)``."""
    leaves = jax.tree_util.tree_leaves(tree)
    batch = jnp.shape(leaves[0])[:batch_ndim]
    return jnp.concatenate([jnp.reshape(a, batch + (-1,)) for a in leaves], axis=-1)


def _is_cell(obj) -> bool:
    return hasattr(obj, "step") and hasattr(obj, "init") and hasattr(obj, "initial_state")


def _check_tokens(name, tokens, ndim, vocab=None):
    if not hasattr(tokens, "ndim") or not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise TypeError(
            f"{name} must be an integer token array; got "
            f"{getattr(tokens, 'dtype', type(tokens).__name__)}"
        )
    if tokens.ndim != ndim:
        axis = "S" if name.startswith("src") else "T"
        shape = f"(B, {axis})" if ndim == 2 else f"({axis},)"
        raise ValueError(f"{name} must have shape {shape}; got shape {tokens.shape}")
    if vocab is not None:  # concrete ids are range-checked; traced ones masked by callers
        checks.token_ids(name, tokens, vocab)


def _check_target(tgt, ndim, vocab):
    """Target tokens ``(T,)`` or ``(B, T)`` with ``T >= 1``."""
    _check_tokens("tgt", tgt, ndim, vocab)
    if tgt.shape[-1] == 0:
        what = "(shape (T,) with T >= 1)" if ndim == 1 else "per row (shape (B, T) with T >= 1)"
        raise ValueError(f"tgt must hold at least one token {what}; got shape {tgt.shape}")


def _check_feeding(teacher_prob, key, feed) -> None:
    """Check the training-mode arguments of :func:`decode`."""
    if feed not in ("argmax", "sample"):
        raise ValueError(f"feed must be 'argmax' or 'sample'; got {feed!r}")
    concrete = not isinstance(teacher_prob, jax.core.Tracer)
    if concrete:
        p = float(teacher_prob)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"teacher_prob must be in [0, 1]; got {p}")
    needs_key = (not concrete or 0.0 < p < 1.0) or (feed == "sample" and (not concrete or p < 1.0))
    if needs_key and key is None:
        raise ValueError(
            "key is required when teacher_prob is not a concrete 0 or 1 or when "
            f"feed='sample'; got key=None with teacher_prob={teacher_prob!r}"
        )


# --------------------------------------------------------------------------- bridges


@dataclasses.dataclass(frozen=True)
class ZeroBridge:
    """The decoder starts from its zero state; the encoder's final state is not used.

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.seq2seq import ZeroBridge
      >>> bridge = ZeroBridge(rj.GRU(3, 4))
      >>> bridge.init(None), bridge(None, None, batch_shape=(2,)).h.shape    # (B, H)
      ({}, (2, 4))
    """

    decoder: Any

    def init(self, key) -> dict:
        return {}

    def __call__(self, params, tops, batch_shape=(), dtype=jnp.float32):
        s = self.decoder.initial_state(dtype)
        return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch_shape + a.shape), s)


@dataclasses.dataclass(frozen=True)
class CopyBridge:
    """The decoder starts from the encoder's top-layer final state as it is (same state
    structure and sizes, one direction).

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.seq2seq import CopyBridge
      >>> top = rj.GRU(3, 4).initial_state()._replace(h=jnp.ones(4))   # encoder's final state
      >>> CopyBridge(rj.GRU(3, 4))({}, [top]).h.tolist()
      [1.0, 1.0, 1.0, 1.0]
    """

    decoder: Any

    def init(self, key) -> dict:
        return {}

    def __call__(self, params, tops, batch_shape=(), dtype=jnp.float32):
        return tops[0]


@dataclasses.dataclass(frozen=True)
class LinearBridge:
    """A learned affine map from every final-state vector of the encoder's top layer
    (``D`` entries, concatenated) to every decoder state field.

    Params: ``{"w": [(D, size)] per field, "b": [(size,)] per field}``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.seq2seq import LinearBridge
      >>> bridge = LinearBridge(rj.GRU(3, 4), in_size=6)
      >>> params = bridge.init(jax.random.key(0))
      >>> [w.shape for w in params["w"]], bridge(params, [jnp.ones(6)]).h.shape
      ([(6, 4)], (4,))
    """

    decoder: Any
    in_size: int

    def init(self, key) -> dict:
        leaves = jax.tree_util.tree_leaves(self.decoder.initial_state())
        ks = jax.random.split(key, len(leaves))
        return {
            "w": [inits.glorot_uniform(k, (self.in_size, a.shape[0])) for k, a in zip(ks, leaves)],
            "b": [jnp.zeros(a.shape) for a in leaves],
        }

    def __call__(self, params, tops, batch_shape=(), dtype=jnp.float32):
        summary = _flat(tops, len(batch_shape))
        _, treedef = jax.tree_util.tree_flatten(self.decoder.initial_state(dtype))
        lift = lambda b: jnp.reshape(b, (1,) * len(batch_shape) + b.shape)
        return jax.tree_util.tree_unflatten(
            treedef, [summary @ w + lift(b) for w, b in zip(params["w"], params["b"])]
        )


# --------------------------------------------------------------------------- decoder steps


@dataclasses.dataclass(frozen=True)
class BahdanauDecoder:
    """Bahdanau et al.'s decoder step (attention queried with the previous output
    ``h_{t-1}``) or, with ``attention=None``, Cho et al.'s decoder fed the fixed context.

    Params read: ``"decoder"`` (the cell's), ``"attention"``, ``"out": {"w": (H + C, V),
    "b": (V,)}``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.seq2seq import BahdanauDecoder, Memory
      >>> cell = rj.GRU(3 + 2, 4)                              # input: embedding + context
      >>> dec = BahdanauDecoder(cell)                          # no attention: fixed context
      >>> params = {"decoder": cell.init(jax.random.key(0)),
      ...           **dec.init_output(jax.random.key(1), context_size=2, vocab=6)}
      >>> memory = Memory(values=jnp.zeros((3, 2)), keys=None, mask=jnp.ones(3, bool),
      ...                 context=jnp.ones(2))
      >>> state, logits, weights = dec.step(params, cell.initial_state(), jnp.ones(3), memory)
      >>> logits.shape, weights                                # (V,)
      ((6,), None)
    """

    cell: Any
    attention: Any = None

    def feed_size(self, context_size: int) -> int:
        return context_size

    def init_output(self, key, context_size: int, vocab: int) -> dict:
        H = self.cell.output_size
        return {
            "out": {
                "w": inits.glorot_uniform(key, (H + context_size, vocab)),
                "b": jnp.zeros((vocab,)),
            }
        }

    def initial(self, state, dtype=jnp.float32):
        return state

    def step(self, params, state, emb, memory: Memory):
        """One step on one example: ``(state, logits (V,), weights (S,) or None)``."""
        if self.attention is None:
            ctx, weights = memory.context, None
        else:
            ctx, weights = self.attention.attend(
                params["attention"], state.h, memory.keys, memory.values, memory.mask
            )
        state, h = self.cell.step(params["decoder"], state, jnp.concatenate([emb, ctx]))
        logits = jnp.concatenate([h, ctx]) @ params["out"]["w"] + params["out"]["b"]
        return state, logits, weights


@dataclasses.dataclass(frozen=True)
class LuongDecoder:
    """Luong et al.'s global attention with input feeding (query: the current output
    ``h_t``). State: :class:`LuongState`.

    Params read: ``"decoder"``, ``"attention"``, ``"combine": {"w": (C + H, H)}``, ``"out":
    {"w": (H, V), "b": (V,)}``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.seq2seq import build
      >>> model = build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4,
      ...               attention="general", wiring="luong")
      >>> params = model.init(jax.random.key(0))
      >>> memory, state = model.encode(params, jnp.array([3, 4, 0]), 2)
      >>> dec = model.decoder_piece                            # a LuongDecoder
      >>> state, logits, weights = dec.step(params, state, params["tgt_embed"][1], memory)
      >>> type(state).__name__, logits.shape, weights.shape, float(weights[2])  # (V,), (S,)
      ('LuongState', (6,), (3,), 0.0)
    """

    cell: Any
    attention: Any

    def feed_size(self, context_size: int) -> int:
        return self.cell.output_size

    def init_output(self, key, context_size: int, vocab: int) -> dict:
        H = self.cell.output_size
        k_c, k_o = jax.random.split(key)
        return {
            "combine": {"w": inits.glorot_uniform(k_c, (context_size + H, H))},
            "out": {"w": inits.glorot_uniform(k_o, (H, vocab)), "b": jnp.zeros((vocab,))},
        }

    def initial(self, state, dtype=jnp.float32):
        batch = jnp.shape(jax.tree_util.tree_leaves(state)[0])[:-1]
        return LuongState(state, jnp.zeros(batch + (self.cell.output_size,), dtype))

    def step(self, params, state, emb, memory: Memory):
        """One step on one example: ``(state, logits (V,), weights (S,))``."""
        cell_state, h = self.cell.step(
            params["decoder"], state.cell, jnp.concatenate([emb, state.attentional])
        )
        ctx, weights = self.attention.attend(
            params["attention"], h, memory.keys, memory.values, memory.mask
        )
        att = jnp.tanh(jnp.concatenate([ctx, h]) @ params["combine"]["w"])
        logits = att @ params["out"]["w"] + params["out"]["b"]
        return LuongState(cell_state, att), logits, weights


# --------------------------------------------------------------------------- building


def build(
    src_vocab: int,
    tgt_vocab: int,
    embed_size: int,
    hidden_size: int,
    cell: str = "gru",
    attention: Optional[str] = None,
    bidirectional: bool = False,
    num_layers: int = 1,
    **kwargs,
) -> "Seq2Seq":
    """A :class:`Seq2Seq` from sizes: the same cell type for encoder and decoder.

    Args:
      src_vocab, tgt_vocab, embed_size: as in :class:`Seq2Seq`.
      hidden_size: ``H`` of every encoder layer (per direction) and of the decoder.
      cell: ``"gru"``, ``"lstm"`` or ``"rnn"``.
      attention: ``None``, ``"additive"``, ``"dot"`` or ``"general"``.
      bidirectional: bidirectional encoder layers (concatenated outputs).
      num_layers: encoder layers.
      **kwargs: ``bridge``, ``bos_id``, ``eos_id``, ``pad_id``, ``wiring``.

    Returns:
      A :class:`Seq2Seq`.

    Example:
      >>> from rnnjax import seq2seq
      >>> model = seq2seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4,
      ...                       attention="dot", num_layers=2)
      >>> model.context_size, model.decoder.input_size       # C, E + C
      (4, 7)
    """
    makers = {"gru": cells_lib.GRU, "lstm": cells_lib.LSTM, "rnn": cells_lib.SimpleRNN}
    if cell not in makers:
        raise ValueError(f"cell must be one of {sorted(makers)}; got {cell!r}")
    for name, value in (
        ("num_layers", num_layers),
        ("embed_size", embed_size),
        ("hidden_size", hidden_size),
    ):
        checks.integer(name, value, 1)
    make = makers[cell]
    layers, size = [], embed_size
    for _ in range(num_layers):
        c = make(size, hidden_size)
        layers.append(layers_lib.Bidirectional(c) if bidirectional else c)
        size = 2 * hidden_size if bidirectional else hidden_size
    encoder = layers[0] if num_layers == 1 else layers_lib.Stacked(layers)
    encoder = layers_lib._as_layer(encoder, name="encoder")
    attentions = {
        "additive": attn_lib.AdditiveAttention,
        "dot": attn_lib.DotAttention,
        "general": attn_lib.GeneralAttention,
    }
    if attention is not None and attention not in attentions:
        raise ValueError(
            f"attention must be None, 'additive', 'dot' or 'general'; got {attention!r}"
        )
    attn = attentions[attention](hidden_size, size) if attention else None
    if attn is not None:
        ctx = size
    else:
        ctx = sum(s.h.shape[0] for s in _top_states(encoder, encoder.initial_state()))
    if kwargs.get("wiring") == "luong":
        ctx = hidden_size  # input feeding of the attentional vector
    decoder = make(embed_size + ctx, hidden_size)
    return Seq2Seq(encoder, decoder, src_vocab, tgt_vocab, embed_size, attn, **kwargs)


def _check_attention(attention, encoder, decoder) -> None:
    if encoder.output_size is None:
        raise ValueError(
            "attention needs an encoder with a known output_size "
            "(a Bidirectional with a callable merge has none)"
        )
    for what, want, size in (
        ("key_size must be the encoder's output_size", encoder.output_size, attention.key_size),
        ("query_size must be the decoder's state size", decoder.state_size, attention.query_size),
    ):
        if size != want:
            raise ValueError(f"attention.{what} {want}; got {size}")


def _bridge_mode(mode, model) -> str:
    """The bridge ``mode`` resolved (``"auto"``: ``"copy"`` when it fits) and checked."""
    if mode not in ("auto", "copy", "linear", "zero"):
        raise ValueError(f"bridge must be 'auto', 'copy', 'linear' or 'zero'; got {mode!r}")
    tops, dec = model._enc_tops(), model.decoder.initial_state()
    shapes = lambda tree: jax.tree_util.tree_map(jnp.shape, tree)
    fits = (
        len(tops) == 1
        and jax.tree_util.tree_structure(tops[0]) == jax.tree_util.tree_structure(dec)
        and shapes(tops[0]) == shapes(dec)
    )
    if mode == "auto":
        mode = "copy" if fits else "linear"
    if mode == "copy" and not fits:
        raise ValueError(
            "bridge='copy' needs the encoder's top-layer final state to have the "
            f"decoder's state structure and sizes {shapes(dec)}; got {shapes(tops)}"
        )
    return mode


def _length_mask(length, B: int, T: int) -> jax.Array:
    """``(B, T)`` bool, True before each row's length (everywhere without lengths)."""
    if length is None:
        return jnp.ones((B, T), bool)
    return jnp.arange(T)[None, :] < length[:, None]


# --------------------------------------------------------------------------- teacher forcing


def decode(model, params, memory: Memory, state, tgt, *, teacher_prob=1.0, key=None, feed="argmax"):
    """Run the decoder over ``T = len(tgt)`` steps with teacher forcing, free running or
    scheduled sampling.

    At step 0 the decoder reads ``bos_id``; at step ``t >= 1`` it reads ``tgt[t-1]`` with
    probability ``teacher_prob`` and its own prediction of step ``t-1`` otherwise (one
    Bernoulli draw per step).

    Args:
      model: the :class:`Seq2Seq`.
      params, memory, state: its parameters and :meth:`Seq2Seq.encode`'s output.
      tgt: ``(T,)`` integer target tokens.
      teacher_prob: probability of feeding the ground truth; 1 (teacher forcing, the
        default, needs no key), 0 (free running, no key needed) or anything in between
        (needs ``key``). May be traced (a schedule's value inside ``jit``).
      key: PRNG key for the draws (and for ``feed="sample"``).
      feed: the model's own prediction is its ``"argmax"`` (default) or a ``"sample"``
        from its softmax.

    Returns:
      ``(logits (T, V), weights (T, S) or None, fed (T,))``: the logits at every step,
      the attention weights, and the tokens that were fed in.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import seq2seq
      >>> model = seq2seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> params = model.init(jax.random.key(0))
      >>> memory, state = model.encode(params, jnp.array([3, 4]))
      >>> logits, _, fed = seq2seq.decode(model, params, memory, state, jnp.array([5, 2]))
      >>> logits.shape, fed.tolist()                     # bos_id, then the truth
      ((2, 6), [1, 5])
    """
    checks.model_params("params", model, params)
    key = checks.key("key", key, optional=True)
    _check_target(tgt, 1, model.tgt_vocab)
    _check_feeding(teacher_prob, key, feed)
    T = tgt.shape[0]
    if not checks.is_concrete(tgt):  # traced ids outside the vocabulary are fed as pad_id
        tgt = jnp.where(checks.valid_tokens(tgt, model.tgt_vocab), tgt, model.pad_id)
    p = None if isinstance(teacher_prob, jax.core.Tracer) else float(teacher_prob)
    gt_prev = jnp.concatenate([jnp.full((1,), model.bos_id, tgt.dtype), tgt[:-1]])
    if p in (0.0, 1.0):
        use_gt = jnp.full((T,), p == 1.0)
    else:
        k_coin, key = jax.random.split(key)
        use_gt = jax.random.bernoulli(k_coin, teacher_prob, (T,))
    sample_keys = jax.random.split(key, T) if feed == "sample" and key is not None else None

    def body(carry, inp):
        s, own = carry
        gt, coin, k = inp
        tok = jnp.where(coin, gt, own)
        s, logits, w = model.step(params, s, tok, memory)
        if feed == "argmax" or k is None:
            nxt = jnp.argmax(logits).astype(tgt.dtype)
        else:
            nxt = jax.random.categorical(k, logits).astype(tgt.dtype)
        return (s, nxt), (logits, w, tok)

    init = (state, jnp.asarray(model.bos_id, tgt.dtype))
    _, (logits, weights, fed) = jax.lax.scan(body, init, (gt_prev, use_gt, sample_keys))
    return logits, weights, fed


def decode_train(
    model, params, src, src_len, tgt, tgt_len=None, *, teacher_prob=1.0, key=None, feed="argmax"
):
    """:meth:`Seq2Seq.encode` then :func:`decode` for one example.

    ``key`` (when given) is split between the encoder's dropout and the decoder's draws.
    ``tgt_len`` is accepted for symmetry and checked; the padding needs no special
    treatment in the decoder (it is causal), only in the loss.

    Args:
      model: the :class:`Seq2Seq`.
      params: its parameters.
      src: ``(S,)`` integer source tokens; src_len: optional integer scalar.
      tgt: ``(T,)`` integer target tokens with ``T >= 1`` (an empty target is a
        ``ValueError``: there is nothing to decode).
      tgt_len: optional integer scalar in ``[0, T]``.
      teacher_prob, key, feed: as in :func:`decode`.

    Returns:
      ``(logits (T, V), weights (T, S) or None)``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> model = rj.seq2seq.build(6, 6, embed_size=3, hidden_size=4, cell="lstm")
      >>> src, tgt = jnp.array([3, 4]), jnp.array([5, 2])
      >>> logits, _ = rj.seq2seq.decode_train(model, model.init(jax.random.key(0)), src, 2, tgt)
      >>> logits.shape                                   # (T, V)
      (2, 6)
    """
    checks.model_params("params", model, params)
    key = checks.key("key", key, optional=True)
    _check_target(tgt, 1, model.tgt_vocab)
    checks.lengths("tgt_len", tgt_len, tgt.shape[0], ())
    _check_feeding(teacher_prob, key, feed)
    k_enc, k_dec = (None, None) if key is None else jax.random.split(key)
    memory, state = model.encode(params, src, src_len, key=k_enc)
    logits, weights, _ = decode(
        model, params, memory, state, tgt, teacher_prob=teacher_prob, key=k_dec, feed=feed
    )
    return logits, weights


def decode_train_batch(
    model, params, src, src_len, tgt, tgt_len=None, *, teacher_prob=1.0, key=None, feed="argmax"
):
    """Encode a batch natively batched, then decode every example (:func:`decode`).

    ``key`` (when given) is split between the encoder's dropout and the decoder's draws
    (one key per example).

    Args:
      model: the :class:`Seq2Seq`.
      params: its parameters.
      src: ``(B, S)``; src_len: optional ``(B,)``; tgt: ``(B, T)``; tgt_len: optional
        ``(B,)``.
      teacher_prob, key, feed: as in :func:`decode`.

    Returns:
      ``(logits (B, T, V), weights (B, T, S) or None)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import seq2seq
      >>> model = seq2seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4,
      ...                       attention="dot")
      >>> p = model.init(jax.random.key(0))
      >>> src, tgt = jnp.array([[3, 4, 5], [4, 5, 0]]), jnp.array([[1, 3, 4], [1, 4, 2]])
      >>> logits, w = seq2seq.decode_train_batch(model, p, src, jnp.array([3, 2]), tgt)
      >>> logits.shape, w.shape                              # (B, T, V), (B, T, S)
      ((2, 3, 6), (2, 3, 3))
    """
    checks.model_params("params", model, params)
    key = checks.key("key", key, optional=True)
    _check_tokens("src", src, 2, model.src_vocab)
    _check_target(tgt, 2, model.tgt_vocab)
    B = src.shape[0]
    if tgt.shape[0] != B:
        raise ValueError(f"tgt must have batch size {B}; got shape {tgt.shape}")
    checks.lengths("tgt_len", tgt_len, tgt.shape[1], (B,))
    _check_feeding(teacher_prob, key, feed)
    k_enc, k_dec = (None, None) if key is None else jax.random.split(key)
    memory, state = model.encode_batch(params, src, src_len, key=k_enc)
    keys = None if k_dec is None else jax.random.split(k_dec, B)
    fn = lambda m, s, t, k: decode(
        model, params, m, s, t, teacher_prob=teacher_prob, key=k, feed=feed
    )[:2]
    return jax.vmap(fn, in_axes=(0, 0, 0, None if keys is None else 0))(memory, state, tgt, keys)


# --------------------------------------------------------------------------- losses


def token_losses(
    model, params, src, src_len, tgt, tgt_len, *, teacher_prob=1.0, key=None, feed="argmax"
):
    """Per-position cross-entropy ``(T,)`` of one example (zero at ``t >= tgt_len``) and
    the mask.

    A concrete ``tgt_len`` outside ``[0, T]`` or target token outside ``[0, tgt_vocab)``
    raises; traced out-of-range tokens are left out of the mask (zero loss, not counted).

    Args:
      model, params, src, src_len, tgt: as in :func:`decode_train`.
      tgt_len: integer scalar in ``[0, T]``.
      teacher_prob, key, feed: as in :func:`decode`.

    Returns:
      ``(ce (T,), mask (T,))``.

    Example:
      >>> import jax.numpy as jnp
      >>> from jax.random import key
      >>> from rnnjax.seq2seq import build, token_losses
      >>> model = build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> ce, mask = token_losses(model, model.init(key(0)), jnp.array([3, 4]), 2,
      ...                         jnp.array([5, 2, 0]), 2)
      >>> mask.tolist(), float(ce[2])
      ([True, True, False], 0.0)
    """
    if tgt_len is None:
        raise ValueError("tgt_len must be an integer scalar in [0, T]; got None")
    logits, _ = decode_train(
        model, params, src, src_len, tgt, tgt_len, teacher_prob=teacher_prob, key=key, feed=feed
    )
    return _masked_ce(model, logits, tgt, jnp.arange(tgt.shape[0]) < tgt_len)


def log_prob(model, params, src, src_len, tgt, tgt_len):
    """``log p(tgt[:tgt_len] | src)`` under the model (teacher forcing), a scalar.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> model = rj.seq2seq.build(6, 6, embed_size=3, hidden_size=4, attention="dot")
      >>> lp = rj.seq2seq.log_prob(model, model.init(jax.random.key(0)), jnp.array([3, 4]), 2,
      ...                          jnp.array([5, 2]), 2)
      >>> bool(lp < 0)                                   # a log-probability
      True
    """
    ce, _ = token_losses(model, params, src, src_len, tgt, tgt_len)
    return -jnp.sum(ce)


def _masked_ce(model, logits, tgt, mask):
    """The cross-entropy at every target position, zero where ``mask`` (and, for traced
    targets, the vocabulary) leaves a position out; and that mask."""
    if not checks.is_concrete(tgt):  # traced ids outside the vocabulary: not counted
        mask = mask & checks.valid_tokens(tgt, model.tgt_vocab)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, tgt)
    return jnp.where(mask, ce, 0.0), mask


def _batch_loss(model, params, src, src_len, tgt, tgt_len, teacher_prob, key, feed):
    """``(mean cross-entropy per real token, (logits (B, T, V), mask (B, T)))``; the
    arguments are checked by :func:`decode_train_batch` (the Trainer's raw uint32 key
    data too)."""
    logits, _ = decode_train_batch(
        model, params, src, src_len, tgt, tgt_len, teacher_prob=teacher_prob, key=key, feed=feed
    )
    ce, mask = _masked_ce(model, logits, tgt, _length_mask(tgt_len, *tgt.shape))
    return jnp.sum(ce) / jnp.maximum(jnp.sum(mask), 1), (logits, mask)


def loss_batch(
    model, params, src, src_len, tgt, tgt_len, *, teacher_prob=1.0, key=None, feed="argmax"
):
    """Mean cross-entropy per real target token over a batch.

    Args:
      model: the :class:`Seq2Seq`.
      params: its parameters.
      src: ``(B, S)``; src_len: ``(B,)``; tgt: ``(B, T)``; tgt_len: ``(B,)``.
      teacher_prob, feed: as in :func:`decode`; key: split between the encoder's dropout
        and one key per example for the decoder's draws.

    Returns:
      A scalar: the summed cross-entropy over all real target tokens divided by their
      number (padding excluded).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import seq2seq
      >>> model = seq2seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> params = model.init(jax.random.key(0))
      >>> loss = seq2seq.loss_batch(model, params, jnp.array([[3, 4]]), jnp.array([2]),
      ...                           jnp.array([[5, 2]]), jnp.array([2]))
      >>> loss.shape
      ()
    """
    return _batch_loss(model, params, src, src_len, tgt, tgt_len, teacher_prob, key, feed)[0]


# --------------------------------------------------------------------------- the model


def _deprecated(fn):
    """The method that stays one release for the module function ``fn``: it warns and
    calls ``fn`` with the model first (``build``: with the class left out)."""
    name = fn.__name__
    model_first = name != "build"

    def method(self, *args, **kwargs):
        warnings.warn(
            f"Seq2Seq.{name} is deprecated and will be removed in the next release; use "
            f"rnnjax.seq2seq.{name}({'model, ' if model_first else ''}...)",
            DeprecationWarning,
            stacklevel=2,
        )
        return fn(self, *args, **kwargs) if model_first else fn(*args, **kwargs)

    method.__name__, method.__qualname__ = name, f"Seq2Seq.{name}"
    method.__doc__ = f"Deprecated: :func:`rnnjax.seq2seq.{name}` does this."
    return method


@dataclasses.dataclass(frozen=True)
class Seq2Seq:
    """An RNN encoder-decoder with optional attention: its hyperparameters, its
    parameters, the encoder, the decoder step and the stepping protocol of
    :mod:`rnnjax.decoding`.

    :func:`build` makes the common configurations; teacher-forced decoding and the
    losses are the module's functions (:func:`decode`, :func:`decode_train`,
    :func:`decode_train_batch`, :func:`token_losses`, :func:`log_prob`,
    :func:`loss_batch`), which take the model first.

    Params: ``{"src_embed": (V_src, E_src), "tgt_embed": (V_tgt, E), "encoder": ...,
    "decoder": ..., "bridge": {...}, "attention": {...}, "out": {"w": (H + C, V_tgt),
    "b": (V_tgt,)}}``.

    Args:
      encoder: a cell (run forwards) or layer (:class:`rnnjax.Recurrent`,
        :class:`rnnjax.Bidirectional`, :class:`rnnjax.Stacked`); its ``input_size`` is
        the source embedding size.
      decoder: a cell; its ``input_size`` must be ``embed_size + C``, with ``C`` the
        encoder's output size with attention, else the fixed context size (see
        :attr:`context_size`). :func:`build` computes this for you.
      src_vocab: ``V_src``.
      tgt_vocab: ``V_tgt``.
      embed_size: ``E``, the target embedding size.
      attention: ``None`` (fixed context) or a module from :mod:`rnnjax.attention` whose
        ``query_size`` is the decoder's state size and ``key_size`` the encoder's output
        size.
      bridge: how the decoder's initial state comes from the encoder's final state:
        ``"linear"`` (:class:`LinearBridge`), ``"copy"`` (:class:`CopyBridge`; needs the
        same structure and sizes), ``"zero"`` (:class:`ZeroBridge`), or ``"auto"``
        (default: ``"copy"`` when it fits, else ``"linear"``).
      bos_id, eos_id, pad_id: the begin, end and padding tokens of the target vocabulary.
      wiring: ``"bahdanau"`` (default, :class:`BahdanauDecoder`) or ``"luong"``
        (:class:`LuongDecoder`; needs attention; the decoder's ``input_size`` is then
        ``embed_size + H``, and the params get ``"combine": {"w": (C + H, H)}`` and
        ``"out": {"w": (H, V_tgt), ...}``).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import seq2seq
      >>> model = seq2seq.build(src_vocab=7, tgt_vocab=7, embed_size=4, hidden_size=8,
      ...                       attention="additive", bidirectional=True)
      >>> params = model.init(jax.random.key(0))
      >>> src = jnp.array([3, 4, 5, 0]); tgt = jnp.array([5, 4, 3, 2])
      >>> logits, weights = seq2seq.decode_train(model, params, src, 3, tgt, 4)
      >>> logits.shape, weights.shape
      ((4, 7), (4, 4))
    """

    encoder: Any
    decoder: Any
    src_vocab: int
    tgt_vocab: int
    embed_size: int
    attention: Any = None
    bridge: str = "auto"
    bos_id: int = 1
    eos_id: int = 2
    pad_id: int = 0
    wiring: str = "bahdanau"

    __repr__ = short_repr

    def __post_init__(self):
        enc = layers_lib._as_layer(self.encoder, name="encoder")
        object.__setattr__(self, "encoder", enc)
        if not _is_cell(self.decoder):
            raise TypeError(f"decoder must be an rnnjax cell; got {self.decoder!r}")
        for name in ("src_vocab", "tgt_vocab", "embed_size"):
            checks.integer(name, getattr(self, name), 1)
        for name in ("bos_id", "eos_id", "pad_id"):
            v = checks.integer(name, getattr(self, name), 0)
            if v >= self.tgt_vocab:
                raise ValueError(f"{name} must be < tgt_vocab={self.tgt_vocab}; got {v}")
        if self.attention is not None:
            _check_attention(self.attention, enc, self.decoder)
        if self.wiring not in ("bahdanau", "luong"):
            raise ValueError(f"wiring must be 'bahdanau' or 'luong'; got {self.wiring!r}")
        if self.wiring == "luong" and self.attention is None:
            raise ValueError("wiring='luong' needs an attention module; got attention=None")
        expected = self.embed_size + self.feed_size
        if self.decoder.input_size != expected:
            what = "context size" if self.wiring == "bahdanau" else "decoder output size"
            raise ValueError(
                f"decoder.input_size must be embed_size + {what} = {self.embed_size} + "
                f"{self.feed_size} = {expected}; got {self.decoder.input_size}"
            )
        object.__setattr__(self, "bridge", _bridge_mode(self.bridge, self))

    # ------------------------------------------------------------------ pieces

    @property
    def bridge_piece(self):
        """The bridge the ``bridge`` string chose (:class:`ZeroBridge`, :class:`CopyBridge`
        or :class:`LinearBridge`)."""
        if self.bridge == "zero":
            return ZeroBridge(self.decoder)
        if self.bridge == "copy":
            return CopyBridge(self.decoder)
        return LinearBridge(self.decoder, int(_flat(self._enc_tops()).shape[0]))

    @property
    def decoder_piece(self):
        """The decoder step the ``wiring`` string chose (:class:`BahdanauDecoder` or
        :class:`LuongDecoder`)."""
        if self.wiring == "luong":
            return LuongDecoder(self.decoder, self.attention)
        return BahdanauDecoder(self.decoder, self.attention)

    def _enc_tops(self):
        return _top_states(self.encoder, self.encoder.initial_state())

    @property
    def context_size(self) -> int:
        """``C``: the encoder's output size with attention, else the fixed context size."""
        if self.attention is not None:
            return self.encoder.output_size
        return sum(s.h.shape[0] for s in self._enc_tops())

    @property
    def feed_size(self) -> int:
        """What the decoder reads besides the embedding, ``C`` (Bahdanau) or ``H`` (Luong)."""
        return self.context_size if self.wiring == "bahdanau" else self.decoder.output_size

    @property
    def src_embed_size(self) -> int:
        return self.encoder.input_size

    def init(self, key) -> dict:
        """All parameters (see the class docstring)."""
        k = jax.random.split(checks.key("key", key), 7)
        params = {
            "src_embed": jax.random.normal(k[0], (self.src_vocab, self.src_embed_size)),
            "tgt_embed": jax.random.normal(k[1], (self.tgt_vocab, self.embed_size)),
            "encoder": self.encoder.init(k[2]),
            "decoder": self.decoder.init(k[3]),
            "attention": {} if self.attention is None else self.attention.init(k[4]),
            "bridge": self.bridge_piece.init(k[6]),
        }
        params.update(self.decoder_piece.init_output(k[5], self.context_size, self.tgt_vocab))
        return params

    # ------------------------------------------------------------------ encoder

    def encode_batch(self, params, src, src_len=None, *, key=None):
        """Run the encoder over a batch of sources, natively batched (one engine scan).

        Args:
          params: :meth:`init`'s parameters.
          src: ``(B, S)`` integer tokens.
          src_len: optional ``(B,)`` lengths; positions ``j >= src_len`` are padding.
          key: optional PRNG key for the encoder's dropout (split per example by the layer).

        Returns:
          ``(memory, state)``: the :class:`Memory` the decoder reads and the decoder's
          initial state, both with leading ``B`` axes.
        """
        checks.model_params("params", self, params)
        key = checks.key("key", key, optional=True)
        _check_tokens("src", src, 2, self.src_vocab)
        B, S = src.shape
        checks.lengths("src_len", src_len, S, (B,))
        xs = params["src_embed"][src]
        if not checks.is_concrete(src):  # traced ids outside the vocabulary: zero rows
            xs = jnp.where(checks.valid_tokens(src, self.src_vocab)[..., None], xs, 0.0)
        enc_state, outs = self.encoder.apply_batch(params["encoder"], xs, src_len, key=key)
        tops = _top_states(self.encoder, enc_state)
        context = jnp.concatenate([s.h for s in tops], axis=-1)
        state = self.bridge_piece(params["bridge"], tops, (B,), outs.dtype)
        state = self.decoder_piece.initial(state, outs.dtype)
        mask = _length_mask(src_len, B, S)
        keys = None
        if self.attention is not None:
            keys = jax.vmap(self.attention.precompute, in_axes=(None, 0))(params["attention"], outs)
        return Memory(values=outs, keys=keys, mask=mask, context=context), state

    def encode(self, params, src, src_len=None, *, key=None):
        """Run the encoder over one source sequence: :meth:`encode_batch` on a batch of one.

        Args:
          params: :meth:`init`'s parameters.
          src: ``(S,)`` integer tokens.
          src_len: optional integer scalar; positions ``j >= src_len`` are padding.
          key: optional PRNG key for the encoder's dropout.

        Returns:
          ``(memory, state)``: the :class:`Memory` the decoder reads and the decoder's
          initial state (bridged from the encoder's final state).
        """
        _check_tokens("src", src, 1, self.src_vocab)
        checks.lengths("src_len", src_len, src.shape[0], ())
        n = None if src_len is None else jnp.reshape(src_len, (1,))
        memory, state = self.encode_batch(params, src[None], n, key=key)
        return jax.tree_util.tree_map(lambda a: a[0], (memory, state))

    # ------------------------------------------------------------------ decoder

    def step(self, params, state, token, memory: Memory):
        """One decoder step on one example.

        Args:
          params: the model's parameters.
          state: the decoder state after the previous step.
          token: integer scalar, the previous target token (``bos_id`` at the start).
          memory: :meth:`encode`'s memory.

        Returns:
          ``(state, logits (V,), weights (S,) or None)``: the new state, the scores of
          the next token and the attention weights (``None`` without attention).
        """
        return self.decoder_piece.step(params, state, params["tgt_embed"][token], memory)

    def decode_start(self, params, src, src_len=None):
        """Encode a batch of sources and give the first target token's logits (the
        stepping protocol of :mod:`rnnjax.decoding`).

        Args:
          params: the model's parameters.
          src: ``(B, S)`` integer tokens.
          src_len: optional ``(B,)`` source lengths.

        Returns:
          ``((state, memory), logits (B, V))``: the decoder state after reading
          ``bos_id`` and the batched :class:`Memory`, and the scores of the first token.
        """
        memory, state = self.encode_batch(params, src, src_len)
        B = src.shape[0]
        return self.decode_step(params, (state, memory), jnp.full((B,), self.bos_id, jnp.int32))

    def decode_step(self, params, carry, token):
        """Feed the tokens ``(B,)`` just chosen: ``((state, memory), logits (B, V))``
        (the stepping protocol of :mod:`rnnjax.decoding`)."""
        state, memory = carry
        state, logits, _ = jax.vmap(self.step, in_axes=(None, 0, 0, 0))(
            params, state, token, memory
        )
        return (state, memory), logits

    def trainer_loss(self, params, batch: dict, key=None):
        """The loss that :class:`rnnjax.Trainer` minimises (teacher forcing or scheduled
        sampling).

        Args:
          params: the model's parameters.
          batch: ``{"inputs": src (B, S), "targets": tgt (B, T), "input_length": (B,)?,
            "target_length": (B,)?, "teacher_prob": scalar?}``. ``teacher_prob`` (default
            1, teacher forcing) is the probability of feeding the ground truth; a
            schedule's value for the batch (:func:`rnnjax.schedules.sampling_schedule`)
            gives scheduled sampling. Without ``key`` (evaluation) it is teacher forcing.
          key: PRNG key for the draws and the encoder's dropout.

        Returns:
          ``(loss, (logits (B, T, V), mask (B, T)))``.

        Example:
          >>> import jax, jax.numpy as jnp, rnnjax as rj
          >>> model = rj.seq2seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
          >>> trainer = rj.Trainer(model)
          >>> state = trainer.init(jax.random.key(0))
          >>> batch = {"inputs": jnp.array([[3, 4, 5]]), "targets": jnp.array([[5, 4, 2]]),
          ...          "teacher_prob": 0.5}
          >>> state, m = trainer.train_step(state, batch)
          >>> int(state.step)
          1
        """
        if not isinstance(batch, dict) or "inputs" not in batch or "targets" not in batch:
            got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
            raise ValueError(
                "batch must be a dict with 'inputs' (B, S), 'targets' (B, T) and optional "
                f"'input_length', 'target_length', 'teacher_prob'; got {got}"
            )
        tp = 1.0 if key is None else batch.get("teacher_prob", 1.0)
        src, src_len = batch["inputs"], batch.get("input_length")
        tgt, tgt_len = batch["targets"], batch.get("target_length")
        return _batch_loss(self, params, src, src_len, tgt, tgt_len, tp, key, "argmax")

    # ------------------------------------------------------------------ deprecated

    build = classmethod(_deprecated(build))
    decode = _deprecated(decode)
    decode_train = _deprecated(decode_train)
    decode_train_batch = _deprecated(decode_train_batch)
    token_losses = _deprecated(token_losses)
    log_prob = _deprecated(log_prob)
    loss_batch = _deprecated(loss_batch)


def make_train_step(model: Seq2Seq, optimizer, schedule=None, feed: str = "argmax"):
    """One jitted training step of a :class:`Seq2Seq`, with the training mode set by a
    schedule of the teacher-forcing probability.

    A thin step for scripts with their own loop; :class:`rnnjax.Trainer` and
    :func:`rnnjax.fit` train a ``Seq2Seq`` through :meth:`Seq2Seq.trainer_loss` with
    checkpoints, logs and clipping (put ``schedule(position)`` in the batch's
    ``"teacher_prob"`` for scheduled sampling).

    Args:
      model: the model.
      optimizer: an optax ``GradientTransformation``, e.g.
        ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))``.
      schedule: ``step -> eps`` (see :func:`rnnjax.schedules.sampling_schedule`);
        ``None`` is teacher forcing.
      feed: ``"argmax"`` or ``"sample"`` (see :func:`decode`).

    Returns:
      ``step_fn(params, opt_state, step, batch, key) -> (params, opt_state, loss, eps)``
      where ``batch = (src, src_len, tgt, tgt_len)``, ``step`` is the integer training
      step that the schedule reads, and ``key`` drives the per-step, per-example draws
      (and the encoder's dropout, if it has any).

    Example:
      >>> import jax, jax.numpy as jnp, optax
      >>> from rnnjax.seq2seq import build, make_train_step
      >>> from rnnjax.schedules import sampling_schedule
      >>> model = build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> params = model.init(jax.random.key(0))
      >>> opt = optax.adam(1e-2)
      >>> step_fn = make_train_step(model, opt, sampling_schedule("constant", value=1.0))
      >>> batch = (jnp.array([[3, 4, 0]]), jnp.array([2]), jnp.array([[4, 3, 2]]), jnp.array([3]))
      >>> params, opt_state, loss, eps = step_fn(params, opt.init(params), 0, batch,
      ...                                        jax.random.key(1))
      >>> bool(jnp.isfinite(loss)), float(eps)
      (True, 1.0)
    """

    @jax.jit
    def step_fn(params, opt_state, step, batch, key):
        src, src_len, tgt, tgt_len = batch
        eps = jnp.asarray(1.0) if schedule is None else jnp.asarray(schedule(step), jnp.float32)
        tp = 1.0 if schedule is None else eps

        def loss_fn(p):
            return loss_batch(
                model, p, src, src_len, tgt, tgt_len, teacher_prob=tp, key=key, feed=feed
            )

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss, eps

    return step_fn
