"""The README as a new user reads it: its two setup commands come first, every Python block
runs as written, in order, in one fresh Python process, and it links nothing outside the
repository."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

COMMANDS = [
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[experiments]" '
    "&& python -m experiments.benchmark",
    'python3 -m venv .venv && . .venv/bin/activate && pip install -e ".[test]" '
    "&& python -m pytest -q",
]


def blocks(language: str) -> list[tuple[int, str]]:
    """``(first line number, code)`` of every fenced block of ``language``, in order."""
    found = []
    for m in re.finditer(rf"^```{language}\n(.*?)^```$", README.read_text(), re.M | re.S):
        line = README.read_text()[: m.start()].count("\n") + 2
        found.append((line, m.group(1)))
    return found


def test_the_two_setup_commands_come_first():
    text = README.read_text()
    first = re.search(r"^```(\w+)\n(.*?)^```$", text, re.M | re.S)
    assert first.group(1) == "bash"
    lines = [line for line in first.group(2).splitlines() if not line.startswith("#")]
    assert [line for line in lines if line.strip()] == COMMANDS
    assert text.index(first.group(0)) < text.index("```python")


def test_no_link_outside_the_repository():
    text = README.read_text()
    assert "../" not in text, "a path outside the repository"
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert not re.match(r"[a-z]+://", target), f"an external link: {target}"
        path = target.split("#")[0]
        assert not path or (ROOT / path).exists(), f"a link to a missing file: {target}"


def test_python_blocks_run_in_order_in_one_process(tmp_path):
    found = blocks("python")
    assert len(found) >= 8, "the tour has a block per step"
    # each block compiled under its README line, so a failure names the block
    script = ["import sys", "namespace = {'__name__': '__main__'}"]
    for line, code in found:
        name = f"README.md, block at line {line}"
        script.append(f"exec(compile({code!r}, {name!r}, 'exec'), namespace)")
        script.append(f"print({('block at line ' + str(line) + ' ran')!r}, flush=True)")
    path = tmp_path / "readme_blocks.py"
    path.write_text("\n".join(script) + "\n")
    out = subprocess.run(
        [sys.executable, str(path)],
        cwd=tmp_path,  # nothing relies on the working directory
        env={**_env(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    for line, _ in found:
        assert f"block at line {line} ran" in out.stdout
    # the printed results are what the comments say
    assert "Stacked(Bidirectional(LSTM(16->32)), Bidirectional(LSTM(64->32)))" in out.stdout
    assert "'def " in out.stdout


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
