"""`envs.make` and `envs.make_batch`: task name to `dm_env.Environment` (flat float32 observations, actions
in [-1, 1]), or to a batch of them stepped together."""

from __future__ import annotations

import dm_env
import numpy as np

from envs import registry, wrappers
from dm_env import specs

from envs.batch import ArrayBatch, BatchEnv, TaskInObservation, env_seeds


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
    def task_parameter(self) -> np.ndarray | None:
        """float64 [task_dim]: the hidden task (maze target, navigation goal); None for other tasks.

        For data tools only (collection, relabelling, grouping episodes by task): it is never part of
        the observation.
        """
        if not self._spec.hidden:
            return None
        inner = self.unwrapped_env
        if self._spec.kind == registry.DM_CONTROL:
            return np.array(inner.task.target, dtype=np.float64)
        return inner.task_parameter

    @property
    def episode_length(self) -> int:
        """Agent steps in an episode that is not terminated early."""
        return -(-self._spec.episode_length // self._action_repeat)

    def reseed(self, seed: int) -> None:
        """Restarts the task's randomness from `seed`; takes effect at the next `reset`.

        A hidden task is redrawn from `seed` too, as `make(name, seed=seed)` would draw it, unless it
        was given explicitly to `make`.

        Args:
          seed: a non-negative integer.
        """
        _check_seed(seed)
        inner = self.unwrapped_env
        if self._spec.kind == registry.DM_CONTROL:
            reseed = getattr(inner.task, "reseed", None)
            if reseed is not None:  # a hidden-task family also redraws its task
                reseed(int(seed))
            else:
                inner.task.random.seed(seed)
        else:
            inner.reseed(seed)


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")


def make(name: str, *, seed: int, action_repeat: int = 1, task=None) -> TaskEnv:
    """Builds the environment of a task.

    Observations are one float32 vector (a dm_control observation dict concatenated in its key
    order); actions are float32 in [-1, 1], clipped and mapped to the simulator's bounds (a discrete
    task's action is one integer, `envs.task_spec(name).num_actions` choices); rewards and
    discounts are float32. dm_control tasks never terminate (only time limits: discount 1 at the
    end); gymnasium tasks end with discount 0 when terminated and 1 when truncated.

    A hidden-task family (`envs.task_spec(name).hidden`) draws its task from `seed` and keeps it for
    every `reset`; `env.task_parameter` tells data tools which task it is, the observation never does.

    Args:
      name: a task from `envs.list_tasks()` (bare "hopper" means "hopper-v4").
      seed: non-negative integer; the same seed and actions give the same trajectory.
      action_repeat: each action is applied this many times; rewards are summed.
      task: hidden-task families only: the task parameter (float [task_dim], e.g. one of
        `envs.task_set(name)`) instead of drawing it from `seed`; it then survives `reseed`.

    Returns:
      A `TaskEnv` (a `dm_env.Environment`).

    Raises:
      ValueError: naming `name`, `seed`, `action_repeat` or `task` when invalid.
    """
    spec = registry.task_spec(name)
    _check_seed(seed)
    if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
        raise ValueError(f"action_repeat: must be a positive integer, got {action_repeat!r}")
    if task is not None and not spec.hidden:
        raise ValueError(f"task: {spec.name!r} is not a hidden-task family; it takes no task parameter")
    if spec.kind == registry.DM_CONTROL:
        from envs import dm_control_tasks

        env = dm_control_tasks.load(spec.name, int(seed), task=task)
    elif spec.kind == registry.NUMPY and spec.discrete:
        from envs import grid

        env = grid.GridEnv(spec.domain, spec.task, int(seed), task=task)
    elif spec.kind == registry.NUMPY:
        from envs import point_nav

        env = point_nav.PointNav(spec.task, int(seed), task=task, episode_length=spec.episode_length)
    else:
        from envs import gymnasium_to_dm_env

        env = gymnasium_to_dm_env.make_gymnasium(spec.domain, int(seed))
    env = wrappers.FlatObservation(env)
    if action_repeat > 1:
        env = wrappers.ActionRepeat(env, int(action_repeat))
    if not spec.discrete:  # a discrete action is an integer, passed through as it is
        env = wrappers.RescaleActions(env)
    return TaskEnv(env, spec, int(action_repeat))


def make_batch(name: str, num_envs: int, *, seed: int, action_repeat: int = 1, tasks=None,
               observe_task: bool = False):
    """Builds `num_envs` environments of one task, seeded independently from `seed`.

    Args:
      name: a task from `envs.list_tasks()`.
      num_envs: number of environments, at least 1.
      seed: non-negative integer; environment i gets `env_seeds(seed, num_envs)[i]` (for a
        hidden-task family that seed also draws its task).
      action_repeat: as in `envs.make`.
      tasks: hidden-task families only: float [num_envs, task_dim], environment i's task parameter
        (e.g. rows of `envs.task_set(name)`), instead of drawing it from its seed.
      observe_task: hidden-task families only: append each environment's task parameter to its
        observations (`envs.batch.TaskInObservation`, the oracle baseline's view).

    Returns:
      A `BatchEnv`, or for the NumPy tasks (point_nav, the grids) its array twin `envs.batch.ArrayBatch`
      (same interface and semantics; `envs` are read-only views there); with `observe_task`, wrapped in
      `envs.batch.TaskInObservation`.

    Raises:
      ValueError: naming `num_envs`, `tasks` (or what `envs.make` rejects) when invalid.
    """
    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs: expected a positive integer, got {num_envs!r}")
    _check_seed(seed)
    spec = registry.task_spec(name)
    if observe_task and not spec.hidden:
        raise ValueError(f"observe_task: {spec.name!r} is not a hidden-task family; it has no task to observe")
    if tasks is not None:
        if not spec.hidden:
            raise ValueError(f"tasks: {spec.name!r} is not a hidden-task family; it takes no task parameters")
        tasks = np.asarray(tasks, dtype=np.float64)
        if tasks.shape != (num_envs, spec.task_dim):
            raise ValueError(f"tasks: expected shape {(num_envs, spec.task_dim)}, got {tasks.shape}")
    seeds = env_seeds(int(seed), int(num_envs))
    if spec.kind == registry.NUMPY:
        from envs import grid, point_nav

        if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
            raise ValueError(f"action_repeat: must be a positive integer, got {action_repeat!r}")
        if spec.discrete:
            if tasks is None:
                tasks = np.stack([grid.draw_task(spec.domain, spec.task, s) for s in seeds])
            core = grid.GridVector(spec.domain, tasks, seeds)
            batch = ArrayBatch(spec, core, specs.Array((2,), np.float32, name="observation"), grid.action_spec(),
                               int(action_repeat))
            return TaskInObservation(batch) if observe_task else batch
        if tasks is None:
            goals = np.stack([point_nav.draw_task(spec.task, s) for s in seeds])
        else:
            goals = np.stack([point_nav.check_goal(t) for t in tasks])
        batch = point_nav.PointNavBatch(spec, goals, int(action_repeat))
    else:
        batch = BatchEnv([make(name, seed=s, action_repeat=action_repeat, task=None if tasks is None else tasks[i])
                          for i, s in enumerate(seeds)])
    return TaskInObservation(batch) if observe_task else batch
