"""Several environments of one task stepped together, for one batched policy call per step.

Semantics (one episode per environment between resets):
- `reset()` starts an episode in every environment (or those selected by `mask`) and returns the
  stacked observations [N, obs_dim].
- `step(actions [N, action_dim])` steps every environment whose episode is still running. An
  environment whose episode ended at an earlier step is not stepped: its row keeps the last
  observation, reward 0, discount 0, and `done` stays True until it is reset.
- On the step that ends an episode, reward and discount are the environment's own (discount 0 for a
  termination, 1 for a time-limit truncation) and `done` turns True.
- `returns` and `lengths` accumulate per environment over the current episode.
Environments are stepped one after another in this process: on few cores this beats a process pool
(see experiments/bench/env_stepping.py). The pure-NumPy point_nav tasks get `envs.point_nav.PointNavBatch`
instead, the same interface and semantics computed on arrays (about 100x faster for 256 environments).
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import dm_env
import numpy as np


class BatchStep(NamedTuple):
    """One step of a `BatchEnv`.

    Attributes:
      observation: float32 [N, obs_dim].
      reward: float32 [N]; 0 for environments that were already done.
      discount: float32 [N]; 0 for environments that were already done.
      done: bool [N]; True from the step an environment's episode ended until it is reset.
    """

    observation: np.ndarray
    reward: np.ndarray
    discount: np.ndarray
    done: np.ndarray


class BatchEnv:
    """Steps N `dm_env` environments with flat observations in lockstep (synchronously).

    Args:
      envs: the environments, all with the same observation and action specs.

    Raises:
      ValueError: naming `envs` when empty or their specs differ.
    """

    def __init__(self, envs: Sequence[dm_env.Environment]):
        if len(envs) == 0:
            raise ValueError("envs: need at least one environment")
        obs_spec, act_spec = envs[0].observation_spec(), envs[0].action_spec()
        for i, env in enumerate(envs):
            if env.observation_spec().shape != obs_spec.shape or env.action_spec() != act_spec:
                raise ValueError(f"envs: environment {i} has different specs from environment 0")
        self._envs = list(envs)
        n = len(envs)
        self._observation = np.zeros((n,) + tuple(obs_spec.shape), np.float32)
        self._done = np.ones((n,), bool)
        self._returns = np.zeros((n,), np.float64)
        self._lengths = np.zeros((n,), np.int64)

    @property
    def envs(self) -> list[dm_env.Environment]:
        return list(self._envs)

    @property
    def num_envs(self) -> int:
        return len(self._envs)

    def observation_spec(self):
        """The spec of one environment's observation."""
        return self._envs[0].observation_spec()

    def action_spec(self):
        """The spec of one environment's action."""
        return self._envs[0].action_spec()

    @property
    def episode_length(self) -> int:
        """Agent steps in an episode of environment 0 that is not terminated early (`TaskEnv`s only)."""
        return self._envs[0].episode_length

    @property
    def task_parameters(self) -> np.ndarray | None:
        """float64 [N, task_dim]: each environment's hidden task; None for tasks that are not hidden."""
        params = [getattr(env, "task_parameter", None) for env in self._envs]
        if any(p is None for p in params):
            return None
        return np.stack(params).astype(np.float64)

    @property
    def done(self) -> np.ndarray:
        """bool [N]: whose episode has ended (all True before the first reset)."""
        return self._done.copy()

    @property
    def all_done(self) -> bool:
        return bool(self._done.all())

    @property
    def returns(self) -> np.ndarray:
        """float64 [N]: undiscounted return so far of each environment's current episode."""
        return self._returns.copy()

    @property
    def lengths(self) -> np.ndarray:
        """int64 [N]: steps taken in each environment's current episode."""
        return self._lengths.copy()

    def reset(self, mask=None) -> np.ndarray:
        """Starts new episodes.

        Args:
          mask: optional bool [N]; only these environments restart (default: all).

        Returns:
          float32 [N, obs_dim]: current observations (fresh ones where reset).
        """
        if mask is None:
            mask = np.ones((self.num_envs,), bool)
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise ValueError(f"mask: expected bool [{self.num_envs}], got {mask.dtype} {mask.shape}")
        for i in np.flatnonzero(mask):
            self._observation[i] = self._envs[i].reset().observation
        self._done[mask] = False
        self._returns[mask] = 0.0
        self._lengths[mask] = 0
        return self._observation.copy()

    def step(self, actions) -> BatchStep:
        """Steps every environment that is not done.

        Args:
          actions: [N, action_dim]; rows of done environments are ignored.

        Returns:
          A `BatchStep` (see the module docstring for the semantics of finished environments).

        Raises:
          ValueError: naming `actions` when the shape is wrong or every environment is done.
        """
        actions = np.asarray(actions)
        want = (self.num_envs,) + tuple(self.action_spec().shape)
        if actions.shape != want:
            raise ValueError(f"actions: expected shape {want}, got {actions.shape}")
        if self._done.all():
            raise ValueError("actions: every environment is done; call reset() first")
        reward = np.zeros((self.num_envs,), np.float32)
        discount = np.zeros((self.num_envs,), np.float32)
        for i in np.flatnonzero(~self._done):
            timestep = self._envs[i].step(actions[i])
            self._observation[i] = timestep.observation
            reward[i] = timestep.reward
            discount[i] = timestep.discount
            self._returns[i] += float(timestep.reward)
            self._lengths[i] += 1
            self._done[i] = timestep.last()
        return BatchStep(self._observation.copy(), reward, discount, self._done.copy())

    def close(self) -> None:
        for env in self._envs:
            env.close()


