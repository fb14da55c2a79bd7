"""Metrics: cross-entropy, perplexity, accuracy, MSE and NRMSE, all maskable.

Every metric takes an optional ``mask`` (``True``/1 where a position counts) with the
shape of the per-position values, so padded steps of variable-length sequences are
left out exactly; a metric over an empty mask is NaN rather than a silent zero.
"""

from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp
import optax

from rnnjax import checks

__all__ = ["masked_mean", "cross_entropy", "perplexity", "accuracy", "mse", "nrmse"]


def _classification(logits, labels, mask):
    """``logits`` ``(..., V)`` floating (``V >= 1``), integer ``labels`` of shape
    ``logits.shape[:-1]`` (lists are converted) and the mask of the positions that count
    (the given ``mask`` less the traced out-of-range labels)."""
    logits = checks.array("logits", logits, "floating", min_ndim=1)
    if logits.shape[-1] < 1:
        raise ValueError(f"logits must have V >= 1 classes on the last axis; got {logits.shape}")
    labels = checks.array("labels", labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class indices; got dtype {labels.dtype}")
    if jnp.shape(logits)[:-1] != jnp.shape(labels):
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {jnp.shape(logits)[:-1]}; "
            f"got {jnp.shape(labels)}"
        )
    mask = checks.mask("mask", mask, jnp.shape(labels))
    return logits, labels, _label_mask(logits, labels, mask)


def _pair(predictions, targets):
    """Two arrays of numbers of one shape (lists converted)."""
    predictions = checks.array("predictions", predictions)
    targets = checks.array("targets", targets)
    _check_same_shape("predictions", predictions, "targets", targets)
    return predictions, targets


def _check_same_shape(name_a, a, name_b, b):
    if jnp.shape(a) != jnp.shape(b):
        raise ValueError(
            f"{name_b} must have the shape of {name_a} {jnp.shape(a)}; got {jnp.shape(b)}"
        )


