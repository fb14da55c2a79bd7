"""Generation for every model: greedy, sampled (temperature, top-k, top-p) and beam search.

One decoding loop serves every model that exposes the stepping protocol:

- ``model.decode_start(params, prompt, prompt_len) -> (carry, logits)``: read a batch of
  prompts ``(B, P)`` (a language model's first tokens, or a :class:`~rnnjax.Seq2Seq`'s
  source sentence) and return the carry (any pytree of arrays with a leading ``B`` axis)
  and the logits ``(B, V)`` of the first generated token;
- ``model.decode_step(params, carry, token) -> (carry, logits)``: feed the tokens ``(B,)``
  just chosen and return the logits ``(B, V)`` of the next ones.
- optionally ``model.min_prompt_len``: the shortest prompt it accepts (1 for a language
  model, which predicts from the last prompt token; 0, the default, for a ``Seq2Seq``).

:class:`rnnjax.SequenceModel` (token inputs, per-step head; the prompt runs through the
engine natively batched, single steps through the cell's ``step``) and
:class:`rnnjax.Seq2Seq` (the prompt is the source; generation starts at ``bos_id``)
implement it; a user's own model can too.

Every function is jitted with fixed shapes (``max_len`` steps of one ``jax.lax.scan``, the
beam a fixed axis of width ``K``) and batched. A generated sequence ends at the end token
``eos_id`` (which it includes and which counts in its length); positions after it hold
``pad_id``. A sequence that has not ended after ``max_len`` tokens is cut there with length
``max_len``. With ``eos_id=None`` (the default for a :class:`~rnnjax.SequenceModel`) every
sequence runs to ``max_len``.

The log-probabilities returned are always those of the model, ``log_softmax(logits)``,
whatever temperature or filter drew the tokens: they are what teacher forcing the model on
the generated tokens recomputes.

Sampling draws token ``t`` of every sequence from ``softmax(logits / temperature)``
restricted to the ``top_k`` most likely tokens and to the smallest set of most likely tokens
whose probability reaches ``top_p`` (nucleus sampling, Holtzman et al. 2020), renormalised.
``temperature=0`` is greedy decoding; ``top_k=1`` is greedy decoding; ``top_p=1`` and
``top_k=None`` leave the distribution as it is (the same draws as plain sampling with the
same key).

Beam search keeps the ``K`` best prefixes by summed log-probability: every step extends
each unfinished beam by every token, keeps finished beams as they are (one continuation
at no cost), and keeps the ``K`` best of these ``K x V`` candidates. The final beams are
ranked by the length-normalised score of Wu et al. (2016)::

    score(Y) = log p(Y | X) / lp(Y),   lp(Y) = ((5 + |Y|) / 6) ** alpha

``alpha = 0`` is the plain log-probability. With ``K = 1`` beam search is greedy
decoding; with ``K`` at least the number of candidates at every step it is exhaustive.

Shapes: ``B`` batch, ``P`` prompt (or source) length, ``L`` = ``max_len``, ``K`` beam
width, ``V`` vocabulary size.

References:
  Sutskever, Vinyals & Le (2014), section 3.1 (beam search for seq2seq).
  Wu et al. (2016). Google's neural machine translation system, section 7 (length
  normalisation).
  Fan, Lewis & Dauphin (2018). Hierarchical neural story generation. (top-k sampling)
  Holtzman, Buys, Du, Forbes & Choi (2020). The curious case of neural text degeneration.
  (nucleus, top-p, sampling)
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp

from rnnjax import checks

__all__ = [
    "Hypotheses",
    "generate",
    "greedy_decode",
    "sample",
    "beam_search",
    "length_penalty",
    "filter_logits",
]


class Hypotheses(NamedTuple):
    """Decoded sequences.

    Attributes:
      tokens: ``(B, L)`` (greedy, sampled) or ``(B, K, L)`` (beam, best first) integer
        tokens, ``pad_id`` after the end token.
      lengths: ``(B,)`` or ``(B, K)``: number of tokens including the end token.
      scores: ``(B,)`` or ``(B, K)``: the length-normalised score (beam) or the summed
        log-probability (greedy, sampled).
      log_probs: ``(B,)`` or ``(B, K)``: the summed log-probability under the model.
      token_log_probs: ``(B, L)`` or ``(B, K, L)``: each token's log-probability under the
        model, zero after the end token.

    Example:
      What :func:`greedy_decode` and :func:`beam_search` return, e.g. for ``B = 1``:

      >>> import jax.numpy as jnp
      >>> from rnnjax.decoding import Hypotheses
      >>> hyp = Hypotheses(tokens=jnp.array([[4, 3, 2, 0]]), lengths=jnp.array([3]),
      ...                  scores=jnp.array([-1.5]), log_probs=jnp.array([-1.5]))
      >>> hyp.tokens[0, : int(hyp.lengths[0])].tolist()      # (B, L) up to the length
      [4, 3, 2]
    """

    tokens: jax.Array
    lengths: jax.Array
    scores: jax.Array
    log_probs: jax.Array
    token_log_probs: Optional[jax.Array] = None


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


# --------------------------------------------------------------------------- checks


def _check_model(model, params):
    """The model has the stepping protocol and ``params`` are its own (the keys of its
    ``init``: the params of another model name the model and the missing keys)."""
    if not (hasattr(model, "decode_start") and hasattr(model, "decode_step")):
        raise TypeError(
            "model must expose decode_start and decode_step (an rnnjax SequenceModel with "
            f"token inputs, a Seq2Seq, or a model of your own); got {type(model).__name__}"
        )
    checks.model_params("params", model, params)


def _check_input_tokens(model, name, tokens):
    """Concrete input tokens outside the model's input vocabulary raise (before any vmap)."""
    vocab = getattr(model, "src_vocab", None) or getattr(model, "vocab_size", None)
    if isinstance(vocab, int):
        checks.token_ids(name, tokens, vocab)