def env_seeds(seed: int, num_envs: int) -> list[int]:
    """Independent per-environment seeds derived from one seed (via `np.random.SeedSequence`).

    Args:
      seed: the batch's seed.
      num_envs: how many seeds.

    Returns:
      `num_envs` integers in [0, 2**31).
    """
    children = np.random.SeedSequence(seed).spawn(num_envs)
    return [int(c.generate_state(1)[0] % (2**31)) for c in children]


def make_batch(name: str, num_envs: int, *, seed: int, action_repeat: int = 1, tasks=None):
    """Builds `num_envs` environments of one task, seeded independently from `seed`.

    Args:
      name: a task from `envs.list_tasks()`.
      num_envs: number of environments, at least 1.
      seed: non-negative integer; environment i gets `env_seeds(seed, num_envs)[i]` (for a
        hidden-task family that seed also draws its task).
      action_repeat: as in `envs.make`.
      tasks: hidden-task families only: float [num_envs, task_dim], environment i's task parameter
        (e.g. rows of `envs.task_set(name)`), instead of drawing it from its seed.

    Returns:
      A `BatchEnv`, or for the point_nav tasks its array twin `envs.point_nav.PointNavBatch` (same
      interface and semantics; `envs` are read-only views there).

    Raises:
      ValueError: naming `num_envs`, `tasks` (or what `envs.make` rejects) when invalid.
    """
    from envs import registry
    from envs.make import _check_seed, make

    if isinstance(num_envs, bool) or not isinstance(num_envs, (int, np.integer)) or num_envs < 1:
        raise ValueError(f"num_envs: expected a positive integer, got {num_envs!r}")
    _check_seed(seed)
    spec = registry.task_spec(name)
    if tasks is not None:
        if not spec.hidden:
            raise ValueError(f"tasks: {spec.name!r} is not a hidden-task family; it takes no task parameters")
        tasks = np.asarray(tasks, dtype=np.float64)
        if tasks.shape != (num_envs, spec.task_dim):
            raise ValueError(f"tasks: expected shape {(num_envs, spec.task_dim)}, got {tasks.shape}")
    seeds = env_seeds(int(seed), int(num_envs))
    if spec.kind == registry.NUMPY:
        from envs import point_nav

        if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
            raise ValueError(f"action_repeat: must be a positive integer, got {action_repeat!r}")
        if tasks is None:
            goals = np.stack([point_nav.draw_task(spec.task, s) for s in seeds])
        else:
            goals = np.stack([point_nav.check_goal(t) for t in tasks])
        return point_nav.PointNavBatch(spec, goals, int(action_repeat))
    return BatchEnv([make(name, seed=s, action_repeat=action_repeat, task=None if tasks is None else tasks[i])
                     for i, s in enumerate(seeds)])
