"""Deprecated: the former public face of :mod:`rnnjax.reservoir`; importing it warns.

Use :mod:`rnnjax.reservoir` (``from rnnjax import reservoir``): the same names, the common
ones at its top level and the rest in its submodules. This module goes in the next release.
"""

import warnings

from rnnjax import reservoir as _reservoir

warnings.warn(
    "rnnjax.esn is deprecated and goes in the next release: use rnnjax.reservoir (the same names)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = list(_reservoir.__all__)


def __getattr__(name):
    return getattr(_reservoir, name)