def _from_list(name, value, what):
    """A (nested) list as an array; anything else as it is."""
    try:
        return jnp.asarray(value) if isinstance(value, (list, tuple)) else value
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} must be {what}; got a ragged list ({e})") from None


def _check_prompt(prompt, prompt_len, name="prompt", minimum=0):
    n_name = "src_len" if name == "src" else "prompt_len"
    # nested lists of token ids and lists of lengths (as unroll_batch takes), as arrays
    prompt = _from_list(name, prompt, "integer tokens (B, P)")
    prompt_len = _from_list(n_name, prompt_len, "integers (B,)")
    if (
        not hasattr(prompt, "ndim")
        or prompt.ndim != 2
        or not jnp.issubdtype(prompt.dtype, jnp.integer)
    ):
        raise ValueError(
            f"{name} must be integer tokens of shape (B, {'S' if name == 'src' else 'P'}); got "
            f"{checks.describe(prompt)}"
        )
    B, P = prompt.shape
    if P < 1:
        raise ValueError(f"{name} must hold at least one token per row; got shape {prompt.shape}")
    if prompt_len is None:
        return prompt, jnp.full((B,), P, jnp.int32)
    if jnp.shape(prompt_len) != (B,) or not jnp.issubdtype(
        jnp.result_type(prompt_len), jnp.integer
    ):
        raise ValueError(
            f"{n_name} must be integers of shape ({B},); got shape {jnp.shape(prompt_len)} "
            f"and dtype {jnp.result_type(prompt_len)}"
        )
    prompt_len = checks.lengths(n_name, prompt_len, P, (B,))
    if minimum and checks.is_concrete(prompt_len) and int(prompt_len.min()) < minimum:
        raise ValueError(
            f"{n_name} must be >= {minimum} for this model (it predicts the next token from "
            f"the last one read); got {prompt_len.tolist()}"
        )
    return prompt, prompt_len


def _check_call(model, params, prompt, prompt_len, name, max_len, eos_id, pad_id):
    """The arguments every decoding function takes, checked: ``(prompt, prompt_len,
    max_len, eos_id, pad_id)`` (the lengths filled in, the token ids defaulted)."""
    _check_model(model, params)
    prompt, prompt_len = _check_prompt(
        prompt, prompt_len, name, getattr(model, "min_prompt_len", 0)
    )
    _check_input_tokens(model, name, prompt)
    max_len = checks.integer("max_len", max_len, 1)
    return (prompt, prompt_len, max_len) + _token_ids(model, eos_id, pad_id)


def _token_ids(model, eos_id, pad_id):
    """The model's end and padding tokens unless given (``None``: no end token)."""
    if eos_id is None:
        eos_id = getattr(model, "eos_id", None)
    if pad_id is None:
        pad_id = getattr(model, "pad_id", 0)
    V = _vocab(model)
    if eos_id is not None:
        eos_id = checks.integer("eos_id", eos_id, 0, V - 1)
    pad_id = checks.integer("pad_id", pad_id, 0, V - 1)
    return eos_id, pad_id


def _vocab(model) -> int:
    for name in ("tgt_vocab", "output_size"):
        v = getattr(model, name, None)
        if isinstance(v, int):
            return v
    raise TypeError(f"model must have tgt_vocab or output_size (the vocabulary); got {model!r}")


