"""The documentation site: every page is reachable, every Python example on the pages is a
doctest (so `.ci/docs` runs it), and the site builds with warnings as errors (slow)."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
TOPICS = [
    "getting_started",
    "cells",
    "layers",
    "scan",
    "training",
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


def test_reproductions_page_is_generated_from_the_markdown_table():
    sys.path.insert(0, str(DOCS))
    try:
        import conf  # noqa: F401  (writes reproductions.rst and api/*.rst)
    finally:
        sys.path.remove(str(DOCS))
        sys.modules.pop("conf", None)
    page = (DOCS / "reproductions.rst").read_text()
    md = (DOCS.parent / "experiments" / "REPRODUCTIONS.md").read_text()
    rows = [line for line in md.splitlines() if re.match(r"^\| \d+ \|", line)]
    assert rows and page.count("   * - ") == len(rows) + 1  # + the header row
    assert (DOCS / "api" / "rnnjax.sequence.rst").exists()


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
    assert (tmp_path / "html" / "api" / "rnnjax.nnx.html").exists()
