"""`datasets.read_episodes` over every way the project names data, and D4RL append/truncate in directories."""

import numpy as np
import pytest

import datasets
from datasets import d4rl, exorl
from datasets.synthetic import random_trajectories


def _same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.observations, y.observations)
        np.testing.assert_array_equal(x.actions, y.actions)
        np.testing.assert_array_equal(x.rewards, y.rewards)


def _episodes(n, seed=0, state_dim=4):
    return random_trajectories(seed, [3 + i % 4 for i in range(n)], obs_dim=3, act_dim=2, state_dim=state_dim)


def test_exorl_by_root_domain_algo_by_directory_and_by_buffer(tmp_path):
    episodes = _episodes(4)
    exorl.save(tmp_path, "walker", "proto", episodes)
    by_root = datasets.read_episodes(tmp_path, format="exorl", domain="walker", algo="proto")
    _same(by_root, episodes)
    _same(datasets.read_episodes(tmp_path / "walker" / "proto"), episodes)  # a collector directory
    _same(datasets.read_episodes(tmp_path / "walker" / "proto" / "buffer"), episodes)
    _same(datasets.read_episodes(tmp_path, domain="walker", algo="proto", max_episodes=2), episodes[:2])
    (tmp_path / "walker" / "proto" / "buffer" / "episode_1_4.npz").unlink()
    with pytest.raises(ValueError, match=r"misses episodes \[1\]"):
        datasets.read_episodes(tmp_path / "walker" / "proto", contiguous=True)
    assert len(datasets.read_episodes(tmp_path / "walker" / "proto")) == 3


def test_exorl_relabels_through_the_reader(tmp_path):
    import envs

    env = envs.make("point_nav_hidden", seed=0)
    goal = env.task_parameter
    positions = np.outer(np.arange(1, 21) * 0.1, goal)  # straight to the goal and beyond
    physics = np.concatenate([[[0.0, 0.0]], positions])
    episode = datasets.Trajectory(physics[:-1].astype(np.float32), np.zeros((20, 2)), np.zeros(20),
                                  np.zeros(20, bool), np.arange(20) == 19, physics=physics[:-1],
                                  final_observation=physics[-1], final_physics=physics[-1], task=goal)
    exorl.save(tmp_path, "point_nav", "line", [episode])
    (read,) = datasets.read_episodes(tmp_path / "point_nav" / "line", task="point_nav_hidden")
    np.testing.assert_array_equal(read.rewards, np.linalg.norm(positions - goal, axis=1) <= 0.2)
    np.testing.assert_array_equal(read.task, goal)


def test_d4rl_file_and_directory_in_episode_order(tmp_path):
    episodes = _episodes(5)
    written = d4rl.append_episodes(tmp_path / "d", episodes, 0, per_file=2, qpos_dim=2)
    assert [p.name for p in written] == ["episodes_000000.hdf5", "episodes_000002.hdf5", "episodes_000004.hdf5"]
    _same(datasets.read_episodes(tmp_path / "d"), episodes)
    _same(datasets.read_episodes(tmp_path / "d", format="d4rl", max_episodes=3), episodes[:3])
    _same(datasets.read_episodes(written[1]), episodes[2:4])
    back = datasets.read_episodes(tmp_path / "d")
    np.testing.assert_array_equal(back[3].physics, episodes[3].physics)


def test_d4rl_append_one_by_one_equals_at_once_and_truncate(tmp_path):
    episodes = _episodes(7, seed=1)
    for index, episode in enumerate(episodes):
        d4rl.append_episodes(tmp_path / "a", [episode], index, per_file=3, qpos_dim=2)
    d4rl.append_episodes(tmp_path / "b", episodes[:4], 0, per_file=3, qpos_dim=2)
    d4rl.append_episodes(tmp_path / "b", episodes[4:], 4, per_file=3, qpos_dim=2)
    for name in ("a", "b"):
        _same(datasets.read_episodes(tmp_path / name), episodes)
    assert [p.name for p in d4rl.episode_files(tmp_path / "a")] == [
        "episodes_000000.hdf5", "episodes_000003.hdf5", "episodes_000006.hdf5"]
    d4rl.truncate_episodes(tmp_path / "a", 4, per_file=3, qpos_dim=2)
    _same(datasets.read_episodes(tmp_path / "a"), episodes[:4])
    assert len(d4rl.episode_files(tmp_path / "a")) == 2
    d4rl.truncate_episodes(tmp_path / "a", 3, per_file=3, qpos_dim=2)  # a file boundary: one file goes
    _same(datasets.read_episodes(tmp_path / "a"), episodes[:3])
    d4rl.append_episodes(tmp_path / "a", episodes[3:], 3, per_file=3, qpos_dim=2)  # and grows back
    _same(datasets.read_episodes(tmp_path / "a"), episodes)
    d4rl.truncate_episodes(tmp_path / "a", 0, per_file=3, qpos_dim=2)
    assert d4rl.episode_files(tmp_path / "a") == []


def test_d4rl_append_checks_the_index_and_is_atomic(tmp_path):
    episodes = _episodes(3)
    d4rl.append_episodes(tmp_path, episodes[:2], 0, per_file=4, qpos_dim=2)
    before = (tmp_path / "episodes_000000.hdf5").read_bytes()
    with pytest.raises(ValueError, match="holds 2 episodes, expected 1"):
        d4rl.append_episodes(tmp_path, episodes[2:], 1, per_file=4, qpos_dim=2)
    wide = random_trajectories(0, [3], obs_dim=5, act_dim=2, state_dim=4)
    with pytest.raises(ValueError, match="disagree"):
        d4rl.append_episodes(tmp_path, wide, 2, per_file=4, qpos_dim=2)
    assert (tmp_path / "episodes_000000.hdf5").read_bytes() == before  # the failed rewrite left it whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["episodes_000000.hdf5"]


def test_empty_and_missing_directories(tmp_path):
    assert datasets.read_episodes(tmp_path / "nothing", allow_empty=True) == []
    (tmp_path / "run" / "buffer").mkdir(parents=True)
    assert datasets.read_episodes(tmp_path / "run", allow_empty=True) == []
    with pytest.raises(FileNotFoundError, match="nothing"):
        datasets.read_episodes(tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match=r"unknown ExoRL algo 'proto'.*found \['run'\]"):
        datasets.read_episodes(tmp_path.parent, domain=tmp_path.name, algo="proto")  # tmp_path holds run/ only
    with pytest.raises(ValueError, match="holds neither"):
        datasets.read_episodes(tmp_path / "run")


def test_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="format"):
        datasets.read_episodes(tmp_path, format="rlds")
    with pytest.raises(ValueError, match="give both"):
        datasets.read_episodes(tmp_path, domain="walker")
    with pytest.raises(ValueError, match="task"):
        datasets.read_episodes(tmp_path, format="d4rl", task="hopper")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a D4RL"):
        datasets.read_episodes(tmp_path / "notes.txt")
