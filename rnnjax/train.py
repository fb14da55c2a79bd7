"""Training: optimiser factory, train state, jitted train step, loss heads, truncated BPTT.

The pieces:

- :func:`make_optimizer`: ``optax.clip_by_global_norm`` chained in front of Adam, AdamW,
  SGD, RMSprop (by name) or any optax transformation, an optional ``optax.schedules``
  learning rate, frozen parameters through ``optax.multi_transform`` +
  ``optax.set_to_zero``, and non-finite updates skipped and counted by
  ``optax.apply_if_finite``.
- :class:`TrainState`: the whole state of a run as a pytree (a NamedTuple): step,
  data position, params, optimiser state, RNG key and the recurrent carry of stateful
  training. It is what :mod:`rnnjax.checkpoint` saves and restores.
- :class:`Trainer`: a frozen dataclass (hashable, a static argument of ``jit``) of a
  model, a loss head and an optimiser, with jitted :meth:`Trainer.train_step`
  (full BPTT), :meth:`Trainer.tbptt_step` (truncated BPTT, one ``lax.scan`` over chunks
  with an update after each) and :meth:`Trainer.evaluate`.
- :func:`fit`: the loop, with validation (``evaluate``, ``eval_every``), early stopping
  (:class:`EarlyStopping`), checkpoints (the best by any logged metric), progress (a
  rich bar on a terminal, plain lines otherwise) and a JSONL log that a resumed run
  continues without losing or duplicating rows.
- :func:`evaluate_batches` (windows, each from the zero state) and
  :func:`evaluate_stream` (consecutive windows, the state carried): token-weighted
  validation metrics.
- :func:`schedule` and :func:`optimizer`: optax schedules and optimisers recorded by
  name and arguments, so that :meth:`Trainer.config` is JSON-clean and
  :meth:`Trainer.from_config` rebuilds the trainer in another process.

A batch is a dict with ``"inputs"`` ``(B, T)`` tokens or ``(B, T, I)`` features,
``"targets"`` (``(B, T)`` / ``(B, T, O)`` per step, ``(B,)`` / ``(B, O)`` for a final
head) and optionally ``"length"`` ``(B,)``.

Shapes: ``T`` time, ``B`` batch, ``I`` input size, ``H`` hidden size, ``O`` output size.

References:
  Williams & Peng (1990). An efficient gradient-based algorithm for on-line training of
  recurrent network trajectories. (truncated BPTT)
  Pascanu, Mikolov & Bengio (2013). On the difficulty of training recurrent neural
  networks. (gradient-norm clipping)
"""

from __future__ import annotations

import dataclasses
import functools
import math
import warnings
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import checks
from rnnjax import metrics as _metrics

__all__ = [
    "make_optimizer",
    "schedule",
    "optimizer",
    "Schedule",
    "Optimizer",
    "evaluate_batches",
    "evaluate_stream",
    "EarlyStopping",
    "frozen_labels",
    "TrainState",
    "Trainer",
    "fit",
    "LOSSES",
]

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


# --------------------------------------------------------------------------- recorded specs


def _freeze(v):
    if isinstance(v, list):
        return tuple(_freeze(x) for x in v)
    if isinstance(v, dict):
        return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
    return v


def _kwargs_tuple(name: str, kwargs) -> tuple:
    if isinstance(kwargs, dict):
        kwargs = kwargs.items()
    try:
        pairs = tuple(sorted((str(k), _freeze(v)) for k, v in kwargs))
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be a dict or (name, value) pairs; got {kwargs!r}") from err
    return pairs


def _lookup(name: str, spaces, what: str):
    for _label, space in spaces:
        fn = getattr(space, name, None)
        if callable(fn):
            return fn
    raise ValueError(
        f"{what} must name a function of {', '.join(l for l, _ in spaces)}; got {name!r}"
    )


@dataclasses.dataclass(frozen=True)
class Schedule:
    """A learning-rate (or any) schedule recorded by name and arguments: a callable
    ``step -> value`` that a checkpoint config can hold and rebuild.

    Build one with :func:`schedule`.

    Attributes:
      name: a function of ``optax.schedules`` or ``rnnjax.schedules``.
      kwargs: its keyword arguments, as sorted ``(name, value)`` pairs.

    Example:
      >>> from rnnjax.train import Schedule
      >>> lr = Schedule("linear_schedule", (("init_value", 1.0), ("end_value", 0.0),
      ...                                   ("transition_steps", 10)))
      >>> lr.kwargs[0], float(lr(5))
      (('end_value', 0.0), 0.5)
    """

    name: str
    kwargs: tuple = ()
    fn: Any = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        from rnnjax import schedules as _schedules

        object.__setattr__(self, "kwargs", _kwargs_tuple("kwargs", self.kwargs))
        factory = _lookup(
            self.name,
            (("optax.schedules", optax.schedules), ("rnnjax.schedules", _schedules)),
            "schedule name",
        )
        object.__setattr__(self, "fn", factory(**dict(self.kwargs)))

    def __call__(self, step):
        return self.fn(step)