# --------------------------------------------------------------------------- filters


def filter_logits(
    logits, temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None
):
    """The logits sampling draws from: divided by ``temperature``, then ``-inf`` outside
    the ``top_k`` largest and outside the nucleus of probability ``top_p``.

    The nucleus is the smallest set of most likely tokens whose probability reaches
    ``top_p``: a token is kept when the probability of the tokens more likely than it is
    below ``top_p`` (so the most likely token is always kept). Ties at the ``top_k``-th
    value are all kept. ``top_k=None`` and ``top_p=None`` (or 1) change nothing.

    Args:
      logits: ``(..., V)``.
      temperature: ``> 0``.
      top_k: ``None`` or an int ``>= 1``.
      top_p: ``None`` or a float in ``(0, 1]``.

    Returns:
      ``(..., V)`` logits, ``-inf`` where a token cannot be drawn.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.decoding import filter_logits
      >>> filter_logits(jnp.log(jnp.array([0.5, 0.3, 0.15, 0.05])), top_p=0.8).tolist()[2:]
      [-inf, -inf]
    """
    logits = logits / temperature
    neg = jnp.asarray(-jnp.inf, logits.dtype)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, neg)
    if top_p is not None and top_p < 1.0:
        order = jnp.argsort(-logits, axis=-1)
        sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
        probs = jax.nn.softmax(sorted_logits, axis=-1)
        before = jnp.cumsum(probs, axis=-1) - probs  # probability of the more likely tokens
        keep_sorted = before < top_p
        keep = jnp.take_along_axis(keep_sorted, jnp.argsort(order, axis=-1), axis=-1)
        logits = jnp.where(keep, logits, neg)
    return logits


# --------------------------------------------------------------------------- loops


@functools.partial(
    jax.jit,
    static_argnames=(
        "model",
        "max_len",
        "mode",
        "temperature",
        "top_k",
        "top_p",
        "eos_id",
        "pad_id",
    ),
)
def _generate(
    model, params, prompt, prompt_len, key, max_len, mode, temperature, top_k, top_p, eos_id, pad_id
):
    carry, logits = model.decode_start(params, prompt, prompt_len)
    B = prompt.shape[0]
    keys = jax.random.split(key, max_len)

    def body(c, inp):
        carry, logits, done, logp, length = c
        t, k = inp
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if mode == "greedy":
            nxt = jnp.argmax(logits, axis=-1)
        else:
            nxt = jax.random.categorical(
                k, filter_logits(logits.astype(jnp.float32), temperature, top_k, top_p), axis=-1
            )
        nxt = nxt.astype(jnp.int32)
        tok_lp = jnp.take_along_axis(lp, nxt[:, None], axis=-1)[:, 0]
        out = jnp.where(done, pad_id, nxt)
        tok_lp = jnp.where(done, 0.0, tok_lp)
        length = jnp.where(done, length, t + 1)
        if eos_id is not None:
            done = done | (nxt == eos_id)
        carry, logits = model.decode_step(params, carry, out)
        return (carry, logits, done, logp + tok_lp, length), (out, tok_lp)

    init = (
        carry,
        logits,
        jnp.zeros((B,), bool),
        jnp.zeros((B,), jnp.float32),
        jnp.zeros((B,), jnp.int32),
    )
    (_, _, _, logp, length), (toks, tok_lps) = jax.lax.scan(body, init, (jnp.arange(max_len), keys))
    toks, tok_lps = toks.T, tok_lps.T
    return Hypotheses(toks, length, logp, logp, tok_lps)


