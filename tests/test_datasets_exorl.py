"""ExoRL buffers: round trips, ExoRL's alignment, ordering, relabelling wiring, bad input, atomic writes."""

import os
import tracemalloc

import numpy as np
import pytest

from datasets import BadEpisodeError, exorl
from datasets.synthetic import random_trajectories


def _buffer(root, domain="walker", algo="proto"):
    return root / domain / algo / "buffer"


def _write_raw(path, length=3, obs_dim=2, act_dim=1, state_dim=2, **overrides):
    """A file laid out by hand: row i holds observation i, action 10+i, reward 100+i, physics 1000+i."""
    rows = np.arange(length + 1, dtype=np.float32)
    arrays = dict(
        observation=np.repeat(rows[:, None], obs_dim, 1),
        action=np.repeat(10 + rows[:, None], act_dim, 1),
        reward=(100 + rows)[:, None],
        discount=np.ones((length + 1, 1), np.float32),
        physics=np.repeat(1000 + rows[:, None], state_dim, 1).astype(np.float64),
    )
    arrays.update(overrides)
    arrays = {key: value for key, value in arrays.items() if value is not None}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def test_round_trip_and_file_layout(tmp_path):
    trajectories = random_trajectories(0, [5, 1, 8], obs_dim=4, act_dim=3, state_dim=6)
    trajectories[1] = trajectories[1].replace(terminals=np.array([True]), timeouts=np.array([False]))
    paths = exorl.save(tmp_path, "walker", "proto", trajectories)
    assert [p.name for p in paths] == ["episode_0_5.npz", "episode_1_1.npz", "episode_2_8.npz"]
    with np.load(paths[0]) as raw:
        assert {k: (raw[k].shape, raw[k].dtype) for k in raw.files} == {
            "observation": ((6, 4), np.float32), "action": ((6, 3), np.float32),
            "reward": ((6, 1), np.float32), "discount": ((6, 1), np.float32),
            "physics": ((6, 6), np.float64)}
        # The dummy first step: zero action and reward, discount 1, the reset observation and state.
        assert (raw["action"][0] == 0).all() and raw["reward"][0, 0] == 0 and raw["discount"][0, 0] == 1
        np.testing.assert_array_equal(raw["observation"][0], trajectories[0].observations[0])
        np.testing.assert_array_equal(raw["physics"][-1], trajectories[0].final_physics)
    with np.load(paths[1]) as raw:
        np.testing.assert_array_equal(raw["discount"][:, 0], [1, 0])
    loaded = exorl.load(tmp_path, "walker", "proto")
    assert len(loaded) == 3 and loaded.skipped == []
    for original, back in zip(trajectories, loaded):
        for field in ("observations", "actions", "rewards", "terminals", "timeouts", "physics",
                      "final_observation", "final_physics"):
            np.testing.assert_array_equal(getattr(back, field), getattr(original, field), err_msg=field)
        assert back.total_return == original.total_return
    assert loaded[1].terminals[-1] and not loaded[1].timeouts[-1]