def schedule(name: str, **kwargs) -> Schedule:
    """A schedule recorded by name: ``optax.schedules.<name>(**kwargs)`` (or an
    ``rnnjax.schedules`` one), callable as ``step -> value`` and JSON-recordable.

    Args:
      name: e.g. ``"cosine_decay_schedule"``, ``"warmup_cosine_decay_schedule"``,
        ``"exponential_decay"``.
      **kwargs: the factory's arguments (numbers, strings).

    Returns:
      A :class:`Schedule`.

    Example:
      >>> from rnnjax.train import schedule
      >>> lr = schedule("cosine_decay_schedule", init_value=1e-2, decay_steps=100)
      >>> round(float(lr(50)), 6)
      0.005
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a schedule name (str); got {name!r}")
    return Schedule(name, tuple(kwargs.items()))


@dataclasses.dataclass(frozen=True)
class Optimizer:
    """An optax optimiser recorded by name and arguments (build one with
    :func:`optimizer`); :class:`Trainer` and :func:`make_optimizer` accept it wherever
    they accept an optax transformation, and a checkpoint config can hold it.

    Example:
      >>> import optax
      >>> from rnnjax.train import Optimizer
      >>> opt = Optimizer("adam", (("learning_rate", 1e-3),))
      >>> opt
      Optimizer(name='adam', kwargs=(('learning_rate', 0.001),))
      >>> isinstance(opt.build(), optax.GradientTransformation)
      True
    """

    name: str
    kwargs: tuple = ()

    def __post_init__(self):
        object.__setattr__(self, "kwargs", _kwargs_tuple("kwargs", self.kwargs))
        self.build()  # fail now, naming the optimiser, not at the first step

    def build(self) -> optax.GradientTransformation:
        """``optax.<name>(**kwargs)``."""
        factory = _lookup(self.name, (("optax", optax),), "optimizer name")
        try:
            tx = factory(**dict(self.kwargs))
        except TypeError as err:
            raise TypeError(
                f"optimizer {self.name!r} does not take {dict(self.kwargs)}: {err}"
            ) from err
        if not isinstance(tx, optax.GradientTransformation):
            raise ValueError(f"optax.{self.name} is not an optimiser; got {type(tx).__name__}")
        return tx


def optimizer(name: str, **kwargs) -> Optimizer:
    """An optax optimiser recorded by name: ``optax.<name>(**kwargs)``, with
    ``learning_rate`` a number or a :func:`schedule`.

    Args:
      name: any optax optimiser (``"adam"``, ``"adamw"``, ``"lion"``, ``"sgd"``, ...).
      **kwargs: its arguments.

    Returns:
      An :class:`Optimizer` (pass it as ``Trainer(optimizer=...)``).

    Example:
      >>> import rnnjax as rj
      >>> from rnnjax.train import optimizer, schedule
      >>> opt = optimizer("adamw", learning_rate=schedule("exponential_decay",
      ...                 init_value=1e-3, transition_steps=100, decay_rate=0.5), weight_decay=1e-4)
      >>> tr = rj.Trainer(rj.SequenceModel(rj.GRU(2, 4), output_size=1), loss="mse", optimizer=opt)
      >>> tr.config()["optimizer"]["fields"]["name"]
      'adamw'
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be an optax optimiser name (str); got {name!r}")
    return Optimizer(name, tuple(kwargs.items()))


# --------------------------------------------------------------------------- state


class TrainState(NamedTuple):
    """The whole state of a training run (a pytree; what checkpoints hold).

    Attributes:
      step: int32 scalar, optimiser updates made (TBPTT makes one per chunk).
      position: int32 scalar, batches consumed: the data position from which a resumed
        run continues.
      params: the model parameters.
      opt_state: the optax state.
      key: uint32 ``(2,)`` raw PRNG key data (``jax.random.key_data``), split at every
        update for dropout.
      carry: the recurrent state carried between calls in stateful training (leaves
        ``(B, ...)``), or ``None``.

    Example:
      >>> import jax, rnnjax as rj
      >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5))
      >>> state = trainer.init(jax.random.key(0))
      >>> state._fields
      ('step', 'position', 'params', 'opt_state', 'key', 'carry')
      >>> int(state.step), int(state.position)
      (0, 0)
    """

    step: jax.Array
    position: jax.Array
    params: Any
    opt_state: Any
    key: jax.Array
    carry: Any = None


def _raw_key(key):
    if hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(key)
    key = jnp.asarray(key)
    if key.dtype != jnp.uint32 or key.shape != (2,):
        raise ValueError(
            f"key must be a jax.random.key or raw uint32 key data of shape (2,); got shape "
            f"{key.shape} and dtype {key.dtype}"
        )
    return key


# --------------------------------------------------------------------------- losses


def _cross_entropy(outputs, targets, mask):
    return _metrics.cross_entropy(outputs, targets, mask)


def _mse(outputs, targets, mask):
    if mask is not None and mask.ndim < targets.ndim:
        mask = jnp.broadcast_to(
            jnp.reshape(mask, mask.shape + (1,) * (targets.ndim - mask.ndim)), targets.shape
        )
    return _metrics.mse(outputs, targets, mask)


LOSSES = {"cross_entropy": _cross_entropy, "mse": _mse}
"""Loss heads by name: ``fn(outputs, targets, mask) -> scalar``, masked by length."""


def _sequence_mask(length, B: int, T: int):
    if length is None:
        return None
    return jnp.arange(T)[None, :] < length[:, None]


def _check_batch(batch, per_step: bool, loss=None, model=None) -> None:
    if not isinstance(batch, dict) or "inputs" not in batch or "targets" not in batch:
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(
            f"batch must be a dict with 'inputs', 'targets' and optional 'length'; got {got}"
        )
    x, y = batch["inputs"], batch["targets"]
    if jnp.ndim(x) < 2:
        raise ValueError(
            f"batch['inputs'] must be (B, T) tokens or (B, T, I) features; got shape {jnp.shape(x)}"
        )
    B, T = jnp.shape(x)[:2]
    want = (B, T) if per_step else (B,)
    if tuple(jnp.shape(y)[: len(want)]) != want:
        raise ValueError(
            f"batch['targets'] must start with the shape {want} (B{', T' if per_step else ''}) "
            f"for a {'per_step' if per_step else 'final'} head; got {jnp.shape(y)}"
        )
    if loss == "cross_entropy" and tuple(jnp.shape(y)) != want:
        raise ValueError(
            f"batch['targets'] must be integer classes of shape {want} for cross_entropy with a "
            f"{'per_step' if per_step else 'final'} head; got {jnp.shape(y)}"
        )
    vocab = getattr(model, "vocab_size", None)
    if vocab is not None and jnp.issubdtype(jnp.result_type(x), jnp.integer):
        checks.token_ids("batch['inputs']", x, vocab)
    if loss == "cross_entropy" and getattr(model, "output_size", None) is not None:
        # concrete targets are range-checked; traced ones are masked out of the loss
        # (rnnjax.metrics.cross_entropy)
        checks.token_ids("batch['targets']", y, model.output_size)
    n = batch.get("length")
    if n is not None:
        if jnp.shape(n) != (B,) or not jnp.issubdtype(jnp.result_type(n), jnp.integer):
            raise ValueError(
                f"batch['length'] must be integers of shape (B,) = ({B},); got shape "
                f"{jnp.shape(n)} and dtype {jnp.result_type(n)}"
            )
        if checks.is_concrete(n):
            lv = np.asarray(n)
            if lv.size and (lv.min() < 0 or lv.max() > T):
                raise ValueError(
                    f"batch['length'] must lie in [0, T] = [0, {T}]; got [{lv.min()}, {lv.max()}]"
                )


# --------------------------------------------------------------------------- trainer


