"""gymnasium <-> dm_env adapters, against tiny fakes and against real tasks."""

import dm_env
import gymnasium
import numpy as np
import pytest
from dm_env import specs
from gymnasium import spaces

import envs
from envs import wrappers


class FakeGymEnv(gymnasium.Env):
    """A position on a line that each action adds to; terminates at +3.5 (after 4 steps of +1).

    Observation: [position, step count].
    """

    def __init__(self):
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._pos = float(self.np_random.uniform(-0.5, 0.5))
        self._t = 0
        return np.array([self._pos, 0.0]), {}

    def step(self, action):
        self._pos += float(action[0])
        self._t += 1
        return np.array([self._pos, self._t]), self._pos, self._pos >= 3.5, False, {}


def fake_gym(max_episode_steps):
    return gymnasium.wrappers.TimeLimit(FakeGymEnv(), max_episode_steps=max_episode_steps)


def test_gymnasium_termination_has_discount_zero():
    env = envs.GymnasiumToDmEnv(fake_gym(100), seed=0)
    first = env.reset()
    assert first.first() and first.reward is None
    steps = [env.step(np.ones(1, np.float32)) for _ in range(4)]
    assert [s.step_type for s in steps[:3]] == [dm_env.StepType.MID] * 3
    assert steps[3].last() and steps[3].discount == 0.0
    assert env.step(np.ones(1, np.float32)).first()  # dm_env: stepping after LAST restarts


def test_gymnasium_truncation_has_discount_one():
    env = envs.GymnasiumToDmEnv(fake_gym(3), seed=0)
    env.reset()
    steps = [env.step(np.zeros(1, np.float32)) for _ in range(3)]
    assert steps[-1].last() and steps[-1].discount == 1.0
    assert [s.discount for s in steps[:2]] == [1.0, 1.0]


def test_gymnasium_specs_and_seeding():
    env = envs.GymnasiumToDmEnv(fake_gym(10), seed=3)
    assert isinstance(env.action_spec(), specs.BoundedArray)
    assert env.action_spec().shape == (1,) and env.observation_spec().shape == (2,)
    first = env.reset().observation
    second = env.reset().observation
    assert first[0] != second[0]  # the seeded stream continues
    again = envs.GymnasiumToDmEnv(fake_gym(10), seed=3)
    np.testing.assert_array_equal(again.reset().observation, first)
    again.reseed(3)
    np.testing.assert_array_equal(again.reset().observation, first)


def test_gymnasium_adapter_rejects_unsupported_spaces():
    class TupleEnv(FakeGymEnv):
        def __init__(self):
            super().__init__()
            self.observation_space = spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3)))

    with pytest.raises(ValueError, match="observation"):
        envs.GymnasiumToDmEnv(TupleEnv())


class FakeDmEnv(dm_env.Environment):
    """Counts steps; ends after `length` steps with `final_discount`; reward = action sum."""

    def __init__(self, length=3, final_discount=0.0, seed=0):
        self._length, self._final_discount = length, final_discount
        self._rng = np.random.default_rng(seed)

    def reseed(self, seed):
        self._rng = np.random.default_rng(seed)

    def reset(self):
        self._t = 0
        return dm_env.restart(np.array([self._rng.uniform(), 0.0], np.float32))

    def step(self, action):
        self._t += 1
        obs = np.array([0.0, self._t], np.float32)
        reward = float(np.sum(action))
        if self._t == self._length:
            return dm_env.TimeStep(dm_env.StepType.LAST, reward, self._final_discount, obs)
        return dm_env.transition(reward, obs)

    def observation_spec(self):
        return specs.Array((2,), np.float32)

    def action_spec(self):
        return specs.BoundedArray((2,), np.float32, np.full(2, -1.0, np.float32), np.ones(2, np.float32))


@pytest.mark.parametrize("final_discount, terminated", [(0.0, True), (1.0, False)])
def test_dm_env_to_gymnasium_end_of_episode(final_discount, terminated):
    env = envs.to_gymnasium(FakeDmEnv(length=2, final_discount=final_discount))
    assert isinstance(env.action_space, spaces.Box) and env.action_space.shape == (2,)
    np.testing.assert_array_equal(env.action_space.low, -1.0)
    assert env.observation_space.shape == (2,) and np.isinf(env.observation_space.high).all()
    obs, info = env.reset()
    assert obs.shape == (2,) and info == {}
    _, reward, term, trunc, _ = env.step(np.array([0.25, 0.5], np.float32))
    assert reward == 0.75 and not term and not trunc
    _, _, term, trunc, info = env.step(np.zeros(2, np.float32))
    assert term == terminated and trunc == (not terminated) and info["discount"] == final_discount
    with pytest.raises(ValueError, match="reset"):
        env.step(np.zeros(2, np.float32))


def test_dm_env_to_gymnasium_seed_needs_reseed():
    env = envs.to_gymnasium(FakeDmEnv())
    first, _ = env.reset(seed=5)
    env.reset()
    again, _ = env.reset(seed=5)
    np.testing.assert_array_equal(first, again)

    class NoReseed(FakeDmEnv):
        reseed = None

    plain = envs.to_gymnasium(NoReseed())
    plain.reset()
    with pytest.raises(ValueError, match="seed"):
        plain.reset(seed=1)
    with pytest.raises(ValueError, match="render_mode"):
        envs.to_gymnasium(FakeDmEnv(), render_mode="human")


# Unbounded observations are right here (gymnasium's own MuJoCo tasks use them too).
@pytest.mark.filterwarnings("ignore:.*Box observation space (minimum|maximum) value")
def test_real_dm_control_task_passes_gymnasium_env_checker():
    from gymnasium.utils.env_checker import check_env

    env = envs.to_gymnasium(envs.make("cartpole_swingup", seed=0))
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    steps, truncated, terminated = 0, False, False
    while not (truncated or terminated):
        obs, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        steps += 1
        assert 0.0 <= reward <= 1.0
    assert steps == 1000 and truncated and not terminated


def test_real_round_trip_gymnasium_hopper():
    # gymnasium -> dm_env (envs.make) -> gymnasium again keeps terminated/truncated.
    env = envs.to_gymnasium(envs.make("hopper", seed=0))
    env.reset(seed=0)
    terminated = truncated = False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(np.ones(3, np.float32))
    assert terminated and not truncated


def test_wrapper_forwards_attributes_and_validates():
    env = envs.make("walker_walk", seed=0)
    assert env.physics is env.unwrapped_env.physics
    with pytest.raises(AttributeError):
        _ = env.no_such_attribute
    with pytest.raises(ValueError, match="action_repeat"):
        wrappers.ActionRepeat(FakeDmEnv(), 0)

    class Unbounded(FakeDmEnv):
        def action_spec(self):
            return specs.Array((2,), np.float32)

    with pytest.raises(ValueError, match="env"):
        wrappers.RescaleActions(Unbounded())
    np.testing.assert_array_equal(
        wrappers.flatten_observation({"a": np.ones((2, 2)), "b": np.float64(3.0)}),
        np.array([1, 1, 1, 1, 3], np.float32),
    )
