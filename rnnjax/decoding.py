"""Decoding a :class:`rnnjax.seq2seq.Seq2Seq`: greedy and beam search.

Both are jitted with fixed shapes (``max_len`` steps of one ``jax.lax.scan``, the beam a
fixed axis of width ``K``) and batched: they take ``src`` of shape ``(B, S)`` and
``src_len`` of shape ``(B,)`` and ``vmap`` over the batch. A hypothesis ends at the end
token ``eos_id`` (which it includes and which counts in its length); positions after it
hold ``pad_id``. A hypothesis that has not ended after ``max_len`` tokens is cut there
with length ``max_len``.

Beam search keeps the ``K`` best prefixes by summed log-probability: every step extends
each unfinished beam by every token, keeps finished beams as they are (one continuation
at no cost), and keeps the ``K`` best of these ``K x V`` candidates. The final beams are
ranked by the length-normalised score of Wu et al. (2016)::

    score(Y) = log p(Y | X) / lp(Y),   lp(Y) = ((5 + |Y|) / 6) ** alpha

``alpha = 0`` is the plain log-probability. With ``K = 1`` beam search is greedy
decoding; with ``K`` at least the number of candidates at every step it is exhaustive.

Shapes: ``B`` batch, ``S`` source length, ``L`` = ``max_len``, ``K`` beam width.

References:
  Sutskever, Vinyals & Le (2014), section 3.1 (beam search for seq2seq).
  Wu et al. (2016). Google's neural machine translation system, section 7 (length
  normalisation).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import checks

__all__ = ["Hypotheses", "greedy_decode", "beam_search", "length_penalty"]


class Hypotheses(NamedTuple):
    """Decoded sequences.

    Attributes:
      tokens: ``(B, L)`` (greedy) or ``(B, K, L)`` (beam, best first) integer tokens,
        ``pad_id`` after the end token.
      lengths: ``(B,)`` or ``(B, K)``: number of tokens including the end token.
      scores: ``(B,)`` or ``(B, K)``: the length-normalised score (beam) or the summed
        log-probability (greedy).
      log_probs: ``(B,)`` or ``(B, K)``: the summed log-probability.

    Example:
      What :func:`greedy_decode` and :func:`beam_search` return, e.g. for ``B = 1``:

      >>> import jax.numpy as jnp
      >>> from rnnjax.decoding import Hypotheses
      >>> hyp = Hypotheses(tokens=jnp.array([[4, 3, 2, 0]]), lengths=jnp.array([3]),
      ...                  scores=jnp.array([-1.5]), log_probs=jnp.array([-1.5]))
      >>> hyp._fields
      ('tokens', 'lengths', 'scores', 'log_probs')
      >>> hyp.tokens[0, : int(hyp.lengths[0])].tolist()      # (B, L) up to the length
      [4, 3, 2]
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array
    log_probs: jax.Array


def length_penalty(lengths, alpha: float):
    """Wu et al.'s (2016) length penalty ``((5 + |Y|) / 6) ** alpha`` (1 for ``alpha=0``).

    Args:
      lengths: hypothesis lengths ``|Y|``, any shape (e.g. ``(B, K)`` for ``K`` beams).
      alpha: the exponent; 0 turns the penalty off.

    Returns:
      Floats of the shape of ``lengths``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.decoding import length_penalty
      >>> length_penalty(jnp.array([1, 7]), 1.0).round(3).tolist()
      [1.0, 2.0]
    """
    return ((5.0 + lengths.astype(jnp.float32)) / 6.0) ** alpha


def _check(model, src, src_len, max_len, name="max_len"):
    if not hasattr(model, "encode") or not hasattr(model, "step"):
        raise TypeError(f"model must be an rnnjax Seq2Seq; got {type(model).__name__}")
    if not hasattr(src, "ndim") or src.ndim != 2 or not jnp.issubdtype(src.dtype, jnp.integer):
        raise ValueError(
            f"src must be integer tokens of shape (B, S); got "
            f"{getattr(src, 'shape', type(src).__name__)} {getattr(src, 'dtype', '')}"
        )
    if src_len is not None and (
        jnp.shape(src_len) != src.shape[:1]
        or not jnp.issubdtype(jnp.result_type(src_len), jnp.integer)
    ):
        raise ValueError(
            f"src_len must be integers of shape ({src.shape[0]},); got shape "
            f"{jnp.shape(src_len)} and dtype {jnp.result_type(src_len)}"
        )
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise ValueError(f"{name} must be an int >= 1; got {max_len!r}")
    # concrete tokens and lengths are range-checked before the vmap over the batch
    if getattr(model, "src_vocab", None) is not None:
        checks.token_ids("src", src, model.src_vocab)
    checks.lengths("src_len", src_len, src.shape[1], src.shape[:1])


def _lengths_or_full(src, src_len):
    if src_len is None:
        return jnp.full(src.shape[:1], src.shape[1], jnp.int32)
    return src_len


