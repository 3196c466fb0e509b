"""`envs.make`: task name to `dm_env.Environment` (flat float32 observations, actions in [-1, 1])."""

from __future__ import annotations

import dm_env
import numpy as np

from envs import registry, wrappers


class TaskEnv(wrappers.Wrapper):
    """The outermost wrapper of every `envs.make` environment: knows its task and can be reseeded.

    Attributes forward to the inner environments, so `env.physics` (dm_control tasks) and
    `env.gym_env` (gymnasium tasks) reach the simulator.
    """

    def __init__(self, env: dm_env.Environment, spec: registry.TaskSpec, action_repeat: int):
        super().__init__(env)
        self._spec = spec
        self._action_repeat = action_repeat

    @property
    def name(self) -> str:
        """Canonical task name (with the gymnasium version), as results should report it."""
        return self._spec.name

    @property
    def spec(self) -> registry.TaskSpec:
        return self._spec

    @property
    def action_repeat(self) -> int:
        return self._action_repeat

    @property
    def episode_length(self) -> int:
        """Agent steps in an episode that is not terminated early."""
        return -(-self._spec.episode_length // self._action_repeat)

    def reseed(self, seed: int) -> None:
        """Restarts the task's randomness from `seed`; takes effect at the next `reset`.

        Args:
          seed: a non-negative integer.
        """
        _check_seed(seed)
        inner = self.unwrapped_env
        if self._spec.kind == registry.DM_CONTROL:
            inner.task.random.seed(seed)
        else:
            inner.reseed(seed)


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")


def make(name: str, *, seed: int, action_repeat: int = 1) -> TaskEnv:
    """Builds the environment of a task.

    Observations are one float32 vector (a dm_control observation dict concatenated in its key
    order); actions are float32 in [-1, 1], clipped and mapped to the simulator's bounds; rewards and
    discounts are float32. dm_control tasks never terminate (only time limits: discount 1 at the
    end); gymnasium tasks end with discount 0 when terminated and 1 when truncated.

    Args:
      name: a task from `envs.list_tasks()` (bare "hopper" means "hopper-v4").
      seed: non-negative integer; the same seed and actions give the same trajectory.
      action_repeat: each action is applied this many times; rewards are summed.

    Returns:
      A `TaskEnv` (a `dm_env.Environment`).

    Raises:
      ValueError: naming `name`, `seed` or `action_repeat` when invalid.
    """
    spec = registry.task_spec(name)
    _check_seed(seed)
    if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
        raise ValueError(f"action_repeat: must be a positive integer, got {action_repeat!r}")
    if spec.kind == registry.DM_CONTROL:
        from envs import dm_control_tasks

        env = dm_control_tasks.load(spec.name, int(seed))
    else:
        from envs import gymnasium_to_dm_env

        env = gymnasium_to_dm_env.make_gymnasium(spec.domain, int(seed))
    env = wrappers.FlatObservation(env)
    if action_repeat > 1:
        env = wrappers.ActionRepeat(env, int(action_repeat))
    env = wrappers.RescaleActions(env)
    return TaskEnv(env, spec, int(action_repeat))
