"""Reservoir computing: echo state networks, reservoir matrices, readouts, sweeps, NG-RC.

One job per module:

- :mod:`~rnnjax.reservoir.cell`: the :class:`EchoState` cell (and the engine cell the
  drivers run).
- :mod:`~rnnjax.reservoir.matrices`: reservoir matrices (random dense and sparse,
  orthogonal, cycle, cycle with jumps, delay line, user-supplied) and their products.
- :mod:`~rnnjax.reservoir.topologies`: small-world, clustered, ``+-1`` and fast spectral
  initialisation matrices.
- :mod:`~rnnjax.reservoir.readouts`: ridge statistics and the centred, checked solves.
- :mod:`~rnnjax.reservoir.preamble`: the checks and call every driver shares.
- :mod:`~rnnjax.reservoir.drivers`: harvest and the teacher-forced ridge fits.
- :mod:`~rnnjax.reservoir.freerun`: one-step prediction, free run, forecast, readout apply.
- :mod:`~rnnjax.reservoir.online`: online readouts (RLS/FORCE, LMS).
- :mod:`~rnnjax.reservoir.observables`: echo state property, effective spectral radius,
  R squared, MAE.
- :mod:`~rnnjax.reservoir.variants`: the edge-of-stability ESN and the intrinsic
  plasticity reservoir.
- :mod:`~rnnjax.reservoir.spiking`: the leaky integrate-and-fire reservoir.
- :mod:`~rnnjax.reservoir.compose`: deep and hierarchical reservoirs, readouts of any
  features.
- :mod:`~rnnjax.reservoir.sweeps`: grids and random search at matrix speed.
- :mod:`~rnnjax.reservoir.nvar`: next-generation reservoir computing (NVAR).
- :mod:`~rnnjax.reservoir.freezing`: keep optax from moving reservoir weights.

The names most work needs stand at the top level (``from rnnjax import reservoir``:
``reservoir.EchoState``, ``reservoir.fit_ridge``, ``reservoir.predict``); the rest stay in
their submodules (``reservoir.variants.ES2N``, ``reservoir.topologies.small_world``), as
Optax keeps ``optax.contrib`` apart.
"""

import importlib as _importlib
import warnings as _warnings

from rnnjax.reservoir import (
    cell,
    compose,
    drivers,
    freerun,
    freezing,
    matrices,
    nvar,
    observables,
    online,
    preamble,
    readouts,
    spiking,
    sweeps,
    topologies,
    variants,
)
from rnnjax.reservoir.cell import EchoState, EchoStateState
from rnnjax.reservoir.drivers import fit_readouts, fit_ridge, harvest, ridge_stats
from rnnjax.reservoir.freerun import forecast, generate, predict, readout_apply
from rnnjax.reservoir.freezing import freeze_reservoir
from rnnjax.reservoir.nvar import NVAR, nvar_features
from rnnjax.reservoir.observables import (
    echo_state_property,
    effective_spectral_radius,
    mae,
    rsquare,
)
from rnnjax.reservoir.online import fit_lms, fit_rls
from rnnjax.reservoir.readouts import solve_ridge
from rnnjax.reservoir.sweeps import random_search, sweep

__all__ = [
    # submodules
    "cell",
    "compose",
    "drivers",
    "freerun",
    "freezing",
    "matrices",
    "nvar",
    "observables",
    "online",
    "preamble",
    "readouts",
    "spiking",
    "sweeps",
    "topologies",
    "variants",
    # the echo state network: cell, teacher-forced fits, prediction
    "EchoState",
    "EchoStateState",
    "harvest",
    "ridge_stats",
    "solve_ridge",
    "fit_ridge",
    "fit_readouts",
    "fit_rls",
    "fit_lms",
    "readout_apply",
    "predict",
    "generate",
    "forecast",
    # model selection and diagnostics
    "sweep",
    "random_search",
    "echo_state_property",
    "effective_spectral_radius",
    "rsquare",
    "mae",
    # next-generation reservoir computing, training beside optax
    "NVAR",
    "nvar_features",
    "freeze_reservoir",
]

# names that left the top level: they stay one release as deprecated attributes
_MOVED = {
    "compose": ("fit_states", "harvest_stack"),
    "freezing": ("RESERVOIR_KEYS", "frozen_labels", "trainable_mask"),
    "matrices": ("TOPOLOGIES", "dense_matrix"),
    "observables": ("ESPResult",),
    "readouts": ("READOUT_KEYS", "RidgeStats", "solve_ridges"),
    "spiking": ("LIF", "LIFState"),
    "topologies": ("bernoulli", "cluster", "fast_spectral", "small_world"),
    "variants": (
        "ES2N",
        "ES2NState",
        "IPReservoir",
        "IPState",
        "LOCAL_RULES",
        "LocalPlasticityReservoir",
        "LocalPlasticityState",
    ),
}
_MOVED_TO = {name: module for module, names in _MOVED.items() for name in names}


def __getattr__(name):
    if name in _MOVED_TO:
        where = f"rnnjax.reservoir.{_MOVED_TO[name]}"
        _warnings.warn(
            f"rnnjax.reservoir.{name} is deprecated and leaves the top level in the next "
            f"release: use {where}.{name}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(_importlib.import_module(where), name)
    raise AttributeError(f"module 'rnnjax.reservoir' has no attribute {name!r}")
