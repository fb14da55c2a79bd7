"""The package's import graph has no cycle (module-level and function-level imports)."""

import ast
import pathlib

import rnnjax

ROOT = pathlib.Path(rnnjax.__file__).parent


def _module_name(path: pathlib.Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def _graph() -> dict:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    graph = {m: set() for m in modules}
    for m, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for n in names:
                if n in modules and n != m and n != "rnnjax":
                    graph[m].add(n)
    return graph


def _cycle(graph):
    state = {}

    def visit(m, stack):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return stack[stack.index(n) :] + [n] if n in stack else [m, n]
            if n not in state:
                found = visit(n, stack + [n])
                if found:
                    return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            found = visit(m, [m])
            if found:
                return found
    return None


def test_import_graph_has_no_cycle():
    graph = _graph()
    assert "rnnjax.engine" in graph and "rnnjax.cells.lstm" in graph
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_cycles():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) is not None
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_engine_never_names_a_cell_class():
    """The engine and the sequence driver learn about cells only through the protocol."""
    graph = _graph()
    for m in ("rnnjax.engine", "rnnjax.sequence", "rnnjax.layers"):
        named = {n for n in graph[m] if n.startswith("rnnjax.cells") and n != "rnnjax.cells.base"}
        assert not named, f"{m} imports {named}"
        code = (ROOT / (m.split(".")[1] + ".py")).read_text()
        assert "isinstance(cell" not in code and "type(cell) is" not in code


def test_one_list_of_cells_re_exported_once():
    """The cells stand in one list (``rnnjax.cells``); ``rnnjax`` re-exports exactly it."""
    cells = rnnjax.cells
    assert len(cells.CELLS) == len(set(cells.CELLS)) and "Cell" not in cells.CELLS
    assert len(rnnjax.__all__) == len(set(rnnjax.__all__))
    for name in cells.CELLS:
        assert name in rnnjax.__all__ and getattr(rnnjax, name) is getattr(cells, name)
    for name in ("LSTM", "CausalConv", "S6State"):
        assert name in cells.CELLS
    init = (ROOT / "__init__.py").read_text() + (ROOT / "cells" / "__init__.py").read_text()
    assert "E402" not in init and "__all__ +=" not in init


def _fresh_import(name):
    import importlib
    import sys

    sys.modules.pop(name, None)
    return importlib.import_module(name)


def test_deprecated_modules_warn_and_re_export():
    import importlib

    import pytest

    with pytest.warns(DeprecationWarning, match="rnnjax.reservoir"):
        esn = _fresh_import("rnnjax.esn")
    assert esn.fit_ridge is rnnjax.reservoir.fit_ridge and esn.EchoState is rnnjax.EchoState
    assert not hasattr(esn, "_fit_jit") and "_fit_jit" not in esn.__all__
    with pytest.warns(DeprecationWarning, match="ScanConfig"):
        fused = _fresh_import("rnnjax.fused")
    assert fused.Options is rnnjax.ScanConfig
    # moved modules: the old paths are aliases of the new ones for one release
    for old, new in [("models", "blocks.models"), ("modern_blocks", "blocks.modern")]:
        with pytest.warns(DeprecationWarning, match=f"rnnjax.{new}"):
            alias = _fresh_import(f"rnnjax.{old}")
        module = importlib.import_module(f"rnnjax.{new}")
        assert alias.__all__ == module.__all__
        for name in module.__all__:
            assert getattr(alias, name) is getattr(module, name) is getattr(rnnjax, name)
        assert not (ROOT / f"{old}.py").exists()


def test_reservoir_two_tiers():
    """The common names at the top of ``rnnjax.reservoir``; the rest in submodules, still
    reachable from the top for one release with a DeprecationWarning naming the new path."""
    import warnings

    import pytest

    res = rnnjax.reservoir
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in res.__all__:
            getattr(res, name)
    assert len(res.__all__) < 40
    for module, names in res._MOVED.items():
        for name in names:
            assert name not in res.__all__
            with pytest.warns(DeprecationWarning, match=f"rnnjax.reservoir.{module}.{name}"):
                obj = getattr(res, name)
            assert obj is getattr(getattr(res, module), name)
    with pytest.raises(AttributeError):
        _ = res.no_such_name


def test_cells_sit_below_the_engine():
    """The cells import neither the engine nor the parallel strategies (which run them):
    a cell gives its coefficients or operator inputs, the engine applies the masks. The
    operators sit below the cells."""
    graph = _graph()
    cells = [m for m in graph if m == "rnnjax.cells" or m.startswith("rnnjax.cells.")]
    assert "rnnjax.cells.mlstm" in cells and "rnnjax.cells.matrix" in cells
    for m in cells:
        above = graph[m] & {"rnnjax.engine", "rnnjax.parallel", "rnnjax.sequence"}
        assert not above, f"{m} imports {above}"
    ops = [m for m in graph if m == "rnnjax.ops" or m.startswith("rnnjax.ops.")]
    assert "rnnjax.ops.mlstm" in ops
    for m in ops:
        assert all(n == "rnnjax.checks" or n.startswith("rnnjax.ops") for n in graph[m]), m
