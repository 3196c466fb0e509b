"""Adapter from a gymnasium environment to `dm_env.Environment`, and the gymnasium MuJoCo tasks.

Episode ends map as dm_env expects: `terminated` becomes a LAST step with discount 0 (no future),
`truncated` (time limit) a LAST step with discount 1 (the future exists but is cut off). Stepping after
a LAST step starts a new episode, as in dm_env.
"""

from __future__ import annotations

import warnings
from typing import Any

import dm_env
import numpy as np
from dm_env import specs


def _space_to_spec(space: Any, name: str):
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        if np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high)):
            return specs.BoundedArray(space.shape, space.dtype, space.low, space.high, name=name)
        return specs.Array(space.shape, space.dtype, name=name)
    if isinstance(space, spaces.Discrete):  # values start..start+n-1 become 0..n-1 (`_start`)
        return specs.DiscreteArray(int(space.n), name=name)
    raise ValueError(f"{name}: only Box and Discrete spaces are supported, got {space!r}")


def _start(space: Any) -> int | None:
    """A Discrete space's first value (what the dm_env side's 0 means); None for other spaces."""
    from gymnasium import spaces

    return int(space.start) if isinstance(space, spaces.Discrete) else None


class GymnasiumToDmEnv(dm_env.Environment):
    """Presents a `gymnasium.Env` as a `dm_env.Environment`.

    Args:
      env: the gymnasium environment (its own TimeLimit decides truncation).
      seed: seed for the first `reset`; later resets continue its random stream, so a whole run is
        reproducible from this one number. `reseed(seed)` restarts it.
    """

    def __init__(self, env: Any, seed: int | None = None):
        self._gym_env = env
        self._next_seed = seed
        self._needs_reset = True
        self._obs_spec = _space_to_spec(env.observation_space, "observation")
        self._action_spec = _space_to_spec(env.action_space, "action")
        self._obs_start, self._action_start = _start(env.observation_space), _start(env.action_space)

    @property
    def gym_env(self) -> Any:
        """The wrapped gymnasium environment."""
        return self._gym_env

    def reseed(self, seed: int) -> None:
        """Makes the next `reset` use `seed`."""
        self._next_seed = seed
        self._needs_reset = True

    def reset(self) -> dm_env.TimeStep:
        observation, _ = self._gym_env.reset(seed=self._next_seed)
        self._next_seed = None
        self._needs_reset = False
        return dm_env.restart(self._observation(observation))

    def _observation(self, observation):
        return observation if self._obs_start is None else np.int64(observation - self._obs_start)

    def step(self, action) -> dm_env.TimeStep:
        if self._needs_reset:
            return self.reset()
        if self._action_start is not None:
            action = np.int64(action) + self._action_start
        observation, reward, terminated, truncated, _ = self._gym_env.step(action)
        observation = self._observation(observation)
        if terminated:
            self._needs_reset = True
            return dm_env.termination(reward, observation)
        if truncated:
            self._needs_reset = True
            return dm_env.truncation(reward, observation)
        return dm_env.transition(reward, observation)

    def observation_spec(self):
        return self._obs_spec

    def action_spec(self):
        return self._action_spec

    def close(self) -> None:
        self._gym_env.close()


def make_gymnasium(env_id: str, seed: int | None) -> GymnasiumToDmEnv:
    """Builds a gymnasium MuJoCo task (e.g. "Hopper-v4") behind the dm_env adapter.

    Args:
      env_id: the gymnasium id.
      seed: seed of the first reset.

    Returns:
      A `GymnasiumToDmEnv` around `gymnasium.make(env_id)` (with its TimeLimit, no env checker).
    """
    import gymnasium

    with warnings.catch_warnings():
        # v4 is chosen on purpose (closest to the D4RL data); gymnasium warns that it is old.
        warnings.filterwarnings("ignore", message=".*is out of date.*")
        env = gymnasium.make(env_id, disable_env_checker=True)
    return GymnasiumToDmEnv(env, seed=seed)
