"""Top-level and callback keys are checked like task parameters: one message naming the key,
where it was set and what is allowed, before any work (runner/run_options.py). progress_bar is
checked through the CLI in test_cli.py (the in-process fixture pins it)."""

from __future__ import annotations

import pytest

from conftest import TINY_SCALING
from runner import run
from runner.validation import ConfigError


@pytest.mark.parametrize(("override", "message"), [
    ("+sed=3", "sed (set by the override +sed=3) is not a top-level key (the config groups: "
               "task, trainer, logger, callbacks, paths) (did you mean seed?); allowed: seed, "
               "resume, threads, progress_bar, run_test, print_results, tags"),
    ("seed=abc", "seed='abc' (set by the override seed=abc) is not allowed; expected a value of "
                 "type int"),
    ("threads=0", "threads=0 is out of range; allowed: [1, inf) (set by the override threads=0)"),
    ("resume=maybe", "resume='maybe' (set by the override resume=maybe) is not allowed; "
                     "expected one of: auto, never"),
    ("callbacks.matrix_spectrum.every_n_steps=0",
     "callbacks.matrix_spectrum (set by the override callbacks.matrix_spectrum.every_n_steps=0): "
     "ValueError: every_n_steps=0 must be >= 1"),
])
def test_bad_top_level_and_callback_values_stop_before_any_work(make_cfg, tmp_path, override,
                                                               message):
    run_dir = tmp_path / "run"
    run_dir.mkdir()  # as Hydra leaves it: the run must not write into it
    with pytest.raises(ConfigError) as err:
        run(make_cfg([*TINY_SCALING, "logger=csv", override], run_dir))
    assert str(err.value) == message
    assert not run_dir.exists()  # a fresh directory is removed, nothing was written
