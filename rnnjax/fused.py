"""Deprecated: the former home of the fast-path switches; importing it warns.

The fused path lives in :mod:`rnnjax.engine` and is chosen by an explicit
:class:`rnnjax.ScanConfig` (``config=`` of :func:`rnnjax.unroll` / :func:`rnnjax.unroll_batch`,
a field of every layer and Flax module). The context manager :func:`options` read global
state at trace time, so a function jitted once silently kept its first setting; it raises
and names the replacement. This module goes in the next release.
"""

from __future__ import annotations

import warnings

from rnnjax.engine import ScanConfig, default_projection

warnings.warn(
    "rnnjax.fused is deprecated and goes in the next release: use rnnjax.ScanConfig "
    "(config= of unroll/unroll_batch or a layer's config field)",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["ScanConfig", "Options", "options", "default_projection"]

Options = ScanConfig  # the old name of the settings


def options(**kwargs):
    """Removed: raises a ``TypeError`` naming :class:`rnnjax.ScanConfig`.

    Example:
      >>> import rnnjax as rj
      >>> try:
      ...     rj.fused.options(remat=True)
      ... except TypeError as e:
      ...     print(str(e)[:40])
      rnnjax.fused.options was removed: pass c
    """
    raise TypeError(
        "rnnjax.fused.options was removed: pass config=rnnjax.ScanConfig(...) to "
        "unroll/unroll_batch or set it as a layer's config field (a setting read at trace "
        f"time was silently kept by jitted functions); got options({kwargs})"
    )
