"""Scripted sources for the hidden-task families: the searcher's guesses, ADε's schedule, the dataset writer."""

import numpy as np
import pytest

import datasets
import envs
from experiments.collection import demonstrators as demo
from experiments.collection import histories as histories_lib

NAV = "point_nav_hidden"


def _nearest_goal(position, goals):
    return int(np.argmin(np.linalg.norm(goals - position, axis=1)))


def _success(episode):
    return bool(np.max(episode.rewards) >= envs.SUCCESS_REWARD)  # point_nav: any reward at all


def test_searcher_tries_distinct_goals_until_rewarded_then_returns_to_the_found_one():
    goals = envs.task_set(NAV)
    histories = histories_lib.run_histories(NAV, demo.SystematicSearcher(NAV, 1, 12, noise_max=0.15), range(80), 12, 1)
    after_found = []
    for history in histories:
        guesses = [_nearest_goal(e.final_observation, goals) for e in history]  # where each episode ended
        successes = [_success(e) for e in history]
        first = successes.index(True) if any(successes) else len(history)
        tried = guesses[:first + 1]
        assert len(set(tried)) == len(tried)  # distinct guesses up to the first success
        if first == len(history):
            continue
        found = guesses[first + 1:]
        assert len(set(found)) <= 1  # then always the found goal,
        after_found += successes[first + 1:]
        if found:  # which is rewarded for the true goal: the true goal itself or a neighbour
            assert np.linalg.norm(goals[found[0]] - history[0].task) < 0.2
    assert np.mean(after_found) >= 0.95 and len(after_found) > 300
    assert np.mean([any(_success(e) for e in h) for h in histories]) >= 0.9  # 12 of 15 goals tried


def test_searcher_knows_the_task_only_through_observed_rewards():
    searcher = demo.SystematicSearcher(NAV, seed=0, episodes_per_history=15, noise_max=0.0)
    observation = np.zeros(2, np.float32)
    guesses = []
    for episode in range(15):  # no reward ever: all 15 goals, each once
        searcher.begin_episode(episode)
        guesses.append(int(searcher.guess[0]))
        searcher.observe(observation, searcher.action(observation), 0.0, 1.0, observation)
    assert sorted(guesses) == list(range(15))
    searcher.begin_episode(15)  # history 1: a new order
    first = int(searcher.guess[0])
    at_goal = envs.task_set(NAV)[first].astype(np.float32)
    searcher.observe(observation, searcher.action(observation), 1.0, 1.0, at_goal)  # told: rewarded there
    for episode in range(16, 20):
        searcher.begin_episode(episode)
        assert int(searcher.guess[0]) == first and searcher.stats()["found"] == 1.0
    np.testing.assert_allclose(searcher.action(np.zeros(2)), np.clip(envs.task_set(NAV)[first] / 0.1, -1, 1),
                               atol=1e-6)
    with pytest.raises(ValueError, match="replay"):
        searcher.begin_episode(33)  # episode 3 of history 2, whose first episodes it never saw