@dataclasses.dataclass(frozen=True)
class Trainer:
    """A model, a loss head and an optimiser; jitted train, TBPTT and evaluation steps.

    Args:
      model: a :class:`rnnjax.models.SequenceModel` (or anything with ``init``,
        ``initial_state``, ``apply_batch`` and a ``head`` of ``"per_step"``/``"final"``),
        or a model with its own ``trainer_loss(params, batch, key) -> (loss, (outputs,
        mask))`` such as :class:`rnnjax.Seq2Seq` (full BPTT steps and evaluation).
      loss: ``"cross_entropy"`` (integer targets, logits out), ``"mse"`` or a callable
        ``(outputs, targets, mask) -> scalar`` (``mask`` is ``(B, T)`` bool or ``None``).
      optimizer: a name or an optax transformation (see :func:`make_optimizer`).
      learning_rate: a float or an ``optax.schedules`` schedule.
      clip_norm: global-norm clipping threshold, or ``None``.
      frozen: names (a tuple of str) or a callable marking frozen parameters.
      optimizer_kwargs: a tuple of ``(name, value)`` pairs for the named optimiser.

    The optax chain is built once (:attr:`tx`). The train steps report, per update,
    ``loss``, ``grad_norm`` (global norm of the trainable gradients before clipping),
    ``clipped`` (``grad_norm > clip_norm``), ``skipped`` (non-finite gradient or loss,
    not applied: params, the inner optimiser state and a stateful carry stay exactly as
    they were; only ``apply_if_finite``'s counters move), ``nonfinite_total`` (the
    running count kept by ``apply_if_finite``) and ``tokens`` (the scored targets). A
    batch (or TBPTT chunk) with no real step (every length 0) makes no update at all and
    reports ``tokens == 0`` and ``loss`` NaN, a mean over nothing.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.models import SequenceModel
      >>> from rnnjax.train import Trainer
      >>> trainer = Trainer(SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> state = trainer.init(jax.random.key(0))
      >>> batch = {"inputs": jnp.zeros((2, 6), jnp.int32), "targets": jnp.ones((2, 6), jnp.int32)}
      >>> state, m = trainer.train_step(state, batch)
      >>> sorted(m)
      ['clipped', 'grad_norm', 'loss', 'nonfinite_total', 'skipped', 'tokens']
    """

    model: Any
    loss: Union[str, Callable] = "cross_entropy"
    optimizer: Union[str, Any] = "adam"
    learning_rate: Union[float, Callable, None] = None
    clip_norm: Optional[float] = 1.0
    frozen: Union[None, tuple, Callable] = None
    optimizer_kwargs: tuple = ()
    tx: Any = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not callable(self.loss) and self.loss not in LOSSES:
            raise ValueError(
                f"loss must be one of {sorted(LOSSES)} or a callable; got {self.loss!r}"
            )
        if hasattr(self.model, "trainer_loss"):  # a model with its own loss (Seq2Seq)
            if self.loss != "cross_entropy":
                raise ValueError(
                    f"loss must be the default for a model with its own trainer_loss; got {self.loss!r}"
                )
        elif getattr(self.model, "head", None) not in ("per_step", "final"):
            raise TypeError(
                "model must have a head 'per_step' or 'final' (a SequenceModel) or a "
                f"trainer_loss(params, batch, key) method (a Seq2Seq); got {self.model!r}"
            )
        if isinstance(self.frozen, list):
            object.__setattr__(self, "frozen", tuple(self.frozen))
        object.__setattr__(self, "optimizer_kwargs", tuple(dict(self.optimizer_kwargs).items()))
        tx = make_optimizer(
            self.optimizer,
            self.learning_rate,
            clip_norm=self.clip_norm,
            frozen=self.frozen,
            **dict(self.optimizer_kwargs),
        )
        object.__setattr__(self, "tx", tx)

    # ------------------------------------------------------------------ public
    def init(self, key, params=None) -> TrainState:
        """A fresh :class:`TrainState`: params from ``model.init`` (one half of ``key``)
        unless given, the optimiser state, step and position 0, no carry."""
        raw = _raw_key(key)
        k_init, k_run = jax.random.split(raw)
        if params is None:
            params = self.model.init(k_init)
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            position=jnp.zeros((), jnp.int32),
            params=params,
            opt_state=self.tx.init(params),
            key=k_run,
            carry=None,
        )

    def abstract_state(self, key=None, *, batch_size: Optional[int] = None) -> TrainState:
        """The shapes and dtypes of :meth:`init` (``jax.eval_shape``): the restore target.

        Args:
          key: unused except for its shape (any key).
          batch_size: for a stateful run, the ``B`` of the carried state, which is then
            part of the target; ``None`` for no carry.
        """
        state = jax.eval_shape(self.init, jax.random.PRNGKey(0) if key is None else _raw_key(key))
        if batch_size is not None:
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ValueError(f"batch_size must be None or an int >= 1; got {batch_size!r}")
            state = state._replace(carry=jax.eval_shape(lambda: self._zero_carry(batch_size)))
        return state

    def config(self) -> dict:
        """A JSON-clean record of the trainer: the model's architecture and every training
        setting, from which :meth:`from_config` rebuilds an equal trainer (in another
        process too). It holds no memory address.

        Schedules, optimisers and losses are recorded by name and arguments: names,
        numbers, :func:`schedule`, :func:`optimizer`, module-level rnnjax or optax
        functions (see :mod:`rnnjax.spec`).

        Raises:
          TypeError: a field cannot be recorded (a lambda loss, a bare optax
            transformation, an optax schedule closure); the error names the field.
        """
        from rnnjax.spec import to_spec

        return {
            "format": "rnnjax.train.Trainer/1",
            "model": to_spec(self.model, "model"),
            "loss": to_spec(self.loss, "loss"),
            "optimizer": to_spec(self.optimizer, "optimizer"),
            "learning_rate": to_spec(self.learning_rate, "learning_rate"),
            "clip_norm": to_spec(self.clip_norm, "clip_norm"),
            "frozen": to_spec(
                list(self.frozen) if isinstance(self.frozen, tuple) else self.frozen, "frozen"
            ),
            "optimizer_kwargs": {
                k: to_spec(v, f"optimizer_kwargs.{k}") for k, v in self.optimizer_kwargs
            },
        }

    @classmethod
    def from_config(cls, config: dict) -> "Trainer":
        """Rebuild a trainer from :meth:`config` (a dict, e.g. read back from JSON)."""
        from rnnjax.spec import from_spec

        if not isinstance(config, dict) or config.get("format") != "rnnjax.train.Trainer/1":
            raise ValueError(
                "config must be a dict made by Trainer.config() (format 'rnnjax.train.Trainer/1'); "
                f"got {str(config)[:200]}"
            )
        frozen = from_spec(config["frozen"], "frozen")
        return cls(
            model=from_spec(config["model"], "model"),
            loss=from_spec(config["loss"], "loss"),
            optimizer=from_spec(config["optimizer"], "optimizer"),
            learning_rate=from_spec(config["learning_rate"], "learning_rate"),
            clip_norm=from_spec(config["clip_norm"], "clip_norm"),
            frozen=tuple(frozen) if isinstance(frozen, list) else frozen,
            optimizer_kwargs=tuple(
                (k, from_spec(v, f"optimizer_kwargs.{k}"))
                for k, v in config["optimizer_kwargs"].items()
            ),
        )

    def train_step(self, state: TrainState, batch: dict):
        """One optimiser update on a batch (full backpropagation through time).

        Args:
          state: a :class:`TrainState`.
          batch: ``{"inputs", "targets", "length"?}`` (see the module docstring).

        Returns:
          ``(state, metrics)`` with scalar metrics ``loss``, ``grad_norm``, ``clipped``,
          ``skipped``, ``nonfinite_total``, ``tokens``. ``step`` and ``position`` grow by
          one (also for a batch with no real step, which changes nothing else).
        """
        if not hasattr(self.model, "trainer_loss"):  # such a model checks its own batches
            _check_batch(batch, self.model.head == "per_step", self.loss, self.model)
        return _train_step_jit(self, state, batch)

    def tbptt_step(self, state: TrainState, batch: dict, k: int, *, stateful: bool = False):
        """Truncated BPTT over one batch of long sequences, jitted as one program.

        The ``T`` steps are cut into ``T / k`` chunks of ``k``; a ``lax.scan`` over the
        chunks runs the model on each chunk from the carried state (with
        ``jax.lax.stop_gradient``, so no gradient crosses a chunk boundary), and makes an
        optimiser update after each chunk. A chunk with no real step (all sequences
        ended) makes no update. With ``k = T`` this is :meth:`train_step`.

        Args:
          state: a :class:`TrainState`.
          batch: per-step batch with ``T`` a multiple of ``k``.
          k: chunk length.
          stateful: start from ``state.carry`` (zeros when ``None``) and keep the final
            carry in the returned state, so consecutive batches continue the same
            streams; reset with :meth:`reset_carry`. Otherwise start from zeros and
            leave ``state.carry`` as it is.

        Returns:
          ``(state, metrics)`` with metrics of shape ``(T / k,)``, one per chunk;
          ``step`` grows by ``T / k``, ``position`` by one.
        """
        if getattr(self.model, "head", None) != "per_step":
            raise ValueError(
                f"tbptt_step needs a per_step head; got model.head={getattr(self.model, 'head', None)!r}"
            )
        _check_batch(batch, True, self.loss, self.model)
        T = jnp.shape(batch["inputs"])[1]
        k = checks.integer("k", k, 1)
        if T % k:
            raise ValueError(f"k must be an int >= 1 dividing T = {T}; got {k!r}")
        stateful = checks.boolean("stateful", stateful)
        if stateful and state.carry is None:
            state = state._replace(carry=self._zero_carry(jnp.shape(batch["inputs"])[0]))
        return _tbptt_step_jit(self, state, batch, k, bool(stateful))

    def chunk_losses(self, params, batch: dict, k: int):
        """The per-chunk losses ``(T / k,)`` of truncated BPTT at fixed ``params``: chunk
        ``j`` starts from the stop-gradient final state of chunk ``j - 1``, exactly as in
        :meth:`tbptt_step` (which also updates the params between chunks). Differentiable:
        the gradient of chunk ``j``'s loss is zero for every input before chunk ``j``."""
        if self.model.head != "per_step":
            raise ValueError(
                f"chunk_losses needs a per_step head; got model.head={self.model.head!r}"
            )
        _check_batch(batch, True, self.loss, self.model)
        T = jnp.shape(batch["inputs"])[1]
        k = checks.integer("k", k, 1)
        if T % k:
            raise ValueError(f"k must be an int >= 1 dividing T = {T}; got {k!r}")
        return _chunk_losses_jit(self, params, batch, k)

    def reset_carry(self, state: TrainState) -> TrainState:
        """Forget the carried recurrent state (the next stateful call starts from zeros)."""
        return state._replace(carry=None)

    def evaluate(self, params, batch: dict) -> dict:
        """Masked metrics on a batch: ``loss`` and, for cross-entropy, ``perplexity``
        (``exp`` of the mean cross-entropy per token) and ``accuracy``; ``tokens``."""
        if not hasattr(self.model, "trainer_loss"):
            _check_batch(batch, self.model.head == "per_step", self.loss, self.model)
        return _evaluate_jit(self, params, batch)

    # ------------------------------------------------------------------ internals
    def _zero_carry(self, B: int):
        s = self.model.initial_state(jnp.float32)
        return jax.tree_util.tree_map(lambda a: jnp.zeros((B,) + a.shape, a.dtype), s)

    def _loss_fn(self):
        return LOSSES[self.loss] if isinstance(self.loss, str) else self.loss

    def _forward(self, params, carry, batch, key):
        """``(loss, (final carry, outputs, mask))`` of a batch from ``carry`` (or zeros)."""
        if hasattr(self.model, "trainer_loss"):
            loss, (out, mask) = self.model.trainer_loss(params, batch, key)
            return loss, (carry, out, mask)
        x, y, n = batch["inputs"], batch["targets"], batch.get("length")
        B, T = x.shape[:2]
        if key is not None:  # the state keeps raw key data; layers take typed keys
            key = jax.random.wrap_key_data(key)
        carry, out = self.model.apply_batch(params, x, n, carry, key=key)
        mask = _sequence_mask(n, B, T) if self.model.head == "per_step" else None
        return self._loss_fn()(out, y, mask), (carry, out, mask)

    def _chunk_loss(self, params, carry, batch, key):
        """``(loss, final carry)`` of one TBPTT chunk, started from ``carry`` with
        ``jax.lax.stop_gradient``: the one place where truncation happens."""
        carry = jax.lax.stop_gradient(carry)  # no gradient crosses a chunk boundary
        loss, (new_carry, _, _) = self._forward(params, carry, batch, key)
        return loss, new_carry

    def _trainable_norm(self, params, grads):
        if self.frozen is None:
            return optax.tree.norm(grads)
        labels = frozen_labels(params, self.frozen)
        kept = jax.tree_util.tree_map(
            lambda g, l: g if l == "trainable" else jnp.zeros_like(g), grads, labels
        )
        return optax.tree.norm(kept)

    def _update(self, params, opt_state, grads, loss):
        grad_norm = self._trainable_norm(params, grads)
        # a non-finite loss with finite gradients is skipped as well: apply_if_finite
        # sees NaN gradients, keeps params and inner state, and counts it
        finite_loss = jnp.isfinite(loss)
        grads = jax.tree_util.tree_map(
            lambda g: jnp.where(finite_loss, g, jnp.full_like(g, jnp.nan)), grads
        )
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        clip = jnp.inf if self.clip_norm is None else self.clip_norm
        m = {
            "loss": loss,
            "grad_norm": grad_norm,
            "clipped": grad_norm > clip,
            "skipped": jnp.logical_not(jnp.isfinite(grad_norm) & finite_loss),
            "nonfinite_total": opt_state.total_notfinite,
        }
        return params, opt_state, m

    def _tokens(self, batch):
        """The number of scored targets of a batch (int32 scalar): real steps for a
        per-step head, examples for a final head, real target tokens for a model with its
        own ``trainer_loss`` (a Seq2Seq: ``"targets"`` and ``"target_length"``)."""
        if hasattr(self.model, "trainer_loss"):
            if not isinstance(batch, dict) or "targets" not in batch:
                return jnp.zeros((), jnp.int32)  # the model's own loss names what is wrong
            y, n = batch["targets"], batch.get("target_length")
            B, T = y.shape[:2]
            if n is None:
                return jnp.asarray(B * T, jnp.int32)
            return jnp.sum(jnp.clip(n, 0, T)).astype(jnp.int32)
        x, n = batch["inputs"], batch.get("length")
        B, T = x.shape[:2]
        if self.model.head == "final":
            return jnp.asarray(B, jnp.int32)
        if n is None:
            return jnp.asarray(B * T, jnp.int32)
        return jnp.sum(jnp.clip(n, 0, T)).astype(jnp.int32)


