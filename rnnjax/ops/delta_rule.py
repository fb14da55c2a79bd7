r"""The delta rule (DeltaNet; Schlag et al. 2021, Yang et al. 2024),

.. math::

    S_t = (I - \beta_t k_t k_t^\top) S_{t-1} + \beta_t k_t v_t^\top,
    \qquad o_t = \text{scale}\; S_t^\top q_t .

Layout (time-major): ``q, k`` ``(T, *B, h, dk)`` (keys normally L2-normalised), ``v``
``(T, *B, h, dv)``, ``beta`` ``(T, *B, h)``, state ``S`` ``(*B, h, dk, dv)``, masks bool
``(T, *B)``; ``scale`` defaults to ``dk ** -0.5``. ``beta`` lies in ``[0, 2]``: with unit
keys the transition's eigenvalue along ``k_t`` is ``1 - beta_t``; ``(0, 1)`` is the
original rule, ``(0, 2)`` allows negative eigenvalues (Grazzi et al. 2025). A concrete
``beta`` outside ``[0, 2]`` raises a ``ValueError`` (a traced one cannot be checked).

The chunk form is the WY / UT representation: the generalised rule's
``transition_chunk`` (``OPERATORS["dplr_delta_rule"]``) with ``a = -beta k``, ``b = k`` and
values ``beta v``. Public entry point: :func:`rnnjax.ops.delta_rule`.

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> delta_rule = OPERATORS["delta_rule"]               # the module
  >>> k = jnp.array([[0.6, 0.8]])                         # (h, dk), a unit key
  >>> S = jnp.zeros((1, 2, 2))
  >>> S, o = delta_rule.step(S, k, k, jnp.array([[1.0, 2.0]]), jnp.ones(1), scale=1.0)
  >>> S, o = delta_rule.step(S, k, k, jnp.array([[5.0, -1.0]]), jnp.ones(1), scale=1.0)
  >>> o.round(4).tolist()                                 # the second write replaced the first
  [[5.0, -1.0]]
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

import rnnjax.ops._common as cm
import rnnjax.ops.dplr as dplr

__all__ = ["step", "recurrent", "chunk"]


def step(state, q, k, v, beta, *, scale=None):
    """One step: ``S += beta k (v - S^T k)^T``, ``o = scale S^T q`` (``q, k`` ``(*B, h, dk)``,
    ``v`` ``(*B, h, dv)``, ``beta`` ``(*B, h)``). Returns ``(state, o)``: the state's dtype,
    and ``o`` ``(*B, h, dv)`` in the inputs'.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x = jnp.ones((2, 3))  # (h, d)
      >>> S, o = OPERATORS["delta_rule"].step(jnp.zeros((2, 3, 3)), x, x, x, jnp.full(2, 0.5))
      >>> o.shape
      (2, 3)
    """
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dt, out = state.dtype, jnp.result_type(q, k, v)
    k, beta = k.astype(dt), beta.astype(dt)[..., None]
    err = v.astype(dt) - jnp.einsum("...i,...iv->...v", k, state)
    state = state + k[..., None] * (beta * err)[..., None, :]
    o = scale * jnp.einsum("...i,...iv->...v", q.astype(dt), state)
    return state, o.astype(out)


def recurrent(q, k, v, beta, *, state, reset_state=None, valid=None, resets=None, scale=None):
    """``lax.scan`` of :func:`step` with the masks. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> x, s0 = jnp.ones((5, 2, 3)), jnp.zeros((2, 3, 3))  # (T, h, d), (h, dk, dv)
      >>> rj.ops.OPERATORS["delta_rule"].recurrent(x, x, x, jnp.full((5, 2), 0.5), state=s0)[0].shape
      (5, 2, 3)
    """
    dplr.check_beta("beta", beta, 2.0)
    f = functools.partial(step, scale=scale)
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return cm.scan(f, (q, k, v, beta), state=state, **masks)


def chunk(q, k, v, beta, *, state, reset_state=None, valid=None, resets=None, chunk=64, scale=None):
    """The chunkwise form, equal to :func:`recurrent`. Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> op, x = rj.ops.OPERATORS["delta_rule"], jnp.ones((5, 2, 3))  # (T, h, d)
      >>> args = (x, x, x, jnp.full((5, 2), 0.5))
      >>> o, S = op.chunk(*args, state=jnp.zeros((2, 3, 3)), chunk=2)
      >>> bool(jnp.allclose(o, op.recurrent(*args, state=jnp.zeros((2, 3, 3)))[0], atol=1e-5))
      True
    """
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    return decayed_chunk(q, k, v, None, beta, state=state, **masks, chunk=chunk, scale=scale)


def decayed_chunk(q, k, v, g, beta, *, state, reset_state, valid, resets, chunk, scale):
    """The chunk form of ``S_t = (I - beta_t k_t k_t^T) diag(exp g_t) S_{t-1} + beta_t k_t
    v_t^T`` (the delta rule, the gated delta rule and KDA), ``g``: ``None``, ``(T, *B, h)``
    or ``(T, *B, h, dk)``. Checks a concrete ``beta``. Returns ``(o, final_state)``."""
    dplr.check_beta("beta", beta, 2.0)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    b = beta[..., None]
    decay = 1.0 if g is None else jnp.exp(g if g.ndim == k.ndim else g[..., None])
    masks = dict(reset_state=reset_state, valid=valid, resets=resets)
    a = -(b * decay) * k
    return dplr.transition_chunk(
        q, k, v * b, a, None, g, state=state, **masks, chunk=chunk, scale=scale
    )
