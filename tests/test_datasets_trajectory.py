"""Trajectory validation, immutability and returns; NormStats."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets import NormStats, Trajectory
from datasets.synthetic import random_trajectories, random_trajectory


def _fields(length=4, obs_dim=3, act_dim=2):
    rng = np.random.default_rng(0)
    timeouts = np.zeros(length, bool)
    timeouts[-1] = True
    return dict(observations=rng.normal(size=(length, obs_dim)), actions=rng.normal(size=(length, act_dim)),
                rewards=np.arange(1, length + 1, dtype=np.float32), terminals=np.zeros(length, bool),
                timeouts=timeouts)


def test_converts_dtypes_and_is_read_only():
    trajectory = Trajectory(**_fields())
    assert trajectory.observations.dtype == np.float32 and trajectory.actions.dtype == np.float32
    assert trajectory.terminals.dtype == np.bool_
    with pytest.raises(ValueError, match="read-only"):
        trajectory.rewards[0] = 5.0
    with pytest.raises(AttributeError):
        trajectory.rewards = np.zeros(4)


def test_does_not_change_flags_of_callers_arrays():
    fields = _fields()
    fields["rewards"] = np.ones(4, np.float32)
    Trajectory(**fields)
    assert fields["rewards"].flags.writeable


def test_returns():
    trajectory = Trajectory(**_fields())  # rewards 1, 2, 3, 4
    assert trajectory.total_return == 10.0
    np.testing.assert_array_equal(trajectory.returns_to_go(), [10, 9, 7, 4])
    np.testing.assert_array_equal(trajectory.returns_to_go(target=12.0), [12, 11, 9, 6])
    np.testing.assert_array_equal(trajectory.cumulative_rewards, [1, 3, 6, 10])
    assert trajectory.returns_to_go().dtype == np.float32


def test_next_observations_and_physics():
    trajectory = random_trajectory(np.random.default_rng(1), 5)
    np.testing.assert_array_equal(trajectory.next_observations[:-1], trajectory.observations[1:])
    np.testing.assert_array_equal(trajectory.next_observations[-1], trajectory.final_observation)
    np.testing.assert_array_equal(trajectory.next_physics[-1], trajectory.final_physics)
    bare = trajectory.replace(final_observation=None)
    with pytest.raises(ValueError, match="no final_observation"):
        _ = bare.next_observations


@pytest.mark.parametrize("change, message", [
    (dict(actions=np.zeros((3, 2))), "actions has 3 rows but observations has 4"),
    (dict(rewards=np.zeros((4, 1))), "rewards has shape"),
    (dict(observations=np.zeros((0, 3)), actions=np.zeros((0, 2)), rewards=np.zeros(0),
          terminals=np.zeros(0, bool), timeouts=np.zeros(0, bool)), "at least one step"),
    (dict(rewards=np.array([1, np.nan, 3, 4])), "rewards has 1 NaN or infinite"),
    (dict(observations=np.full((4, 3), np.inf)), "observations has 12 NaN or infinite"),
    (dict(terminals=np.array([0, 1, 0, 0])), "terminals is set at step 1 before the last step"),
    (dict(timeouts=np.array([0, 2, 0, 1])), "timeouts holds values other than 0 and 1"),
    (dict(actions=np.array([["a", "b"]] * 4)), "actions has dtype"),
    (dict(final_observation=np.zeros(5)), "final_observation has shape"),
    (dict(final_physics=np.zeros(2)), "final_physics given without physics"),
    (dict(physics=np.zeros((4, 2)), final_physics=np.zeros(3)), "final_physics has shape"),
])
def test_rejects_bad_fields(change, message):
    fields = _fields()
    fields.update(change)
    with pytest.raises(ValueError, match=message):
        Trajectory(**fields, source="file.npz")
    with pytest.raises(ValueError, match="file.npz"):
        Trajectory(**fields, source="file.npz")


def test_norm_stats_match_numpy_and_round_trip(tmp_path):
    trajectories = random_trajectories(3, [5, 9, 2], obs_dim=4)
    stats = NormStats.compute(trajectories)
    everything = np.concatenate([t.observations for t in trajectories]).astype(np.float64)
    np.testing.assert_allclose(stats.obs_mean, everything.mean(0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stats.obs_std, everything.std(0), rtol=1e-5)
    path = stats.save(tmp_path)
    assert path == tmp_path / "norm_stats.json"
    loaded = NormStats.load(tmp_path)
    np.testing.assert_array_equal(loaded.obs_mean, stats.obs_mean)
    np.testing.assert_array_equal(loaded.obs_std, stats.obs_std)
    normalized = loaded.normalize_observations(everything)
    np.testing.assert_allclose(normalized.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(loaded.denormalize_observations(normalized), everything, rtol=1e-5, atol=1e-5)
    mean, std = loaded.as_tuples()
    assert mean == tuple(stats.obs_mean.tolist()) and std == tuple(stats.obs_std.tolist())


def test_norm_stats_floor_constant_features():
    trajectory = random_trajectory(np.random.default_rng(0), 6, obs_dim=2)
    trajectory = trajectory.replace(observations=np.ones((6, 2)))
    stats = NormStats.compute([trajectory])
    assert (stats.obs_std > 0).all()
    assert np.isfinite(stats.normalize_observations(np.zeros((1, 2)))).all()


def test_norm_stats_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="no trajectories"):
        NormStats.compute([])
    with pytest.raises(FileNotFoundError, match="norm_stats.json"):
        NormStats.load(tmp_path)
    (tmp_path / "norm_stats.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        NormStats.load(tmp_path)
    (tmp_path / "norm_stats.json").write_text(json.dumps({"obs_mean": [0.0]}))
    with pytest.raises(ValueError, match="expected exactly the keys"):
        NormStats.load(tmp_path)
    (tmp_path / "norm_stats.json").write_text(json.dumps({"obs_mean": [0.0], "obs_std": [1.0], "extra": 1}))
    with pytest.raises(ValueError, match="expected exactly the keys"):
        NormStats.load(tmp_path)
    (tmp_path / "norm_stats.json").write_text(json.dumps({"obs_mean": [0.0], "obs_std": [0.0],
                                                          "return_scale": 1.0}))  # an older run's file
    with pytest.raises(ValueError, match="positive"):
        NormStats.load(tmp_path)


def test_import_is_light():
    code = ("import sys, datasets; heavy = [m for m in ('jax', 'h5py', 'envs', 'dm_control', 'minari') "
            "if m in sys.modules]; assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_with_task_observed_appends_the_task_to_every_observation():
    episode = random_trajectories(0, [5], obs_dim=3, act_dim=2)[0]
    with pytest.raises(ValueError, match="stores no hidden task parameter"):
        episode.with_task_observed()
    hidden = episode.replace(task=np.array([0.25, -0.5]), final_observation=np.ones(3, np.float32))
    told = hidden.with_task_observed()
    np.testing.assert_array_equal(told.observations[:, :3], hidden.observations)
    np.testing.assert_array_equal(told.observations[:, 3:], np.tile([0.25, -0.5], (5, 1)))
    np.testing.assert_array_equal(told.final_observation, [1, 1, 1, 0.25, -0.5])
    np.testing.assert_array_equal(told.actions, hidden.actions)
    assert told.total_return == hidden.total_return and told.observation_dim == 5
