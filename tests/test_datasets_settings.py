"""datasets.settings.DatasetSettings: the record of what a dataset was written with, shared by every writer
that adds to a directory across runs (collector, histories, per-task relabelling)."""

import errno
import json
import os

import pytest

from datasets.settings import DatasetSettings

SETTINGS = {"task": "point_nav_hidden", "seed": 0, "hidden": (256, 256), "eps_max": 1.0}


def test_first_write_records_and_the_same_settings_match(tmp_path):
    record = DatasetSettings(tmp_path / "a" / "b", "demonstrators.json", SETTINGS)
    assert record.check() is False  # nothing recorded yet: nothing to compare
    record.claim()  # made the directory, then wrote the record
    assert json.loads(record.path.read_text()) == {**SETTINGS, "hidden": [256, 256]}
    before = record.path.stat().st_mtime_ns
    again = DatasetSettings(tmp_path / "a" / "b", "demonstrators.json", dict(SETTINGS))
    assert again.check() is True  # a tuple compares as JSON gives it back: a list
    again.claim()
    assert record.path.stat().st_mtime_ns == before  # a record is written once, never replaced


def test_a_mismatch_names_every_differing_field_and_the_directory_and_changes_nothing(tmp_path):
    DatasetSettings(tmp_path, "collect.json", SETTINGS).claim()
    text = (tmp_path / "collect.json").read_text()
    other = DatasetSettings(tmp_path, "collect.json", {**SETTINGS, "seed": 3, "eps_max": 0.5},
                            advice="use another --out")
    with pytest.raises(ValueError) as refused:
        other.claim()
    message = str(refused.value)
    assert f"the data in {tmp_path} was written with other settings (collect.json)" in message
    assert "seed=3 here, 0 there" in message and "eps_max=0.5 here, 1.0 there" in message
    assert "task" not in message.split("):", 1)[1] and message.endswith("; use another --out")
    assert (tmp_path / "collect.json").read_text() == text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["collect.json"]


def test_older_records_match_through_defaults_and_unnamed_fields_are_not_compared(tmp_path):
    (tmp_path / "per_task.json").write_text(json.dumps({"task": "maze", "retired": 7}))
    assert DatasetSettings(tmp_path, "per_task.json", {"task": "maze", "action_repeat": 1},
                           defaults={"action_repeat": 1}).check()
    with pytest.raises(ValueError, match="action_repeat=10 here, 1 there"):
        DatasetSettings(tmp_path, "per_task.json", {"task": "maze", "action_repeat": 10},
                        defaults={"action_repeat": 1}).check()
    with pytest.raises(ValueError, match="action_repeat=10 here, None there"):  # no default: nothing matches
        DatasetSettings(tmp_path, "per_task.json", {"task": "maze", "action_repeat": 10}).check()


def test_an_unreadable_record_is_named_and_kept(tmp_path):
    (tmp_path / "collect.json").write_text('{"task": ')
    with pytest.raises(ValueError, match=r"collect.json: not a settings record"):
        DatasetSettings(tmp_path, "collect.json", SETTINGS).claim()
    assert (tmp_path / "collect.json").read_text() == '{"task": '
    (tmp_path / "collect.json").write_text("[1]")
    with pytest.raises(ValueError, match="a JSON object was expected"):
        DatasetSettings(tmp_path, "collect.json", SETTINGS).check()


def test_a_failed_write_leaves_no_record_and_no_half_written_file(tmp_path, monkeypatch):
    def full_disk(source, destination):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the temporary file is written, its rename fails
    with pytest.raises(OSError, match="No space left"):
        DatasetSettings(tmp_path, "collect.json", SETTINGS).record()
    assert list(tmp_path.iterdir()) == []  # neither the record nor its temporary file
    monkeypatch.undo()
    record = DatasetSettings(tmp_path, "collect.json", SETTINGS)
    assert record.check() is False  # a later run starts as if nothing had happened
    record.claim()
    assert record.check() is True


def test_settings_that_json_cannot_hold_are_refused_before_any_file(tmp_path):
    with pytest.raises(ValueError, match="settings: not JSON-serialisable"):
        DatasetSettings(tmp_path / "d", "collect.json", {"policy": object()}).claim()
    assert not (tmp_path / "d").exists()