def test_alignment_matches_exorl_replay_loader(tmp_path):
    path = _buffer(tmp_path) / "20220101T000000_0_3.npz"
    _write_raw(path)
    (trajectory,) = exorl.load(tmp_path, "walker", "proto")
    np.testing.assert_array_equal(trajectory.observations[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(trajectory.actions[:, 0], [11, 12, 13])
    np.testing.assert_array_equal(trajectory.rewards, [101, 102, 103])
    np.testing.assert_array_equal(trajectory.physics[:, 0], [1000, 1001, 1002])
    assert trajectory.final_observation[0] == 3 and trajectory.final_physics[0] == 1003
    np.testing.assert_array_equal(trajectory.timeouts, [False, False, True])
    with np.load(path) as raw:  # ExoRL samples i in 1..T: (obs[i-1], action[i], reward[i], obs[i])
        for i in range(1, 4):
            np.testing.assert_array_equal(trajectory.observations[i - 1], raw["observation"][i - 1])
            np.testing.assert_array_equal(trajectory.actions[i - 1], raw["action"][i])
            assert trajectory.rewards[i - 1] == raw["reward"][i, 0]
            np.testing.assert_array_equal(trajectory.next_observations[i - 1], raw["observation"][i])
            np.testing.assert_array_equal(trajectory.next_physics[i - 1], raw["physics"][i])


def test_orders_by_parsed_index_and_limits(tmp_path):
    for name in ["b_10_2.npz", "a_2_3.npz", "c_1_4.npz"]:  # lexicographic and creation order both differ
        _write_raw(_buffer(tmp_path) / name, length=int(name[-5]))
    assert [len(t) for t in exorl.load(tmp_path, "walker", "proto")] == [4, 3, 2]
    assert [len(t) for t in exorl.load(tmp_path, "walker", "proto", max_episodes=2)] == [4, 3]
    with pytest.raises(ValueError, match="max_episodes"):
        exorl.load(tmp_path, "walker", "proto", max_episodes=0)


class _FakeRelabel:
    """Reward = 2 * first state value + first action value; records every call."""

    def __init__(self):
        self.calls = []

    def __call__(self, task, physics, actions=None):
        self.calls.append((task, physics.shape, None if actions is None else actions.shape))
        if task == "walker_fly":
            raise ValueError("unknown task 'walker_fly'")
        control = 0.0 if actions is None else actions[:, 0]
        return (2.0 * physics[:, 0] + control).astype(np.float32)


@pytest.fixture
def fake_envs(monkeypatch):
    import envs

    fake = _FakeRelabel()
    monkeypatch.setattr(envs, "relabel_rewards", fake, raising=False)
    return fake


def test_relabel_uses_one_call_and_the_state_after_each_action(tmp_path, fake_envs):
    _write_raw(_buffer(tmp_path) / "episode_0_3.npz", reward=np.ones((4, 3), np.float32))  # multi-dim stored
    _write_raw(_buffer(tmp_path) / "episode_1_5.npz", length=5)
    loaded = exorl.load(tmp_path, "walker", "proto", task="walker_run")
    assert fake_envs.calls == [("walker_run", (4, 2), (4, 1)), ("walker_run", (6, 2), (6, 1))]
    np.testing.assert_array_equal(loaded[0].rewards, [2002 + 11, 2004 + 12, 2006 + 13])
    np.testing.assert_array_equal(loaded[1].rewards, 2 * loaded[1].next_physics[:, 0] + loaded[1].actions[:, 0])
    fake_envs.calls.clear()
    loaded = exorl.load(tmp_path, "walker", "proto", task="walker_run", relabel_with_actions=False)
    assert fake_envs.calls == [("walker_run", (4, 2), None), ("walker_run", (6, 2), None)]
    np.testing.assert_array_equal(loaded[0].rewards, [2002, 2004, 2006])


def test_relabel_errors(tmp_path, fake_envs):
    _write_raw(_buffer(tmp_path) / "episode_0_3.npz")
    with pytest.raises(ValueError, match="not a task of domain 'walker'"):
        exorl.load(tmp_path, "walker", "proto", task="cheetah_run")
    with pytest.raises(ValueError, match="episode_0_3.npz.*walker_fly.*unknown task"):
        exorl.load(tmp_path, "walker", "proto", task="walker_fly")
    _write_raw(_buffer(tmp_path) / "episode_1_3.npz", action=np.full((4, 1), np.nan, np.float32))
    with pytest.raises(BadEpisodeError, match="episode_1_3.npz: action must be a finite"):
        exorl.load(tmp_path, "walker", "proto", task="walker_run")
    _write_raw(_buffer(tmp_path) / "episode_1_3.npz", physics=None)
    with pytest.raises(BadEpisodeError, match=r"episode_1_3.npz: missing keys \['physics'\]"):
        exorl.load(tmp_path, "walker", "proto", task="walker_run")


def test_missing_directories(tmp_path):
    with pytest.raises(FileNotFoundError, match="root .*nowhere"):
        exorl.load(tmp_path / "nowhere", "walker", "proto")
    _buffer(tmp_path).mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"unknown ExoRL domain 'chetah'.*\['walker'\]"):
        exorl.load(tmp_path, "chetah", "proto")
    with pytest.raises(FileNotFoundError, match=r"unknown ExoRL algo 'rnd'.*\['proto'\]"):
        exorl.load(tmp_path, "walker", "rnd")
    (tmp_path / "walker" / "icm").mkdir()
    with pytest.raises(FileNotFoundError, match="buffer directory"):
        exorl.load(tmp_path, "walker", "icm")
    with pytest.raises(ValueError, match="holds no .npz files"):
        exorl.load(tmp_path, "walker", "proto")


def _corrupt(path):
    path.write_bytes(b"this is not a zip archive")


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {
    "corrupt": (_corrupt, "corrupt or truncated"),
    "truncated": (_truncate, "corrupt or truncated"),
    "missing key": (lambda p: _write_raw(p, discount=None), r"missing keys \['discount'\]"),
    "mismatched lengths": (lambda p: _write_raw(p, action=np.zeros((3, 1), np.float32)),
                           "different numbers of rows"),
    "name disagrees": (lambda p: _write_raw(p, length=4), "name says 3 steps"),
    "nan": (lambda p: _write_raw(p, observation=np.full((4, 2), np.nan, np.float32)), "NaN or infinite"),
    "inf reward": (lambda p: _write_raw(p, reward=np.full((4, 1), np.inf, np.float32)), "NaN or infinite"),
    "wide reward": (lambda p: _write_raw(p, reward=np.ones((4, 2), np.float32)), "multi-dimensional"),
}


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
def test_bad_file_named_in_error_or_skipped(tmp_path, kind):
    make_bad, message = BAD_FILES[kind]
    _write_raw(_buffer(tmp_path) / "episode_0_3.npz")
    _write_raw(_buffer(tmp_path) / "episode_1_3.npz")
    make_bad(_buffer(tmp_path) / "episode_1_3.npz")
    _write_raw(_buffer(tmp_path) / "episode_2_3.npz")
    with pytest.raises(BadEpisodeError, match=f"episode_1_3.npz.*{message}"):
        exorl.load(tmp_path, "walker", "proto")
    with pytest.warns(RuntimeWarning, match="skipped 1 bad episode"):
        loaded = exorl.load(tmp_path, "walker", "proto", skip_bad=True)
    assert len(loaded) == 2 and loaded.num_skipped == 1
    assert loaded.skipped[0][0].endswith("episode_1_3.npz")


def test_bad_file_names(tmp_path):
    _write_raw(_buffer(tmp_path) / "episode_0_3.npz")
    _write_raw(_buffer(tmp_path) / "stray.npz")
    with pytest.raises(BadEpisodeError, match="stray.npz: file name is not"):
        exorl.load(tmp_path, "walker", "proto")
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        assert len(exorl.load(tmp_path, "walker", "proto", skip_bad=True)) == 1
    (_buffer(tmp_path) / "stray.npz").unlink()
    _write_raw(_buffer(tmp_path) / "other_0_3.npz")
    with pytest.raises(ValueError, match="episode index 0 appears in several files"):
        exorl.load(tmp_path, "walker", "proto", skip_bad=True)


def test_reader_never_writes(tmp_path):
    exorl.save(tmp_path, "walker", "proto", random_trajectories(1, [3, 4]))
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _buffer(tmp_path).iterdir()}
    for p in before:
        p.chmod(0o444)
    exorl.load(tmp_path, "walker", "proto")
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in _buffer(tmp_path).iterdir()} == before


