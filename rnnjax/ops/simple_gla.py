"""Simple gated linear attention (fla's ``simple_gla``; Sun et al. 2023's RetNet with a
data-dependent decay): one scalar log-decay ``g`` per head and step,

.. math::

    S_t = e^{g_t} S_{t-1} + k_t v_t^\\top, \\qquad o_t = \\text{scale}\\; S_t^\\top q_t .

Retention is the fixed decay :math:`g_t = \\log \\gamma_h`, :math:`\\gamma_h = 1 - 2^{-5-h}`
for head :math:`h = 0, \\dots, H-1` (:func:`retention_log_decay`).

Layout (time-major): ``q, k`` ``(T, *B, h, dk)``, ``v`` ``(T, *B, h, dv)``, ``g``
``(T, *B, h)`` (log-decays, normally ``<= 0``), state ``S`` ``(*B, h, dk, dv)``, masks
bool ``(T, *B)``; ``scale`` defaults to ``dk ** -0.5``. Public entry points:
:func:`rnnjax.ops.simple_gla`, :func:`rnnjax.ops.retention`.

Example:
  >>> import jax.numpy as jnp
  >>> from rnnjax.ops import OPERATORS
  >>> sg = OPERATORS["simple_gla"]                   # the module
  >>> q = k = jnp.ones((3, 1, 1)); v = jnp.ones((3, 1, 1))    # (T, h, d): no batch axis
  >>> g = jnp.log(jnp.full((3, 1), 0.5))                      # (T, h): decay 1/2
  >>> o, S = sg.chunk(q, k, v, g, state=jnp.zeros((1, 1, 1)), chunk=2)
  >>> o[:, 0, 0].tolist()                                     # 1, 1/2 + 1, 3/4 + 1
  [1.0, 1.5, 1.75]
"""

from __future__ import annotations

import jax.numpy as jnp

import rnnjax.ops._diagonal as dg

__all__ = ["step", "recurrent", "chunk", "retention_log_decay"]


def retention_log_decay(heads: int, dtype=jnp.float32):
    """RetNet's per-head log-decays :math:`\\log(1 - 2^{-5-h})`, ``(heads,)``.

    Example:
      >>> from rnnjax.ops.simple_gla import retention_log_decay
      >>> [round(float(x), 5) for x in retention_log_decay(2)]
      [-0.03175, -0.01575]
    """
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(heads, dtype=dtype))))


def step(state, q, k, v, g, **options):
    """One step: ``q, k`` ``(*B, h, dk)``, ``v`` ``(*B, h, dv)``, ``g`` ``(*B, h)``,
    ``state`` ``(*B, h, dk, dv)`` (keyword ``scale``). Returns ``(state, o)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> S, o = OPERATORS["simple_gla"].step(jnp.full((1, 1, 1), 4.0), jnp.ones((1, 1)),
      ...                                     jnp.ones((1, 1)), jnp.ones((1, 1)),
      ...                                     jnp.log(jnp.full((1,), 0.25)))
      >>> S.ravel().tolist()                          # 4 / 4 + 1
      [2.0]
    """
    return dg.step(state, q, k, v, g, **options)


def recurrent(q, k, v, g, **options):
    """``lax.scan`` of :func:`step` with the masks (keywords ``state`` (required),
    ``reset_state``, ``valid``, ``resets``, ``scale``). Returns ``(o, final_state)``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> x, g = jnp.ones((3, 2, 1, 1)), jnp.zeros((3, 2, 1))       # (T, B, h, d), (T, B, h)
      >>> o, S = OPERATORS["simple_gla"].recurrent(
      ...     x, x, x, g, state=jnp.zeros((2, 1, 1, 1)), reset_state=jnp.ones((2, 1, 1, 1)),
      ...     resets=jnp.array([[False, False], [False, True], [False, False]]))
      >>> S.ravel().tolist()                          # row 1 restarts from 1 at step 1
      [3.0, 3.0]
    """
    return dg.recurrent(q, k, v, g, **options)


def chunk(q, k, v, g, **options):
    """The chunkwise form, equal to :func:`recurrent` (keywords as :func:`recurrent` and
    ``chunk=64``). Returns ``(o, final_state)``.

    Example:
      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.ops import OPERATORS
      >>> q, k, v = jax.random.normal(jax.random.key(0), (3, 9, 2, 4))  # (T, h, d)
      >>> g = jax.nn.log_sigmoid(jax.random.normal(jax.random.key(1), (9, 2)))
      >>> sg, S0 = OPERATORS["simple_gla"], jnp.zeros((2, 4, 4))
      >>> a = sg.chunk(q, k, v, g, state=S0, chunk=4)
      >>> b = sg.recurrent(q, k, v, g, state=S0)
      >>> all(bool(jnp.allclose(x, y, atol=1e-5)) for x, y in zip(a, b))
      True
    """
    return dg.chunk(q, k, v, g, **options)
