"""Hidden-task families: the task comes from the seed, stays out of the observation, survives resets."""

import numpy as np
import pytest

import envs
from envs import point_mass_maze, point_nav
from envs.batch import BatchEnv, env_seeds

HIDDEN = ["point_nav_hidden", "point_nav_hidden_heldout", "point_mass_maze_reach_hidden"]


def rollout(env, actions):
    """Observations (after reset and each step), rewards and physics states along `actions`."""
    observations, rewards, states = [env.reset().observation], [], []
    for action in actions:
        timestep = env.step(action)
        observations.append(timestep.observation)
        rewards.append(timestep.reward)
        states.append(envs.physics_state(env))
        if timestep.last():
            break
    return np.array(observations), np.array(rewards, np.float32), np.array(states)


def towards(goal, start=(0.0, 0.0), steps=20):
    """Full-speed actions from `start` straight to `goal`, then zero."""
    position, actions = np.array(start, np.float64), []
    for _ in range(steps):
        action = np.clip((np.asarray(goal) - position) / point_nav.STEP_SIZE, -1, 1).astype(np.float32)
        position = position + point_nav.STEP_SIZE * action
        actions.append(action)
    return actions


def test_specs_and_task_sets():
    for name in HIDDEN:
        spec = envs.task_spec(name)
        assert spec.hidden and spec.task_dim == 2 and spec.data_format == "exorl"
        assert envs.task_set(name).shape[1] == 2
    nav = envs.task_spec("point_nav_hidden")
    assert (nav.kind, nav.obs_dim, nav.action_dim, nav.physics_dim, nav.episode_length) == ("numpy", 2, 2, 2, 20)
    assert not envs.task_spec("walker_walk").hidden and envs.task_spec("hopper").data_format == "d4rl"
    with pytest.raises(ValueError, match="name"):
        envs.task_set("walker_walk")
    np.testing.assert_array_equal(envs.task_set("point_mass_maze_reach_hidden"),
                                  list(point_mass_maze.TARGETS.values()))


def test_heldout_goals_are_disjoint_from_and_between_train_goals():
    train, heldout = envs.task_set("point_nav_hidden"), envs.task_set("point_nav_hidden_heldout")
    assert len(train) == 15 and len(heldout) == 5
    np.testing.assert_allclose(np.linalg.norm(np.concatenate([train, heldout]), axis=1), 1.0)
    assert np.all(np.concatenate([train, heldout])[:, 1] >= -1e-12)  # upper semicircle
    distances = np.linalg.norm(train[:, None] - heldout[None], axis=-1)
    assert distances.min() > 0.1  # no held-out goal is a train goal
    train_angles = np.sort(np.arctan2(train[:, 1], train[:, 0]))
    for angle in np.arctan2(heldout[:, 1], heldout[:, 0]):  # each lies between two train goals
        assert train_angles.min() < angle < train_angles.max()
    seeds = range(200)
    drawn = {tuple(envs.make("point_nav_hidden_heldout", seed=s).task_parameter) for s in seeds}
    assert drawn == {tuple(g) for g in heldout}
    drawn = {tuple(envs.make("point_nav_hidden", seed=s).task_parameter) for s in seeds}
    assert drawn == {tuple(g) for g in train}


@pytest.mark.parametrize("name", HIDDEN)
def test_task_is_fixed_across_resets_and_redrawn_by_reseed(name):
    env = envs.make(name, seed=0)
    task = env.task_parameter
    for _ in range(3):
        env.reset()
        env.step(np.zeros(2, np.float32))
        np.testing.assert_array_equal(env.task_parameter, task)
    tasks = set()
    for seed in range(12):
        env.reseed(seed)
        env.reset()
        tasks.add(tuple(env.task_parameter))
        np.testing.assert_array_equal(env.task_parameter, envs.make(name, seed=seed).task_parameter)
    assert len(tasks) >= 3  # reseeding draws new tasks
    pinned = envs.make(name, seed=0, task=envs.task_set(name)[1])
    pinned.reseed(5)
    pinned.reset()
    np.testing.assert_array_equal(pinned.task_parameter, envs.task_set(name)[1])
    assert envs.make("walker_walk", seed=0).task_parameter is None


