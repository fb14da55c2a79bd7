"""Every public callable documents itself: a runnable ``>>>`` example, and a signature that
``help()`` can show (no bare ``(*args, **kwargs)``).

The public callables are the functions and classes exported by ``rnnjax`` and defined in its
public modules (every module of the package whose name has no leading underscore; where a
module has ``__all__``, only those names). The examples themselves run as doctests:
``python -m pytest -q --doctest-modules rnnjax``. Run this file as a script to print the count.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import rnnjax


def public_modules() -> list[str]:
    """Names of rnnjax and its public submodules (no leading underscore in any part)."""
    names = ["rnnjax"]
    for info in pkgutil.walk_packages(rnnjax.__path__, "rnnjax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def public_callables() -> dict[str, object]:
    """``{"module.name": object}`` for every public function and class, each counted once
    (in the module that defines it)."""
    found = {}
    for mod_name in public_modules():
        module = importlib.import_module(mod_name)
        exported = getattr(module, "__all__", None)
        for name, obj in vars(module).items():
            if name.startswith("_") or (exported is not None and name not in exported):
                continue
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", None) != mod_name:
                continue  # a re-export: counted where it is defined
            found[f"{mod_name}.{name}"] = obj
    # names exported flat by rnnjax (lazy ones included) must be covered too
    for name in rnnjax.__all__:
        obj = getattr(rnnjax, name)
        if inspect.isfunction(obj) or inspect.isclass(obj):
            found.setdefault(f"{obj.__module__}.{obj.__qualname__}", obj)
    return found


def has_example(obj) -> bool:
    return ">>>" in (inspect.getdoc(obj) or "")


def _bare_signature(obj) -> bool:
    if getattr(obj, "_is_protocol", False):
        return False  # a typing.Protocol describes an interface and is never called
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return False
    kinds = [p.kind for p in sig.parameters.values()]
    return kinds == [inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD]


def test_public_callables_found():
    found = public_callables()
    # a few that must be there, so that a broken walk cannot pass the tests below vacuously
    for name in (
        "rnnjax.sequence.unroll",
        "rnnjax.cells.lstm.LSTM",
        "rnnjax.train.fit",
        "rnnjax.nnx.LSTM",
        "rnnjax.linen.GRU",
    ):
        assert name in found, name
    assert len(found) > 100


def test_every_public_callable_has_an_example():
    missing = sorted(name for name, obj in public_callables().items() if not has_example(obj))
    assert not missing, (
        f"{len(missing)} public callables have no '>>>' example in their docstring "
        "(add an 'Example:' section that runs as a doctest):\n  " + "\n  ".join(missing)
    )


def test_every_public_callable_shows_its_arguments():
    bare = sorted(name for name, obj in public_callables().items() if _bare_signature(obj))
    assert not bare, (
        "these public callables show only (*args, **kwargs) in help(); give them an "
        "explicit signature:\n  " + "\n  ".join(bare)
    )


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_nnx_signatures_are_explicit(name):
    nnx_mod = pytest.importorskip("rnnjax.nnx")
    cls = getattr(nnx_mod, name)
    sig = inspect.signature(cls)
    params = sig.parameters
    assert list(params)[:2] == ["input_size", "hidden_size"]
    assert "self" not in params
    assert params["rngs"].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["num_layers"].default == 1
    # the signature is the constructor's: binding it is what calling the class accepts
    sig.bind(3, 4, rngs=None)
    with pytest.raises(TypeError):
        sig.bind(3, 4, 5, rngs=None)
    assert "input_size" in inspect.getdoc(cls) or "input_size" in str(sig)
    import pydoc

    # a class shows its signature on the fourth line, a function (a factory) on the third
    header = "\n".join(pydoc.render_doc(cls, renderer=pydoc.plaintext).splitlines()[2:4])
    assert f"{name}(input_size" in header, header


if __name__ == "__main__":
    found = public_callables()
    with_example = [n for n, o in found.items() if has_example(o)]
    print(f"{len(with_example)} of {len(found)} public callables have a '>>>' example")
    for n in sorted(found):
        print(("  " if has_example(found[n]) else "- ") + n)
