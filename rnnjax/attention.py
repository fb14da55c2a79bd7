"""Attention over encoder outputs: additive (Bahdanau) and multiplicative (Luong).

An attention module is a frozen dataclass with ``init(key) -> dict`` and a score
function; :meth:`~AdditiveAttention.apply` turns one decoder query and the encoder's outputs into a
context vector and the attention weights, masked over the source padding.

For a decoder loop the part that depends only on the encoder outputs is computed once
with :meth:`~AdditiveAttention.precompute` (for additive attention the product ``W_k k_j`` of every source
position), and every step calls :meth:`~AdditiveAttention.attend` with it.

Shapes: ``S`` source length, ``Q`` query size (the decoder's hidden size), ``K`` key
size (the encoder's output size), ``A`` attention size.

References:
  Bahdanau, Cho & Bengio (2015). Neural machine translation by jointly learning to
  align and translate. ICLR. (additive attention)
  Luong, Pham & Manning (2015). Effective approaches to attention-based neural machine
  translation. EMNLP. (multiplicative attention: ``dot`` and ``general``)
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from rnnjax import checks
from rnnjax import initializers as inits

__all__ = [
    "masked_softmax",
    "source_mask",
    "AdditiveAttention",
    "DotAttention",
    "GeneralAttention",
]


def _check_size(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1; got {value!r}")


def masked_softmax(scores: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Softmax over the last axis that gives exactly zero weight where ``mask`` is False.

    Args:
      scores: ``(..., S)`` unnormalised scores.
      mask: ``None`` or a bool array of the same shape, True at real positions.

    Returns:
      Weights of the shape of ``scores`` that sum to one over the real positions and
      are exactly zero at masked ones; when a row has no real position at all its
      weights are all zero (not NaN), and so is the gradient.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.attention import masked_softmax
      >>> masked_softmax(jnp.zeros(4), jnp.array([True, True, False, False])).tolist()
      [0.5, 0.5, 0.0, 0.0]
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    if jnp.shape(mask) != jnp.shape(scores):
        raise ValueError(
            f"mask must have the shape of scores {jnp.shape(scores)}; got {jnp.shape(mask)}"
        )
    low = jnp.asarray(jnp.finfo(scores.dtype).min, scores.dtype)
    w = jax.nn.softmax(jnp.where(mask, scores, low), axis=-1)
    return jnp.where(mask, w, jnp.zeros((), w.dtype))


def source_mask(length, S: int) -> jax.Array:
    """``(S,)`` bool mask, True at positions ``j < length`` (all True when ``length`` is None).

    Example:
      >>> from rnnjax.attention import source_mask
      >>> source_mask(2, 4).tolist()
      [True, True, False, False]
    """
    if length is None:
        return jnp.ones((S,), bool)
    if not jnp.issubdtype(jnp.result_type(length), jnp.integer) or jnp.ndim(length) != 0:
        raise TypeError(
            f"length must be an integer scalar; got shape {jnp.shape(length)} and dtype "
            f"{jnp.result_type(length)}"
        )
    length = checks.lengths("length", length, S)  # a concrete value outside [0, S] raises
    return jnp.arange(S) < length


class _Attention:
    """Shared :meth:`apply` / :meth:`attend` of the attention modules."""

    query_size: int
    key_size: int

    def _check_keys(self, keys):
        if not hasattr(keys, "ndim") or keys.ndim != 2 or keys.shape[1] != self.key_size:
            raise ValueError(
                f"keys must have shape (S, {self.key_size}) (the encoder outputs of one "
                f"sequence); got {getattr(keys, 'shape', type(keys).__name__)}"
            )

    def _check_query(self, query):
        if not hasattr(query, "ndim") or query.shape != (self.query_size,):
            raise ValueError(
                f"query must have shape ({self.query_size},); got "
                f"{getattr(query, 'shape', type(query).__name__)}"
            )

    def attend(self, params, query, memory, values, mask):
        """One decoder step given :meth:`precompute`'s ``memory``.

        Args:
          params: this module's parameters.
          query: ``(Q,)``.
          memory: ``precompute(params, keys)``.
          values: ``(S, K)`` the vectors averaged into the context (the encoder outputs).
          mask: ``(S,)`` bool, True at real source positions.

        Returns:
          ``(context (K,), weights (S,))``.
        """
        weights = masked_softmax(self.score(params, query, memory), mask)
        return weights @ values, weights

    def apply(self, params, query, keys, length=None):
        """Attend from one query over one source sequence.

        Args:
          params: this module's parameters (``init(key)``).
          query: ``(Q,)`` the decoder state.
          keys: ``(S, K)`` the encoder outputs (also the values).
          length: optional integer scalar, the true source length; positions
            ``j >= length`` get weight exactly zero.

        Returns:
          ``(context (K,), weights (S,))``: ``weights`` sum to one over the real
          positions; ``context = weights @ keys``.
        """
        self._check_query(query)
        self._check_keys(keys)
        mask = source_mask(length, keys.shape[0])
        return self.attend(params, query, self.precompute(params, keys), keys, mask)


@dataclasses.dataclass(frozen=True)
class AdditiveAttention(_Attention):
    r"""Additive (concat / MLP) attention of Bahdanau et al. (2015).

    .. math::

        e_j = v^\top \tanh(W_q^\top q + W_k^\top k_j + b), \qquad
        \alpha = \mathrm{softmax}(e), \qquad c = \textstyle\sum_j \alpha_j k_j

    Params: ``w_q`` ``(Q, A)``, ``w_k`` ``(K, A)``, ``b`` ``(A,)``, ``v`` ``(A,)``.

    Args:
      query_size: ``Q``.
      key_size: ``K``.
      attention_size: ``A`` (default ``Q``).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> attn = rj.attention.AdditiveAttention(query_size=3, key_size=4)
      >>> params = attn.init(jax.random.key(0))
      >>> ctx, w = attn.apply(params, jnp.ones(3), jnp.ones((5, 4)), length=2)
      >>> w.tolist()
      [0.5, 0.5, 0.0, 0.0, 0.0]

    References:
      Bahdanau, Cho & Bengio (2015), section 3.1 and appendix A.1.2.
    """

    query_size: int
    key_size: int
    attention_size: Optional[int] = None

    def __post_init__(self):
        _check_size("query_size", self.query_size)
        _check_size("key_size", self.key_size)
        if self.attention_size is not None:
            _check_size("attention_size", self.attention_size)

    @property
    def size(self) -> int:
        return self.attention_size or self.query_size

    def init(self, key) -> dict:
        k_q, k_k, k_v = jax.random.split(key, 3)
        A = self.size
        return {
            "w_q": inits.glorot_uniform(k_q, (self.query_size, A)),
            "w_k": inits.glorot_uniform(k_k, (self.key_size, A)),
            "b": jnp.zeros((A,)),
            "v": inits.glorot_uniform(k_v, (A, 1))[:, 0],
        }

    def precompute(self, params, keys):
        """``keys @ w_k + b``, shape ``(S, A)``: the query-independent part."""
        return keys @ params["w_k"] + params["b"][None, :]

    def score(self, params, query, memory):
        """Scores ``(S,)`` of one query against the precomputed keys."""
        return jnp.tanh(memory + (query @ params["w_q"])[None, :]) @ params["v"]


@dataclasses.dataclass(frozen=True)
class DotAttention(_Attention):
    r"""Luong et al.'s ``dot`` attention: :math:`e_j = q^\top k_j`.

    No parameters (``init`` returns ``{}``); needs ``query_size == key_size``.

    Args:
      query_size: ``Q``.
      key_size: ``K`` (default ``Q``); must equal ``Q``.

    References:
      Luong, Pham & Manning (2015), section 3.1, equation (8).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.attention import DotAttention
      >>> att = DotAttention(query_size=4)
      >>> params = att.init(jax.random.key(0))
      >>> keys = jnp.ones((5, 4))                          # (S, C): one source of 5 steps
      >>> context, weights = att.apply(params, jnp.ones(4), keys, length=3)
      >>> context.shape, weights.round(3).tolist()
      ((4,), [0.333, 0.333, 0.333, 0.0, 0.0])
    """

    query_size: int
    key_size: Optional[int] = None

    def __post_init__(self):
        _check_size("query_size", self.query_size)
        if self.key_size is None:
            object.__setattr__(self, "key_size", self.query_size)
        _check_size("key_size", self.key_size)
        if self.key_size != self.query_size:
            raise ValueError(
                f"dot attention needs key_size == query_size = {self.query_size}; got "
                f"key_size={self.key_size} (use GeneralAttention or AdditiveAttention)"
            )

    def init(self, key) -> dict:
        return {}

    def precompute(self, params, keys):
        """The keys themselves, ``(S, K)``."""
        return keys

    def score(self, params, query, memory):
        """Scores ``(S,)``: ``memory @ query``."""
        return memory @ query


@dataclasses.dataclass(frozen=True)
class GeneralAttention(_Attention):
    r"""Luong et al.'s ``general`` (bilinear) attention: :math:`e_j = q^\top W k_j`.

    Params: ``w`` ``(Q, K)``.

    Args:
      query_size: ``Q``.
      key_size: ``K``.

    References:
      Luong, Pham & Manning (2015), section 3.1, equation (8).

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.attention import GeneralAttention
      >>> att = GeneralAttention(query_size=4, key_size=6)
      >>> params = att.init(jax.random.key(0))
      >>> params["w"].shape                                # (H, C)
      (4, 6)
      >>> context, weights = att.apply(params, jnp.ones(4), jnp.ones((5, 6)))   # keys (S, C)
      >>> context.shape, weights.shape
      ((6,), (5,))
    """

    query_size: int
    key_size: int

    def __post_init__(self):
        _check_size("query_size", self.query_size)
        _check_size("key_size", self.key_size)

    def init(self, key) -> dict:
        return {"w": inits.glorot_uniform(key, (self.query_size, self.key_size))}

    def precompute(self, params, keys):
        """``keys @ w.T``, shape ``(S, Q)``: the query-independent part."""
        return keys @ params["w"].T

    def score(self, params, query, memory):
        """Scores ``(S,)``: ``memory @ query``."""
        return memory @ query
