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
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax copied into _static: maths render without a network
    "sphinx_copybutton",
]

exclude_patterns = ["_build"]
html_theme = "furo"  # per-page contents, previous/next links, light and dark
html_static_path = ["_static"]
html_css_files = ["rnnjax.css"]
html_title = f"rnnjax {release}"
html_show_sourcelink = False

# the copy button copies the code without the ``>>> ``/``... `` prompts and without the
# doctest output lines
copybutton_prompt_text = r">>> |\.\.\. |\$ "
copybutton_prompt_is_regexp = True
copybutton_only_copy_prompt_lines = True

# every cross-reference must resolve (sphinx -W turns a broken one into an error); the
# third-party types below have no inventory offline (no intersphinx downloads)
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|numpy|np|jnp|optax|orbax|flax|nn|nnx|torch|chex|typing)(\..*)?"),
    (r"py:.*", r"(Array|ArrayLike|PRNGKey|PyTree|Callable|Any|Iterable|Iterator|Sequence)"),
    (r"py:.*", r"(Mapping|Path|pathlib\..*|collections\..*|dataclasses\..*|os\..*)"),
    (r"py:.*", r"(int|float|bool|str|dict|list|tuple|None|object|type|bytes|slice)"),
    (r"py:.*", r"(ValueError|TypeError|RuntimeError|KeyError|Warning|UserWarning)"),
]

# the optax chain a Trainer builds in __post_init__ (a field without an entry of its own)
nitpick_ignore = [("py:attr", "tx")]

autodoc_member_order = "bysource"
autodoc_typehints = "none"  # the signatures carry defaults; types are in Args
autodoc_default_options: dict = {}  # no "Bases:" lines: the bases are private
autosummary_generate = False  # the tables link to the entries on the same page
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
# API reference: one page per task, each object documented once under the name users type
#
# A name that ``rnnjax`` re-exports (``rnnjax.__all__``) is documented as ``rnnjax.<name>``
# on the page of the group that owns its defining module; the other public names of a
# group's modules (their ``__all__``) are documented under that module
# (``rnnjax.reservoir.fit_ridge``, ``rnnjax.train.evaluate_stream``). New names appear
# without editing the docs. Internal modules (``engine`` internals, ``checks``, ``spec``,
# ``progress``) and the deprecated ones (``esn``, ``fused``, ``models``, ``modern_blocks``)
# are not listed.

_RESERVOIR_MOVED = rnnjax.reservoir._MOVED  # the submodules that hold the second tier