def masked_mean(values: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
    """Mean of ``values`` over the positions where ``mask`` is true (all when ``None``).

    Args:
      values: any shape.
      mask: ``None`` or an array of the same shape (bool or 0/1).

    Returns:
      A scalar; NaN when the mask selects nothing.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.metrics import masked_mean
      >>> float(masked_mean(jnp.array([1.0, 3.0, 100.0]), jnp.array([True, True, False])))
      2.0
    """
    values = checks.array("values", values)
    if mask is None:
        return jnp.mean(values)
    mask = checks.mask("mask", mask, jnp.shape(values))
    mask = mask.astype(values.dtype)
    return jnp.sum(values * mask) / jnp.sum(mask)


def _label_mask(logits, labels, mask):
    """Range-check concrete labels; for traced ones (which cannot be checked) the mask
    of the positions whose label lies in ``[0, V)``, combined with ``mask``."""
    V = jnp.shape(logits)[-1]
    checks.token_ids("labels", labels, V)
    if checks.is_concrete(labels):
        return mask
    valid = checks.valid_tokens(labels, V)
    return valid if mask is None else valid & mask.astype(bool)


def cross_entropy(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None):
    """Mean cross-entropy in nats per token.

    Args:
      logits: ``(..., V)`` unnormalised log-probabilities.
      labels: ``(...)`` integer class indices in ``[0, V)``. Concrete labels outside
        raise; traced ones cannot be checked and are left out of the mean (as if masked),
        never clamped or wrapped; :func:`rnnjax.checks.valid_tokens` counts them.
      mask: optional ``(...)``, true where a token counts.

    Returns:
      The scalar mean of ``-log softmax(logits)[label]`` over the masked positions.

    Example:
      >>> import jax.numpy as jnp, rnnjax as rj
      >>> float(rj.metrics.cross_entropy(jnp.zeros((3, 4)), jnp.array([0, 1, 2])))  # log 4
      1.386...
    """
    logits, labels, mask = _classification(logits, labels, mask)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    if mask is not None:  # an out-of-range label's loss may be NaN: select, not multiply
        losses = jnp.where(mask, losses, jnp.zeros((), losses.dtype))
    return masked_mean(losses, mask)


def perplexity(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None):
    """Perplexity: ``exp`` of the mean cross-entropy in nats per token (masked).

    A uniform predictor over ``V`` symbols has perplexity exactly ``V``.

    Example:
      Uniform predictions over V symbols have perplexity V:

      >>> import jax.numpy as jnp
      >>> from rnnjax.metrics import perplexity
      >>> round(float(perplexity(jnp.zeros((6, 5)), jnp.arange(6) % 5)), 4)   # (T, V), (T,)
      5.0
    """
    return jnp.exp(cross_entropy(logits, labels, mask))


def accuracy(logits: jax.Array, labels: jax.Array, mask: Optional[jax.Array] = None):
    """Fraction of (masked) positions whose arg-max prediction equals the label.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.metrics import accuracy
      >>> logits = jnp.array([[0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])   # (T, V)
      >>> float(accuracy(logits, jnp.array([1, 1, 0]), mask=jnp.array([True, True, False])))
      0.5
    """
    logits, labels, mask = _classification(logits, labels, mask)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return masked_mean(hits, mask)


def mse(predictions: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None):
    """Mean squared error over all (masked) entries.

    Args:
      predictions: any shape, e.g. ``(T, O)`` or ``(B, T, O)``.
      targets: the same shape.
      mask: optional, the same shape, true where an entry counts.

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.metrics import mse
      >>> float(mse(jnp.array([1.0, 2.0]), jnp.array([1.0, 4.0])))
      2.0
    """
    predictions, targets = _pair(predictions, targets)
    return masked_mean(jnp.square(predictions - targets), mask)


def nrmse(predictions: jax.Array, targets: jax.Array, mask: Optional[jax.Array] = None):
    """Normalised root-mean-square error: ``RMSE / std(targets)``.

    The normalisation is the (population) standard deviation of the targets over the
    same masked entries, so predicting the targets' mean scores 1.0. This is the
    normalisation of the ESN literature (Jaeger 2001) and of the ESN figures in
    DESIGN.md (RMSE / std of target).

    Args:
      predictions: any shape, e.g. ``(T, O)``.
      targets: the same shape.
      mask: optional, true where an entry counts.

    Returns:
      A scalar.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.metrics import nrmse
      >>> y = jnp.array([0.0, 2.0, 0.0, 2.0])                  # std 1
      >>> float(nrmse(y + 0.5, y))
      0.5
    """
    predictions, targets = _pair(predictions, targets)
    mean_t = masked_mean(targets, mask)
    var_t = masked_mean(jnp.square(targets - mean_t), mask)
    return jnp.sqrt(mse(predictions, targets, mask) / var_t)


__all__ += ["memory_capacity"]


def memory_capacity(
    predictions: jax.Array,
    targets: jax.Array,
    mask: Optional[jax.Array] = None,
    *,
    per_delay: bool = False,
):
    r"""Short-term memory capacity (Jaeger 2002): :math:`MC = \sum_k r^2(u(t-k), y_k(t))`.

    :math:`r^2` is the squared Pearson correlation between readout ``k``'s output and
    the delayed input, over the (masked) time steps.

    Args:
      predictions: ``(T, K)``, readout ``k-1``'s output in column ``k-1``.
      targets: ``(T, K)``, ``u(t - k)`` in column ``k-1`` (see
        :func:`rnnjax.tasks.memory.memory_task`).
      mask: optional ``(T,)``, true at the time steps that count (e.g. after washout).
      per_delay: also return the memory curve ``r^2_k``, ``(K,)``.

    Returns:
      The scalar MC, or ``(MC, r2)`` with ``per_delay=True``.

    References:
      Jaeger (2002). Short term memory in echo state networks. GMD Report 152.

    Example:
      A perfect recall of delays 1 and 2 is a capacity of 2:

      >>> import jax, jax.numpy as jnp
      >>> from rnnjax.metrics import memory_capacity
      >>> targets = jax.random.normal(jax.random.key(0), (100, 2))     # (T, K delays)
      >>> round(float(memory_capacity(targets, targets)), 3)
      2.0
    """
    predictions, targets = _pair(predictions, targets)
    if jnp.ndim(predictions) != 2:
        raise ValueError(f"predictions must have shape (T, K); got {jnp.shape(predictions)}")
    T = jnp.shape(predictions)[0]
    if mask is None:
        m = jnp.ones((T, 1), predictions.dtype)
    else:
        mask = checks.mask("mask", mask, (T,))
        m = mask.astype(predictions.dtype)[:, None]
    n = jnp.sum(m)
    pc = predictions - jnp.sum(predictions * m, axis=0, keepdims=True) / n
    tc = targets - jnp.sum(targets * m, axis=0, keepdims=True) / n
    cov = jnp.sum(pc * tc * m, axis=0)
    r2 = jnp.square(cov) / (jnp.sum(pc * pc * m, axis=0) * jnp.sum(tc * tc * m, axis=0))
    mc = jnp.sum(r2)
    return (mc, r2) if per_delay else mc