def _no_update_metrics(opt_state):
    """Metrics of an update that was not made because the batch (or chunk) has no real
    step: ``loss`` NaN (a mean over no tokens), nothing clipped or skipped."""
    return {
        "loss": jnp.full((), jnp.nan, jnp.float32),
        "grad_norm": jnp.zeros((), jnp.float32),
        "clipped": jnp.zeros((), bool),
        "skipped": jnp.zeros((), bool),
        "nonfinite_total": opt_state.total_notfinite,
    }


def _train_step_impl(trainer: Trainer, state: TrainState, batch):
    key, sub = jax.random.split(state.key)

    def loss_of(p):
        loss, _ = trainer._forward(p, None, batch, sub)
        return loss

    def update(_):
        loss, grads = jax.value_and_grad(loss_of)(state.params)
        return trainer._update(state.params, state.opt_state, grads, loss)

    def no_update(_):  # all padding: nothing to learn, nothing moves
        return state.params, state.opt_state, _no_update_metrics(state.opt_state)

    tokens = trainer._tokens(batch)
    if batch.get("length") is None or getattr(trainer.model, "head", None) == "final":
        params, opt_state, m = update(None)
    else:
        params, opt_state, m = jax.lax.cond(tokens > 0, update, no_update, None)
    m["tokens"] = tokens
    new = state._replace(
        step=state.step + 1,
        position=state.position + 1,
        params=params,
        opt_state=opt_state,
        key=key,
    )
    return new, m


