"""Training: optimiser factory, train state, jitted train step, loss heads, truncated BPTT.

The package has one private module per section: the optimiser (``_optimizer``), recorded
specs (``_specs``), the trainer (``_trainer``), evaluation (``_evaluation``) and the loop
(``_loop``). Every public name lives here, ``rnnjax.train.<name>``.

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

from rnnjax.train._evaluation import EarlyStopping, evaluate_batches, evaluate_stream
from rnnjax.train._loop import fit
from rnnjax.train._optimizer import frozen_labels, make_optimizer
from rnnjax.train._specs import Optimizer, Schedule, optimizer, schedule
from rnnjax.train._trainer import (
    LOSSES,
    Trainer,
    TrainState,
    _check_batch,  # noqa: F401  (rnnjax.distributed uses it)
)

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

# The public names are documented, recorded (rnnjax.spec) and pickled as rnnjax.train.<name>,
# wherever in the package they are defined.
for _name in __all__:
    _obj = globals()[_name]
    if hasattr(_obj, "__module__") and not isinstance(_obj, dict):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover - builtins
            pass
del _name, _obj
