"""Smoke tests of the benchmarks: each one at ``--tiny`` sizes (``--allow-cpu`` for the GPU one), checked
through the JSON it writes. The figures mean nothing at these sizes; the keys, signs and the memory
relations the benchmarks report do.

The four JAX benchmarks spend their time compiling, one core each, so they run together as processes on
8 simulated devices; the other two run in this process.
"""

import json
import sys

import pytest

from experiments.bench import (agent_context, data_loading, env_stepping, harness, memory_model, pallas, ring_attention,
                               ring_strategies)
from tests.processes import run_together

COMPILING = {ring_attention: ["--tiny"], agent_context: ["--tiny", "--attention", "blockwise", "ring"],
             pallas: ["--allow-cpu"], ring_strategies: ["--tiny"], memory_model: ["--tiny"]}


def _checked(module, out, returned=None):
    written = json.loads(out.read_text())
    assert written["benchmark"] == module.NAME
    assert written["config"]["tiny"] is True
    assert written["machine"]["cpu_count"] >= 1 and "load_average" in written["machine"]
    if returned is not None:
        assert json.loads(json.dumps(returned, default=str)) == written
    return written


def _run(module, tmp_path, *argv):
    out = tmp_path / f"{module.NAME}.json"
    return _checked(module, out, module.main([*argv, "--out", str(out)]))


@pytest.fixture(scope="module")
def compiled_results(tmp_path_factory):
    """What each of the JAX benchmarks wrote, all run together (about a minute on two idle cores)."""
    folder = tmp_path_factory.mktemp("bench")
    outs = {module: folder / f"{module.NAME}.json" for module in COMPILING}
    run_together([[sys.executable, "-m", module.__name__, *argv, "--out", str(outs[module])]
                  for module, argv in COMPILING.items()], devices=8)
    return {module: _checked(module, out) for module, out in outs.items()}


def test_ring_attention(compiled_results):
    result = compiled_results[ring_attention]
    assert result["machine"]["device_count"] == 8
    rows = {row["impl"]: row for row in result["rows"]}
    ours = [rows[f"ours/{layout}"] for layout in ("contiguous", "striped", "zigzag")]
    for row in rows.values():
        assert row["seq"] == 256 and row["fwd_seconds"] > 0 and row["fwd+bwd_seconds"] > 0
        assert 0 < row["fwd_temp_bytes"] <= row["fwd+bwd_temp_bytes"]
    dense = rows["dense/1 device"]
    for row in ours:  # O(block) per device against dense's O(seq^2) on one
        assert row["fwd+bwd_temp_bytes"] < dense["fwd+bwd_temp_bytes"]
    if result["official_skipped"] is None:  # the package is an optional extra ([bench])
        for row in ours:  # the README's claim: less temp memory than the official package
            assert row["fwd+bwd_temp_bytes"] <= rows["official/contiguous"]["fwd+bwd_temp_bytes"]
    else:
        assert "official/contiguous" not in rows


def test_ring_strategies(compiled_results):
    result = compiled_results[ring_strategies]
    assert result["machine"]["device_count"] == 8
    assert {row["strategy"] for row in result["rows"]} == set(ring_strategies.STRATEGIES)
    for row in result["rows"] + result["window"]:
        assert row["fwd+bwd_seconds"] > 0 and row["fwd+bwd_temp_bytes"] > 0
    for cell in result["auto"]:  # the rule's promise: never over the budget where the ring fits
        assert cell["auto"] in ring_strategies.STRATEGIES
        assert cell["auto_within_budget"] or not cell["ring_within_budget"], cell
    assert {row["strategy"] for row in result["window_over_full"]} == set(ring_strategies.STRATEGIES)
    hybrid = [(row["q_heads"], row["groups"]) for row in result["hybrid"] if row["strategy"] == "hybrid"]
    assert hybrid == [(8, 2), (8, 4), (2, 4)]  # 2 heads split over groups of 2 devices, not of 4
    assert not [row for row in result["hybrid"] if row["strategy"] == "ulysses" and row["q_heads"] == 2]


def test_memory_model(compiled_results):
    # Every fitted estimate lies above its compiled program, by no more than the margin at the tightest.
    result = compiled_results[memory_model]
    for strategy, rows in result["programs"].items():
        assert len(rows) == 8 and all(r["measured"] > 0 for r in rows)
        coefficients = result["coefficients"][strategy]
        estimates = [sum(c * t for c, t in zip(coefficients, r["terms"])) for r in rows]
        assert all(e >= r["measured"] for e, r in zip(estimates, rows)), strategy
        assert result["report"][strategy]["new_over_measured"][0] <= 1.06


