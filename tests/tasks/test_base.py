"""tasks.base: the tensor cache (keyed by config and data code) and the aggregation helpers."""

from __future__ import annotations

import sys
import types

import numpy as np
import pandas as pd
import pytest
import torch

from tasks.base import aggregate
from tasks.base import data as base_data
from tasks.base.data import cached_tensors, data_code_hash


def test_cache_round_trips_shapes_and_dtypes_and_builds_once(tmp_path):
    calls = []
    draw = {"m": torch.randn(3, 5, dtype=torch.float64), "s": torch.tensor(2.5),
            "i": torch.arange(4, dtype=torch.int8), "f": torch.ones(2, 2, 2)}

    def build():
        calls.append(1)
        return draw

    first = cached_tensors(tmp_path, "t", {"a": 1}, build)
    second = cached_tensors(tmp_path, "t", {"a": 1}, build)
    assert len(calls) == 1
    for key, tensor in draw.items():
        assert second[key].dtype == tensor.dtype and second[key].shape == tensor.shape
        assert torch.equal(first[key], tensor) and torch.equal(second[key], tensor)
    cached_tensors(tmp_path, "t", {"a": 2}, build)  # another config: another file
    assert len(calls) == 2 and len(list((tmp_path / "t").glob("*.safetensors"))) == 2
    assert not list((tmp_path / "t").glob(".*"))  # no temporary file left


def _fake_task(source_line: str) -> type:
    """A class in a fake `tasks.faketask.data` module whose helper lives in `tasks.faketask.x`."""
    helper = types.ModuleType("tasks.faketask.x")
    exec(source_line, helper.__dict__)
    mod = types.ModuleType("tasks.faketask.data")
    mod.helper = helper.f
    helper.f.__module__ = helper.__name__
    sys.modules[helper.__name__], sys.modules[mod.__name__] = helper, mod
    cls = type("Data", (), {"__module__": mod.__name__})
    mod.Data = cls
    return cls


def test_code_hash_follows_the_source_of_every_task_module_the_data_code_uses(monkeypatch):
    sources = {"tasks.faketask.data": "def build(): return helper()\n",
               "tasks.faketask.x": "def f(): return 1\n"}
    monkeypatch.setattr(base_data.inspect, "getsource",
                        lambda module: sources[module.__name__])
    try:
        cls = _fake_task("def f(): return 1")
        before = data_code_hash(cls)
        assert data_code_hash(cls) == before
        sources["tasks.faketask.x"] = "def f(): return 2\n"  # the helper module changed
        assert data_code_hash(cls) != before
        sources["tasks.faketask.x"] = "def f(): return 1\n"
        assert data_code_hash(cls) == before
        sources["tasks.faketask.data"] += "# edited\n"  # the data module itself changed
        assert data_code_hash(cls) != before
    finally:
        for name in ("tasks.faketask.data", "tasks.faketask.x"):
            sys.modules.pop(name, None)


def test_data_module_key_carries_seed_config_and_code(tmp_path):
    from tasks.optimizer_scaling.config import Config
    from tasks.optimizer_scaling.data import OptimizerScalingData

    dm = OptimizerScalingData(Config(), str(tmp_path), seed=4)
    key = dm.cache_key()
    assert key["task"] == "optimizer_scaling" and key["seed"] == 4 and key["s"] == 1.0
    assert key["code"] == data_code_hash(OptimizerScalingData)
    assert "n_features" not in key  # widths are nested rows of one draw: not part of the key


def results(rows):
    return [{"status": "completed", "seed": seed, "job_dir": f"j{i}", "params": params,
             "paper_metrics": metrics} for i, (seed, params, metrics) in enumerate(rows)]


def test_runs_table_reads_params_and_metrics_and_skips_failed_runs():
    rs = results([(0, {"arm": "a", "n": 2}, {"acc": 0.5, "x": None}),
                  (1, {"arm": "b", "n": 2}, {"acc": 1}),
                  (2, {"arm": "b", "n": 2}, {"other": 3})])
    rs.append({"status": "failed", "seed": 9, "params": {"arm": "a"}, "paper_metrics": {}})
    table = aggregate.runs_table(rs, params=["arm", "n"], metrics={"accuracy": "acc", "x": "x"})
    assert list(table.columns) == ["seed", "job_dir", "arm", "n", "accuracy", "x"]
    assert table["seed"].tolist() == [0, 1, 2]
    assert table["accuracy"].tolist()[:2] == [0.5, 1.0] and np.isnan(table["accuracy"][2])
    assert np.isnan(table["x"][0])
    assert aggregate.runs_table(rs, params=["arm"], metrics=["acc"], require="acc")[
        "seed"].tolist() == [0, 1]
    old = [{"status": "completed", "seed": 0, "paper_metrics": {"arm": "a", "acc": 0.25}}]
    legacy = aggregate.runs_table(old, params=["arm", "n"], metrics=["acc"])  # no params yet
    assert legacy["arm"].tolist() == ["a"] and np.isnan(legacy["n"][0])


def test_mean_sd_is_the_mean_and_sample_sd_over_seeds():
    frame = pd.DataFrame({"arm": ["a", "a", "a", "b"], "seed": [0, 1, 2, 0],
                          "v": [1.0, 2.0, 6.0, 4.0]})
    out = aggregate.mean_sd(frame, ["arm"], ["v"]).set_index("arm")
    assert out.loc["a", "v_mean"] == pytest.approx(3.0)
    assert out.loc["a", "v_sd"] == pytest.approx(np.sqrt(((1 - 3) ** 2 + 1 + 9) / 2))  # ddof 1
    assert out.loc["a", "n_seeds"] == 3 and out.loc["b", "n_seeds"] == 1
    assert out.loc["b", "v_mean"] == 4.0 and np.isnan(out.loc["b", "v_sd"])
    bare = aggregate.mean_sd(frame, ["arm"], ["v"], mean_suffix="")
    assert "v" in bare and "v_mean" not in bare


def test_paired_difference_pairs_by_seed_within_the_match_keys():
    frame = pd.DataFrame({"arm": ["base", "base", "t", "t", "t"], "k": [1, 1, 1, 1, 2],
                          "seed": [0, 1, 0, 1, 0], "v": [1.0, 5.0, 1.5, 4.0, 9.0]})
    diff = aggregate.paired_difference(frame, ["k", "seed"], "arm", "base", "v")
    assert diff.tolist()[:4] == [0.0, 0.0, 0.5, -1.0]  # seed 0: 1.5 − 1, seed 1: 4 − 5
    assert np.isnan(diff.tolist()[4])  # no baseline at k = 2
    dup = pd.concat([frame, frame.iloc[[0]]])
    with pytest.raises(ValueError, match="several baseline runs"):
        aggregate.paired_difference(dup, ["k", "seed"], "arm", "base", "v")


def test_fit_power_law_returns_the_slope_in_log_log():
    x = np.array([16, 32, 64, 128])
    assert aggregate.fit_power_law(x, 3.0 * x ** -0.37) == pytest.approx(-0.37, abs=1e-12)
    assert aggregate.fit_power_law(x, 0.5 * x ** 1.5) == pytest.approx(1.5, abs=1e-12)
    assert np.isnan(aggregate.fit_power_law(x, np.array([1.0, 0.0, 1.0, 2.0])))
    with pytest.raises(ValueError, match="two distinct"):
        aggregate.fit_power_law([4, 4], [1.0, 2.0])