def _chunks(a, n: int, k: int):
    """``(B, n * k, ...)`` -> ``(n, B, k, ...)``."""
    B = a.shape[0]
    return jnp.swapaxes(a.reshape((B, n, k) + a.shape[2:]), 0, 1)


def _split_chunks(batch, k: int):
    """Inputs, targets ``(n, B, k, ...)`` and per-chunk lengths ``(n, B)`` of a batch."""
    x, y, n_len = batch["inputs"], batch["targets"], batch.get("length")
    B, T = x.shape[:2]
    n = T // k
    if n_len is None:
        lens = jnp.full((n, B), k, jnp.int32)
    else:
        lens = jnp.clip(n_len[None, :] - k * jnp.arange(n, dtype=jnp.int32)[:, None], 0, k)
        lens = lens.astype(jnp.int32)
    return _chunks(x, n, k), _chunks(y, n, k), lens


def _chunk_losses_impl(trainer: Trainer, params, batch, k: int):
    xs, ys, lens = _split_chunks(batch, k)
    has_len = batch.get("length") is not None

    def body(carry, chunk):
        x_c, y_c, len_c = chunk
        b = {"inputs": x_c, "targets": y_c}
        if has_len:
            b["length"] = len_c
        loss, new_carry = trainer._chunk_loss(params, carry, b, None)
        return new_carry, loss

    _, losses = jax.lax.scan(body, trainer._zero_carry(xs.shape[1]), (xs, ys, lens))
    return losses


def _tbptt_step_impl(trainer: Trainer, state: TrainState, batch, k: int, stateful: bool):
    x, n_len = batch["inputs"], batch.get("length")
    B, T = x.shape[:2]
    n = T // k
    carry = state.carry if stateful else trainer._zero_carry(B)
    xs, ys, lens = _split_chunks(batch, k)

    def body(c, chunk):
        params, opt_state, key, carry = c
        x_c, y_c, len_c = chunk
        key, sub = jax.random.split(key)
        b = {"inputs": x_c, "targets": y_c}
        if n_len is not None:
            b["length"] = len_c

        def loss_of(p):
            return trainer._chunk_loss(p, carry, b, sub)

        def update(_):
            (loss, new_carry), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
            p2, o2, m = trainer._update(params, opt_state, grads, loss)
            # a skipped update leaves the carry as it was before the chunk, too: a NaN
            # carry kept would poison every later chunk of a stateful stream
            new_carry = jax.tree_util.tree_map(
                lambda old, new: jnp.where(m["skipped"], old, new), carry, new_carry
            )
            return p2, o2, new_carry, m

        def no_update(_):
            # every sequence has ended: nothing to learn, the carry stays frozen
            return params, opt_state, carry, _no_update_metrics(opt_state)

        if n_len is None:
            p2, o2, new_carry, m = update(None)
        else:
            p2, o2, new_carry, m = jax.lax.cond(jnp.sum(len_c) > 0, update, no_update, None)
        m["tokens"] = jnp.sum(len_c)
        return (p2, o2, key, new_carry), m

    (params, opt_state, key, carry), m = jax.lax.scan(
        body, (state.params, state.opt_state, state.key, carry), (xs, ys, lens)
    )
    new = state._replace(
        step=state.step + n,
        position=state.position + 1,
        params=params,
        opt_state=opt_state,
        key=key,
        carry=carry if stateful else state.carry,
    )
    return new, m


