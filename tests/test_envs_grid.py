"""Dark Room and Dark Key-to-Door: definitions, splits, reference lines, the array twin, adapters, relabelling."""

import numpy as np
import pytest
from dm_env import specs

import envs
from envs import grid
from envs.batch import BatchEnv, env_seeds

HELDOUT = [(7, 0), (7, 6), (4, 1), (3, 2), (0, 1), (5, 7), (2, 3), (0, 2), (2, 5), (8, 3), (8, 2), (2, 2), (6, 6),
           (7, 8), (1, 5), (5, 6)]  # ADε's held-out goals, as published with its split


def test_splits_are_adeps_and_disjoint():
    train, heldout = envs.task_set("dark_room_hidden"), envs.task_set("dark_room_hidden_heldout")
    assert train.shape == (65, 2) and [tuple(map(int, g)) for g in heldout] == HELDOUT
    cells = {tuple(c) for c in np.concatenate([train, heldout]).astype(int)}
    assert len(cells) == 81
    pairs_train = envs.task_set("dark_key_to_door_hidden")
    pairs_heldout = envs.task_set("dark_key_to_door_hidden_heldout")
    assert pairs_train.shape == (1000, 4) and pairs_heldout.shape == (50, 4)
    assert not {tuple(p) for p in pairs_train} & {tuple(p) for p in pairs_heldout}
    assert (pairs_train[:, :2] != pairs_train[:, 2:]).any(axis=1).all()


def test_specs_and_registry():
    for name, length, task_dim in (("dark_room_hidden", 20, 2), ("dark_key_to_door_hidden_heldout", 50, 4)):
        spec = envs.task_spec(name)
        assert spec.discrete and spec.num_actions == 5 and spec.hidden and spec.episode_length == length
        assert spec.task_dim == task_dim
        env = envs.make(name, seed=0)
        assert isinstance(env.action_spec(), specs.DiscreteArray) and env.action_spec().num_values == 5
        assert env.observation_spec().shape == (2,)
    assert not envs.task_spec("point_nav_hidden").discrete


def _rollout(batch, policy_fn):
    """Returns per environment of one episode, ``policy_fn(cells, has_key) -> actions``."""
    cells = batch.reset()
    has_key = np.zeros(batch.num_envs, bool)
    while not batch.all_done:
        step = batch.step(policy_fn(cells, has_key))
        has_key |= step.reward > 0
        cells = step.observation
    return batch.returns


def test_oracle_returns_are_exact_and_random_is_the_published_floor():
    heldout = envs.task_set("dark_room_hidden_heldout")
    batch = envs.make_batch("dark_room_hidden_heldout", 16, seed=0, tasks=heldout)
    oracle = _rollout(batch, lambda cells, _: grid.optimal_actions("dark_room", heldout, cells))
    np.testing.assert_array_equal(oracle, grid.best_return("dark_room", heldout))
    assert oracle.mean() == pytest.approx(16.375)
    everywhere = np.mgrid[0:9, 0:9].reshape(2, -1).T.astype(float)
    assert grid.best_return("dark_room", everywhere).mean() == pytest.approx(16.543, abs=1e-3)
    tasks = np.repeat(heldout, 250, axis=0)
    random = envs.make_batch("dark_room_hidden_heldout", len(tasks), seed=1, tasks=tasks)
    rng = np.random.default_rng(0)
    floor = _rollout(random, lambda cells, _: rng.integers(0, 5, len(cells))).mean()
    assert 0.15 < floor < 0.24, floor  # 0.19 exactly computed; 4,000 episodes
    pairs = envs.task_set("dark_key_to_door_hidden_heldout")
    k2d = envs.make_batch("dark_key_to_door_hidden_heldout", 50, seed=0, tasks=pairs)
    returns = _rollout(k2d, lambda cells, key: grid.optimal_actions("dark_key_to_door", pairs, cells, key))
    np.testing.assert_array_equal(returns, 2.0)
    # Key-to-Door succeeds when the door opens: the key alone (a rewarded step) is not success.
    np.testing.assert_array_equal(envs.successes("dark_key_to_door_hidden", [1.0, 1.0], [1.0, 2.0]), [False, True])
    np.testing.assert_array_equal(envs.successes("dark_room_hidden", [1.0, 0.0], [3.0, 0.0]), [True, False])


