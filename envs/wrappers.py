"""Small dm_env wrappers: flat float32 observations, actions in [-1, 1], action repeat.

Each wrapper changes one thing and forwards every other attribute (`physics`, `task`, `gym_env`,
`reseed`, ...) to the environment it wraps, so code can reach the simulator through any stack.
"""

from __future__ import annotations

from typing import Any

import dm_env
import numpy as np
from dm_env import specs


class Wrapper(dm_env.Environment):
    """Forwards everything to `env`; subclasses override what they change."""

    def __init__(self, env: dm_env.Environment):
        self._env = env

    def __getattr__(self, name: str) -> Any:
        # Only called when normal lookup fails; dunder names must not recurse into the wrapped env.
        if name.startswith("__") or name == "_env":
            raise AttributeError(name)
        return getattr(self._env, name)

    @property
    def unwrapped_env(self) -> dm_env.Environment:
        """The innermost environment of a wrapper stack."""
        env = self._env
        while isinstance(env, Wrapper):
            env = env._env
        return env

    def reset(self) -> dm_env.TimeStep:
        return self._env.reset()

    def step(self, action) -> dm_env.TimeStep:
        return self._env.step(action)

    def observation_spec(self):
        return self._env.observation_spec()

    def action_spec(self):
        return self._env.action_spec()

    def reward_spec(self):
        return self._env.reward_spec()

    def discount_spec(self):
        return self._env.discount_spec()

    def close(self) -> None:
        self._env.close()


def flatten_observation(observation: Any) -> np.ndarray:
    """Concatenates an observation (array or dict of arrays, in key order) into one float32 vector.

    Args:
      observation: an array, or a mapping from names to arrays of any shape.

    Returns:
      float32 [obs_dim].
    """
    if isinstance(observation, dict):
        parts = [np.asarray(v, dtype=np.float32).reshape(-1) for v in observation.values()]
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)
    return np.asarray(observation, dtype=np.float32).reshape(-1)


def _spec_size(spec: Any) -> int:
    if isinstance(spec, dict):
        return sum(int(np.prod(s.shape)) for s in spec.values())
    return int(np.prod(spec.shape))


class FlatObservation(Wrapper):
    """Observations become one float32 vector; rewards and discounts become float32 scalars."""

    def __init__(self, env: dm_env.Environment):
        super().__init__(env)
        size = _spec_size(env.observation_spec())
        self._obs_spec = specs.Array((size,), np.float32, name="observation")

    def _convert(self, timestep: dm_env.TimeStep) -> dm_env.TimeStep:
        reward = None if timestep.reward is None else np.float32(timestep.reward)
        discount = None if timestep.discount is None else np.float32(timestep.discount)
        return timestep._replace(
            observation=flatten_observation(timestep.observation), reward=reward, discount=discount
        )

    def reset(self) -> dm_env.TimeStep:
        return self._convert(self._env.reset())

    def step(self, action) -> dm_env.TimeStep:
        return self._convert(self._env.step(action))

    def observation_spec(self):
        return self._obs_spec

    def reward_spec(self):
        return specs.Array((), np.float32, name="reward")

    def discount_spec(self):
        return specs.BoundedArray((), np.float32, 0.0, 1.0, name="discount")


class RescaleActions(Wrapper):
    """The agent acts in [-1, 1]; actions are clipped there and mapped affinely to the env's bounds."""

    def __init__(self, env: dm_env.Environment):
        super().__init__(env)
        spec = env.action_spec()
        if not isinstance(spec, specs.BoundedArray):
            raise ValueError(f"env: action spec must be a BoundedArray to rescale, got {spec!r}")
        self._low = np.broadcast_to(spec.minimum, spec.shape).astype(np.float64)
        self._high = np.broadcast_to(spec.maximum, spec.shape).astype(np.float64)
        if not (np.all(np.isfinite(self._low)) and np.all(np.isfinite(self._high))):
            raise ValueError("env: action bounds must be finite to rescale to [-1, 1]")
        self._inner_dtype = spec.dtype
        # Per-dimension bounds, as dm_control gives them: rng.uniform(minimum, maximum) has the action's shape.
        self._spec = specs.BoundedArray(spec.shape, np.float32, np.full(spec.shape, -1.0, np.float32),
                                        np.full(spec.shape, 1.0, np.float32), name="action")

    def to_env_action(self, action) -> np.ndarray:
        """Maps an agent action in [-1, 1] (clipped) to the wrapped environment's action range.

        Args:
          action: array of the action spec's shape.

        Returns:
          The action in the wrapped environment's bounds and dtype.

        Raises:
          ValueError: naming `action` when its shape is wrong or it holds NaN.
        """
        action = np.asarray(action, dtype=np.float64)
        if action.shape != self._spec.shape:
            raise ValueError(f"action: expected shape {self._spec.shape}, got {action.shape}")
        if np.isnan(action).any():
            raise ValueError("action: contains NaN")
        unit = (np.clip(action, -1.0, 1.0) + 1.0) / 2.0
        return (self._low + unit * (self._high - self._low)).astype(self._inner_dtype)

    def step(self, action) -> dm_env.TimeStep:
        return self._env.step(self.to_env_action(action))

    def action_spec(self):
        return self._spec


class ActionRepeat(Wrapper):
    """Repeats each action `repeat` times: rewards add up, discounts multiply, stops at episode end."""

    def __init__(self, env: dm_env.Environment, repeat: int):
        super().__init__(env)
        if not isinstance(repeat, (int, np.integer)) or repeat < 1:
            raise ValueError(f"action_repeat: must be a positive integer, got {repeat!r}")
        self._repeat = int(repeat)

    def step(self, action) -> dm_env.TimeStep:
        total_reward = 0.0
        discount = 1.0
        for _ in range(self._repeat):
            timestep = self._env.step(action)
            if timestep.first():  # dm_env: stepping after the last step starts a new episode.
                return timestep
            total_reward += timestep.reward
            discount *= timestep.discount
            if timestep.last():
                break
        return timestep._replace(
            reward=np.asarray(total_reward, dtype=np.asarray(timestep.reward).dtype)[()],
            discount=np.asarray(discount, dtype=np.asarray(timestep.discount).dtype)[()],
        )
