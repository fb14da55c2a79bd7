"""Smoke test of the reproduction scripts: each ``--quick`` preset runs and writes its JSON.

The checked presets and the quicker others run in the default test run; the four slowest
(each 20-45 s on the 2-core CPU) run with ``-m slow``, to keep CI under its time budget.
"""

import math
import sys

import jax
import pytest
from experiment_runner import EXPERIMENTS, run_quick

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
    result, _ = run_quick(name, tmp_path, timeout=300)
    assert result["quick"] is True
    assert isinstance(result["seed"], int)
    assert list(_numbers(result))
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


@pytest.mark.slow  # the quick preset and three short trainings: about 80 s on 2 cores
def test_assoc_recall_needs_the_token_shift_and_the_matrix_memory_solves_it(tmp_path):
    """The associative-recall row's mechanism: with each step seeing its own and the
    previous token (the xLSTM block's causal convolution, width 2) one mLSTM layer binds
    keys to values within 750 steps at 4 pairs; without it, it cannot (the key and its
    value never meet in one step), and neither can the GRU of the same size in 750 steps."""
    _run("repro_assoc_recall", tmp_path)
    sys.path.insert(0, EXPERIMENTS)
    try:
        import repro_assoc_recall as ar
    finally:
        sys.path.remove(EXPERIMENTS)
    import jax

    with jax.numpy_rank_promotion("allow"):  # the script adds the head's bias by broadcasting
        acc = {
            (name, shift): ar.run(name, 4, 750, 750, True, shift)["test_accuracy"]
            for name, shift in [("mLSTM", True), ("mLSTM", False), ("GRU", True)]
        }
    assert acc["mLSTM", True] > 0.9, acc
    assert acc["mLSTM", False] < 0.5, acc
    assert acc["GRU", True] < 0.5, acc


def test_ctrl_c_ends_a_script_with_exit_status_130(monkeypatch, capsys):
    """A script run as ``__main__`` turns Ctrl-C into exit status 130 and prints nothing
    of its own (in-process: the interrupt is raised where the script parses its flags)."""
    import runpy

    monkeypatch.syspath_prepend(EXPERIMENTS)
    import entry
    import repro_common

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(repro_common, "parse", interrupted)
    # the script turns on 64-bit mode when it is loaded: put it back for the tests after
    x64 = jax.config.jax_enable_x64
    try:
        with pytest.raises(SystemExit) as exit_info:
            runpy.run_path(f"{EXPERIMENTS}/repro_vanishing.py", run_name="__main__")
    finally:
        jax.config.update("jax_enable_x64", x64)
    assert exit_info.value.code == 130
    assert capsys.readouterr() == ("", "")
    assert entry.run_main(lambda x: x + 1, 1) == 2  # otherwise it returns main's value


def test_every_script_entry_point_goes_through_run_main():
    import pathlib
    import re
    import subprocess

    for path in sorted(pathlib.Path(EXPERIMENTS).glob("*.py")):
        text = path.read_text()
        if path.name == "distributed_train.py" or '__name__ == "__main__"' not in text:
            continue
        block = text[text.index('__name__ == "__main__"') :]
        assert re.search(r"\brun_main\(main\b", block), path.name
    # the entry point imports no JAX: a script may still set JAX's environment in main
    code = "import sys, entry; assert 'jax' not in sys.modules, sorted(sys.modules)"
    subprocess.run([sys.executable, "-c", code], cwd=EXPERIMENTS, check=True)