def _evaluate_impl(trainer: Trainer, params, batch):
    loss, (_, out, mask) = trainer._forward(params, None, batch, None)
    y = batch["targets"]
    m = {"loss": loss}
    if trainer.loss == "cross_entropy":
        m["perplexity"] = jnp.exp(loss)
        m["accuracy"] = _metrics.accuracy(out, y, mask)
    m["tokens"] = (
        jnp.sum(mask)
        if mask is not None
        else jnp.asarray(math.prod(y.shape[: 2 if trainer.model.head == "per_step" else 1]))
    )
    return m


_train_step_jit = jax.jit(_train_step_impl, static_argnums=0)
_tbptt_step_jit = jax.jit(_tbptt_step_impl, static_argnums=(0, 3, 4))
_evaluate_jit = jax.jit(_evaluate_impl, static_argnums=0)
_chunk_losses_jit = jax.jit(_chunk_losses_impl, static_argnums=(0, 3))


# --------------------------------------------------------------------------- evaluation


def _eval_sums_impl(trainer: Trainer, params, carry, batch):
    """Token-weighted sums of one batch from ``carry`` (zeros when ``None``):
    ``(final carry, {"loss_sum", "correct", "tokens"})``."""
    loss, (new_carry, out, mask) = trainer._forward(params, carry, batch, None)
    tokens = trainer._tokens(batch)
    sums = {"loss_sum": jnp.where(tokens > 0, loss * tokens, 0.0), "tokens": tokens}
    if trainer.loss == "cross_entropy":
        sums["correct"] = _metrics.accuracy(out, batch["targets"], mask) * tokens
    return new_carry, sums


_eval_sums_jit = jax.jit(_eval_sums_impl, static_argnums=0)


def _stream_sums_impl(trainer: Trainer, params, xs, ys):
    """Sums over windows ``(n, B, T)`` run in order, the state carried across them."""

    def body(carry, w):
        carry, sums = _eval_sums_impl(trainer, params, carry, {"inputs": w[0], "targets": w[1]})
        return carry, sums

    _, sums = jax.lax.scan(body, trainer._zero_carry(xs.shape[1]), (xs, ys))
    return jax.tree_util.tree_map(lambda a: jnp.sum(a, axis=0), sums)


_stream_sums_jit = jax.jit(_stream_sums_impl, static_argnums=0)


def _summarise(trainer: Trainer, totals: dict, prefix: str) -> dict:
    tokens = int(totals["tokens"])
    loss = float(totals["loss_sum"]) / tokens if tokens else math.nan
    out = {prefix + "loss": loss}
    if trainer.loss == "cross_entropy":
        out[prefix + "ppl"] = math.exp(loss) if math.isfinite(loss) and loss < 700 else math.inf
        out[prefix + "accuracy"] = float(totals["correct"]) / tokens if tokens else math.nan
    out[prefix + "tokens"] = tokens
    return out


def evaluate_batches(trainer: Trainer, params, batches, *, prefix: str = "") -> dict:
    """Windowed evaluation: every batch starts from the zero state, and the metrics are
    token-weighted means over all batches.

    Each window's first tokens are predicted with no context, so on a long text this is
    not the perplexity of the text as a whole; see :func:`evaluate_stream`, which carries
    the state across consecutive windows. The two differ in both directions: the stream
    gives every token its whole history (lower perplexity for a model trained statefully),
    while a model trained only on fresh windows of ``T`` steps never saw the states that
    longer histories produce and can do much worse on a stream.

    Args:
      trainer: the :class:`Trainer` (its model and loss).
      params: the parameters.
      batches: an iterable of batches (``{"inputs", "targets", "length"?}``).
      prefix: prepended to every metric name (``"valid_"`` gives ``"valid_loss"``).

    Returns:
      ``{prefix + "loss", prefix + "ppl" and prefix + "accuracy" (cross-entropy only),
      prefix + "tokens"}`` as Python numbers.

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.train import Trainer, evaluate_batches
      >>> tr = Trainer(rj.SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> b = {"inputs": jnp.zeros((2, 6), jnp.int32), "targets": jnp.ones((2, 6), jnp.int32)}
      >>> sorted(evaluate_batches(tr, tr.init(jax.random.key(0)).params, [b], prefix="valid_"))
      ['valid_accuracy', 'valid_loss', 'valid_ppl', 'valid_tokens']
    """
    totals = None
    for batch in batches:
        _check_batch(batch, trainer.model.head == "per_step", trainer.loss)
        _, sums = _eval_sums_jit(trainer, params, None, batch)
        totals = sums if totals is None else jax.tree_util.tree_map(jnp.add, totals, sums)
    if totals is None:
        raise ValueError("batches must hold at least one batch; got none")
    return _summarise(trainer, jax.device_get(totals), prefix)


def evaluate_stream(trainer: Trainer, params, windows, *, prefix: str = "") -> dict:
    """Stream evaluation: ``B`` contiguous streams read in consecutive windows, the
    recurrent state carried from each window to the next (as in stateful truncated BPTT).

    Every token is predicted from its whole history in its stream, so this is the
    perplexity of the text itself. It differs from the windowed :func:`evaluate_batches`
    (and :meth:`Trainer.evaluate`), which restart every window from zeros: see there.

    Args:
      trainer: the :class:`Trainer` (a per-step head).
      params: the parameters.
      windows: a :class:`rnnjax.tasks.language.StreamBatcher` (all of its windows, in
        order) or an array pair ``(inputs, targets)`` of shape ``(n, B, T)``.
      prefix: prepended to every metric name.

    Returns:
      The same metrics as :func:`evaluate_batches`.

    Example:
      >>> import jax, numpy as np, rnnjax as rj
      >>> from rnnjax.tasks.language import StreamBatcher
      >>> from rnnjax.train import Trainer, evaluate_stream
      >>> tr = Trainer(rj.SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> streams = StreamBatcher(np.arange(100) % 5, batch_size=2, seq_len=8)
      >>> m = evaluate_stream(tr, tr.init(jax.random.key(0)).params, streams)
      >>> m["tokens"]
      96
    """
    if trainer.model.head != "per_step":
        raise ValueError(
            f"evaluate_stream needs a per_step head; got model.head={trainer.model.head!r}"
        )
    if hasattr(windows, "all_windows"):
        xs, ys = windows.all_windows()
    else:
        try:
            xs, ys = windows
        except (TypeError, ValueError) as err:
            raise TypeError(
                "windows must be a StreamBatcher or a pair (inputs, targets) of shape (n, B, T); "
                f"got {type(windows).__name__}"
            ) from err
    xs, ys = jnp.asarray(xs), jnp.asarray(ys)
    if xs.ndim != 3 or ys.shape[:3] != xs.shape:
        raise ValueError(
            f"windows must be (inputs, targets) of shape (n, B, T); got {xs.shape} and {ys.shape}"
        )
    return _summarise(trainer, jax.device_get(_stream_sums_jit(trainer, params, xs, ys)), prefix)


