"""Batched environments: stacking, early-finishing environments, seeding, against fakes and real tasks."""

import dm_env
import numpy as np
import pytest
from dm_env import specs

import envs
from envs.batch import BatchEnv, env_seeds


class FakeEnv(dm_env.Environment):
    """Episode of `length` steps; observation [id, t]; reward = id + action; terminal iff `terminal`."""

    def __init__(self, env_id, length, terminal=False):
        self._id, self._length, self._terminal = env_id, length, terminal
        self.steps_taken = 0

    def reset(self):
        self._t = 0
        return dm_env.restart(np.array([self._id, 0], np.float32))

    def step(self, action):
        self._t += 1
        self.steps_taken += 1
        obs = np.array([self._id, self._t], np.float32)
        reward = np.float32(self._id + action[0])
        if self._t == self._length:
            discount = np.float32(0 if self._terminal else 1)
            return dm_env.TimeStep(dm_env.StepType.LAST, reward, discount, obs)
        return dm_env.transition(reward, obs, np.float32(1))

    def observation_spec(self):
        return specs.Array((2,), np.float32)

    def action_spec(self):
        return specs.BoundedArray((1,), np.float32, np.full(1, -1, np.float32), np.ones(1, np.float32))


def test_environments_that_finish_early_stop_and_report_done():
    fakes = [FakeEnv(0, 1, terminal=True), FakeEnv(1, 3), FakeEnv(2, 2)]
    batch = BatchEnv(fakes)
    assert batch.all_done  # nothing started yet
    observation = batch.reset()
    np.testing.assert_array_equal(observation, [[0, 0], [1, 0], [2, 0]])
    actions = np.full((3, 1), 0.5, np.float32)

    step = batch.step(actions)
    np.testing.assert_array_equal(step.done, [True, False, False])
    np.testing.assert_array_equal(step.reward, [0.5, 1.5, 2.5])
    np.testing.assert_array_equal(step.discount, [0, 1, 1])  # env 0 terminated

    step = batch.step(actions)
    np.testing.assert_array_equal(step.done, [True, False, True])
    np.testing.assert_array_equal(step.reward, [0, 1.5, 2.5])  # env 0 no longer steps
    np.testing.assert_array_equal(step.discount, [0, 1, 1])  # env 2 truncated: discount 1
    np.testing.assert_array_equal(step.observation[0], [0, 1])  # frozen at its last observation

    step = batch.step(actions)
    np.testing.assert_array_equal(step.done, [True, True, True])
    np.testing.assert_array_equal(step.reward, [0, 1.5, 0])
    assert [f.steps_taken for f in fakes] == [1, 3, 2]
    np.testing.assert_allclose(batch.returns, [0.5, 4.5, 5.0])
    np.testing.assert_array_equal(batch.lengths, [1, 3, 2])
    with pytest.raises(ValueError, match="reset"):
        batch.step(actions)


def test_reset_with_mask_restarts_only_selected_environments():
    batch = BatchEnv([FakeEnv(0, 1), FakeEnv(1, 5)])
    batch.reset()
    batch.step(np.zeros((2, 1), np.float32))
    observation = batch.reset(np.array([True, False]))
    np.testing.assert_array_equal(observation, [[0, 0], [1, 1]])
    np.testing.assert_array_equal(batch.done, [False, False])
    np.testing.assert_array_equal(batch.lengths, [0, 1])
    with pytest.raises(ValueError, match="mask"):
        batch.reset(np.array([1, 0]))


def test_batch_rejects_bad_input():
    with pytest.raises(ValueError, match="envs"):
        BatchEnv([])

    class Wider(FakeEnv):
        def observation_spec(self):
            return specs.Array((3,), np.float32)

    with pytest.raises(ValueError, match="envs"):
        BatchEnv([FakeEnv(0, 1), Wider(1, 1)])
    batch = BatchEnv([FakeEnv(0, 2), FakeEnv(1, 2)])
    batch.reset()
    with pytest.raises(ValueError, match="actions"):
        batch.step(np.zeros((3, 1), np.float32))
    with pytest.raises(ValueError, match="num_envs"):
        envs.make_batch("cartpole_swingup", 0, seed=0)


def test_real_batch_matches_individual_environments():
    batch = envs.make_batch("cartpole_swingup", 3, seed=9)
    singles = [envs.make("cartpole_swingup", seed=s) for s in env_seeds(9, 3)]
    assert batch.num_envs == 3 and len(set(env_seeds(9, 3))) == 3
    observation = batch.reset()
    assert observation.shape == (3, 5) and observation.dtype == np.float32
    np.testing.assert_array_equal(observation, np.stack([e.reset().observation for e in singles]))
    rng = np.random.default_rng(0)
    steps = 0
    while not batch.all_done:
        actions = rng.uniform(-1, 1, (3, 1)).astype(np.float32)
        step = batch.step(actions)
        expected = [e.step(a) for e, a in zip(singles, actions)]
        np.testing.assert_array_equal(step.observation, np.stack([t.observation for t in expected]))
        np.testing.assert_array_equal(step.reward, [t.reward for t in expected])
        steps += 1
    assert steps == 1000 and step.done.all() and step.discount.tolist() == [1, 1, 1]


def test_real_batch_with_terminating_gymnasium_task():
    batch = envs.make_batch("hopper", 4, seed=0)
    batch.reset()
    while not batch.all_done:
        batch.step(np.ones((4, 3), np.float32))
    assert (batch.lengths < 1000).all() and len(set(batch.lengths.tolist())) > 1
