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
- :func:`fit`: the loop, with checkpoints, a progress bar and a JSONL log.

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

from rnnjax import metrics as _metrics

__all__ = [
    "make_optimizer",
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
    """
    if frozen is None:
        return jax.tree_util.tree_map(lambda _: "trainable", params)
    if callable(frozen):
        flags = frozen(params)
    elif isinstance(frozen, (tuple, list, set, frozenset)) and all(isinstance(n, str) for n in frozen):
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
        if not callable(learning_rate):
            if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not learning_rate > 0:
                raise ValueError(
                    f"learning_rate must be a positive float or an optax schedule; got {learning_rate!r}"
                )
        opt = _OPTIMIZERS[optimizer](learning_rate, **optimizer_kwargs)
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
        if isinstance(clip_norm, bool) or not isinstance(clip_norm, (int, float)) or not clip_norm > 0:
            raise ValueError(f"clip_norm must be a positive float or None; got {clip_norm!r}")
        opt = optax.chain(optax.clip_by_global_norm(float(clip_norm)), opt)
    if frozen is not None:
        opt = optax.multi_transform(
            {"trainable": opt, "frozen": optax.set_to_zero()},
            functools.partial(frozen_labels, frozen=frozen),
        )
    if max_consecutive_nonfinite is None:
        max_consecutive_nonfinite = _NEVER
    return optax.apply_if_finite(opt, max_consecutive_nonfinite)


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


def _check_batch(batch, per_step: bool, loss=None) -> None:
    if not isinstance(batch, dict) or "inputs" not in batch or "targets" not in batch:
        got = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise ValueError(f"batch must be a dict with 'inputs', 'targets' and optional 'length'; got {got}")
    x, y = batch["inputs"], batch["targets"]
    if jnp.ndim(x) < 2:
        raise ValueError(f"batch['inputs'] must be (B, T) tokens or (B, T, I) features; got shape {jnp.shape(x)}")
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
    n = batch.get("length")
    if n is not None:
        if jnp.shape(n) != (B,) or not jnp.issubdtype(jnp.result_type(n), jnp.integer):
            raise ValueError(
                f"batch['length'] must be integers of shape (B,) = ({B},); got shape "
                f"{jnp.shape(n)} and dtype {jnp.result_type(n)}"
            )
        if not isinstance(n, jax.core.Tracer):
            lv = np.asarray(n)
            if lv.size and (lv.min() < 0 or lv.max() > T):
                raise ValueError(f"batch['length'] must lie in [0, T] = [0, {T}]; got [{lv.min()}, {lv.max()}]")


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
    ``clipped`` (``grad_norm > clip_norm``), ``skipped`` (non-finite gradient, not
    applied) and ``nonfinite_total`` (the running count kept by ``apply_if_finite``).

    Example:
      >>> import jax, jax.numpy as jnp, rnnjax as rj
      >>> from rnnjax.models import SequenceModel
      >>> from rnnjax.train import Trainer
      >>> trainer = Trainer(SequenceModel(rj.GRU(4, 8), output_size=5, vocab_size=5))
      >>> state = trainer.init(jax.random.key(0))
      >>> batch = {"inputs": jnp.zeros((2, 6), jnp.int32), "targets": jnp.ones((2, 6), jnp.int32)}
      >>> state, m = trainer.train_step(state, batch)
      >>> sorted(m)
      ['clipped', 'grad_norm', 'loss', 'nonfinite_total', 'skipped']
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
            raise ValueError(f"loss must be one of {sorted(LOSSES)} or a callable; got {self.loss!r}")
        if hasattr(self.model, "trainer_loss"):  # a model with its own loss (Seq2Seq)
            if self.loss != "cross_entropy":
                raise ValueError(f"loss must be the default for a model with its own trainer_loss; got {self.loss!r}")
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
        """A JSON-serialisable description of the trainer (for the checkpoint config)."""
        lr = self.learning_rate
        return {
            "model": repr(self.model),
            "loss": self.loss if isinstance(self.loss, str) else repr(self.loss),
            "optimizer": self.optimizer if isinstance(self.optimizer, str) else repr(self.optimizer),
            "learning_rate": lr if lr is None or isinstance(lr, (int, float)) else repr(lr),
            "clip_norm": self.clip_norm,
            "frozen": list(self.frozen) if isinstance(self.frozen, tuple) else repr(self.frozen),
            "optimizer_kwargs": {k: (v if isinstance(v, (int, float, str, bool)) else repr(v))
                                 for k, v in self.optimizer_kwargs},
        }

    def train_step(self, state: TrainState, batch: dict):
        """One optimiser update on a batch (full backpropagation through time).

        Args:
          state: a :class:`TrainState`.
          batch: ``{"inputs", "targets", "length"?}`` (see the module docstring).

        Returns:
          ``(state, metrics)`` with scalar metrics ``loss``, ``grad_norm``, ``clipped``,
          ``skipped``, ``nonfinite_total``. ``step`` and ``position`` grow by one.
        """
        if not hasattr(self.model, "trainer_loss"):  # such a model checks its own batches
            _check_batch(batch, self.model.head == "per_step", self.loss)
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
            raise ValueError(f"tbptt_step needs a per_step head; got model.head={getattr(self.model, 'head', None)!r}")
        _check_batch(batch, True, self.loss)
        T = jnp.shape(batch["inputs"])[1]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or T % k:
            raise ValueError(f"k must be an int >= 1 dividing T = {T}; got {k!r}")
        if stateful and state.carry is None:
            state = state._replace(carry=self._zero_carry(jnp.shape(batch["inputs"])[0]))
        return _tbptt_step_jit(self, state, batch, k, bool(stateful))

    def chunk_losses(self, params, batch: dict, k: int):
        """The per-chunk losses ``(T / k,)`` of truncated BPTT at fixed ``params``: chunk
        ``j`` starts from the stop-gradient final state of chunk ``j - 1``, exactly as in
        :meth:`tbptt_step` (which also updates the params between chunks). Differentiable:
        the gradient of chunk ``j``'s loss is zero for every input before chunk ``j``."""
        if self.model.head != "per_step":
            raise ValueError(f"chunk_losses needs a per_step head; got model.head={self.model.head!r}")
        _check_batch(batch, True, self.loss)
        T = jnp.shape(batch["inputs"])[1]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1 or T % k:
            raise ValueError(f"k must be an int >= 1 dividing T = {T}; got {k!r}")
        return _chunk_losses_jit(self, params, batch, k)

    def reset_carry(self, state: TrainState) -> TrainState:
        """Forget the carried recurrent state (the next stateful call starts from zeros)."""
        return state._replace(carry=None)

    def evaluate(self, params, batch: dict) -> dict:
        """Masked metrics on a batch: ``loss`` and, for cross-entropy, ``perplexity``
        (``exp`` of the mean cross-entropy per token) and ``accuracy``; ``tokens``."""
        if not hasattr(self.model, "trainer_loss"):
            _check_batch(batch, self.model.head == "per_step", self.loss)
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
        updates, opt_state = self.tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        clip = jnp.inf if self.clip_norm is None else self.clip_norm
        m = {
            "loss": loss,
            "grad_norm": grad_norm,
            "clipped": grad_norm > clip,
            "skipped": jnp.logical_not(jnp.isfinite(grad_norm)),
            "nonfinite_total": opt_state.total_notfinite,
        }
        return params, opt_state, m


def _train_step_impl(trainer: Trainer, state: TrainState, batch):
    key, sub = jax.random.split(state.key)

    def loss_of(p):
        loss, _ = trainer._forward(p, None, batch, sub)
        return loss

    loss, grads = jax.value_and_grad(loss_of)(state.params)
    params, opt_state, m = trainer._update(state.params, state.opt_state, grads, loss)
    new = state._replace(
        step=state.step + 1, position=state.position + 1, params=params,
        opt_state=opt_state, key=key,
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
            return p2, o2, new_carry, m

        def no_update(_):
            # every sequence has ended: nothing to learn, the carry stays frozen
            m = {
                "loss": jnp.zeros((), jnp.float32),
                "grad_norm": jnp.zeros((), jnp.float32),
                "clipped": jnp.zeros((), bool),
                "skipped": jnp.zeros((), bool),
                "nonfinite_total": opt_state.total_notfinite,
            }
            return params, opt_state, carry, m

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
        step=state.step + n, position=state.position + 1, params=params,
        opt_state=opt_state, key=key, carry=carry if stateful else state.carry,
    )
    return new, m


def _evaluate_impl(trainer: Trainer, params, batch):
    loss, (_, out, mask) = trainer._forward(params, None, batch, None)
    y = batch["targets"]
    m = {"loss": loss}
    if trainer.loss == "cross_entropy":
        m["perplexity"] = jnp.exp(loss)
        m["accuracy"] = _metrics.accuracy(out, y, mask)
    m["tokens"] = jnp.sum(mask) if mask is not None else jnp.asarray(math.prod(y.shape[:2 if trainer.model.head == "per_step" else 1]))
    return m


_train_step_jit = jax.jit(_train_step_impl, static_argnums=0)
_tbptt_step_jit = jax.jit(_tbptt_step_impl, static_argnums=(0, 3, 4))
_evaluate_jit = jax.jit(_evaluate_impl, static_argnums=0)
_chunk_losses_jit = jax.jit(_chunk_losses_impl, static_argnums=(0, 3))


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


def fit(
    trainer: Trainer,
    state: TrainState,
    data: Callable[[int], dict],
    num_batches: int,
    *,
    tbptt: Optional[int] = None,
    stateful: bool = False,
    checkpointer=None,
    log_path=None,
    progress: bool = True,
    callback: Optional[Callable[[TrainState, dict], None]] = None,
):
    """Train until ``state.position == num_batches``, saving, logging and showing progress.

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
      checkpointer: an :class:`rnnjax.checkpoint.Checkpointer`; saves at its interval
        (checkpoint step = data position) and always at the end.
      log_path: a JSONL file that gets one line of metrics per batch (appended).
      progress: show a rich progress bar with the loss and steps per second.
      callback: called as ``callback(state, metrics)`` after every batch.

    Returns:
      ``(state, history)``: the final state and the list of per-batch host metrics.
    """
    from rnnjax.progress import ProgressLog

    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 0:
        raise ValueError(f"num_batches must be an int >= 0; got {num_batches!r}")
    if stateful and tbptt is None:
        raise ValueError("stateful=True needs tbptt=k (stateful training is truncated BPTT)")
    history = []
    start = int(state.position)
    with ProgressLog(num_batches, start=start, enabled=progress, jsonl_path=log_path) as log:
        for pos in range(start, num_batches):
            batch = data(pos)
            if tbptt is None:
                state, m = trainer.train_step(state, batch)
            else:
                state, m = trainer.tbptt_step(state, batch, tbptt, stateful=stateful)
            m = _host_metrics(m)
            m["position"] = pos + 1
            skipped = m["skipped"] if isinstance(m["skipped"], list) else [m["skipped"]]
            if any(skipped):
                warnings.warn(
                    f"batch {pos}: non-finite gradient in {sum(skipped)} update(s), not applied "
                    f"({m['nonfinite_total'] if not isinstance(m['nonfinite_total'], list) else m['nonfinite_total'][-1]} "
                    "so far in this run)",
                    RuntimeWarning,
                    stacklevel=2,
                )
            history.append(m)
            log.update(pos + 1, m)
            if checkpointer is not None:
                checkpointer.save(state, metrics=_scalar_metrics(m))
            if callback is not None:
                callback(state, m)
    if checkpointer is not None:
        if history:  # nothing new to save when the run was already complete
            checkpointer.save(state, metrics=_scalar_metrics(history[-1]), force=True)
        checkpointer.wait()
    return state, history


def _scalar_metrics(m: dict) -> dict:
    out = {}
    for k, v in m.items():
        if isinstance(v, list):
            v = float(np.mean(v)) if v else float("nan")
        out[k] = float(v)
    return out
