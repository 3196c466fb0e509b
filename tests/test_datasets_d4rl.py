"""D4RL HDF5: episode splitting, optional keys, normalised scores, bad input, atomic writes."""

import os

import h5py
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datasets import BadEpisodeError, d4rl
from datasets.synthetic import random_trajectories


def _write(path, n=10, drop=(), **overrides):
    rng = np.random.default_rng(0)
    arrays = {
        "observations": rng.normal(size=(n, 3)).astype(np.float32),
        "actions": rng.normal(size=(n, 2)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.zeros(n, bool),
        "timeouts": np.zeros(n, bool),
    }
    arrays.update(overrides)
    with h5py.File(path, "w") as file:
        for key, value in arrays.items():
            if key not in drop:
                file.create_dataset(key, data=value)
    return arrays


def test_round_trip_with_terminal_and_timeout_splits(tmp_path):
    trajectories = random_trajectories(0, [4, 1, 6, 3], state_dim=5)
    trajectories[0] = trajectories[0].replace(terminals=np.eye(1, 4, 3, dtype=bool)[0], timeouts=np.zeros(4, bool))
    trajectories[3] = trajectories[3].replace(timeouts=np.zeros(3, bool))  # last one may end unflagged
    path = tmp_path / "hopper-medium-v2.hdf5"
    d4rl.save(path, trajectories, qpos_dim=2)
    with h5py.File(path, "r") as file:
        assert set(file.keys()) == {"observations", "actions", "rewards", "terminals", "timeouts",
                                    "next_observations", "infos"}
        assert file["infos/qpos"].shape == (14, 2) and file["infos/qvel"].shape == (14, 3)
    loaded = d4rl.load(path)
    assert [len(t) for t in loaded] == [4, 1, 6, 3]
    for original, back in zip(trajectories, loaded):
        for field in ("observations", "actions", "rewards", "terminals", "timeouts", "physics",
                      "final_observation"):
            np.testing.assert_array_equal(getattr(back, field), getattr(original, field), err_msg=field)
        assert back.final_physics is None


def test_splits_at_terminals_or_timeouts():
    terminals = np.array([0, 1, 0, 0, 0, 1, 0, 0], bool)
    timeouts = np.array([0, 0, 0, 1, 0, 0, 0, 0], bool)
    spans, used = d4rl.split_episodes(terminals, timeouts)
    assert spans == [(0, 2), (2, 4), (4, 6), (6, 8)]
    np.testing.assert_array_equal(used, timeouts)


def test_time_limit_fallback_without_timeouts(tmp_path):
    terminals = np.zeros(12, bool)
    terminals[6] = True  # episodes: 0..4 (limit 5), 5..6 (terminal), 7..11 (limit 5)
    _write(tmp_path / "old.hdf5", n=12, drop=("timeouts",), terminals=terminals)
    loaded = d4rl.load(tmp_path / "old.hdf5", time_limit=5)
    assert [len(t) for t in loaded] == [5, 2, 5]
    assert [bool(t.timeouts[-1]) for t in loaded] == [True, False, True]
    assert [bool(t.terminals[-1]) for t in loaded] == [False, True, False]
    spans, _ = d4rl.split_episodes(np.zeros(2500, bool), None)
    assert spans == [(0, 1000), (1000, 2000), (2000, 2500)]


def test_reads_float_flags_and_column_rewards(tmp_path):
    _write(tmp_path / "f.hdf5", n=4, rewards=np.ones((4, 1), np.float64),
           terminals=np.array([0.0, 1.0, 0.0, 0.0]), timeouts=np.array([0.0, 0.0, 0.0, 1.0]))
    loaded = d4rl.load(tmp_path / "f.hdf5")
    assert [len(t) for t in loaded] == [2, 2] and loaded[0].rewards.dtype == np.float32
    assert loaded[0].final_observation is None and loaded[0].physics is None


@pytest.mark.parametrize("name, value, expected", [
    ("hopper-medium-v2", 3234.3, 100.0),
    ("hopper", -20.272305, 0.0),
    ("Hopper-v4", 1607.0, None),
    ("HalfCheetah-v4", 12135.0, 100.0),
    ("walker2d-medium-replay-v2", 1.629008, 0.0),
    ("ant-expert-v2", 3879.7, 100.0),
    ("antmaze-umaze-v0", 0.5, 50.0),
])
def test_normalized_score(name, value, expected):
    score = d4rl.normalized_score(name, value)
    low, high = d4rl.REFERENCE_SCORES[d4rl._family(name)]
    assert score == pytest.approx(100 * (value - low) / (high - low))
    if expected is not None:
        assert score == pytest.approx(expected)


def test_normalized_score_arrays_and_unknown():
    np.testing.assert_allclose(d4rl.normalized_score("walker2d", [1.629008, 4592.3]), [0.0, 100.0])
    with pytest.raises(ValueError, match="no D4RL reference scores for env_name 'pendulum-v1'"):
        d4rl.normalized_score("pendulum-v1", 1.0)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.hdf5"):
        d4rl.load(tmp_path / "missing.hdf5")
    (tmp_path / "corrupt.hdf5").write_bytes(b"garbage" * 100)
    with pytest.raises(ValueError, match="corrupt.hdf5: corrupt or truncated"):
        d4rl.load(tmp_path / "corrupt.hdf5")
    _write(tmp_path / "whole.hdf5", n=2000)
    data = (tmp_path / "whole.hdf5").read_bytes()
    (tmp_path / "cut.hdf5").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.hdf5: corrupt or truncated"):
        d4rl.load(tmp_path / "cut.hdf5")
    _write(tmp_path / "nokey.hdf5", drop=("actions",))
    with pytest.raises(ValueError, match=r"nokey.hdf5: missing keys \['actions'\]"):
        d4rl.load(tmp_path / "nokey.hdf5")
    _write(tmp_path / "short.hdf5", rewards=np.zeros(9, np.float32))
    with pytest.raises(ValueError, match="short.hdf5: keys have different numbers of rows"):
        d4rl.load(tmp_path / "short.hdf5")


def test_nan_episode_named_or_skipped(tmp_path):
    rewards = np.zeros(6, np.float32)
    rewards[3] = np.nan
    _write(tmp_path / "nan.hdf5", n=6, rewards=rewards, timeouts=np.array([0, 1, 0, 1, 0, 1], bool))
    with pytest.raises(BadEpisodeError, match=r"nan.hdf5 rows 2:4: .*rewards has 1 NaN"):
        d4rl.load(tmp_path / "nan.hdf5")
    with pytest.warns(RuntimeWarning, match="skipped 1 bad episode"):
        loaded = d4rl.load(tmp_path / "nan.hdf5", skip_bad=True)
    assert [len(t) for t in loaded] == [2, 2] and loaded.skipped[0][0].endswith("nan.hdf5 rows 2:4")
    (tmp_path / "nan.hdf5").chmod(0o444)  # readers open read-only
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        assert len(d4rl.load(tmp_path / "nan.hdf5", skip_bad=True)) == 2


def test_writer_checks_and_atomicity(tmp_path, monkeypatch):
    trajectories = random_trajectories(1, [3, 3])
    unflagged = trajectories[0].replace(timeouts=np.zeros(3, bool))
    with pytest.raises(ValueError, match="trajectory 0 .* neither a terminal nor a timeout"):
        d4rl.save(tmp_path / "x.hdf5", [unflagged, trajectories[1]])
    with pytest.raises(ValueError, match="qpos_dim=4"):
        d4rl.save(tmp_path / "x.hdf5", trajectories, qpos_dim=4)
    assert os.listdir(tmp_path) == []
    d4rl.save(tmp_path / "x.hdf5", trajectories)
    old = (tmp_path / "x.hdf5").read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(h5py.Group, "create_dataset", crash)
    with pytest.raises(KeyboardInterrupt):
        d4rl.save(tmp_path / "x.hdf5", trajectories[:1])
    assert os.listdir(tmp_path) == ["x.hdf5"] and (tmp_path / "x.hdf5").read_bytes() == old


@settings(max_examples=60, deadline=None)
@given(flags=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40),
       use_timeouts=st.booleans(), time_limit=st.integers(1, 7))
def test_split_covers_rows_and_ends_only_at_flags(flags, use_timeouts, time_limit):
    terminals = np.array([f[0] for f in flags])
    timeouts = np.array([f[1] for f in flags]) if use_timeouts else None
    spans, used = d4rl.split_episodes(terminals, timeouts, time_limit)
    assert spans[0][0] == 0 and spans[-1][1] == len(flags)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:])) and all(a < b for a, b in spans)
    ends = terminals | used
    for start, stop in spans:
        assert not ends[start:stop - 1].any()
        assert ends[stop - 1] or stop == len(flags)
        if not use_timeouts:
            assert stop - start <= time_limit and not (used & terminals).any()