API_GROUPS = [
    # slug, title, intro, modules that own flat names, modules documented on the page
    (
        "cells",
        "Cells and initialisers",
        "One time step of one example: frozen dataclasses of hyperparameters with "
        "``init(key)``, ``initial_state()`` and ``step(params, state, x)``; the protocol a "
        "new cell follows; the initialisers the cells use. Topic page: :doc:`/cells`.",
        ["rnnjax.cells"],
        ["rnnjax.cells", "rnnjax.cells.base", "rnnjax.cells.matrix", "rnnjax.initializers"],
    ),
    (
        "ops",
        "Matrix-state operators",
        "Matrix-state recurrences on arrays (time-major ``(T, *B, h, d)``), each chunkwise "
        "or recurrent, with lengths, resets and reverse. Topic page: :doc:`/ops`.",
        ["rnnjax.ops"],
        ["rnnjax.ops"],
    ),
    (
        "sequences",
        "Sequences and layers",
        "Running a cell over sequences (lengths, resets, reverse, packing) and the layers "
        "and models built on it, and the deep residual blocks of the linear-recurrence and "
        "xLSTM/Griffin papers. Topic pages: :doc:`/getting_started`, :doc:`/layers`, "
        ":doc:`/parallel`.",
        ["rnnjax.sequence", "rnnjax.layers", "rnnjax.blocks"],
        [
            "rnnjax.sequence",
            "rnnjax.layers",
            "rnnjax.blocks",
            "rnnjax.blocks.residual",
            "rnnjax.blocks.modern",
            "rnnjax.blocks.models",
        ],
    ),
    (
        "scan",
        "Scan settings",
        "How a recurrence runs: an explicit, hashable argument, never a global switch. "
        "Topic page: :doc:`/scan`.",
        ["rnnjax.engine", "rnnjax.parallel"],
        ["rnnjax.parallel"],
    ),
    (
        "training",
        "Training and checkpoints",
        "Optimisers, the trainer and the ``fit`` loop, evaluation, checkpoints and "
        "resume, data-parallel training, metrics, schedules and gradient diagnostics. "
        "Topic pages: :doc:`/training`, :doc:`/end_to_end`.",
        [
            "rnnjax.train",
            "rnnjax.checkpoint",
            "rnnjax.distributed",
            "rnnjax.metrics",
            "rnnjax.schedules",
            "rnnjax.diagnostics",
        ],
        [
            "rnnjax.train",
            "rnnjax.checkpoint",
            "rnnjax.distributed",
            "rnnjax.metrics",
            "rnnjax.schedules",
            "rnnjax.diagnostics",
        ],
    ),
    (
        "decoding",
        "Decoding and sequence to sequence",
        "Generation for every model that can be stepped (greedy, sampling, beam search) and "
        "the encoder-decoder with attention. Topic page: :doc:`/seq2seq`.",
        ["rnnjax.decoding", "rnnjax.seq2seq", "rnnjax.attention"],
        ["rnnjax.decoding", "rnnjax.seq2seq", "rnnjax.attention"],
    ),
    (
        "reservoir",
        "Reservoir computing",
        "Echo state networks: the reservoir cell, readouts, drivers (fit, predict, "
        "forecast), sweeps and next-generation reservoir computing. Topic page: :doc:`/esn`.",
        ["rnnjax.reservoir"],
        # the common names at the package's top level, the rest in their submodules
        ["rnnjax.reservoir", *(f"rnnjax.reservoir.{m}" for m in sorted(_RESERVOIR_MOVED))],
    ),
    (
        "flax",
        "Flax",
        "Flax linen and NNX modules running rnnjax layers, and weights to and from Flax's "
        "cells. Topic page: :doc:`/flax`.",
        ["rnnjax.linen", "rnnjax.nnx", "rnnjax.flax_convert"],
        ["rnnjax.linen", "rnnjax.nnx", "rnnjax.flax_convert"],
    ),
    (
        "interop",
        "PyTorch interop",
        "PyTorch recurrent modules to rnnjax layers and back, with their states. Topic "
        "page: :doc:`/interop`.",
        ["rnnjax.interop"],
        ["rnnjax.interop"],
    ),
    (
        "tasks",
        "Tasks and data",
        "Synthetic tasks and small data sets that ship with the package; nothing downloads.",
        ["rnnjax.tasks"],
        [],  # filled with the subpackages of rnnjax.tasks
    ),
]


def _tasks_modules() -> list[str]:
    names = []
    for info in pkgutil.iter_modules(rnnjax.tasks.__path__, "rnnjax.tasks."):
        if not info.name.rsplit(".", 1)[1].startswith("_"):
            names.append(info.name)
    return sorted(names)


def _kind(obj) -> str | None:
    import inspect

    if inspect.isclass(obj):
        return "class"
    if inspect.isfunction(obj) or type(obj).__name__ in ("PjitFunction", "custom_jvp"):
        return "function"
    if callable(obj) and hasattr(obj, "__wrapped__"):
        return "function"
    if isinstance(obj, (int, float, str, tuple, frozenset, dict)):
        return "data"  # a public constant (``rnnjax.tasks.seq2seq_tasks.EOS``)
    return None


def _api_entries():
    """``{slug: [(section, [(documented name, object, kind)])]}`` and ``{id: name}``."""
    import importlib

    import rnnjax.tasks  # noqa: F401

    documented: dict[int, str] = {}
    pages: dict[str, list] = {}
    # names typed as rj.<name>
    flat = []
    for name in rnnjax.__all__:
        obj = getattr(rnnjax, name)
        if _kind(obj) is not None:
            flat.append((name, obj))
    owner = {}
    for slug, _, _, owners, _ in API_GROUPS:
        for mod in owners:
            owner[mod] = slug
    flat_by_group: dict[str, list] = {slug: [] for slug, *_ in API_GROUPS}
    for name, obj in flat:
        mod = obj.__module__
        slug = next(
            (owner[m] for m in sorted(owner, key=len, reverse=True) if mod.startswith(m)),
            None,
        )
        if slug is None:
            raise RuntimeError(f"docs/conf.py: no API group owns rnnjax.{name} ({mod})")
        flat_by_group[slug].append((f"rnnjax.{name}", obj, _kind(obj)))
        documented[id(obj)] = f"rnnjax.{name}"
    for slug, _, _, _, modules in API_GROUPS:
        sections = []
        if flat_by_group[slug]:
            sections.append(("rnnjax", flat_by_group[slug]))
        for mod in modules or _tasks_modules():
            module = importlib.import_module(mod)
            entries = []
            for name in getattr(module, "__all__", []):
                obj = getattr(module, name)
                kind = _kind(obj)
                key = id(obj) if kind != "data" else f"{mod}.{name}"
                if kind is None or key in documented:
                    continue
                documented[key] = f"{mod}.{name}"
                entries.append((f"{mod}.{name}", obj, kind))
            sections.append((mod, entries))
        pages[slug] = sections
    return pages, documented


