"""The train state, the loss heads and the Trainer with its jitted steps."""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, NamedTuple, Optional, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax import checks
from rnnjax import metrics as _metrics
from rnnjax.train._optimizer import frozen_labels, make_optimizer


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


def _check_state(name: str, state) -> None:
    """A :class:`TrainState` where one is expected (not the params alone)."""
    if not isinstance(state, TrainState):
        hint = (
            " (model parameters? pass the whole state: trainer.init(key) or a restored one)"
            if isinstance(state, dict)
            else ""
        )
        raise TypeError(f"{name} must be a TrainState; got {type(state).__name__}{hint}")


def _check_params(name: str, params) -> None:
    """Model parameters where they are expected (not the whole :class:`TrainState`)."""
    if isinstance(params, TrainState):
        raise TypeError(
            f"{name} must be the model parameters; got a TrainState (pass state.params)"
        )


def _schedule_count(opt_state) -> Optional[int]:
    """The count of optax's ``ScaleByScheduleState`` in ``opt_state`` (updates applied)."""
    is_sched = lambda x: isinstance(x, optax.ScaleByScheduleState)  # noqa: E731
    for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=is_sched):
        if is_sched(leaf):
            return int(leaf.count)
    return None


def _injected_rate(opt_state) -> Optional[float]:
    """``learning_rate`` of an ``optax.inject_hyperparams`` state, if there is one."""
    is_inj = lambda x: isinstance(x, optax.InjectHyperparamsState)  # noqa: E731
    for leaf in jax.tree_util.tree_leaves(opt_state, is_leaf=is_inj):
        if is_inj(leaf) and "learning_rate" in leaf.hyperparams:
            return float(leaf.hyperparams["learning_rate"])
    return None


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
      model: a :class:`rnnjax.SequenceModel` (or anything with ``init``,
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
      schedule_unit: what a ``learning_rate`` schedule counts: ``"update"`` (default;
        optimiser updates, optax's convention) or ``"batch"`` (batches, i.e. the data
        position). They differ under truncated BPTT, which makes ``T / k`` updates per
        batch: with ``"update"`` a schedule of ``1000`` steps is over after
        ``1000 k / T`` batches; with ``"batch"`` every chunk of batch ``p`` uses
        ``learning_rate(p)``. ``"batch"`` needs a named optimiser and a schedule (the
        optimiser runs at rate 1 and its update is scaled by the schedule, which is
        exact for every named optimiser: their learning rate is a final scaling).

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
      >>> from rnnjax.blocks import SequenceModel
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
    schedule_unit: str = "update"
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
        if self.schedule_unit not in ("update", "batch"):
            raise ValueError(
                f"schedule_unit must be 'update' or 'batch'; got {self.schedule_unit!r}"
            )
        if self.schedule_unit == "batch" and not (
            isinstance(self.optimizer, str) and callable(self.learning_rate)
        ):
            raise ValueError(
                "schedule_unit='batch' needs a named optimizer (a str) and a learning_rate "
                f"schedule; got optimizer={self.optimizer!r}, learning_rate={self.learning_rate!r}"
            )
        tx = make_optimizer(
            self.optimizer,
            1.0 if self.schedule_unit == "batch" else self.learning_rate,
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
            part of the target; ``None`` for no carry. :meth:`rnnjax.Checkpointer.restore`
            fills in a missing carry itself, reading ``B`` from the checkpoint (when the
            trainer is recorded in the directory's config), so
            ``ckpt.restore(trainer.abstract_state())`` restores a stateful run too.

        Returns:
          A :class:`TrainState` of ``jax.ShapeDtypeStruct`` leaves.

        Example:
          >>> import rnnjax as rj
          >>> tr = rj.Trainer(rj.SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5))
          >>> tr.abstract_state().carry is None, tr.abstract_state(batch_size=2).carry.h.shape
          (True, (2, 4))
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
            # recorded only when not the default, so configs written before it still match
            **({"schedule_unit": self.schedule_unit} if self.schedule_unit != "update" else {}),
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
            schedule_unit=config.get("schedule_unit", "update"),
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
        _check_state("state", state)
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
        _check_state("state", state)
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

    def learning_rate_at(self, state: TrainState) -> Optional[float]:
        """The learning rate of the last update made to reach ``state`` (the first
        update's rate for a fresh state), or ``None`` where it cannot be known (a bare
        optax transformation without ``optax.inject_hyperparams``).

        A schedule is read at the count optax keeps in the optimiser state (updates
        applied; a skipped non-finite update does not count), or at the batch with
        ``schedule_unit="batch"``. :func:`fit` logs it as ``lr``.

        Example:
          >>> import jax, optax, rnnjax as rj
          >>> tr = rj.Trainer(rj.SequenceModel(rj.GRU(3, 4), output_size=5, vocab_size=5),
          ...                 learning_rate=optax.schedules.linear_schedule(1.0, 0.0, 10))
          >>> tr.learning_rate_at(tr.init(jax.random.key(0)))
          1.0
        """
        _check_state("state", state)
        lr = self.learning_rate
        if isinstance(self.optimizer, str):
            lr = 1e-3 if lr is None else lr
        elif hasattr(self.optimizer, "build") and hasattr(self.optimizer, "kwargs"):
            lr = dict(self.optimizer.kwargs).get("learning_rate")
        else:
            lr = None
        if lr is None:
            return _injected_rate(state.opt_state)
        if not callable(lr):
            return float(lr)
        if self.schedule_unit == "batch":
            return float(lr(max(int(state.position) - 1, 0)))
        count = _schedule_count(state.opt_state)
        if count is None:
            return None
        return float(lr(max(count - 1, 0)))

    def reset_carry(self, state: TrainState) -> TrainState:
        """Forget the carried recurrent state (the next stateful call starts from zeros)."""
        return state._replace(carry=None)

    def evaluate(self, params, batch: dict) -> dict:
        """Masked metrics on a batch: ``loss`` and, for cross-entropy, ``perplexity``
        (``exp`` of the mean cross-entropy per token) and ``accuracy``; ``tokens``."""
        _check_params("params", params)
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

    def _update(self, params, opt_state, grads, loss, position=None):
        grad_norm = self._trainable_norm(params, grads)
        # a non-finite loss with finite gradients is skipped as well: apply_if_finite
        # sees NaN gradients, keeps params and inner state, and counts it
        finite_loss = jnp.isfinite(loss)
        grads = jax.tree_util.tree_map(
            lambda g: jnp.where(finite_loss, g, jnp.full_like(g, jnp.nan)), grads
        )
        updates, opt_state = self.tx.update(grads, opt_state, params)
        if self.schedule_unit == "batch":  # the optimiser ran at rate 1: scale by the batch's rate
            rate = self.learning_rate(position)
            updates = jax.tree_util.tree_map(lambda u: u * jnp.asarray(rate, u.dtype), updates)
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
        return trainer._update(state.params, state.opt_state, grads, loss, state.position)

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
            p2, o2, m = trainer._update(params, opt_state, grads, loss, state.position)
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
