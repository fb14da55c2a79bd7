"""Runs an experiment script's ``--quick`` preset in a fresh process, as a user would, for
the smoke tests of ``experiments/`` (the scripts set process-wide JAX options, so each
gets its own interpreter)."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")


def run_quick(name, out_dir, timeout=600):
    """Run ``experiments/<name>.py --quick --out <out_dir>``; assert it exited 0 and wrote
    ``<name>_quick.json``. Returns ``(result, stdout)``."""
    env = dict(
        os.environ,
        MPLBACKEND="Agg",
        PYTHONPATH=os.pathsep.join([EXPERIMENTS, ROOT, os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, os.path.join(EXPERIMENTS, name + ".py"), "--quick", "--out", str(out_dir)],
        cwd=EXPERIMENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = os.path.join(str(out_dir), f"{name}_quick.json")
    assert os.path.exists(path), os.listdir(out_dir)
    with open(path, encoding="utf-8") as f:
        return json.load(f), proc.stdout
