"""Minari datasets: the h5py reader, the minari package reader, the writer, and bad input."""

import json
import sys

import h5py
import numpy as np
import pytest

from datasets import BadEpisodeError, minari
from datasets.synthetic import random_trajectories

DATASET = "test/pointenv/simple-v0"


def _compare(loaded, trajectories):
    assert len(loaded) == len(trajectories)
    for original, back in zip(trajectories, loaded):
        for field in ("observations", "actions", "rewards", "terminals", "timeouts", "final_observation"):
            np.testing.assert_array_equal(getattr(back, field), getattr(original, field), err_msg=field)


def _trajectories():
    trajectories = random_trajectories(0, [3, 1, 5], state_dim=None)
    trajectories[1] = trajectories[1].replace(terminals=np.array([True]), timeouts=np.array([False]))
    return trajectories


def test_hdf5_round_trip_and_layout(tmp_path):
    trajectories = _trajectories()
    path = minari.save(DATASET, trajectories, root=tmp_path)
    assert path == tmp_path / "test" / "pointenv" / "simple-v0" / "data" / "main_data.hdf5"
    with h5py.File(path, "r") as file:
        assert sorted(file.keys()) == ["episode_0", "episode_1", "episode_2"]
        assert file["episode_2/observations"].shape == (6, 3)  # T + 1 rows
        assert file["episode_2/actions"].shape == (5, 2)
    metadata = json.loads((path.parent / "metadata.json").read_text())
    assert metadata["total_episodes"] == 3 and metadata["total_steps"] == 9
    _compare(minari.load(DATASET, reader="hdf5", root=tmp_path), trajectories)


def test_hdf5_reader_uses_environment_variable_and_episode_number_order(tmp_path, monkeypatch):
    trajectories = random_trajectories(1, [2] * 12, state_dim=None)
    minari.save(DATASET, trajectories, root=tmp_path)
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    _compare(minari.load(DATASET, reader="hdf5"), trajectories)  # episode_10 after episode_9


def test_package_reads_writer_output_and_agrees_with_hdf5_reader(tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    trajectories = _trajectories()
    minari.save(DATASET, trajectories)
    _compare(minari.load(DATASET), trajectories)


def test_hdf5_reader_reads_a_dataset_made_by_the_package(tmp_path, monkeypatch):
    package = pytest.importorskip("minari")
    gymnasium = pytest.importorskip("gymnasium")
    from minari.data_collector.episode_buffer import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    trajectories = _trajectories()
    buffers = [EpisodeBuffer(id=i, observations=np.concatenate([t.observations, t.final_observation[None]]),
                             actions=np.asarray(t.actions), rewards=np.asarray(t.rewards, np.float64),
                             terminations=np.asarray(t.terminals), truncations=np.asarray(t.timeouts))
               for i, t in enumerate(trajectories)]
    box = gymnasium.spaces.Box
    with pytest.warns(UserWarning):  # minari warns that no environment spec was given
        package.create_dataset_from_buffers(DATASET, buffers, action_space=box(-np.inf, np.inf, (2,), np.float32),
                                            observation_space=box(-np.inf, np.inf, (3,), np.float32),
                                            algorithm_name="random")
    _compare(minari.load(DATASET, reader="hdf5"), trajectories)
    _compare(minari.load(DATASET), trajectories)


def test_missing_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "minari", None)  # makes `import minari` fail as if not installed
    with pytest.raises(ModuleNotFoundError, match=r"ringrl\[minari\]"):
        minari.load(DATASET)


def test_missing_dataset_and_bad_arguments(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="main_data.hdf5 does not exist"):
        minari.load(DATASET, reader="hdf5", root=tmp_path)
    with pytest.raises(ValueError, match="not of the form"):
        minari.load("no version", reader="hdf5", root=tmp_path)
    with pytest.raises(ValueError, match="reader must be"):
        minari.load(DATASET, reader="arrow")
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not available locally"):
        minari.load(DATASET)


def _edit(path, episode, key, value=None):
    with h5py.File(path, "a") as file:
        del file[f"{episode}/{key}"]
        if value is not None:
            file[f"{episode}"].create_dataset(key, data=value)


@pytest.mark.parametrize("key, value, message", [
    ("rewards", None, r"missing keys \['rewards'\]"),
    ("actions", np.zeros((4, 2), np.float32), "mismatched lengths"),
    ("rewards", np.array([0.0, np.inf, 0.0]), "rewards has 1 NaN or infinite"),
    ("observations", np.full((4, 3), np.nan, np.float32), "observations has 9 NaN"),
])
def test_bad_episode_named_or_skipped(tmp_path, key, value, message):
    path = minari.save(DATASET, _trajectories(), root=tmp_path)
    _edit(path, "episode_0", key, value)
    with pytest.raises(BadEpisodeError, match=f"main_data.hdf5 episode_0.*{message}"):
        minari.load(DATASET, reader="hdf5", root=tmp_path)
    with pytest.warns(RuntimeWarning, match="skipped 1 bad episode"):
        loaded = minari.load(DATASET, reader="hdf5", root=tmp_path, skip_bad=True)
    assert len(loaded) == 2 and loaded.skipped[0][0].endswith("episode_0")


def test_corrupt_and_empty_files(tmp_path):
    path = minari.save(DATASET, _trajectories(), root=tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="main_data.hdf5: corrupt or truncated"):
        minari.load(DATASET, reader="hdf5", root=tmp_path)
    with h5py.File(path, "w"):
        pass
    with pytest.raises(ValueError, match="no episode_<i> groups"):
        minari.load(DATASET, reader="hdf5", root=tmp_path)


def test_writer_needs_final_observation(tmp_path):
    (trajectory,) = random_trajectories(0, [2], state_dim=None)
    with pytest.raises(ValueError, match="trajectory 0 .* no final_observation"):
        minari.save(DATASET, [trajectory.replace(final_observation=None)], root=tmp_path)