def test_fit_is_the_least_upper_envelope():
    # Programs that are exactly 2 x term 1 + 3 x term 2: the envelope is those coefficients (no margin).
    terms = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 0.0]]
    assert memory_model.fit(terms, [2.0, 3.0, 5.0], 0.0) == pytest.approx([2.0, 3.0, 0.0])
    assert memory_model.fit(terms, [2.0, 3.0, 6.0], 0.0).sum() >= 5.0  # the third program pushes it up


def test_agent_context(compiled_results):
    result = compiled_results[agent_context]
    assert {row["attention"] for row in result["train"]} == {"blockwise", "ring"}
    for row in result["train"]:
        assert row["trajectories"] == 1 and row["tokens"] == 16
        assert row["step_seconds"] > 0 and row["temp_gib_per_device"] > 0
    for kind, found in result["largest_context"].items():
        assert found["trajectories"] == 1 and found["capped_by_search"], kind  # the search stops at 1
    assert result["ring_over_blockwise"] == 1.0
    [decode] = result["decode"]
    assert decode["tokens"] == 16 and decode["cached_seconds"] > 0 and decode["recompute_seconds"] > 0


def test_largest_fitting_doubles_then_bisects():
    asked = []

    def fits(k):
        asked.append(k)
        return k <= 37

    assert agent_context.largest_fitting(fits, limit=1000, precision=0.1) == (36, 38)
    assert asked[:7] == [1, 2, 4, 8, 16, 32, 64]
    assert agent_context.largest_fitting(lambda k: k <= 37, limit=1000, precision=0.01) == (37, 38)
    assert agent_context.largest_fitting(lambda k: True, limit=10, precision=0.1) == (8, None)
    assert agent_context.largest_fitting(lambda k: False, limit=10, precision=0.1) == (None, 1)


def test_pallas_needs_a_gpu_or_allow_cpu(tmp_path):
    with pytest.raises(SystemExit, match="--allow-cpu"):
        pallas.main(["--out", str(tmp_path / "pallas.json")])
    assert not (tmp_path / "pallas.json").exists()


def test_pallas_cpu_smoke(compiled_results):
    result = compiled_results[pallas]
    assert {row["impl"] for row in result["attention"]} == {"pallas", "jax.nn (xla, no GPU)", "xla"}
    for row in result["attention"]:
        assert row["fwd_seconds"] > 0 and row["fwd_bwd_seconds"] > 0
    [overhead] = result["sharded_overhead"]
    assert overhead["kernel_fwd_bwd_seconds"] > 0 and overhead["sharded_fwd_bwd_seconds"] > 0
    assert len(result["tile_sweep"]) == 2 and all("error" not in row for row in result["tile_sweep"])
    found = result["agent_largest_context"]
    assert found["largest_trajectories"] == 1 and found["trials"][0]["fits"]


def test_env_stepping(tmp_path):
    result = _run(env_stepping, tmp_path, "--tiny")
    assert [(row["task"], row["num_envs"]) for row in result["rows"]] == [("cartpole_swingup", 1),
                                                                           ("cartpole_swingup", 2)]
    assert all(row["sync_steps_per_s"] > 0 and row["pool_steps_per_s"] > 0 for row in result["rows"])
    assert "jax" not in result["machine"]


def test_data_loading(tmp_path):
    result = _run(data_loading, tmp_path, "--tiny")
    assert result["load"]["episodes"] == 8 and result["load"]["steps"] == 8 * 50
    assert result["load"]["peak_over_data"] > 0
    assert [row["k"] for row in result["sampler"]] == [2] and result["sampler"][0]["contexts_per_s"] > 0


def test_harness_refuses_more_devices_than_jax_runs_with(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "")  # restored afterwards: subprocess tests inherit the environment
    with pytest.raises(SystemExit, match="16"):
        harness.use_devices(16)
    assert len(harness.use_devices(8)) == 8


def test_median_seconds_warms_up_then_takes_the_median():
    calls = []
    seconds = harness.median_seconds(lambda: calls.append(1) or 0, repeats=3, warmup=2)
    assert len(calls) == 5 and seconds >= 0
    with pytest.raises(ValueError, match="repeats"):
        harness.median_seconds(lambda: 0, repeats=0)