def test_interrupted_write_leaves_no_file(tmp_path, monkeypatch):
    trajectories = random_trajectories(2, [3, 4])
    exorl.save(tmp_path, "walker", "proto", trajectories[:1])
    old = (_buffer(tmp_path) / "episode_0_3.npz").read_bytes()

    def crash(handle, **arrays):
        handle.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(KeyboardInterrupt):
        exorl.save(tmp_path, "walker", "proto", [trajectories[0], trajectories[1]])
    assert sorted(os.listdir(_buffer(tmp_path))) == ["episode_0_3.npz"]
    assert (_buffer(tmp_path) / "episode_0_3.npz").read_bytes() == old


def test_writer_needs_final_rows(tmp_path):
    (trajectory,) = random_trajectories(0, [3])
    with pytest.raises(ValueError, match="trajectory 0 .* no final_observation"):
        exorl.save(tmp_path, "walker", "proto", [trajectory.replace(final_observation=None)])
    with pytest.raises(ValueError, match="no final_physics"):
        exorl.save(tmp_path, "walker", "proto", [trajectory.replace(final_physics=None)])


def test_loading_holds_about_one_copy(tmp_path):
    trajectories = random_trajectories(5, [400] * 20, obs_dim=24, act_dim=6, state_dim=18)
    exorl.save(tmp_path, "walker", "proto", trajectories)
    del trajectories
    tracemalloc.start()
    try:
        loaded = exorl.load(tmp_path, "walker", "proto")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    data = sum(t.observations.base.nbytes + t.actions.base.nbytes + t.physics.base.nbytes for t in loaded)
    assert peak < 1.5 * data, (peak, data)  # a concatenated copy would make it 2x