def generate(
    model,
    params,
    prompt,
    prompt_len=None,
    *,
    max_len: int = 32,
    key=None,
    temperature: float = 1.0,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    eos_id: Optional[int] = None,
    pad_id: Optional[int] = None,
) -> Hypotheses:
    """Generate ``max_len`` tokens after each prompt: greedy without ``key``, else sampled.

    Args:
      model: a model with the stepping protocol (see the module docstring), static under
        ``jit``: a :class:`rnnjax.SequenceModel` with ``vocab_size`` and a per-step head,
        or a :class:`rnnjax.Seq2Seq`.
      params: its parameters.
      prompt: ``(B, P)`` integer tokens (the source ``(B, S)`` for a ``Seq2Seq``).
      prompt_len: optional ``(B,)`` prompt lengths in ``[1, P]`` (right padding; a list
        of ints is fine).
      max_len: ``L``, the number of tokens generated (static).
      key: PRNG key for sampling; ``None`` is greedy decoding.
      temperature: ``>= 0`` (static); 0 is greedy decoding.
      top_k: ``None`` or an int ``>= 1`` (static).
      top_p: ``None`` or a float in ``(0, 1]`` (static).
      eos_id: the end token; default the model's ``eos_id`` (a ``Seq2Seq``'s) or none.
      pad_id: the token after the end; default the model's ``pad_id`` or 0.

    Returns:
      :class:`Hypotheses` with ``tokens (B, L)``, ``lengths (B,)``, ``scores`` =
      ``log_probs`` ``(B,)`` and ``token_log_probs (B, L)``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> model = rj.SequenceModel(rj.GRU(4, 8), output_size=6, vocab_size=6)
      >>> params = model.init(jax.random.key(0))
      >>> out = rj.generate(model, params, jnp.array([[1, 2, 3]]), max_len=5,
      ...                   key=jax.random.key(1), temperature=0.8, top_p=0.9)
      >>> out.tokens.shape, out.token_log_probs.shape
      ((1, 5), (1, 5))
    """
    prompt, prompt_len, max_len, eos_id, pad_id = _check_call(
        model, params, prompt, prompt_len, "prompt", max_len, eos_id, pad_id
    )
    temperature = checks.number("temperature", temperature, 0.0)
    if top_k is not None:
        top_k = checks.integer("top_k", top_k, 1)
    if top_p is not None:
        top_p = checks.number("top_p", top_p, 0.0, 1.0, min_open=True)
    greedy = key is None or temperature == 0.0 or top_k == 1
    if greedy:
        key = jax.random.key(0)  # unused
        temperature, top_k, top_p = 1.0, None, None
    else:
        key = checks.key("key", key)
    if top_p == 1.0:
        top_p = None
    return _generate(
        model,
        params,
        prompt,
        prompt_len,
        key,
        max_len,
        "greedy" if greedy else "sample",
        temperature,
        top_k,
        top_p,
        eos_id,
        pad_id,
    )


def sample(model, params, prompt, prompt_len=None, *, key, **options) -> Hypotheses:
    """Sampled generation: :func:`generate` with a required ``key``.

    Args:
      model, params, prompt, prompt_len: as in :func:`generate`.
      key: PRNG key of the draws.
      **options: ``max_len``, ``temperature``, ``top_k``, ``top_p``, ``eos_id`` and
        ``pad_id``, as in :func:`generate`.

    Returns:
      :class:`Hypotheses`, as :func:`generate` returns them.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> model = rj.SequenceModel(rj.LSTM(4, 8), output_size=6, vocab_size=6)
      >>> params = model.init(jax.random.key(0))
      >>> rj.sample(model, params, jnp.array([[1], [2]]), key=jax.random.key(1),
      ...           max_len=3, top_k=3).tokens.shape
      (2, 3)
    """
    if key is None:
        raise TypeError("key must be a jax.random.key for sampling; got None")
    return generate(model, params, prompt, prompt_len, key=key, **options)


def greedy_decode(model, params, src, src_len=None, max_len=32, *, eos_id=None, pad_id=None):
    """Greedy decoding: the arg-max token at every step, fed back.

    Args:
      model: a model with the stepping protocol (a :class:`rnnjax.Seq2Seq` or a
        :class:`rnnjax.SequenceModel`; static under ``jit``).
      params: its parameters.
      src: ``(B, S)`` integer source tokens (the prompt for a language model).
      src_len: optional ``(B,)`` source lengths.
      max_len: ``L``, the most tokens generated (static).
      eos_id, pad_id: as in :func:`generate`.

    Returns:
      :class:`Hypotheses` with ``tokens (B, L)``, ``lengths (B,)``, and ``scores`` =
      ``log_probs`` ``(B,)``, the summed log-probability of the tokens up to the end.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax import seq2seq
      >>> from rnnjax.decoding import greedy_decode
      >>> model = seq2seq.build(src_vocab=6, tgt_vocab=6, embed_size=3, hidden_size=4)
      >>> params = model.init(jax.random.key(0))
      >>> greedy_decode(model, params, jnp.array([[3, 4, 0]]), jnp.array([2]), 5).tokens.shape
      (1, 5)
    """
    src, src_len, max_len, eos_id, pad_id = _check_call(
        model, params, src, src_len, "src", max_len, eos_id, pad_id
    )
    return _generate(
        model,
        params,
        src,
        src_len,
        jax.random.key(0),
        max_len,
        "greedy",
        1.0,
        None,
        None,
        eos_id,
        pad_id,
    )


