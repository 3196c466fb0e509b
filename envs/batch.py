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


class TaskInObservation:
    """A batch of hidden-task environments whose observations end with each environment's task parameter.

    What the oracle baseline is told; every other agent learns the task only from rewards. Everything
    but the observations (and their spec) is the wrapped batch's.

    Args:
      batch: a `BatchEnv` (or its array twin) of a hidden-task family.

    Raises:
      ValueError: naming `batch` when its task is not hidden.
    """

    def __init__(self, batch):
        tasks = batch.task_parameters
        if tasks is None:
            raise ValueError("batch: its task is not hidden, so there is no task parameter to observe")
        self._batch, self._tasks = batch, np.asarray(tasks, np.float32)

    def __getattr__(self, name: str):
        return getattr(self._batch, name)

    def _observed(self, observations) -> np.ndarray:
        return np.concatenate([observations, self._tasks], axis=1)

    def observation_spec(self):
        from dm_env import specs

        inner = self._batch.observation_spec()
        return specs.Array((inner.shape[0] + self._tasks.shape[1],), np.float32, name="observation_and_task")

    def reset(self, mask=None) -> np.ndarray:
        return self._observed(self._batch.reset(mask))

    def step(self, actions) -> BatchStep:
        step = self._batch.step(actions)
        return step._replace(observation=self._observed(step.observation))


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
