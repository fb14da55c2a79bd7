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

:mod:`rnnjax.esn` re-exports the public names.
"""

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
from rnnjax.reservoir.compose import fit_states, harvest_stack
from rnnjax.reservoir.drivers import fit_readouts, fit_ridge, harvest, ridge_stats
from rnnjax.reservoir.freerun import forecast, generate, predict, readout_apply
from rnnjax.reservoir.freezing import (
    RESERVOIR_KEYS,
    freeze_reservoir,
    frozen_labels,
    trainable_mask,
)
from rnnjax.reservoir.matrices import TOPOLOGIES, dense_matrix
from rnnjax.reservoir.nvar import NVAR, nvar_features
from rnnjax.reservoir.observables import (
    ESPResult,
    echo_state_property,
    effective_spectral_radius,
    mae,
    rsquare,
)
from rnnjax.reservoir.online import fit_lms, fit_rls
from rnnjax.reservoir.readouts import (
    READOUT_KEYS,
    RidgeStats,
    solve_ridge,
    solve_ridges,
)
from rnnjax.reservoir.spiking import LIF, LIFState
from rnnjax.reservoir.sweeps import random_search, sweep
from rnnjax.reservoir.topologies import bernoulli, cluster, fast_spectral, small_world
from rnnjax.reservoir.variants import (
    ES2N,
    LOCAL_RULES,
    ES2NState,
    IPReservoir,
    IPState,
    LocalPlasticityReservoir,
    LocalPlasticityState,
)

__all__ = [
    "cell",
    "drivers",
    "freerun",
    "online",
    "observables",
    "preamble",
    "freezing",
    "matrices",
    "nvar",
    "readouts",
    "sweeps",
    "topologies",
    "EchoState",
    "EchoStateState",
    "ES2N",
    "ES2NState",
    "IPReservoir",
    "IPState",
    "LocalPlasticityReservoir",
    "LocalPlasticityState",
    "LOCAL_RULES",
    "LIF",
    "LIFState",
    "spiking",
    "compose",
    "variants",
    "fit_states",
    "harvest_stack",
    "ESPResult",
    "RidgeStats",
    "harvest",
    "ridge_stats",
    "solve_ridge",
    "solve_ridges",
    "fit_ridge",
    "fit_readouts",
    "fit_rls",
    "fit_lms",
    "readout_apply",
    "predict",
    "generate",
    "forecast",
    "sweep",
    "random_search",
    "echo_state_property",
    "effective_spectral_radius",
    "rsquare",
    "mae",
    "frozen_labels",
    "trainable_mask",
    "freeze_reservoir",
    "dense_matrix",
    "TOPOLOGIES",
    "small_world",
    "cluster",
    "bernoulli",
    "fast_spectral",
    "NVAR",
    "nvar_features",
    "RESERVOIR_KEYS",
    "READOUT_KEYS",
]
