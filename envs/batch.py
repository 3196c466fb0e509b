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


class _EpisodeBook:
    """What every batch keeps per environment: `done`, and the current episode's `returns` and `lengths`."""

    def _init_book(self, n: int) -> None:
        self._done = np.ones((n,), bool)
        self._returns = np.zeros((n,), np.float64)
        self._lengths = np.zeros((n,), np.int64)

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

    def _restart(self, mask) -> np.ndarray:
        """Checks `mask` (None: all) and clears the bookkeeping of its environments; returns it."""
        n = len(self._done)
        mask = np.ones((n,), bool) if mask is None else np.asarray(mask)
        if mask.shape != (n,) or mask.dtype != bool:
            raise ValueError(f"mask: expected bool [{n}], got {mask.dtype} {mask.shape}")
        self._done[mask] = False
        self._returns[mask] = 0.0
        self._lengths[mask] = 0
        return mask


class BatchEnv(_EpisodeBook):
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
        self._init_book(n)

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

    def reset(self, mask=None) -> np.ndarray:
        """Starts new episodes.

        Args:
          mask: optional bool [N]; only these environments restart (default: all).

        Returns:
          float32 [N, obs_dim]: current observations (fresh ones where reset).
        """
        mask = self._restart(mask)
        for i in np.flatnonzero(mask):
            self._observation[i] = self._envs[i].reset().observation
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


class _TaskView:
    """What `ArrayBatch.envs[i]` offers: the i-th environment's name, spec and task, without stepping."""

    def __init__(self, batch: "ArrayBatch", index: int):
        self._batch, self._index = batch, index

    @property
    def name(self) -> str:
        return self._batch.spec.name

    @property
    def spec(self):
        return self._batch.spec

    @property
    def action_repeat(self) -> int:
        return self._batch.action_repeat

    @property
    def episode_length(self) -> int:
        return self._batch.episode_length

    @property
    def task_parameter(self) -> np.ndarray:
        return self._batch.task_parameters[self._index]


class ArrayBatch(_EpisodeBook):
    """N environments of a pure-NumPy task stepped as arrays, with `BatchEnv`'s interface and semantics.

    The fast twin of `BatchEnv([envs.make(name, seed=s) for s in seeds])`: the same observations,
    rewards, discounts, `done`, `returns` and `lengths` step for step (tests hold them equal), without
    per-environment Python objects. `envs` gives read-only views (name, spec, episode_length,
    task_parameter) of the environments, not steppable ones.

    Args:
      spec: the task's `envs.TaskSpec`.
      core: the task's vectorised arithmetic: `tasks` [N, task_dim], `reset(mask)`, `step(actions, mask)
        -> rewards [N]` (0 where not stepped), `observations()` [N, obs] and `physics_states()` [N, state].
      observation_spec, action_spec: one environment's specs (as `envs.make` presents them).
      action_repeat: each action is applied this many times; rewards are summed.
    """

    def __init__(self, spec, core, observation_spec, action_spec, action_repeat: int = 1):
        self.spec, self._core = spec, core
        self._obs_spec, self._act_spec = observation_spec, action_spec
        self.action_repeat = int(action_repeat)
        n = len(core.tasks)
        self._inner_t = np.zeros((n,), np.int64)
        self._init_book(n)

    @property
    def num_envs(self) -> int:
        return len(self._core.tasks)

    @property
    def envs(self) -> list[_TaskView]:
        return [_TaskView(self, i) for i in range(self.num_envs)]

    @property
    def episode_length(self) -> int:
        """Agent steps in an episode."""
        return -(-self.spec.episode_length // self.action_repeat)

    @property
    def task_parameters(self) -> np.ndarray:
        """float64 [N, task_dim]: each environment's hidden task (for data tools; never observed)."""
        return np.asarray(self._core.tasks, np.float64).copy()

    def physics_states(self) -> np.ndarray:
        """float64 [N, state]: every environment's state (what `envs.physics_state` gives one by one)."""
        return self._core.physics_states()

    def observation_spec(self):
        return self._obs_spec

    def action_spec(self):
        return self._act_spec

    def reset(self, mask=None) -> np.ndarray:
        """Starts new episodes (in the environments of `mask`, default all); returns [N, obs] observations."""
        mask = self._restart(mask)
        self._core.reset(mask)
        self._inner_t[mask] = 0
        return self._core.observations()

    def _convert(self, actions: np.ndarray) -> np.ndarray:
        """The actions as the core steps them (the identity; a task whose `envs.make` rescales overrides it)."""
        return actions

    def step(self, actions) -> BatchStep:
        """Steps every environment that is not done; returns a `BatchStep`."""
        actions = np.asarray(actions)
        want = (self.num_envs,) + tuple(self._act_spec.shape)
        if actions.shape != want:
            raise ValueError(f"actions: expected shape {want}, got {actions.shape}")
        if self._done.all():
            raise ValueError("actions: every environment is done; call reset() first")
        running = ~self._done
        if actions.dtype.kind == "f" and np.isnan(actions[running]).any():
            raise ValueError("action: contains NaN")
        actions = self._convert(actions)
        reward = np.zeros((self.num_envs,), np.float32)
        for _ in range(self.action_repeat):
            moving = running & (self._inner_t < self.spec.episode_length)
            if not moving.any():
                break
            reward += self._core.step(actions, moving)
            self._inner_t[moving] += 1
        self._returns[running] += reward[running].astype(np.float64)
        self._lengths[running] += 1
        self._done |= running & (self._inner_t >= self.spec.episode_length)
        discount = running.astype(np.float32)  # time limits only: 1 while running and on the last step
        return BatchStep(self._core.observations(), reward, discount, self._done.copy())

    def close(self) -> None:
        pass


class CoreEnv(dm_env.Environment):
    """One environment of a pure-NumPy task: its vectorised core (as `ArrayBatch` steps it) with N = 1,
    an episode of `episode_length` steps ended only by the time limit.

    Subclasses set `self._core` (through `_start`), and give `_action(action) -> [1, ...]` (validated),
    `_observation()`, `observation_spec()` and `action_spec()`.
    """

    def _start(self, core, episode_length: int) -> None:
        self._core, self._episode_length = core, int(episode_length)
        self._t = 0
        self._needs_reset = True

    @property
    def task_parameter(self) -> np.ndarray:
        """float64 [task_dim]: the hidden task (for data tools; never part of the observation)."""
        return np.asarray(self._core.tasks[0], np.float64).copy()

    def get_physics_state(self) -> np.ndarray:
        """float64 [state]: what `envs.physics_state` records."""
        return self._core.physics_states()[0]

    def reset(self) -> dm_env.TimeStep:
        self._core.reset()
        self._t = 0
        self._needs_reset = False
        return dm_env.restart(self._observation())

    def step(self, action) -> dm_env.TimeStep:
        if self._needs_reset:
            return self.reset()
        reward = self._core.step(self._action(action))[0]
        self._t += 1
        if self._t >= self._episode_length:
            self._needs_reset = True
            return dm_env.truncation(reward, self._observation())
        return dm_env.transition(reward, self._observation())

    def reward_spec(self):
        from dm_env import specs

        return specs.Array((), np.float32, name="reward")

    def discount_spec(self):
        from dm_env import specs

        return specs.BoundedArray((), np.float32, 0.0, 1.0, name="discount")


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
