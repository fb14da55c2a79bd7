"""Reservoir computing: echo state networks, reservoir matrices, readouts, sweeps, NG-RC.

One job per module:

- :mod:`~rnnjax.reservoir.cell`: the :class:`EchoState` cell (and the engine cell the
  drivers run).
- :mod:`~rnnjax.reservoir.matrices`: reservoir matrices (random dense and sparse,
  orthogonal, cycle, cycle with jumps, delay line, user-supplied) and their products.
- :mod:`~rnnjax.reservoir.readouts`: ridge statistics and the centred, checked solves.
- :mod:`~rnnjax.reservoir.drivers`: harvest, teacher-forced fits, prediction, free run, RLS.
- :mod:`~rnnjax.reservoir.sweeps`: grids and random search at matrix speed.
- :mod:`~rnnjax.reservoir.nvar`: next-generation reservoir computing (NVAR).
- :mod:`~rnnjax.reservoir.freezing`: keep optax from moving reservoir weights.

:mod:`rnnjax.esn` re-exports the public names.
"""

from rnnjax.reservoir import cell, drivers, freezing, matrices, nvar, readouts, sweeps
from rnnjax.reservoir.cell import EchoState, EchoStateState
from rnnjax.reservoir.drivers import (
    ESPResult,
    echo_state_property,
    fit_readouts,
    fit_ridge,
    fit_rls,
    forecast,
    generate,
    harvest,
    predict,
    ridge_stats,
)
from rnnjax.reservoir.freezing import (
    RESERVOIR_KEYS,
    freeze_reservoir,
    frozen_labels,
    trainable_mask,
)
from rnnjax.reservoir.matrices import TOPOLOGIES, dense_matrix
from rnnjax.reservoir.nvar import NVAR, nvar_features
from rnnjax.reservoir.readouts import (
    READOUT_KEYS,
    RidgeStats,
    readout_apply,
    solve_ridge,
    solve_ridges,
)
from rnnjax.reservoir.sweeps import random_search, sweep

__all__ = [
    "cell",
    "drivers",
    "freezing",
    "matrices",
    "nvar",
    "readouts",
    "sweeps",
    "EchoState",
    "EchoStateState",
    "ESPResult",
    "RidgeStats",
    "harvest",
    "ridge_stats",
    "solve_ridge",
    "solve_ridges",
    "fit_ridge",
    "fit_readouts",
    "fit_rls",
    "readout_apply",
    "predict",
    "generate",
    "forecast",
    "sweep",
    "random_search",
    "echo_state_property",
    "frozen_labels",
    "trainable_mask",
    "freeze_reservoir",
    "dense_matrix",
    "TOPOLOGIES",
    "NVAR",
    "nvar_features",
    "RESERVOIR_KEYS",
    "READOUT_KEYS",
]