@dataclasses.dataclass(frozen=True)
class EarlyStopping:
    """Stop :func:`fit` when a logged metric has not improved for ``patience`` evaluations.

    Args:
      metric: the name of a metric in the log (``"valid_loss"``, ``"valid_ppl"``, ...).
      patience: how many evaluations without improvement are tolerated.
      mode: ``"min"`` or ``"max"``.
      min_delta: the smallest change that counts as an improvement.

    A non-finite value never counts as an improvement. On resume, :func:`fit` replays the
    rows of its JSONL log, so a resumed run stops where an uninterrupted one would.

    Example:
      >>> from rnnjax.train import EarlyStopping
      >>> stop = EarlyStopping("valid_loss", patience=2)
      >>> tracker = stop.init()
      >>> [stop.update(tracker, v) for v in [3.0, 2.0, 2.5, 2.1]]
      [False, False, False, True]
    """

    metric: str
    patience: int = 5
    mode: str = "min"
    min_delta: float = 0.0

    def __post_init__(self):
        if not isinstance(self.metric, str) or not self.metric:
            raise TypeError(f"metric must be a metric name (str); got {self.metric!r}")
        if (
            isinstance(self.patience, bool)
            or not isinstance(self.patience, (int, np.integer))
            or self.patience < 1
        ):
            raise ValueError(f"patience must be an int >= 1; got {self.patience!r}")
        if self.mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {self.mode!r}")
        if (
            isinstance(self.min_delta, bool)
            or not isinstance(self.min_delta, (int, float, np.floating))
            or not (math.isfinite(self.min_delta) and self.min_delta >= 0)
        ):
            raise ValueError(f"min_delta must be a finite float >= 0; got {self.min_delta!r}")

    def init(self) -> list:
        """A fresh tracker: ``[best value, evaluations since the best]`` (mutable)."""
        return [math.nan, 0]

    def update(self, tracker: list, value) -> bool:
        """Record ``value``; return whether training should stop."""
        value = float(value) if value is not None else math.nan
        best = tracker[0]
        better = math.isfinite(value) and (
            not math.isfinite(best)
            or (
                value < best - self.min_delta
                if self.mode == "min"
                else value > best + self.min_delta
            )
        )
        if better:
            tracker[0], tracker[1] = value, 0
        else:
            tracker[1] += 1
        return tracker[1] >= self.patience


# --------------------------------------------------------------------------- loop


def _host_metrics(m: dict) -> dict:
    out = {}
    for name, v in jax.device_get(m).items():
        v = np.asarray(v)
        if v.ndim == 0:
            out[name] = v.item()
        else:
            out[name] = v.tolist()
    return out


def _read_log(path, upto: int) -> list:
    """The rows of a JSONL log with ``position <= upto``; the file is rewritten to hold
    just those, so a resumed run neither loses nor duplicates rows."""
    import json
    import os

    if path is None or not os.path.exists(path):
        return []
    rows = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                row = json.loads(line)
            except ValueError:
                continue  # a line cut short by a kill: it is written again
            if (
                isinstance(row, dict)
                and isinstance(row.get("position"), int)
                and row["position"] <= upto
            ):
                rows.append(row)
    seen, kept = set(), []
    for row in rows:
        if row["position"] not in seen:
            seen.add(row["position"])
            kept.append(row)
    tmp = os.fspath(path) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for row in kept:
            f.write(json.dumps(row) + "\n")
    os.replace(tmp, path)
    return kept


