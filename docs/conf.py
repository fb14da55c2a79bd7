"""Sphinx configuration of the rnnjax documentation site.

Build it with ``.ci/docs`` (html with warnings as errors, then the doctest builder that runs
every example on the pages). The API reference is generated here from the package itself:
one page per public module, each an ``automodule`` with its members, so a new module or a
new function appears without editing the docs. The reproductions table is converted from
``experiments/REPRODUCTIONS.md`` at build time, so there is one copy of the numbers.
"""

from __future__ import annotations

import pathlib
import pkgutil
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))

import rnnjax  # noqa: E402

project = "rnnjax"
author = "the rnnjax authors"
copyright = "the rnnjax authors"
release = version = rnnjax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
]

exclude_patterns = ["_build"]
html_theme = "alabaster"  # ships with Sphinx: no download
html_static_path: list = []
html_title = f"rnnjax {release}"

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures carry defaults; types are in Args
autodoc_default_options = {"members": True, "show-inheritance": False}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

# the doctest builder runs the ``>>>`` blocks of the topic pages (the docstrings' own examples
# run with pytest --doctest-modules)
doctest_global_setup = """
import jax
jax.config.update("jax_numpy_rank_promotion", "raise")
"""
import doctest as _doctest  # noqa: E402

doctest_default_flags = (
    _doctest.ELLIPSIS | _doctest.NORMALIZE_WHITESPACE | _doctest.DONT_ACCEPT_TRUE_FOR_1
)
doctest_test_doctest_blocks = ""  # only the pages' doctest directives
# docstrings pulled in by autodoc are run by pytest --doctest-modules, not here
doctest_path: list = []


# ---------------------------------------------------------------------------------------
# API reference: one page per public module


def public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(rnnjax.__path__, "rnnjax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _facade_links(mod: str):
    """For a module that only re-exports (``__all__`` lists no function or class of its
    own, e.g. :mod:`rnnjax.esn`), links to where each exported name is documented;
    ``None`` for any other module. Documenting a re-exported class twice is a Sphinx
    warning (a duplicate object description)."""
    import importlib
    import inspect
    import types

    module = importlib.import_module(mod)
    exported = getattr(module, "__all__", None)
    if not exported or mod == "rnnjax":
        return None
    objs = [getattr(module, name) for name in exported]
    callables = [o for o in objs if inspect.isfunction(o) or inspect.isclass(o)]
    if not callables or any(o.__module__ == mod for o in callables):
        return None
    links = []
    for name, obj in zip(exported, objs):
        if isinstance(obj, types.ModuleType):
            links.append(f":mod:`{obj.__name__}`")
        elif inspect.isclass(obj):
            links.append(f":class:`~{obj.__module__}.{obj.__qualname__}`")
        elif inspect.isfunction(obj):
            links.append(f":func:`~{obj.__module__}.{obj.__qualname__}`")
        else:
            links.append(f"``{name}``")
    return links


def write_api_pages() -> None:
    out = DOCS / "api"
    out.mkdir(exist_ok=True)
    modules = public_modules()
    wanted = {f"{m}.rst" for m in modules}
    for stale in out.glob("rnnjax.*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for mod in modules:
        title = f"``{mod}``"
        text = f"{title}\n{'=' * len(title)}\n\n.. automodule:: {mod}\n"
        links = _facade_links(mod)
        if links is not None:  # documented where they are defined: link there, not twice
            text += "   :no-members:\n\n" + "".join(f"- {link}\n" for link in links)
        path = out / f"{mod}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


# ---------------------------------------------------------------------------------------
# the reproductions table, converted from its Markdown source


def _inline(md: str) -> str:
    """Markdown inline markup to reStructuredText (code spans; bold and italics agree)."""

    def code(m):
        before = m.string[m.start() - 1] if m.start() > 0 else " "
        after = m.string[m.end()] if m.end() < len(m.string) else " "
        text = f"``{m.group(1)}``"
        # rST inline markup must start after and end before a non-word character
        if not (before.isspace() or before in "-:/'\"<([{"):
            text = "\\ " + text
        if not (after.isspace() or after in "-.,:;!?\\/'\")]}>"):
            text = text + "\\ "
        return text

    return re.sub(r"`([^`]+)`", code, md)


def write_reproductions() -> None:
    lines = (ROOT / "experiments" / "REPRODUCTIONS.md").read_text().splitlines()
    prose, rows = [], []
    for line in lines[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif not rows:
            prose.append(_inline(line))
    out = [
        ".. This page is written by conf.py from experiments/REPRODUCTIONS.md: edit that.",
        "",
        "Reproductions of classic claims",
        "===============================",
        "",
        *prose,
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 3 20 15 40 22",
        "",
    ]
    for row in rows:
        for j, cell in enumerate(row):
            out.append(("   * - " if j == 0 else "     - ") + _inline(cell))
    text = "\n".join(out) + "\n"
    path = DOCS / "reproductions.rst"
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """A NamedTuple's fields are described in its docstring (``Attributes:``); autodoc's
    own entries for them would describe each field twice."""
    if type(obj).__name__ == "_tuplegetter":
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)


write_api_pages()
write_reproductions()