@pytest.mark.parametrize("name", ["dark_room_hidden", "dark_key_to_door_hidden"])
def test_array_batch_equals_a_batch_of_single_environments(name):
    fast = envs.make_batch(name, 6, seed=3)
    simple = BatchEnv([envs.make(name, seed=s) for s in env_seeds(3, 6)])
    np.testing.assert_array_equal(fast.task_parameters, simple.task_parameters)
    assert fast.action_spec() == simple.action_spec() and fast.episode_length == simple.episode_length
    rng = np.random.default_rng(0)
    for trial in range(3):
        mask = None if trial != 1 else np.array([True, False] * 3)
        np.testing.assert_array_equal(fast.reset(mask), simple.reset(mask))
        while not simple.all_done:
            actions = rng.integers(0, 5, 6)
            a, b = fast.step(actions), simple.step(actions)
            for field in ("observation", "reward", "discount", "done"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
        np.testing.assert_array_equal(fast.returns, simple.returns)


def test_moves_walls_and_rewards():
    env = envs.make("dark_room_hidden", seed=0, task=[0, 4])
    assert tuple(env.reset().observation) == (4, 4)
    rewards = [float(env.step(1).reward) for _ in range(6)]  # up four times to the goal, then into the wall
    assert rewards == [0, 0, 0, 1, 1, 1] and tuple(env.step(0).observation) == (0, 4)
    key_door = envs.make("dark_key_to_door_hidden", seed=0, task=[0, 0, 0, 2])
    start = key_door.reset().observation
    assert tuple(start) != (0, 0)
    cells, total = [start], 0.0
    door_first = [2] * 8 + [1] * 8  # the door before the key earns nothing; then the key; then the door
    for action in door_first + [4] * 8 + [2, 2, 2]:
        step = key_door.step(action)
        total += step.reward
        cells.append(step.observation)
    assert total == 2.0
    np.testing.assert_array_equal(envs.relabel_rewards("dark_key_to_door_hidden", np.array(cells[1:]),
                                                       task=np.array([0, 0, 0, 2.0])).sum(), 2.0)
    for bad in (5, -1, 1.5):
        with pytest.raises(ValueError, match="action"):
            env.step(bad)
    with pytest.raises(ValueError, match="task"):
        envs.make("dark_key_to_door_hidden", seed=0, task=[1, 1, 1, 1])
    with pytest.raises(ValueError, match="task"):
        envs.make("dark_room_hidden", seed=0, task=[9, 0])


@pytest.mark.parametrize("name", ["dark_room_hidden", "dark_key_to_door_hidden"])
def test_relabelling_equals_online_rewards(name):
    from experiments.collection.grid_sources import play_grid_histories

    histories = play_grid_histories(name, "searcher", [0, 1, 2], 4, seed=0)
    for history in histories:
        for episode in history:
            cells = np.concatenate([episode.physics, episode.final_physics[None]])
            np.testing.assert_array_equal(envs.relabel_rewards(name, cells, task=episode.task)[1:], episode.rewards)


def test_gymnasium_discrete_spaces_both_ways():
    import gymnasium
    from gymnasium.utils.env_checker import check_env

    adapted = envs.to_gymnasium(envs.make("dark_key_to_door_hidden", seed=1))
    assert adapted.action_space == gymnasium.spaces.Discrete(5)
    check_env(adapted, skip_render_check=True)
    back = envs.GymnasiumToDmEnv(gymnasium.make("FrozenLake-v1"), seed=0)
    assert isinstance(back.action_spec(), specs.DiscreteArray) and back.action_spec().num_values == 4
    assert back.observation_spec().num_values == 16
    first = back.reset()
    assert 0 <= int(first.observation) < 16 and back.step(np.int32(2)).reward in (0.0, 1.0)


def test_task_is_hidden_fixed_across_resets_and_redrawn_by_reseed():
    env = envs.make("dark_room_hidden_heldout", seed=5)
    task = env.task_parameter.copy()
    assert tuple(task.astype(int)) in HELDOUT
    for _ in range(3):
        assert tuple(env.reset().observation) == (4, 4)
        np.testing.assert_array_equal(env.task_parameter, task)
    seen = {tuple(envs.make("dark_room_hidden_heldout", seed=s).task_parameter) for s in range(40)}
    assert len(seen) > 8


def test_collect_writes_grid_histories_and_refuses_continuous_learners(tmp_path):
    import datasets
    from experiments import collect

    for policy in ("q_learning", "ad_eps"):
        config = collect.CollectConfig(out=tmp_path, task="dark_key_to_door_hidden", policy=policy, episodes=24,
                                       episodes_per_history=12, eps_min=0.3, progress=False)
        assert collect.main(config) == 0
        episodes = collect.load_episodes(config)
        assert len(episodes) == 24 and all(e.discrete and e.task.shape == (4,) for e in episodes)
        assert {e.history for e in episodes} == {0, 1} and len(episodes[0]) == 50
    sac = collect.CollectConfig(out=tmp_path, task="dark_room_hidden", policy="sac", episodes=12, progress=False)
    assert collect.main(sac) == 2
    with pytest.raises(ValueError, match="q_learning"):
        from experiments.collection.histories import write_dataset

        write_dataset(tmp_path / "nav", task="point_nav_hidden", source="q_learning", num_histories=1)
    assert datasets.read_episodes(tmp_path / "dark_key_to_door" / "q_learning").__len__() == 24