_FOREIGN_BASES = (
    "Module, ModuleBase, Pytree, Variable, Representable, tuple, object, BaseException, "
    "Exception, Warning"
)


def _constant_doc(mod: str, name: str) -> list[str]:
    """The documentation comment of a module constant, looked up in the modules of the
    package that hold the same object (a facade re-exports it)."""
    import sys

    from sphinx.pycode import ModuleAnalyzer

    value = getattr(sys.modules[mod], name)
    for modname, module in sorted(sys.modules.items()):
        if not modname.startswith("rnnjax") or vars(module).get(name) is not value:
            continue
        try:
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # noqa: BLE001 (no source: nothing to show)
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip() or True]
    return []


def write_api_pages() -> dict[int, str]:
    out = DOCS / "api"
    out.mkdir(exist_ok=True)
    pages, documented = _api_entries()
    wanted = {f"{slug}.rst" for slug, *_ in API_GROUPS}
    for stale in out.glob("*.rst"):
        if stale.name not in wanted:
            stale.unlink()
    for slug, title, intro, _, _ in API_GROUPS:
        lines = [
            ".. This page is written by docs/conf.py from the package: edit that.",
            "",
            title,
            "=" * len(title),
            "",
            intro,
            "",
        ]
        for mod, entries in pages[slug]:
            if mod != "rnnjax":
                heading = f"``{mod}``"
                lines += [heading, "-" * len(heading), "", f".. automodule:: {mod}", ""]
            else:
                lines += [".. currentmodule:: rnnjax", ""]
            if not entries:
                continue
            lines += [f".. currentmodule:: {mod}", "", ".. autosummary::", ""]
            lines += [f"   {name.rsplit('.', 1)[1]}" for name, _, k in entries if k != "data"]
            lines.append("")
            for name, _, kind in entries:
                short = name.rsplit(".", 1)[1]
                if kind == "class":
                    lines += [f".. autoclass:: {short}", "   :members:"]
                    # members from the package's private bases, not Flax's, tuple's, object's
                    lines += [f"   :inherited-members: {_FOREIGN_BASES}", ""]
                elif kind == "function":
                    lines += [f".. autofunction:: {short}", ""]
                else:  # a constant: its ``#:`` or string doc, not its type's docstring
                    lines += [f".. py:data:: {short}", ""]
                    lines += [f"   {line}" for line in _constant_doc(mod, short)] + [""]
        text = "\n".join(lines) + "\n"
        path = out / f"{slug}.rst"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
    return documented


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


FIGURES = DOCS / "figures"  # PNGs of the experiments' quick presets, committed (small)


def _figures(rows) -> list[str]:
    """A figure per claim whose script's plot is in ``docs/figures`` (``<script>_quick.png``,
    written by ``python experiments/<script>.py --quick --out docs/figures``)."""
    out = ["", "Plots", "-----", ""]
    out += [
        "What the scripts plot, from their quick presets (a minute or less each on two CPU",
        "cores; the table's numbers are from the default runs). Regenerate one with",
        "``python experiments/<script>.py --quick --out docs/figures``.",
        "",
    ]
    shown = 0
    for row in rows:
        scripts = re.findall(r"experiments/(\w+)\.py", row[2]) if len(row) > 2 else []
        for script in dict.fromkeys(scripts):
            png = FIGURES / f"{script}_quick.png"
            if not png.exists():
                continue
            shown += 1
            claim = re.sub(r"[`*]", "", row[1]).split(":")[0]
            out += [
                f".. figure:: /figures/{png.name}",
                f"   :alt: {script}",
                "",
                f"   Claim {row[0]} ({claim}): ``python experiments/{script}.py --quick``.",
                "",
            ]
    return out if shown else []


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
    out += _figures(rows)
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


