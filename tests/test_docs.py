"""The documentation site: every page is reachable, every Python example on the pages is a
doctest (so `.ci/docs` runs it), the API reference documents every public name once under
the name users type and leaves the internals out, the site needs no network, and it builds
with warnings as errors and every reference resolved (slow)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
TOPICS = [
    "getting_started",
    "end_to_end",
    "cells",
    "layers",
    "scan",
    "parallel",
    "training",
    "distributed",
    "seq2seq",
    "esn",
    "flax",
    "interop",
    "performance",
    "reproductions",
    "api",
]


def _pages():
    return sorted(p for p in DOCS.glob("*.rst") if p.name != "reproductions.rst")


def test_every_topic_page_is_in_the_index():
    index = (DOCS / "index.rst").read_text()
    for topic in TOPICS:
        assert re.search(rf"^\s+{topic}$", index, re.M), topic
        if topic != "reproductions":  # written by conf.py at build time
            assert (DOCS / f"{topic}.rst").exists(), topic


def test_python_on_the_pages_runs_as_doctests():
    for page in _pages():
        text = page.read_text()
        # a Python block that the doctest builder would not run
        assert not re.search(
            r"^\.\. (code-block|code|sourcecode):: *(python|py)?\s*$", text, re.M
        ), page.name
        assert not re.search(r"::\n\n +(import|from) ", text), f"{page.name}: literal Python"
    scan = (DOCS / "scan.rst").read_text()
    assert scan.count(".. doctest::") >= 4 and ">>> " in scan


def _conf():
    """Imports docs/conf.py (which writes reproductions.rst and api/*.rst)."""
    sys.path.insert(0, str(DOCS))
    try:
        import conf
    finally:
        sys.path.remove(str(DOCS))
        sys.modules.pop("conf", None)
    return conf


def test_reproductions_page_is_generated_from_the_markdown_table():
    _conf()
    page = (DOCS / "reproductions.rst").read_text()
    md = (DOCS.parent / "experiments" / "REPRODUCTIONS.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert rows and page.count("   * - ") == len(rows) + 1  # + the header row


def _documented(page: str) -> list[str]:
    """``(module, name)`` of every object a generated API page documents."""
    out, module = [], None
    for line in page.splitlines():
        m = re.match(r"^\.\. currentmodule:: (\S+)$", line)
        if m:
            module = m.group(1)
        m = re.match(r"^\.\. (?:autoclass|autofunction|py:data):: (\S+)$", line)
        if m:
            out.append(f"{module}.{m.group(1)}")
    return out


def test_api_reference_is_grouped_and_documents_each_name_once_as_users_type_it():
    import rnnjax

    conf = _conf()
    slugs = [group[0] for group in conf.API_GROUPS]
    assert slugs == [
        "cells",
        "ops",
        "sequences",
        "scan",
        "training",
        "decoding",
        "reservoir",
        "flax",
        "interop",
        "tasks",
    ]
    api = (DOCS / "api.rst").read_text()
    documented = []
    for slug in slugs:
        assert re.search(rf"^   api/{slug}$", api, re.M), slug
        page = (DOCS / "api" / f"{slug}.rst").read_text()
        assert ".. autosummary::" in page, slug
        documented += _documented(page)
    assert len(documented) == len(set(documented)), "an object documented twice"
    names = set(documented)
    # every name re-exported flat is documented under that name, and only there
    for name in rnnjax.__all__:
        obj = getattr(rnnjax, name)
        if callable(obj) and not isinstance(obj, type(rnnjax)):
            assert f"rnnjax.{name}" in names, name
            home = f"{obj.__module__}.{obj.__qualname__}"
            assert home not in names, f"{name} documented twice ({home})"
    for name in ["rnnjax.unroll", "rnnjax.LSTM", "rnnjax.Trainer", "rnnjax.ScanConfig"]:
        assert name in names
    for name in ["rnnjax.reservoir.fit_ridge", "rnnjax.train.evaluate_stream", "rnnjax.load_run"]:
        assert name in names
    # internals are left out
    for internal in ["rnnjax.fused", "rnnjax.checks", "rnnjax.spec", "rnnjax.progress"]:
        assert not any(n.startswith(internal + ".") for n in names), internal
    assert not (DOCS / "api" / "rnnjax.fused.rst").exists()


def test_site_settings_theme_copy_button_offline_maths_nitpicky():
    conf = _conf()
    assert conf.html_theme in ("furo", "sphinx_book_theme", "pydata_sphinx_theme")
    assert "sphinx_copybutton" in conf.extensions
    assert conf.copybutton_prompt_is_regexp and ">>> " in conf.copybutton_prompt_text
    assert "sphinx-mathjax-offline" in conf.extensions  # MathJax copied into _static
    assert conf.nitpicky is True
    assert "intersphinx" not in " ".join(conf.extensions)  # no downloads at build time
    css = (DOCS / "_static" / "rnnjax.css").read_text()
    assert "pre-wrap" in css and "table.docutils" in css


def test_reference_aliases_resolve_to_the_documented_names():
    conf = _conf()
    names = conf._documented_names
    assert names("rnnjax.sequence.unroll", []) == ["rnnjax.unroll"]
    assert names("rnnjax.engine.ScanConfig", []) == ["rnnjax.ScanConfig"]
    assert names("rnnjax.train.Trainer.init", []) == ["rnnjax.Trainer.init"]
    assert names("fit_ridge", ["rnnjax.reservoir.drivers"]) == ["rnnjax.reservoir.fit_ridge"]
    assert names("no_such_name", ["rnnjax.sequence"]) == []
    assert conf._internal_name("rnnjax.checks.valid_tokens", [])
    assert not conf._internal_name("rnnjax.checks.no_such_check", [])


@pytest.mark.slow
def test_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("sphinx")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            str(DOCS),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    html = tmp_path / "html"
    assert (html / "api" / "training.html").exists()
    assert (html / "_static" / "mathjax" / "tex-chtml.js").exists()  # maths offline
    page = (html / "api" / "sequences.html").read_text()
    assert 'id="rnnjax.unroll"' in page and "copybutton" in page
