"""The preset memory benchmark at --tiny sizes: a preset's own train step compiled on the ring over the 8
devices and on one device, checked through the JSON it writes (memory analysis is deterministic)."""

import json

from experiments.bench import preset_memory


def test_ring_holds_eight_times_the_context_of_one_device(tmp_path):
    out = tmp_path / "memory.json"
    returned = preset_memory.main(["--tiny", "--out", str(out)])
    written = json.loads(out.read_text())
    assert written["benchmark"] == "preset_memory" and written["config"]["preset"] == "dark_room_long_tiny"
    rows = written["memory"]
    assert rows["ring"]["devices"] == 8 and rows["one_device_eighth"]["devices"] == 1
    assert rows["ring"]["tokens"] == rows["one_device_full"]["tokens"] == 8 * rows["one_device_eighth"]["tokens"]
    assert rows["one_device_full"]["temp_bytes"] > rows["ring"]["temp_bytes"] > 0
    assert written["ring_over_one_device_eighth"] == returned["ring_over_one_device_eighth"] > 0


def test_agent_strategies_benchmark_measures_each_strategy(tmp_path):
    from experiments.bench import agent_strategies

    out = tmp_path / "strategies.json"
    agent_strategies.main(["--tiny", "--out", str(out)])
    rows = json.loads(out.read_text())["rows"]
    assert [(r["cell"], r["strategy"]) for r in rows] == [("dark_room_long", "ring"), ("dark_room_long", "allgather")]
    assert all(r["temp_bytes"] > 0 and r["step_seconds"] > 0 and r["tokens"] == 128 for r in rows)


def test_agent_window_benchmark_times_windowed_layers_against_full(tmp_path):
    from experiments.bench import agent_window

    out = tmp_path / "window.json"
    agent_window.main(["--tiny", "--out", str(out)])
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert list(rows) == list(agent_window.CELLS["dark_room_long"][4])
    assert rows["full"]["window"] is None and rows["full"]["time_over_full"] == 1.0
    contiguous = rows["window in both layers, contiguous"]
    assert contiguous["window"] == 80 and contiguous["windowed_layers"] == [0, 1]
    assert contiguous["layout"] == "contiguous" and contiguous["attention"] == "ring" and contiguous["devices"] == 8
    assert all(r["temp_bytes"] > 0 and r["step_seconds"] > 0 for r in rows.values())
