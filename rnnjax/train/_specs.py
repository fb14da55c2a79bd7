"""Recorded specs: optax schedules and optimisers recorded by name and arguments."""

from __future__ import annotations

import dataclasses
from typing import Any

import optax


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