def _exorl_replay_episode_len(path):
    """ExoRL's own loader: every key by np.load, the length from the first key, minus the dummy row."""
    with np.load(path) as archive:
        episode = {key: archive[key] for key in archive.keys()}
    return next(iter(episode.values())).shape[0] - 1, episode


def test_task_and_history_round_trip_as_extra_keys(tmp_path):
    trajectories = random_trajectories(4, [5, 3], obs_dim=2, act_dim=2, state_dim=2)
    trajectories = [trajectories[0].replace(task=np.array([0.5, -0.25]), history=7), trajectories[1]]
    paths = exorl.save(tmp_path, "point_nav", "searcher", trajectories)
    length, episode = _exorl_replay_episode_len(paths[0])
    assert length == 5  # the standard keys come first, with their standard shapes
    assert list(episode)[:5] == ["observation", "action", "reward", "discount", "physics"]
    assert episode["reward"].shape == (6, 1) and episode["discount"].shape == (6, 1)
    np.testing.assert_array_equal(episode["task"], [0.5, -0.25])
    assert episode["task"].dtype == np.float64 and episode["history"].shape == () and episode["history"] == 7
    assert "task" not in _exorl_replay_episode_len(paths[1])[1]
    first, second = exorl.load(tmp_path, "point_nav", "searcher")
    np.testing.assert_array_equal(first.task, [0.5, -0.25])
    assert first.history == 7 and second.task is None and second.history is None


def test_hidden_family_relabels_each_file_for_its_own_stored_task(tmp_path):
    import envs

    goals = envs.task_set("point_nav_hidden")
    positions = np.cumsum(np.full((20, 2), [0.0, 0.1]), axis=0)  # straight up: reaches the goal at (0, 1)
    top = goals[np.argmax(goals[:, 1])]
    episodes = []
    for history, goal in enumerate([top, goals[0]]):
        episodes.append(random_trajectories(0, [20], obs_dim=2, act_dim=2, state_dim=2)[0].replace(
            physics=np.concatenate([[[0.0, 0.0]], positions[:-1]]), final_physics=positions[-1],
            task=goal, history=history))
    exorl.save(tmp_path, "point_nav", "demo", episodes)
    reached, missed = exorl.load(tmp_path, "point_nav", "demo", task="point_nav_hidden")
    np.testing.assert_array_equal(reached.rewards, envs.relabel_rewards("point_nav_hidden", positions, task=top))
    assert reached.rewards.sum() > 0 and missed.rewards.sum() == 0
    exorl.save(tmp_path, "point_nav", "untasked", [episodes[0].replace(task=None)])
    with pytest.raises(BadEpisodeError, match="no 'task' key"):
        exorl.load(tmp_path, "point_nav", "untasked", task="point_nav_hidden")
