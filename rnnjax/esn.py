"""Echo state networks: the public face of :mod:`rnnjax.reservoir`.

Everything lives in the :mod:`rnnjax.reservoir` package (one job per module: cell,
matrices, readouts, drivers, sweeps, NG-RC, freezing); this module re-exports its public
names, so ``from rnnjax import esn; esn.fit_ridge(...)`` keeps working.

Shapes: ``T`` time, ``I`` input size, ``N`` reservoir size, ``O`` output size, ``F``
feedback size, ``M`` number of models in a sweep.

References:
  Jaeger (2001). The "echo state" approach to analysing and training recurrent neural
  networks. GMD Report 148.
  Lukosevicius (2012). A practical guide to applying echo state networks. In: Neural
  Networks: Tricks of the Trade.
"""

from rnnjax.reservoir import *  # noqa: F401,F403
from rnnjax.reservoir import __all__  # noqa: F401
from rnnjax.reservoir.drivers import _fit_jit  # noqa: F401  (compile-cache checks in tests)
