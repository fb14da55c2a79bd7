"""Evaluation over batches and streams, and early stopping."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import checks
from rnnjax import metrics as _metrics
from rnnjax.train._trainer import Trainer, _check_batch, _check_params


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
    _check_params("params", params)
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
    _check_params("params", params)
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
        checks.choice("mode", self.mode, ("min", "max"))
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