@functools.partial(
    jax.jit, static_argnames=("model", "beam_width", "max_len", "alpha", "eos_id", "pad_id")
)
def _beam(model, params, src, src_len, beam_width, max_len, alpha, eos_id, pad_id):
    K = beam_width
    carry, logits = model.decode_start(params, src, src_len)
    B, V = logits.shape
    neg_inf = jnp.asarray(-jnp.inf, jnp.float32)
    # a finished beam's only continuation: pad_id, at no cost
    finished_row = jnp.full((V,), neg_inf).at[pad_id].set(0.0)
    rep = lambda a: jnp.repeat(a, K, axis=0)  # (B, ...) -> (B * K, ...), beams of b together
    carry = jax.tree_util.tree_map(rep, carry)
    logits = rep(logits)
    logp = jnp.tile(jnp.full((K,), neg_inf).at[0].set(0.0), (B, 1))  # one live beam
    init = (
        carry,
        logits,
        jnp.zeros((B, K), bool),
        logp,
        jnp.zeros((B, K), jnp.int32),
        jnp.full((B, K, max_len), pad_id, jnp.int32),
        jnp.zeros((B, K, max_len)),
    )

    def body(c, t):
        carry, logits, done, logp, length, tokens, tok_lps = c
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1).reshape(B, K, V)
        lp = jnp.where(done[..., None], finished_row[None, None, :], lp)
        cand = (logp[..., None] + lp).reshape(B, K * V)
        top, idx = jax.lax.top_k(cand, K)  # (B, K)
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        pick = lambda a: jnp.take_along_axis(a, parent, axis=1)
        was_done = pick(done)
        out = jnp.where(was_done, pad_id, tok)
        step_lp = jnp.take_along_axis(lp.reshape(B, K * V), idx, axis=1)
        take3 = lambda a: jnp.take_along_axis(a, parent[..., None], axis=1)
        tokens = take3(tokens).at[:, :, t].set(out)
        tok_lps = take3(tok_lps).at[:, :, t].set(jnp.where(was_done, 0.0, step_lp))
        length = jnp.where(was_done, pick(length), t + 1)
        done = was_done if eos_id is None else was_done | (tok == eos_id)
        flat = (parent + K * jnp.arange(B)[:, None]).reshape(-1)
        carry = jax.tree_util.tree_map(lambda a: a[flat], carry)
        carry, logits = model.decode_step(params, carry, out.reshape(-1))
        return (carry, logits, done, top, length, tokens, tok_lps), None

    (_, _, _, logp, length, tokens, tok_lps), _ = jax.lax.scan(body, init, jnp.arange(max_len))
    score = logp / length_penalty(length, alpha)
    order = jnp.argsort(-score, axis=1)  # stable: ties keep the search order
    take = lambda a: jnp.take_along_axis(
        a, order.reshape(order.shape + (1,) * (a.ndim - 2)), axis=1
    )
    return Hypotheses(take(tokens), take(length), take(score), take(logp), take(tok_lps))


def beam_search(
    model,
    params,
    src,
    src_len=None,
    beam_width=4,
    max_len=32,
    alpha=0.0,
    *,
    eos_id=None,
    pad_id=None,
):
    """Beam search with length normalisation, an end token and a maximum length.

    Args:
      model, params, src, src_len: as in :func:`greedy_decode`.
      beam_width: ``K`` (static).
      max_len: ``L``, the most tokens per hypothesis (static).
      alpha: length-normalisation exponent (static; 0 = none; Wu et al. use 0.6-0.7).
      eos_id, pad_id: as in :func:`generate`.

    Returns:
      :class:`Hypotheses` with ``tokens (B, K, L)``, ``lengths``, ``scores`` (normalised)
      and ``log_probs`` ``(B, K)``, ``token_log_probs (B, K, L)``, best first. Beams that
      were never filled (``K`` larger than the number of hypotheses) have score ``-inf``.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> model = rj.seq2seq.build(6, 6, embed_size=3, hidden_size=4, attention="general")
      >>> beams = rj.beam_search(model, model.init(jax.random.key(0)), jnp.array([[3, 4, 0]]),
      ...                        jnp.array([2]), beam_width=3, max_len=5)
      >>> beams.tokens.shape                               # (B, K, L)
      (1, 3, 5)
    """
    src, src_len, max_len, eos_id, pad_id = _check_call(
        model, params, src, src_len, "src", max_len, eos_id, pad_id
    )
    beam_width = checks.integer("beam_width", beam_width, 1)
    alpha = checks.number("alpha", alpha, 0.0)
    return _beam(model, params, src, src_len, beam_width, max_len, alpha, eos_id, pad_id)