def test_nav_goal_is_not_observed_and_only_rewards_reveal_it():
    goals = envs.task_set("point_nav_hidden")
    a, b = envs.make("point_nav_hidden", seed=0, task=goals[0]), envs.make("point_nav_hidden", seed=0, task=goals[9])
    actions = towards(goals[0])
    obs_a, rewards_a, states_a = rollout(a, actions)
    obs_b, rewards_b, _ = rollout(b, actions)
    np.testing.assert_array_equal(obs_a, obs_b)  # same observations for both goals under the same actions
    assert rewards_a.sum() >= 10 and rewards_b.sum() == 0
    assert obs_a.shape == (21, 2) and obs_a.dtype == np.float32
    np.testing.assert_allclose(states_a, obs_a[1:], atol=1e-6)  # physics state = position
    # Reward is 1 exactly where the position is within the goal radius.
    np.testing.assert_array_equal(rewards_a, np.linalg.norm(states_a - goals[0], axis=1) <= point_nav.GOAL_RADIUS)


def test_nav_episode_is_twenty_clipped_steps_from_the_origin():
    env = envs.make("point_nav_hidden", seed=1)
    observations, rewards, _ = rollout(env, [np.array([5.0, 0.0], np.float32)] * 25)
    assert len(rewards) == 20 and rewards.dtype == np.float32
    np.testing.assert_array_equal(observations[0], [0, 0])
    np.testing.assert_allclose(observations[-1], [2.0, 0.0], atol=1e-5)  # 20 steps of 0.1 (clipped from 5)
    spec = env.action_spec()
    assert spec.minimum.shape == spec.maximum.shape == (2,)


def test_maze_target_is_not_observed_and_relabels_for_every_target():
    targets = envs.task_set("point_mass_maze_reach_hidden")
    top_left, top_right = targets[0], targets[1]
    env = envs.make("point_mass_maze_reach_hidden", seed=3, task=top_left)
    other = envs.make("point_mass_maze_reach_hidden", seed=3, task=top_right)
    actions = []
    timestep = env.reset()
    other.reset()
    observations, rewards, other_rewards, states = [timestep.observation], [], [], []
    for waypoint, steps in (((0.0, 0.2), 300), ((-0.2, 0.2), 300)):
        for _ in range(steps):
            action = np.clip((np.asarray(waypoint) - env.physics.data.qpos) / 0.01, -1, 1).astype(np.float32)
            timestep, twin = env.step(action), other.step(action)
            np.testing.assert_array_equal(timestep.observation, twin.observation)  # same dynamics, same view
            observations.append(timestep.observation)
            rewards.append(timestep.reward)
            other_rewards.append(twin.reward)
            states.append(envs.physics_state(env))
            actions.append(action)
    states, rewards, actions = np.array(states), np.array(rewards, np.float32), np.array(actions)
    assert rewards.max() == 1.0 and max(other_rewards) < 1e-3  # only the reward tells the targets apart
    np.testing.assert_allclose(envs.relabel_rewards("point_mass_maze_reach_hidden", states, actions,
                                                    task=top_left), rewards, rtol=1e-6, atol=1e-7)
    for (corner, target) in point_mass_maze.TARGETS.items():
        fixed = envs.relabel_rewards(f"point_mass_maze_{corner}", states, actions)
        hidden = envs.relabel_rewards("point_mass_maze_reach_hidden", states, actions, task=target)
        np.testing.assert_array_equal(hidden, fixed)
        assert (fixed.max() == 1.0) == (corner == "reach_top_left")
    with pytest.raises(ValueError, match="task"):
        envs.relabel_rewards("point_mass_maze_reach_hidden", states)
    with pytest.raises(ValueError, match="task"):
        envs.relabel_rewards("point_mass_maze_reach_top_left", states, task=top_left)


def test_nav_relabelling_equals_online_rewards():
    env = envs.make("point_nav_hidden", seed=4)
    rng = np.random.default_rng(0)
    actions = [np.clip(a + rng.normal(0, 0.5, 2), -1, 1).astype(np.float32) for a in towards(env.task_parameter)]
    _, rewards, states = rollout(env, actions)
    assert rewards.sum() > 0
    np.testing.assert_array_equal(envs.relabel_rewards("point_nav_hidden", states, task=env.task_parameter), rewards)