def fit(
    trainer: Trainer,
    state: TrainState,
    data: Callable[[int], dict],
    num_batches: int,
    *,
    tbptt: Optional[int] = None,
    stateful: bool = False,
    reset_every: Optional[int] = None,
    checkpointer=None,
    log_path=None,
    progress: Union[bool, str] = True,
    callback: Optional[Callable[[TrainState, dict], None]] = None,
    evaluate: Optional[Callable[[Any], dict]] = None,
    eval_every: Optional[int] = None,
    early_stopping: Optional[EarlyStopping] = None,
):
    """Train until ``state.position == num_batches``, evaluating, saving, logging and
    showing progress.

    The data source is a function of the data position, ``data(position) -> batch``, so a
    run resumed from a checkpoint (which holds the position) sees exactly the batches an
    uninterrupted run would have seen.

    Args:
      trainer: the :class:`Trainer`.
      state: the state to continue from (fresh or restored).
      data: ``position -> batch``, deterministic.
      num_batches: total number of batches of the run (not the number still to do).
      tbptt: chunk length for :meth:`Trainer.tbptt_step`; ``None`` for full BPTT.
      stateful: carry the recurrent state from batch to batch (TBPTT only).
      reset_every: with ``stateful``, forget the carry before every batch whose position
        is a multiple of this (a new pass over the streams, e.g.
        ``StreamBatcher.num_windows``).
      checkpointer: an :class:`rnnjax.checkpoint.Checkpointer`; saves at its interval
        (checkpoint step = data position), after every evaluation (so that the best
        checkpoint can be chosen by a validation metric), and at the end. A metric the
        checkpointer ranks by that is absent or non-finite at a save is recorded as NaN:
        that checkpoint never ranks.
      log_path: a JSONL file that gets one row of metrics per batch. On resume the rows
        past ``state.position`` are dropped first, so the file holds each position once.
      progress: ``True`` (a rich bar on a terminal, plain lines otherwise, so a log file
        sees progress as it goes), ``"rich"``, ``"plain"`` or ``False``.
      callback: called as ``callback(state, metrics)`` after every batch.
      evaluate: ``params -> dict`` of metrics, e.g.
        ``lambda p: evaluate_batches(trainer, p, valid, prefix="valid_")`` or
        :func:`evaluate_stream`; its metrics join that batch's row in the log, the
        progress display and the checkpoint metrics.
      eval_every: evaluate after every this many batches (and after the last); default
        only after the last.
      early_stopping: an :class:`EarlyStopping`; checked whenever a row holds its metric.
        The row at which it stops holds ``"stopped_early": True``; the state is saved there.

    Returns:
      ``(state, history)``: the final state and the list of per-batch host metrics of
      this call (rows of evaluated batches hold the evaluation metrics too).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> trainer = rj.Trainer(rj.SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> def data(i):                                      # batch i: (B, T) tokens
      ...     tokens = (jnp.arange(14).reshape(2, 7) + i) % 5
      ...     return {"inputs": tokens[:, :-1], "targets": tokens[:, 1:]}
      >>> state, history = rj.fit(trainer, trainer.init(jax.random.key(0)), data, 3,
      ...                         progress=False)
      >>> int(state.position), len(history), history[-1]["loss"] < history[0]["loss"]
      (3, 3, True)
    """
    from rnnjax.progress import ProgressLog

    num_batches = checks.integer("num_batches", num_batches, 0)
    if tbptt is not None:
        tbptt = checks.integer("tbptt", tbptt, 1)
    stateful = checks.boolean("stateful", stateful)
    if stateful and tbptt is None:
        raise ValueError("stateful=True needs tbptt=k (stateful training is truncated BPTT)")
    if reset_every is not None:
        reset_every = checks.integer("reset_every", reset_every, 1)
    if reset_every is not None and not stateful:
        raise ValueError("reset_every applies to stateful training; got stateful=False")
    if evaluate is not None and not callable(evaluate):
        raise TypeError(
            f"evaluate must be a callable params -> dict; got {type(evaluate).__name__}"
        )
    if eval_every is not None:
        eval_every = checks.integer("eval_every", eval_every, 1)
    if early_stopping is not None and not isinstance(early_stopping, EarlyStopping):
        raise TypeError(
            f"early_stopping must be an EarlyStopping; got {type(early_stopping).__name__}"
        )
    history = []
    start = int(state.position)
    past = _read_log(log_path, start) if log_path is not None else []
    tracker = early_stopping.init() if early_stopping is not None else None
    stop = False
    if tracker is not None:
        for row in past:
            if early_stopping.metric in row:
                stop = early_stopping.update(tracker, row[early_stopping.metric])
    best_metric = getattr(checkpointer, "best_metric", None)
    with ProgressLog(num_batches, start=start, enabled=progress, jsonl_path=log_path) as log:
        for pos in range(start, num_batches):
            if stop:
                break
            batch = data(pos)
            if tbptt is None:
                state, m = trainer.train_step(state, batch)
            else:
                if stateful and reset_every is not None and pos % reset_every == 0:
                    state = trainer.reset_carry(state)
                state, m = trainer.tbptt_step(state, batch, tbptt, stateful=stateful)
            m = _host_metrics(m)
            m["position"] = pos + 1
            _warn_about(pos, m)
            evaluated = evaluate is not None and (
                pos + 1 == num_batches or (eval_every is not None and (pos + 1) % eval_every == 0)
            )
            if evaluated:
                ev = evaluate(state.params)
                if not isinstance(ev, dict):
                    raise TypeError(
                        f"evaluate must return a dict of metrics; got {type(ev).__name__}"
                    )
                m.update({k: _host_number(k, v) for k, v in ev.items()})
            if tracker is not None and early_stopping.metric in m:
                stop = early_stopping.update(tracker, m[early_stopping.metric])
                if stop:
                    m["stopped_early"] = True  # the last row of a run stopped early
            history.append(m)
            log.update(pos + 1, m, show=evaluated or stop)
            if checkpointer is not None:
                sm = _scalar_metrics(m)
                if best_metric is not None and best_metric not in sm:
                    sm[best_metric] = math.nan  # not measured at this state: never ranks
                checkpointer.save(state, metrics=sm, force=evaluated or stop)
            if callback is not None:
                callback(state, m)
    if checkpointer is not None:
        if history:  # nothing new to save when the run was already complete
            sm = _scalar_metrics(history[-1])
            if best_metric is not None and best_metric not in sm:
                sm[best_metric] = math.nan
            checkpointer.save(state, metrics=sm, force=True)
        checkpointer.wait()
    return state, history


def _host_number(name, v):
    try:
        a = np.asarray(jax.device_get(v))
    except Exception as err:  # pragma: no cover - message only
        raise TypeError(f"evaluate returned a non-numeric metric {name!r}: {v!r}") from err
    if a.ndim != 0 or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise TypeError(f"evaluate must return scalar numbers; got {name!r} = {v!r}")
    return a.item()


def _warn_about(pos: int, m: dict) -> None:
    skipped = m["skipped"] if isinstance(m["skipped"], list) else [m["skipped"]]
    if any(skipped):
        total = m["nonfinite_total"]
        total = total[-1] if isinstance(total, list) else total
        warnings.warn(
            f"batch {pos}: non-finite gradient or loss in {sum(skipped)} update(s), not applied "
            f"({total} so far in this run)",
            RuntimeWarning,
            stacklevel=3,
        )
    tokens = m.get("tokens")
    if tokens is not None and (sum(tokens) if isinstance(tokens, list) else tokens) == 0:
        warnings.warn(
            f"batch {pos} has no real step (all padding): no update was made",
            RuntimeWarning,
            stacklevel=3,
        )


def _scalar_metrics(m: dict) -> dict:
    """One float per metric for the checkpoint: TBPTT's per-chunk ``loss`` becomes the
    token-weighted mean over the chunks that were applied (NaN when none was)."""
    out = {}
    for k, v in m.items():
        if isinstance(v, list):
            if k == "loss" and isinstance(m.get("tokens"), list):
                skipped = m.get("skipped") or [False] * len(v)
                pairs = [
                    (float(x), t)
                    for x, t, s in zip(v, m["tokens"], skipped)
                    if t > 0 and not s and math.isfinite(float(x))
                ]
                w = sum(t for _, t in pairs)
                v = sum(x * t for x, t in pairs) / w if w else math.nan
            elif k in ("tokens",):
                v = float(sum(v))
            elif k == "nonfinite_total":
                v = float(v[-1]) if v else math.nan
            else:
                v = float(np.mean(v)) if v else math.nan
        out[k] = float(v)
    return out
