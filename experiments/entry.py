"""The experiment scripts' entry point: :func:`run_main`.

It imports nothing heavy (no JAX), so that a script may still set JAX's environment
(``JAX_PLATFORMS``, ``XLA_FLAGS``) inside its ``main``, before JAX is first imported."""

from __future__ import annotations


def run_main(main, *args, **kwargs):
    """Run a script's ``main(*args, **kwargs)`` and return what it returns; Ctrl-C
    (``KeyboardInterrupt``) ends the process with exit status 130, the shell's code for an
    interrupt, with no traceback (:func:`rnnjax.train.fit` has already saved and printed
    how to resume).

    Example:
      >>> def main():
      ...     raise KeyboardInterrupt
      >>> try:
      ...     run_main(main)
      ... except SystemExit as e:
      ...     print(e.code)
      130
    """
    try:
        return main(*args, **kwargs)
    except KeyboardInterrupt:
        raise SystemExit(130) from None