@pytest.mark.parametrize("source", ["searcher", "ad_eps", "random"])
def test_array_rollouts_equal_single_environment_rollouts(source):
    fast = histories_lib.run_histories(NAV, demo.make_source(source, NAV, 3, 4), [0, 5, 2], 4, 3)
    for history, episodes in zip([0, 5, 2], fast):
        env = envs.make(NAV, seed=demo.history_seed(3, history))
        simple = histories_lib.run_history(env, demo.make_source(source, NAV, 3, 4), history, 4)
        for a, b in zip(episodes, simple):
            for name in ("observations", "actions", "rewards", "physics", "final_observation", "final_physics",
                         "task"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            assert a.history == b.history == history


def test_deterministic_given_seed_history_and_episode():
    a = histories_lib.run_histories(NAV, demo.make_source("searcher", NAV, 7, 6), [0, 1, 2, 3], 6, 7)
    b = histories_lib.run_histories(NAV, demo.make_source("searcher", NAV, 7, 6), [3, 1], 6, 7)
    for episode_a, episode_b in zip(a[3], b[0]):  # the same history alone or in another batch
        np.testing.assert_array_equal(episode_a.actions, episode_b.actions)
    c = histories_lib.run_histories(NAV, demo.make_source("searcher", NAV, 8, 6), [3], 6, 8)
    assert not np.array_equal(a[3][0].actions, c[0][0].actions)


def test_replay_continues_a_history_as_if_uninterrupted():
    histories = histories_lib.run_histories(NAV, demo.make_source("searcher", NAV, 2, 6), [0, 1], 6, 2)
    played = histories[0] + histories[1]
    resumed = demo.make_source("searcher", NAV, 2, 6)
    resumed.replay(played[:8])  # history 1 up to its episode 2
    env = envs.make(NAV, seed=demo.history_seed(2, 1))
    for episode in range(8, 12):
        resumed.begin_episode(episode)
        timestep = env.reset()
        while not timestep.last():
            action = resumed.action(timestep.observation)
            timestep = env.step(action)
            resumed.observe(None, action, timestep.reward, timestep.discount, timestep.observation)
        np.testing.assert_array_equal(timestep.observation, played[episode].final_observation)


def test_annealed_expert_schedule_and_oracle():
    expert = demo.AnnealedExpert(NAV, seed=0, episodes_per_history=5, eps_max=0.8)
    with pytest.raises(ValueError, match="set_task"):
        expert.begin_episode(0)
    expert.set_task(envs.task_set(NAV)[0])
    rates = []
    for episode in range(5):
        expert.begin_episode(episode)
        rates.append(expert.stats()["epsilon"])
    np.testing.assert_allclose(rates, [0.8, 0.6, 0.4, 0.2, 0.0])
    oracle = histories_lib.run_histories(NAV, demo.make_source("oracle", NAV, 0, 12), range(100), 12, 0)
    returns = np.array([[e.total_return for e in h] for h in oracle])
    assert (returns == returns[:, :1]).all() and returns.min() >= 12  # straight there, every time
    annealed = histories_lib.run_histories(NAV, demo.make_source("ad_eps", NAV, 0, 12), range(100), 12, 0)
    curve = histories_lib.episode_index_curve([e for h in annealed for e in h], 12)
    assert curve["success"][0] < 0.1 and curve["success"][-1] == 1.0
    np.testing.assert_array_equal([h[-1].total_return for h in annealed], returns[:, -1])  # ε = 0: the oracle
    assert np.all(np.diff(curve["mean_return"][::3]) > 0)  # improves along the history


def test_maze_searcher_finds_the_hidden_target():
    env = envs.make("point_mass_maze_reach_hidden", seed=demo.history_seed(0, 4))
    episodes = histories_lib.run_history(env, demo.SystematicSearcher("point_mass_maze_reach_hidden", 0, 5), 4, 5)
    targets = envs.task_set("point_mass_maze_reach_hidden")
    ends = [_nearest_goal(e.final_observation[:2], targets) for e in episodes]
    successes = [_success(e) for e in episodes]
    first = successes.index(True)
    assert len(set(ends[:first + 1])) == first + 1 and all(successes[first:])
    # A path to a bottom target crosses the top one of its side: the found goal is where the reward was.
    true = _nearest_goal(env.task_parameter, targets)
    assert first < 4 and ends[first + 1:] == [true] * (4 - first)
    relabelled = envs.relabel_rewards("point_mass_maze_reach_hidden", episodes[-1].next_physics,
                                      episodes[-1].actions, task=episodes[-1].task)
    np.testing.assert_allclose(relabelled, episodes[-1].rewards, rtol=1e-6, atol=1e-7)


def test_write_dataset_reads_back_groups_by_task_and_resumes(tmp_path):
    buffer = histories_lib.write_dataset(tmp_path, source="searcher", num_histories=6, episodes_per_history=4, seed=5)
    assert buffer == tmp_path / "point_nav" / "searcher" / "buffer"
    assert sorted(p.name for p in buffer.iterdir()) == sorted(f"episode_{i}_20.npz" for i in range(24))
    episodes = datasets.read_episodes(tmp_path / "point_nav" / "searcher", task=NAV)  # relabelled from physics
    train = {tuple(g) for g in envs.task_set(NAV)}
    for index, episode in enumerate(episodes):
        assert episode.history == index // 4 and tuple(episode.task) in train
        np.testing.assert_array_equal(episode.task, episodes[4 * (index // 4)].task)
        assert episode.physics.shape == (20, 2)
    stored = datasets.read_episodes(buffer)
    for a, b in zip(stored, episodes):
        np.testing.assert_array_equal(a.rewards, b.rewards)  # stored rewards = relabelled ones
    sampler = datasets.ContextSampler(episodes, datasets.SamplerConfig(num_trajectories=3, max_steps=60,
                                                                       batch_size=16, group_by="history"))
    batch = sampler.sample_batch(np.random.default_rng(0))
    assert batch["mask"].all() and batch["target_return"].shape == (16,)
    (buffer / "episode_9_20.npz").unlink()
    (buffer / "episode_23_20.npz").unlink()
    histories_lib.write_dataset(tmp_path, source="searcher", num_histories=6, episodes_per_history=4, seed=5)
    again = datasets.read_episodes(buffer)
    assert len(again) == 24
    for a, b in zip(again, stored):
        np.testing.assert_array_equal(a.actions, b.actions)
    with pytest.raises(ValueError, match="seed"):
        histories_lib.write_dataset(tmp_path, source="searcher", num_histories=6, episodes_per_history=4, seed=6)


def test_sac_learning_histories_are_written_per_task_and_repeatable(tmp_path):
    from experiments.collection.sac import SACConfig

    sac = SACConfig(hidden=(16, 16), batch_size=8, warmup_steps=30, update_every=5)
    write = lambda root, **changes: histories_lib.write_dataset(  # noqa: E731
        root, source="sac", num_histories=2, episodes_per_history=3, seed=4, sac=changes.pop("sac", sac), **changes)
    buffer = write(tmp_path / "a")
    episodes = datasets.read_episodes(buffer)
    assert [e.history for e in episodes] == [0, 0, 0, 1, 1, 1]
    tasks = [tuple(e.task) for e in episodes]
    assert tasks[0] == tasks[1] == tasks[2] and tasks[3] == tasks[4] == tasks[5]
    assert tasks[0] == tuple(envs.make(NAV, seed=demo.history_seed(4, 0)).task_parameter)
    # Warm-up is 30 steps (1.5 episodes) of uniform actions; from then on the learner acts and updates.
    again = datasets.read_episodes(write(tmp_path / "b"))
    for a, b in zip(episodes, again):
        np.testing.assert_array_equal(a.actions, b.actions)  # one seed, one learning history
    (buffer / "episode_4_20.npz").unlink()  # an interrupted history is played again, identically
    for a, b in zip(datasets.read_episodes(write(tmp_path / "a")), episodes):
        np.testing.assert_array_equal(a.actions, b.actions)
    with pytest.raises(ValueError, match="sac"):
        write(tmp_path / "a", sac=SACConfig(hidden=(16, 16), batch_size=8, warmup_steps=31, update_every=5))


def test_maze_histories_with_an_action_repeat(tmp_path):
    maze = "point_mass_maze_reach_hidden"
    buffer = histories_lib.write_dataset(tmp_path, task=maze, source="searcher", num_histories=2,
                                         episodes_per_history=4, seed=3, action_repeat=10)
    assert sorted(p.name for p in buffer.iterdir()) == sorted(f"episode_{i}_100.npz" for i in range(8))
    episodes = datasets.read_episodes(buffer)
    held = envs.make(maze, seed=demo.history_seed(3, 1), action_repeat=10)
    step = held.reset()
    for action in episodes[4].actions[:5]:  # the stored actions replay the stored episode, 10 steps each
        step = held.step(action)
    np.testing.assert_allclose(step.observation, episodes[4].observations[5], rtol=1e-6, atol=1e-6)
    # Four targets, four guesses at most: every history is rewarded by its fourth episode.
    for history in range(2):
        assert max(float(np.max(e.rewards)) for e in episodes[4 * history:4 * history + 4]) >= envs.SUCCESS_REWARD
    with pytest.raises(ValueError, match="action_repeat"):  # the data on disk was made with 10
        histories_lib.write_dataset(tmp_path, task=maze, source="searcher", num_histories=2, episodes_per_history=4,
                                    seed=3, action_repeat=5)
    with pytest.raises(ValueError, match="action_repeat"):
        histories_lib.write_dataset(tmp_path / "nav", source="searcher", num_histories=1, action_repeat=2)