def test_make_rejects_tasks_where_they_do_not_belong():
    with pytest.raises(ValueError, match="task"):
        envs.make("walker_walk", seed=0, task=[0.0, 0.0])
    with pytest.raises(ValueError, match="task"):
        envs.make("point_mass_maze_reach_hidden", seed=0, task=[0.1, 0.1])  # not a maze target
    with pytest.raises(ValueError, match="task"):
        envs.make("point_nav_hidden", seed=0, task=[0.1])
    with pytest.raises(ValueError, match="tasks"):
        envs.make_batch("point_nav_hidden", 2, seed=0, tasks=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="tasks"):
        envs.make_batch("cartpole_swingup", 2, seed=0, tasks=np.zeros((2, 2)))


@pytest.mark.parametrize("action_repeat", [1, 3])
def test_nav_array_batch_equals_a_batch_of_single_environments(action_repeat):
    fast = envs.make_batch("point_nav_hidden", 6, seed=2, action_repeat=action_repeat)
    simple = BatchEnv([envs.make("point_nav_hidden", seed=s, action_repeat=action_repeat)
                       for s in env_seeds(2, 6)])
    np.testing.assert_array_equal(fast.task_parameters, simple.task_parameters)
    assert fast.episode_length == simple.episode_length == fast.envs[0].episode_length == -(-20 // action_repeat)
    assert fast.action_spec() == simple.action_spec() and fast.num_envs == 6
    rng = np.random.default_rng(action_repeat)
    for trial in range(3):
        mask = None if trial != 1 else np.array([True, False] * 3)
        np.testing.assert_array_equal(fast.reset(mask), simple.reset(mask))
        while not simple.all_done:
            actions = rng.uniform(-1.5, 1.5, (6, 2)).astype(np.float32)
            actions[:, 1] = np.abs(actions[:, 1])  # head up, towards the goals, so that rewards occur
            a, b = fast.step(actions), simple.step(actions)
            for field in ("observation", "reward", "discount", "done"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field), err_msg=field)
            np.testing.assert_array_equal(fast.returns, simple.returns)
            np.testing.assert_array_equal(fast.lengths, simple.lengths)
        assert fast.all_done
    with pytest.raises(ValueError, match="reset"):
        fast.step(np.zeros((6, 2), np.float32))
    goals = envs.task_set("point_nav_hidden")[:6]
    pinned = envs.make_batch("point_nav_hidden", 6, seed=0, tasks=goals)
    np.testing.assert_array_equal(pinned.task_parameters, goals)
    pinned.reset()
    for action in np.array(towards(goals[0]))[:, None].repeat(6, 1):
        step = pinned.step(action)
    assert pinned.returns[0] >= 10 and pinned.returns[-1] == 0 and step.done.all()


def test_nav_through_the_gymnasium_adapter_draws_the_task_from_the_reset_seed():
    env = envs.to_gymnasium(envs.make("point_nav_hidden", seed=0))
    observation, _ = env.reset(seed=3)
    np.testing.assert_array_equal(observation, [0, 0])
    np.testing.assert_array_equal(env.unwrapped.wrapped_dm_env.task_parameter,
                                  envs.make("point_nav_hidden", seed=3).task_parameter)
    assert env.action_space.shape == (2,) and env.observation_space.shape == (2,)
    steps = 0
    while True:
        observation, reward, terminated, truncated, _ = env.step(np.ones(2, np.float32))
        steps += 1
        if terminated or truncated:
            break
    assert steps == 20 and truncated and not terminated


@pytest.mark.parametrize("name", ["point_nav_hidden_heldout", "point_mass_maze_reach_hidden"])
def test_the_oracle_observes_the_task_and_nothing_else_changes(name):
    plain = envs.make_batch(name, 3, seed=11)
    told = envs.make_batch(name, 3, seed=11, observe_task=True)
    tasks = plain.task_parameters.astype(np.float32)
    obs_dim = plain.observation_spec().shape[0]
    assert told.observation_spec().shape == (obs_dim + tasks.shape[1],)
    np.testing.assert_array_equal(told.reset(), np.concatenate([plain.reset(), tasks], axis=1))
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 2)).astype(np.float32)
    a, b = plain.step(actions), told.step(actions)
    np.testing.assert_array_equal(b.observation, np.concatenate([a.observation, tasks], axis=1))
    np.testing.assert_array_equal(b.reward, a.reward)
    np.testing.assert_array_equal(told.task_parameters, plain.task_parameters)
    assert told.episode_length == plain.episode_length and told.num_envs == 3
    with pytest.raises(ValueError, match="observe_task: 'cartpole_swingup' is not a hidden-task family"):
        envs.make_batch("cartpole_swingup", 2, seed=0, observe_task=True)
