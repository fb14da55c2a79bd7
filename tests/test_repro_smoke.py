"""Smoke test of the reproduction scripts: each ``--quick`` preset runs and writes its JSON.

The checked presets and the quicker others run in the default test run; the four slowest
(each 20-45 s on the 2-core CPU) run with ``-m slow``, to keep CI under its time budget.
"""

import json
import math
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = os.path.join(ROOT, "experiments")

CHECKED = ["repro_vanishing", "repro_clipping", "repro_packing"]
OTHERS = [
    "repro_bidirectional",
    "repro_many_to_one",
    "repro_dropout",
    "repro_init",
    "repro_long_range",
    "repro_pixel",
    "repro_tbptt",
    "repro_lstm_gru_esn",
]


def _numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def _run(name, tmp_path):
    env = dict(
        os.environ,
        PYTHONPATH=EXPERIMENTS + os.pathsep + os.environ.get("PYTHONPATH", ""),
        MPLBACKEND="Agg",
    )
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(EXPERIMENTS, name + ".py"),
            "--quick",
            "--out",
            str(tmp_path),
        ],
        cwd=EXPERIMENTS,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = tmp_path / f"{name}_quick.json"
    assert path.exists(), os.listdir(tmp_path)
    result = json.loads(path.read_text())
    assert result["quick"] is True
    assert isinstance(result["seed"], int)
    nums = list(_numbers(result))
    assert nums
    return result


@pytest.mark.parametrize("name", CHECKED)
def test_quick_preset(name, tmp_path):
    result = _run(name, tmp_path)
    if name == "repro_vanishing":
        # even the quick preset shows the tanh RNN's gradient vanishing at scale 0.5
        assert result["runs"]["rnn@0.5"]["log_decay_per_step_back"] > 0
    if name == "repro_packing":
        # packing computes fewer padded steps, and each sequence's loss is what it is alone
        assert result["packed"]["real_share"] > result["padded"]["real_share"]
        assert result["packed"]["real_share"] > 0.8
        assert result["max_abs_loss_difference"] < 1e-4
    if name == "repro_clipping":
        for k, r in result["runs"].items():
            if k.startswith("clipped"):
                assert r["nonfinite_losses"] == 0 and math.isfinite(r["test_mse"])


_SLOW_PRESETS = {"repro_dropout", "repro_lstm_gru_esn", "repro_long_range", "repro_tbptt"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=[pytest.mark.slow] if n in _SLOW_PRESETS else []) for n in OTHERS],
)
def test_quick_preset_runs(name, tmp_path):
    _run(name, tmp_path)
