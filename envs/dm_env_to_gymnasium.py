"""Adapter from `dm_env.Environment` to `gymnasium.Env`, for users with gymnasium tooling.

A LAST step with discount 0 is `terminated`; a LAST step with discount > 0 is `truncated` (time limit).
Observations and actions must be single arrays (as from `envs.make`); a `DiscreteArray` spec becomes a
`gymnasium.spaces.Discrete` space, every other spec a `gymnasium.spaces.Box`.
"""

from __future__ import annotations

from typing import Any

import dm_env
import numpy as np
from dm_env import specs


def _spec_to_space(spec: Any, name: str):
    from gymnasium import spaces

    if isinstance(spec, specs.DiscreteArray):
        if spec.shape != ():
            raise ValueError(f"{name}: a DiscreteArray spec must be a scalar to become a Discrete space, got {spec!r}")
        return spaces.Discrete(int(spec.num_values))
    if not isinstance(spec, specs.Array):
        raise ValueError(f"{name}: expected a dm_env Array/BoundedArray/DiscreteArray spec, got {spec!r}")
    dtype = np.dtype(spec.dtype)
    if isinstance(spec, specs.BoundedArray):
        low = np.broadcast_to(spec.minimum, spec.shape).astype(dtype)
        high = np.broadcast_to(spec.maximum, spec.shape).astype(dtype)
    else:
        low = np.full(spec.shape, -np.inf, dtype)
        high = np.full(spec.shape, np.inf, dtype)
    return spaces.Box(low=low, high=high, shape=spec.shape, dtype=dtype)


def make_adapter_class():
    """Returns the `DmEnvToGymnasium` class (built lazily: it subclasses `gymnasium.Env`).

    Returns:
      The class; construct it as `cls(env, render_mode=None)`.
    """
    import gymnasium

    class DmEnvToGymnasium(gymnasium.Env):
        """Presents a `dm_env.Environment` as a `gymnasium.Env`.

        Args:
          env: the dm_env environment. `reset(seed=s)` calls `env.reseed(s)`, so a seed needs an
            environment that has `reseed` (those from `envs.make` do).
          render_mode: None or "rgb_array" (frames from `envs.video.render_frame`, MuJoCo tasks only).
        """

        metadata = {"render_modes": ["rgb_array"]}

        def __init__(self, env: dm_env.Environment, render_mode: str | None = None):
            if render_mode not in (None, "rgb_array"):
                raise ValueError(f"render_mode: expected None or 'rgb_array', got {render_mode!r}")
            self._env = env
            self.render_mode = render_mode
            self.observation_space = _spec_to_space(env.observation_spec(), "observation_spec")
            self.action_space = _spec_to_space(env.action_spec(), "action_spec")
            self._episode_over = True
            self._renderer = None

        @property
        def wrapped_dm_env(self) -> dm_env.Environment:
            """The wrapped dm_env environment."""
            return self._env

        def reset(self, *, seed: int | None = None, options: dict | None = None):
            super().reset(seed=seed)
            if seed is not None:
                reseed = getattr(self._env, "reseed", None)
                if reseed is None:
                    raise ValueError(
                        f"seed: {type(self._env).__name__} has no `reseed`; build it with the seed"
                    )
                reseed(seed)
            timestep = self._env.reset()
            self._episode_over = False
            return timestep.observation, {}

        def step(self, action):
            if self._episode_over:
                raise ValueError("action: the episode is over (or never started); call reset()")
            timestep = self._env.step(np.asarray(action, dtype=self.action_space.dtype))
            terminated = timestep.last() and float(timestep.discount) == 0.0
            truncated = timestep.last() and not terminated
            self._episode_over = timestep.last()
            info = {"discount": float(timestep.discount)}
            return timestep.observation, float(timestep.reward), terminated, truncated, info

        def render(self):
            if self.render_mode != "rgb_array":
                return None
            from envs import video

            if self._renderer is None:
                self._renderer = video.FrameRenderer(self._env)
            return self._renderer.render()

        def close(self):
            if self._renderer is not None:
                self._renderer.close()
                self._renderer = None
            self._env.close()

    return DmEnvToGymnasium


def to_gymnasium(env: dm_env.Environment, render_mode: str | None = None):
    """Wraps a dm_env environment as a `gymnasium.Env` (see `make_adapter_class`).

    Args:
      env: a dm_env environment with array observations and a bounded array action spec.
      render_mode: None or "rgb_array".

    Returns:
      A `gymnasium.Env` with Box (or, for `DiscreteArray` specs, Discrete) observation and action spaces.
    """
    return make_adapter_class()(env, render_mode=render_mode)
