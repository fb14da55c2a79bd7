"""The checkpointer's settings, its run record and its orbax manager."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Optional

import orbax.checkpoint as ocp

from rnnjax import checks
from rnnjax.checkpoint._files import (
    CONFIG_NAME,
    RANKING_NAME,
    CheckpointError,
    _damaged_json,
    _first_line,
    _write_json,
    _write_text,
    config_mismatch,
    load_config,
)

BEST_MODES = ("min", "max")


@dataclasses.dataclass(frozen=True)
class CheckpointOptions:
    """The settings of a :class:`Checkpointer` (frozen, checked when made).

    :class:`rnnjax.Checkpointer` takes them as keyword arguments and keeps them as
    ``checkpointer.options``.

    Args:
      save_every: save when the position is a multiple of this (default 100).
      save_interval_s: also save when this many seconds have passed since the last
        save; ``None`` for batch counts only (default 300).
      keep_last: keep the last this many checkpoints (default 3).
      best_metric: the name of a metric passed to ``save``; the best checkpoint by it
        is kept as well (``None``: no ranking).
      best_mode: ``"min"`` (default) or ``"max"``.
      async_save: write in a background thread where orbax allows (default ``True``).

    Example:
      >>> from rnnjax.checkpoint import CheckpointOptions
      >>> options = CheckpointOptions(save_every=10, best_metric="valid_loss")
      >>> options.keep_last, options.best_mode
      (3, 'min')
    """

    save_every: int = 100
    save_interval_s: Optional[float] = 300.0
    keep_last: int = 3
    best_metric: Optional[str] = None
    best_mode: str = "min"
    async_save: bool = True

    def __post_init__(self):
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("save_every", checks.integer("save_every", self.save_every, 1))
        if self.save_interval_s is not None:
            fix(
                "save_interval_s",
                checks.number("save_interval_s", self.save_interval_s, 0.0, min_open=True),
            )
        fix("keep_last", checks.integer("keep_last", self.keep_last, 1))
        checks.choice("best_mode", self.best_mode, BEST_MODES)
        if self.best_metric is not None and not isinstance(self.best_metric, str):
            raise TypeError(
                f"best_metric must be a metric name (str) or None; got {self.best_metric!r}"
            )
        fix("async_save", checks.boolean("async_save", self.async_save))

    def better(self, a: float, b: float) -> bool:
        """Whether metric value ``a`` ranks above ``b`` (by ``best_mode``)."""
        return a < b if self.best_mode == "min" else a > b


def run_record(config, trainer=None, data=None) -> Optional[dict]:
    """The run's config as it is recorded: ``config`` with the trainer's record
    (``"trainer"``) and the data source's (``"data"``), JSON-clean; ``None`` for none."""
    if config is not None and not isinstance(config, dict):
        raise TypeError(f"config must be a dict or None; got {type(config).__name__}")
    if data is not None:
        if not callable(getattr(data, "config", None)):
            raise TypeError(
                "data must have a config() method returning a JSON-clean dict (a "
                f"TextCorpus); got {type(data).__name__}"
            )
        config = dict(config or {}, data=data.config())
    if trainer is not None:
        if not callable(getattr(trainer, "config", None)):
            raise TypeError(
                f"trainer must be an rnnjax.train.Trainer; got {type(trainer).__name__}"
            )
        recorded = trainer.config()
        if config is not None and "trainer" in config and config["trainer"] != recorded:
            raise ValueError("config['trainer'] differs from trainer.config(); pass one of them")
        config = dict(config or {}, trainer=recorded)
    if config is None:
        return None
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except (TypeError, ValueError) as err:
        raise TypeError(f"config must be JSON-serialisable; got {config!r}: {err}") from err


def check_saved_config(directory: str, config: dict) -> None:
    """An existing ``config.json`` in ``directory`` must be ``config`` (a resumed run
    is the same run); a different one is a ``ValueError`` listing the fields."""
    path = os.path.join(directory, CONFIG_NAME)
    if os.path.exists(path):
        existing = load_config(directory)
        if existing != config:
            raise config_mismatch(f"saved at {path}", existing, config)


def write_shared_files(directory: str, config: Optional[dict], options: CheckpointOptions):
    """Write ``config.json`` (when missing) and ``ranking.json`` (process 0 only)."""
    if config is not None:
        path = os.path.join(directory, CONFIG_NAME)
        if not os.path.exists(path):
            _write_text(path, json.dumps(config, indent=2, sort_keys=True))
    if options.best_metric is not None:
        _write_json(
            os.path.join(directory, RANKING_NAME),
            {"best_metric": options.best_metric, "best_mode": options.best_mode},
        )


def open_manager(directory: str, options: CheckpointOptions) -> ocp.CheckpointManager:
    """The orbax ``CheckpointManager`` of ``options``: the last ``keep_last`` and the best
    by ``best_metric`` kept (a non-finite metric ranks last, never best)."""
    policies = [ocp.checkpoint_managers.LatestN(n=options.keep_last)]
    best_fn = None
    metric = options.best_metric
    if metric is not None:
        worst = math.inf if options.best_mode == "min" else -math.inf

        def best_fn(m):  # a non-finite metric ranks last: it is never the best
            v = float(m.get(metric, math.nan)) if isinstance(m, dict) else math.nan
            return v if math.isfinite(v) else worst

        policies.append(
            ocp.checkpoint_managers.BestN(
                get_metric_fn=best_fn, reverse=(options.best_mode == "min"), n=1
            )
        )
    manager_options = ocp.CheckpointManagerOptions(
        save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(options.save_every),
        preservation_policy=ocp.checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=best_fn,
        best_mode=options.best_mode,
        enable_async_checkpointing=options.async_save,
        create=True,
    )
    try:
        return ocp.CheckpointManager(directory, options=manager_options)
    except Exception as err:
        raise CheckpointError(
            f"checkpoint directory {directory} cannot be opened by orbax: "
            f"{type(err).__name__}: {_first_line(err)}{_damaged_json(directory)}"
        ) from err
