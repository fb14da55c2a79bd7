"""Decay schedules for scheduled sampling (Bengio et al. 2015).

Scheduled sampling feeds the decoder the ground-truth previous token with probability
``eps_i`` and its own prediction otherwise, where ``eps_i`` decays with the training
step ``i``. Bengio et al. (2015, section 2.4) give three decays:

- linear: ``eps_i = max(eps, k - c * i)``, with ``0 <= eps < 1``;
- exponential: ``eps_i = k ** i``, with ``k < 1``;
- inverse sigmoid: ``eps_i = k / (k + exp(i / k))``, with ``k >= 1``.

The linear and exponential ones are :mod:`optax.schedules`; the inverse sigmoid is not
expressible there and is :func:`inverse_sigmoid_decay`. Every schedule is an optax-style
callable ``step -> value`` that works on traced steps inside ``jit``.

References:
  Bengio, Vinyals, Jaitly & Shazeer (2015). Scheduled sampling for sequence prediction
  with recurrent neural networks. NeurIPS.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

__all__ = ["inverse_sigmoid_decay", "sampling_schedule"]


def inverse_sigmoid_decay(k: float):
    r"""Inverse sigmoid decay :math:`\epsilon_i = k / (k + \exp(i / k))` (Bengio et al. 2015).

    Starts at ``k / (k + 1)`` (close to 1 for large ``k``), is 1/2 at
    ``i = k log k`` and decays to 0; larger ``k`` decays later.

    Args:
      k: ``>= 1``.

    Returns:
      A schedule ``step -> eps`` (a float32 scalar; ``step`` may be traced).

    Example:
      >>> from rnnjax.schedules import inverse_sigmoid_decay
      >>> round(float(inverse_sigmoid_decay(10.0)(0)), 4)
      0.9091
    """
    if isinstance(k, bool) or not isinstance(k, (int, float)) or not k >= 1:
        raise ValueError(f"k must be a number >= 1; got {k!r}")
    k = float(k)

    def schedule(step):
        # k / (k + exp(i/k)) = sigmoid(log k - i/k): stable for every i
        i = jnp.asarray(step, jnp.float32)
        return jax.nn.sigmoid(jnp.log(k) - i / k)

    return schedule


def sampling_schedule(kind: str, **kwargs):
    """The teacher-forcing probability ``eps_i`` of scheduled sampling.

    Args:
      kind: ``"constant"`` (``value``: ``eps_i = value``, 1.0 = teacher forcing, 0.0 =
        free running); ``"linear"`` (``steps``, ``eps_min=0.0``, ``start=1.0``:
        ``eps_i = max(eps_min, start - c i)`` with slope ``c = (start - eps_min) / steps``,
        :func:`optax.linear_schedule`); ``"exponential"`` (``k < 1``: ``eps_i = k ** i``,
        :func:`optax.exponential_decay`); ``"inverse_sigmoid"`` (``k >= 1``:
        ``eps_i = k / (k + exp(i / k))``, :func:`inverse_sigmoid_decay`).
      **kwargs: the parameters named above.

    Returns:
      A schedule ``step -> eps`` usable inside ``jit``.

    References:
      Bengio et al. (2015), section 2.4 and figure 2.

    Example:
      >>> from rnnjax.schedules import sampling_schedule
      >>> eps = sampling_schedule("linear", steps=100, eps_min=0.2)
      >>> [round(float(eps(i)), 2) for i in (0, 50, 100, 200)]
      [1.0, 0.6, 0.2, 0.2]
    """

    def need(*names, optional=()):
        missing = [n for n in names if n not in kwargs]
        extra = [n for n in kwargs if n not in names and n not in optional]
        if missing or extra:
            raise TypeError(
                f"sampling_schedule(kind={kind!r}) takes {list(names) + list(optional)}; "
                f"missing {missing}, unexpected {extra}"
            )

    if kind == "constant":
        need("value")
        v = float(kwargs["value"])
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"value must be a probability in [0, 1]; got {v}")
        return optax.constant_schedule(v)
    if kind == "linear":
        need("steps", optional=("eps_min", "start"))
        steps, eps_min = kwargs["steps"], float(kwargs.get("eps_min", 0.0))
        start = float(kwargs.get("start", 1.0))
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {steps!r}")
        if not 0.0 <= eps_min <= start <= 1.0:
            raise ValueError(
                f"need 0 <= eps_min <= start <= 1; got eps_min={eps_min}, start={start}"
            )
        return optax.linear_schedule(start, eps_min, steps)
    if kind == "exponential":
        need("k")
        k = float(kwargs["k"])
        if not 0.0 < k < 1.0:
            raise ValueError(f"k must be in (0, 1) for exponential decay; got {k}")
        return optax.exponential_decay(1.0, transition_steps=1, decay_rate=k)
    if kind == "inverse_sigmoid":
        need("k")
        return inverse_sigmoid_decay(kwargs["k"])
    raise ValueError(
        f"kind must be 'constant', 'linear', 'exponential' or 'inverse_sigmoid'; got {kind!r}"
    )