def _resolve(target: str):
    """The object a dotted name refers to (``rnnjax.sequence.unroll``), or ``None``."""
    import importlib

    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        try:
            for part in parts[i:]:
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def _documented_names(target: str, contexts: list[str]) -> list[str]:
    """The names under which the object ``target`` may be documented on the site, looked
    up as written and relative to each module or class in ``contexts``, best first."""
    candidates = [target] if target.startswith("rnnjax") else []
    candidates += [f"{ctx}.{target}" for ctx in contexts]
    names = []
    for cand in candidates:
        if cand in DOCUMENTED:  # a constant
            names.append(DOCUMENTED[cand])
            continue
        if _resolve(cand) is None:
            continue
        parts = cand.split(".")
        # the object itself, or a member of a documented class (``rnnjax.train.Trainer.init``)
        for cut in range(len(parts), 0, -1):
            obj = _resolve(".".join(parts[:cut]))
            if obj is not None and id(obj) in DOCUMENTED:
                names.append(".".join([DOCUMENTED[id(obj)], *parts[cut:]]))
                break
    return names


def _contexts(node) -> list[str]:
    """Where a short name in a docstring may live: the documented module and class of the
    reference, then the module (and class) that define the docstring's object."""
    out = []
    if node.get("py:class") and node.get("py:module"):
        out.append(f"{node['py:module']}.{node['py:class']}")
    if node.get("py:module"):
        out.append(node["py:module"])
    source = node.source or ""
    if "docstring of " in source:
        owner = source.rsplit("docstring of ", 1)[1].split(":")[0].split(".")
        out += [".".join(owner[:i]) for i in range(len(owner), 0, -1)]
        for i in range(len(owner), 0, -1):  # the module that defines a re-exported object
            defined = getattr(_resolve(".".join(owner[:i])), "__module__", None)
            if isinstance(defined, str):
                out.append(defined)
                break
    return out


def _internal_name(target: str, contexts: list[str]) -> bool:
    """``target`` is a real object of the package that the site does not document (an
    internal module or helper): it is shown as code, without a link."""
    for cand in [target] + [f"{ctx}.{target}" for ctx in contexts]:
        if cand.startswith("rnnjax") and _resolve(cand) is not None:
            return True
    return False


def _missing_reference(app, env, node, contnode):
    """A reference to an object by another of its names (the defining module's,
    ``rnnjax.sequence.unroll``) links to where it is documented (``rnnjax.unroll``); a
    reference to an undocumented internal of the package is shown as code."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].lstrip("~.")
    contexts = _contexts(node)
    names = [name for name in _documented_names(target, contexts) if name != target]
    domain = env.get_domain("py")
    for name in names:
        for role in (node["reftype"], "obj"):
            found = domain.resolve_xref(
                env, node["refdoc"], app.builder, role, name, node.copy(), contnode
            )
            if found is not None:
                return found
    if _internal_name(target, contexts):  # a real object without an entry: plain code
        return contnode
    return None


# ---------------------------------------------------------------------------------------
# ``.. rnnjax-cells::``: the cells page's table of cells, from ``rnnjax.cells.CELLS`` (the one
# list a new cell is added to), so the page never lists the cells by hand


def _cells_table() -> list[str]:
    """reStructuredText of a table: each cell of ``rnnjax.cells.CELLS``, the first paragraph
    of its docstring, its state."""
    import inspect

    lines = [
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 15 65 20",
        "",
        "   * - cell",
        "     - what it computes",
        "     - state",
    ]
    for name in rnnjax.cells.CELLS:
        cell = getattr(rnnjax.cells, name)
        state = getattr(cell, "State", None)
        if state is None:  # a state class
            continue
        summary = " ".join(inspect.getdoc(cell).split("\n\n")[0].split())
        lines += [
            f"   * - :class:`rnnjax.{name}`",
            f"     - {summary}",
            f"     - :class:`rnnjax.{state.__name__}`",
        ]
    return lines


def _cells_directive():
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util.docutils import SphinxDirective

    class CellsTable(SphinxDirective):
        def run(self):
            node = nodes.container()
            self.state.nested_parse(StringList(_cells_table()), self.content_offset, node)
            return node.children

    return CellsTable


def setup(app):
    app.add_directive("rnnjax-cells", _cells_directive())
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("missing-reference", _missing_reference)


DOCUMENTED = write_api_pages()
write_reproductions()
