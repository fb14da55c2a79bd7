"""Freezing a reservoir under optax: its weights are data, checkpointed, never moved.

The reservoir weights live in the params dict (so orbax checkpoints them);
:func:`frozen_labels` / :func:`freeze_reservoir` give them ``optax.set_to_zero()`` updates.
"""

from __future__ import annotations

from typing import Sequence

import jax
import optax

__all__ = ["RESERVOIR_KEYS", "frozen_labels", "trainable_mask", "freeze_reservoir"]

RESERVOIR_KEYS = ("w_in", "w", "w_jump", "b", "w_fb")


def _path_keys(path):
    return [getattr(p, "key", getattr(p, "name", None)) for p in path]


def frozen_labels(params, frozen: Sequence[str] = ("reservoir",)):
    """Optax labels: ``"frozen"`` for reservoir weights, ``"trainable"`` for the rest.

    A leaf is frozen when a key on its path is in ``frozen`` (default: a ``"reservoir"``
    sub-dict), or when ``params`` is itself a reservoir's dict (keys within
    :data:`RESERVOIR_KEYS`). Use with ``optax.multi_transform`` (see
    :func:`freeze_reservoir`), which gives the frozen leaves ``optax.set_to_zero()``
    updates, so they stay bit-for-bit unchanged and are still checkpointed with the rest.

    Args:
      params: a pytree of dicts, e.g. ``{"reservoir": esn_params, "readout": readout}``.
      frozen: dict keys whose sub-trees are frozen.

    Returns:
      A pytree of the same structure with ``"frozen"`` / ``"trainable"`` leaves.

    Example:
      >>> import jax
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=8)
      >>> params = {"reservoir": cell.init(jax.random.key(0)), "head": {"w": jax.numpy.ones(8)}}
      >>> labels = reservoir.freezing.frozen_labels(params)
      >>> labels["head"]["w"], set(jax.tree_util.tree_leaves(labels["reservoir"]))
      ('trainable', {'frozen'})
    """
    if isinstance(frozen, str):
        frozen = (frozen,)
    bare = isinstance(params, dict) and params and set(params) <= set(RESERVOIR_KEYS)

    def label(path, _):
        return "frozen" if bare or any(k in frozen for k in _path_keys(path)) else "trainable"

    return jax.tree_util.tree_map_with_path(label, params)


def trainable_mask(params, frozen: Sequence[str] = ("reservoir",)):
    """Boolean mask (``True`` = trainable) for ``optax.masked`` and friends; see
    :func:`frozen_labels`.

    Example:
      Any pytree: the leaves under a ``"reservoir"`` key are frozen, the others trainable.

      >>> from rnnjax.reservoir.freezing import trainable_mask
      >>> trainable_mask({"reservoir": {"w": 1.0, "b": 0.0}, "head": {"w": 2.0}})
      {'head': {'w': True}, 'reservoir': {'b': False, 'w': False}}
    """
    return jax.tree_util.tree_map(lambda s: s == "trainable", frozen_labels(params, frozen))


def freeze_reservoir(
    optimizer: optax.GradientTransformation, params, frozen: Sequence[str] = ("reservoir",)
) -> optax.GradientTransformation:
    """Wrap ``optimizer`` so that reservoir weights get zero updates.

    ``optax.multi_transform({"trainable": optimizer, "frozen": optax.set_to_zero()},
    frozen_labels(params, frozen))``; the frozen leaves carry no optimiser state.

    Example:
      >>> import jax, optax
      >>> from rnnjax import reservoir
      >>> cell = reservoir.EchoState(input_size=1, hidden_size=8)
      >>> params = {"reservoir": cell.init(jax.random.key(0)),
      ...           "readout": {"w_out": jax.numpy.zeros((8, 1)), "b_out": jax.numpy.zeros(1)}}
      >>> opt = reservoir.freeze_reservoir(optax.adam(1e-3), params)
      >>> opt_state = opt.init(params)
    """
    return optax.multi_transform(
        {"trainable": optimizer, "frozen": optax.set_to_zero()}, frozen_labels(params, frozen)
    )
