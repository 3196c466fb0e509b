"""Relabelled ExoRL rewards against the rewards the real simulator produced online.

An episode is collected with ``envs.make`` (random actions, physics states via ``envs.physics_state``),
written with the ExoRL writer, read back with ``task=...`` and compared at float32 precision.
"""

import importlib

import numpy as np
import pytest

from datasets import Trajectory, exorl

envs = importlib.import_module("envs")
if not all(hasattr(envs, name) for name in ("make", "physics_state", "relabel_rewards")):
    pytest.skip("envs.make / envs.physics_state / envs.relabel_rewards are not available yet",
                allow_module_level=True)


def _collect_online(task, steps, seed, action_repeat=1):
    env = envs.make(task, seed=seed, action_repeat=action_repeat)
    spec = env.action_spec()
    rng = np.random.default_rng(seed)
    step = env.reset()
    observations, states, actions, rewards = [step.observation], [envs.physics_state(env)], [], []
    for _ in range(steps):
        action = rng.uniform(spec.minimum, spec.maximum, spec.shape).astype(np.float32)
        step = env.step(action)
        observations.append(step.observation)
        states.append(envs.physics_state(env))
        actions.append(action)
        rewards.append(step.reward)
    timeouts = np.zeros(steps, bool)
    timeouts[-1] = True
    trajectory = Trajectory(
        observations=np.array(observations[:-1]), actions=np.array(actions), rewards=np.array(rewards),
        terminals=np.zeros(steps, bool), timeouts=timeouts, physics=np.array(states[:-1]),
        final_observation=observations[-1], final_physics=states[-1], source=f"online {task}")
    return trajectory, np.asarray(rewards, np.float32)


@pytest.mark.parametrize("task, domain, control_cost", [("cartpole_swingup", "cartpole", True),
                                                        ("walker_walk", "walker", False)])
def test_relabelled_rewards_equal_online_rewards(tmp_path, task, domain, control_cost):
    online, rewards = _collect_online(task, steps=60, seed=1)
    assert np.ptp(rewards) > 0  # a non-trivial reward sequence
    exorl.save(tmp_path, domain, "random", [online])
    (loaded,) = exorl.load(tmp_path, domain, "random", task=task)
    np.testing.assert_allclose(loaded.rewards, rewards, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(loaded.observations, online.observations)
    np.testing.assert_array_equal(loaded.physics, online.physics)
    # ExoRL's own relabelling sets no control: rewards with a control cost (cartpole swingup's
    # small_control) then differ from the online ones, state-only rewards (walker) do not.
    (zero_control,) = exorl.load(tmp_path, domain, "random", task=task, relabel_with_actions=False)
    assert np.allclose(zero_control.rewards, rewards, rtol=1e-6, atol=1e-6) != control_cost


@pytest.mark.parametrize("task, domain", [("cartpole_swingup", "cartpole"), ("walker_walk", "walker")])
def test_data_collected_with_an_action_repeat_relabels_to_the_summed_rewards(tmp_path, task, domain):
    # Each stored state is 3 environment steps after the one before; the online reward is their sum.
    online, rewards = _collect_online(task, steps=40, seed=4, action_repeat=3)
    exorl.save(tmp_path, domain, "random", [online])
    (loaded,) = exorl.load(tmp_path, domain, "random", task=task, action_repeat=3)
    np.testing.assert_allclose(loaded.rewards, rewards, rtol=1e-5, atol=1e-5)
    # Read as if one environment step a row, the rewards are those of single states: not the online ones.
    (single,) = exorl.load(tmp_path, domain, "random", task=task)
    assert not np.allclose(single.rewards, rewards, rtol=1e-3, atol=1e-3)
    # Another repeat does not reach the stored states, and says so instead of relabelling wrongly.
    with pytest.raises(ValueError, match="action_repeat=2"):
        exorl.load(tmp_path, domain, "random", task=task, action_repeat=2)
    with pytest.raises(ValueError, match="relabel_with_actions"):
        exorl.load(tmp_path, domain, "random", task=task, action_repeat=3, relabel_with_actions=False)


def test_an_action_repeat_needs_a_simulator_and_a_positive_count():
    with pytest.raises(ValueError, match="simulator"):
        envs.relabel_rewards("point_nav_hidden", np.zeros((3, 2)), np.zeros((3, 2)), task=np.array([1.0, 0.0]),
                             action_repeat=2)
    with pytest.raises(ValueError, match="the actions"):
        envs.relabel_rewards("walker_walk", np.zeros((3, envs.task_spec("walker_walk").physics_dim)),
                             action_repeat=2)
    with pytest.raises(ValueError, match="positive integer"):
        envs.relabel_rewards("walker_walk", np.zeros((3, envs.task_spec("walker_walk").physics_dim)),
                             action_repeat=0)


def test_relabel_for_another_task_of_the_domain(tmp_path):
    online, _ = _collect_online("walker_walk", steps=20, seed=2)
    exorl.save(tmp_path, "walker", "random", [online])
    (run,) = exorl.load(tmp_path, "walker", "random", task="walker_run")
    np.testing.assert_allclose(run.rewards, envs.relabel_rewards("walker_run", online.next_physics,
                                                                 online.actions), rtol=1e-6, atol=1e-6)


def test_unknown_task_is_named(tmp_path):
    online, _ = _collect_online("walker_walk", steps=5, seed=3)
    exorl.save(tmp_path, "walker", "random", [online])
    with pytest.raises(ValueError, match="walker_fly"):
        exorl.load(tmp_path, "walker", "random", task="walker_fly")
