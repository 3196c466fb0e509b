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