@functools.partial(jax.jit, static_argnames=("model", "max_len"))
def _greedy(model, params, src, src_len, max_len):
    def one(s, n):
        memory, state = model.encode(params, s, n)

        def body(carry, t):
            state, tok, done, logp, length = carry
            state, logits, _ = model.step(params, state, tok, memory)
            lp = jax.nn.log_softmax(logits)
            nxt = jnp.argmax(logits).astype(jnp.int32)
            out = jnp.where(done, model.pad_id, nxt)
            logp = logp + jnp.where(done, 0.0, lp[nxt])
            length = jnp.where(done, length, t + 1)
            done = done | (nxt == model.eos_id)
            return (state, nxt, done, logp, length), out

        init = (state, jnp.asarray(model.bos_id, jnp.int32), jnp.asarray(False),
                jnp.asarray(0.0), jnp.asarray(0, jnp.int32))
        (_, _, _, logp, length), toks = jax.lax.scan(body, init, jnp.arange(max_len))
        return toks, length, logp

    toks, lengths, logp = jax.vmap(one)(src, src_len)
    return Hypotheses(toks, lengths, logp, logp)


def greedy_decode(model, params, src, src_len=None, max_len: int = 32) -> Hypotheses:
    """Greedy decoding: the arg-max token at every step, fed back.

    Args:
      model: a :class:`rnnjax.seq2seq.Seq2Seq` (static under ``jit``).
      params: its parameters.
      src: ``(B, S)`` integer source tokens.
      src_len: optional ``(B,)`` source lengths.
      max_len: ``L``, the most target tokens generated (static).

    Returns:
      :class:`Hypotheses` with ``tokens (B, L)``, ``lengths (B,)``, and ``scores`` =
      ``log_probs`` ``(B,)``, the summed log-probability of the tokens up to the end.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.seq2seq import Seq2Seq
      >>> from rnnjax.decoding import greedy_decode
      >>> model = Seq2Seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> params = model.init(jax.random.key(0))
      >>> greedy_decode(model, params, jnp.array([[3, 4, 0]]), jnp.array([2]), 5).tokens.shape
      (1, 5)
    """
    _check(model, src, src_len, max_len)
    return _greedy(model, params, src, _lengths_or_full(src, src_len), max_len)


@functools.partial(jax.jit, static_argnames=("model", "beam_width", "max_len", "alpha"))
def _beam(model, params, src, src_len, beam_width, max_len, alpha):
    K, V = beam_width, model.tgt_vocab
    neg_inf = jnp.asarray(-jnp.inf, jnp.float32)
    # a finished beam's only continuation: pad_id, at no cost
    finished_row = jnp.full((V,), neg_inf).at[model.pad_id].set(0.0)
    step_k = jax.vmap(model.step, in_axes=(None, 0, 0, None))

    def one(s, n):
        memory, state = model.encode(params, s, n)
        states = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (K,) + a.shape), state)
        logp = jnp.full((K,), neg_inf).at[0].set(0.0)  # one live beam: no duplicates
        tokens = jnp.full((K, max_len), model.pad_id, jnp.int32)
        init = (states, jnp.full((K,), model.bos_id, jnp.int32), jnp.zeros((K,), bool),
                logp, jnp.zeros((K,), jnp.int32), tokens)

        def body(carry, t):
            states, last, done, logp, length, tokens = carry
            new_states, logits, _ = step_k(params, states, last, memory)
            lp = jax.nn.log_softmax(logits, axis=-1)
            lp = jnp.where(done[:, None], finished_row[None, :], lp)
            cand = (logp[:, None] + lp).reshape(-1)
            top, idx = jax.lax.top_k(cand, K)
            parent, tok = idx // V, (idx % V).astype(jnp.int32)
            states = jax.tree_util.tree_map(lambda a: a[parent], new_states)
            was_done = done[parent]
            out = jnp.where(was_done, model.pad_id, tok)
            tokens = tokens[parent].at[:, t].set(out)
            length = jnp.where(was_done, length[parent], t + 1)
            done = was_done | (tok == model.eos_id)
            return (states, out, done, top, length, tokens), None

        (_, _, _, logp, length, tokens), _ = jax.lax.scan(body, init, jnp.arange(max_len))
        score = logp / length_penalty(length, alpha)
        order = jnp.argsort(-score)  # stable: ties keep the search order
        return tokens[order], length[order], score[order], logp[order]

    return Hypotheses(*jax.vmap(one)(src, src_len))


def beam_search(model, params, src, src_len=None, beam_width: int = 4, max_len: int = 32,
                alpha: float = 0.0) -> Hypotheses:
    """Beam search with length normalisation, an end token and a maximum length.

    Args:
      model: a :class:`rnnjax.seq2seq.Seq2Seq` (static under ``jit``).
      params: its parameters.
      src: ``(B, S)`` integer source tokens.
      src_len: optional ``(B,)`` source lengths.
      beam_width: ``K`` (static).
      max_len: ``L``, the most target tokens per hypothesis (static).
      alpha: length-normalisation exponent (static; 0 = none; Wu et al. use 0.6-0.7).

    Returns:
      :class:`Hypotheses` with ``tokens (B, K, L)``, ``lengths``, ``scores`` (normalised)
      and ``log_probs`` ``(B, K)``, best first. Beams that were never filled (``K`` larger
      than the number of hypotheses) have score ``-inf``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.seq2seq import Seq2Seq
      >>> from rnnjax.decoding import beam_search
      >>> model = Seq2Seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> params = model.init(jax.random.key(0))
      >>> beam_search(model, params, jnp.array([[3, 4, 0]]), jnp.array([2]), 3, 5).tokens.shape
      (1, 3, 5)
    """
    _check(model, src, src_len, max_len)
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width < 1:
        raise ValueError(f"beam_width must be an int >= 1; got {beam_width!r}")
    alpha = checks.number("alpha", alpha, 0.0)
    return _beam(model, params, src, _lengths_or_full(src, src_len), beam_width, max_len,
                 float(alpha))
