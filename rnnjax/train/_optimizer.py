"""The optimiser: an optax chain of skip-non-finite, freeze, clip and the optimiser."""

from __future__ import annotations

import functools
from typing import Any, Callable, Optional, Union

import jax
import numpy as np
import optax

from rnnjax import checks
from rnnjax.train._specs import Optimizer

_OPTIMIZERS = {
    "adam": optax.adam,
    "adamw": optax.adamw,
    "sgd": optax.sgd,
    "rmsprop": optax.rmsprop,
}

# apply_if_finite applies a non-finite update after more than this many consecutive
# ones; int32 max means "never".
_NEVER = int(np.iinfo(np.int32).max)


# --------------------------------------------------------------------------- optimiser


def _path_names(path) -> list:
    names = []
    for entry in path:
        for attr in ("key", "name", "idx"):
            if hasattr(entry, attr):
                names.append(getattr(entry, attr))
                break
    return names


def frozen_labels(params, frozen) -> Any:
    """The ``multi_transform`` labels (``"trainable"`` / ``"frozen"``) of ``params``.

    Args:
      params: a parameter pytree.
      frozen: ``None`` (nothing frozen); a sequence of names (a leaf is frozen when any
        dict key or attribute name on its path is one of them, e.g. ``("reservoir",)``);
        a callable ``params -> pytree of bool``; or a pytree of bools like ``params``.

    Returns:
      A pytree of strings with the structure of ``params``.

    Example:
      >>> import jax.numpy as jnp
      >>> from rnnjax.train import frozen_labels
      >>> frozen_labels({"embed": jnp.ones(2), "head": {"w": jnp.ones(2)}}, ("embed",))
      {'embed': 'frozen', 'head': {'w': 'trainable'}}
    """
    if frozen is None:
        return jax.tree_util.tree_map(lambda _: "trainable", params)
    if callable(frozen):
        flags = frozen(params)
    elif isinstance(frozen, (tuple, list, set, frozenset)) and all(
        isinstance(n, str) for n in frozen
    ):
        names = set(frozen)
        flags = jax.tree_util.tree_map_with_path(
            lambda path, _: any(n in names for n in _path_names(path)), params
        )
    else:
        flags = frozen
    try:
        return jax.tree_util.tree_map(lambda f: "frozen" if bool(f) else "trainable", flags)
    except Exception as err:  # pragma: no cover - message only
        raise TypeError(
            "frozen must be None, a sequence of parameter names, a callable or a pytree of "
            f"bools like params; got {frozen!r}"
        ) from err


def make_optimizer(
    optimizer: Union[str, optax.GradientTransformation] = "adam",
    learning_rate: Union[float, Callable, None] = None,
    *,
    clip_norm: Optional[float] = 1.0,
    frozen=None,
    max_consecutive_nonfinite: Optional[int] = None,
    **optimizer_kwargs,
) -> optax.GradientTransformation:
    """An optax chain: skip non-finite -> freeze -> clip by global norm -> optimiser.

    The composition is
    ``apply_if_finite(multi_transform({"trainable": chain(clip_by_global_norm(c), opt),
    "frozen": set_to_zero()}))``: a gradient with a NaN or Inf anywhere is not applied
    (the parameters and the inner optimiser state stay as they were) and is counted in
    the state's ``total_notfinite``; frozen parameters (an echo state reservoir, say)
    receive exactly zero updates and are left out of the clipping norm.

    Args:
      optimizer: ``"adam"``, ``"adamw"``, ``"sgd"``, ``"rmsprop"`` or any optax
        transformation (then ``learning_rate`` must be ``None``).
      learning_rate: a float or an ``optax.schedules`` schedule (step -> rate); default
        ``1e-3`` for a named optimiser.
      clip_norm: maximum global gradient norm (``optax.clip_by_global_norm``); ``None``
        for no clipping.
      frozen: parameters kept untouched; see :func:`frozen_labels`.
      max_consecutive_nonfinite: after more than this many non-finite gradients in a
        row, ``apply_if_finite`` applies them anyway; default never.
      **optimizer_kwargs: passed to the named optax optimiser (``b1``, ``momentum``,
        ``weight_decay``, ...).

    Returns:
      An ``optax.GradientTransformation``.

    Example:
      >>> import optax, rnnjax.train as rt
      >>> tx = rt.make_optimizer("adamw", optax.schedules.cosine_decay_schedule(1e-3, 1000),
      ...                        clip_norm=1.0, frozen=("reservoir",), weight_decay=1e-4)
    """
    if isinstance(optimizer, str):
        if optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"optimizer must be one of {sorted(_OPTIMIZERS)} or an optax transformation; "
                f"got {optimizer!r}"
            )
        if learning_rate is None:
            learning_rate = 1e-3
        learning_rate = checks.learning_rate("learning_rate", learning_rate)
        opt = _OPTIMIZERS[optimizer](learning_rate, **optimizer_kwargs)
    elif isinstance(optimizer, Optimizer):
        if learning_rate is not None or optimizer_kwargs:
            raise ValueError(
                "learning_rate and optimizer keyword arguments apply only to a named optimizer; "
                f"got a recorded optimizer {optimizer.name!r} with learning_rate={learning_rate!r} "
                f"and {sorted(optimizer_kwargs)}: put them in rnnjax.train.optimizer(...)"
            )
        opt = optimizer.build()
    elif isinstance(optimizer, optax.GradientTransformation):
        if learning_rate is not None or optimizer_kwargs:
            raise ValueError(
                "learning_rate and optimizer keyword arguments apply only to a named optimizer; "
                f"got an optax transformation with learning_rate={learning_rate!r} and "
                f"{sorted(optimizer_kwargs)}"
            )
        opt = optimizer
    else:
        raise TypeError(
            f"optimizer must be a name or an optax.GradientTransformation; got {type(optimizer).__name__}"
        )
    if clip_norm is not None:
        clip_norm = checks.number("clip_norm", clip_norm, 0.0, min_open=True)
        opt = optax.chain(optax.clip_by_global_norm(clip_norm), opt)
    if frozen is not None:
        opt = optax.multi_transform(
            {"trainable": opt, "frozen": optax.set_to_zero()},
            functools.partial(frozen_labels, frozen=frozen),
        )
    if max_consecutive_nonfinite is None:
        max_consecutive_nonfinite = _NEVER
    max_consecutive_nonfinite = checks.integer(
        "max_consecutive_nonfinite", max_consecutive_nonfinite, 0
    )
    return optax.apply_if_finite(opt, max_consecutive_nonfinite)
