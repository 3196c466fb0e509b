"""`point_nav_hidden`: sparse-reward 2-D point-robot navigation to a hidden goal (PEARL, VariBAD).

A point starts at the origin; its goal lies on the upper half of the unit circle. The goal is the task:
drawn from the environment's seed (or given), never observed, fixed across resets. Only the reward
(1 within `GOAL_RADIUS` of the goal, else 0) reveals it, so an agent that improves over trials must
remember where earlier trials were rewarded: the standard continuous meta-RL benchmark.

- Goals by index: `NUM_GOALS` = 20 evenly spaced on the semicircle, angle pi * i / 19. Indices
  `HELDOUT_INDICES` = (2, 6, 10, 14, 18) are held out, each between two train goals; the other 15 are
  the train goals. `point_nav_hidden` draws from the train goals, `point_nav_hidden_heldout` from the
  held-out ones.
- Action: a velocity in [-1, 1]^2 (clipped), moving the point by `STEP_SIZE` = 0.1 per unit per step.
- Reward of a step: 1.0 if the position after it is within `GOAL_RADIUS` = 0.2 of the goal (sparse).
- Observation: the position (2), float32. Physics state: the position (2), float64.
- Episodes: `EPISODE_LENGTH` = 20 steps. A goal is 1 away and reward starts 0.2 before it, so a direct
  path is rewarded from step 8 (12 rewarded steps of 20); a trip to a wrong goal of the semicircle
  leaves no time to search further within the episode, so finding the goal takes several episodes
  (trials): the in-context problem. Short episodes also keep 12 trials at 240 steps of context.
  Neighbouring goals are 0.165 apart, closer than the goal radius, so a point resting on one goal
  is also rewarded for its neighbours (as in PEARL's sparse variant): the family is continuous.

Pure NumPy. `PointNavVector` steps N points at once (what `envs.make_batch` uses); `PointNav` is one
environment, the same arithmetic with N = 1.
"""

from __future__ import annotations

import dm_env
import numpy as np
from dm_env import specs

NUM_GOALS = 20
HELDOUT_INDICES = (2, 6, 10, 14, 18)
TRAIN_INDICES = tuple(i for i in range(NUM_GOALS) if i not in HELDOUT_INDICES)
GOAL_RADIUS = 0.2
STEP_SIZE = 0.1
EPISODE_LENGTH = 20
SPLITS = {"hidden": TRAIN_INDICES, "hidden_heldout": HELDOUT_INDICES}
_TASK_STREAM = 7919  # separates the task draw from any other use of the seed


def goals(indices=None) -> np.ndarray:
    """Goal positions on the upper unit semicircle.

    Args:
      indices: goal indices in 0..NUM_GOALS-1 (default: all).

    Returns:
      float64 [n, 2].
    """
    indices = np.arange(NUM_GOALS) if indices is None else np.asarray(indices)
    angles = np.pi * indices / (NUM_GOALS - 1)
    return np.stack([np.cos(angles), np.sin(angles)], axis=-1)


def task_set(split: str) -> np.ndarray:
    """float64 [n, 2]: the goals a seed draws from for `split` ("hidden" or "hidden_heldout")."""
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
    return goals(SPLITS[split])


def draw_task(split: str, seed: int) -> np.ndarray:
    """The goal (float64 [2]) that `seed` draws for `split`: uniform over its goal indices."""
    candidates = task_set(split)
    index = np.random.default_rng([int(seed), _TASK_STREAM]).integers(len(candidates))
    return candidates[index].copy()


def rewards(positions, goal) -> np.ndarray:
    """Sparse reward of each position: 1 within `GOAL_RADIUS` of `goal`, else 0.

    Args:
      positions: float [..., 2], the positions after each step.
      goal: float [2] or [..., 2] broadcasting against `positions`.

    Returns:
      float32 [...].
    """
    distance = np.linalg.norm(np.asarray(positions, np.float64) - np.asarray(goal, np.float64), axis=-1)
    return (distance <= GOAL_RADIUS).astype(np.float32)


def check_goal(goal) -> np.ndarray:
    """A finite float64 [2] goal, or a ValueError naming `task`."""
    goal = np.asarray(goal, dtype=np.float64)
    if goal.shape != (2,) or not np.isfinite(goal).all():
        raise ValueError(f"task: expected a finite goal position of shape (2,), got {goal!r}")
    return goal.copy()


def _action_spec() -> specs.BoundedArray:
    return specs.BoundedArray((2,), np.float32, np.full(2, -1.0, np.float32), np.full(2, 1.0, np.float32),
                              name="action")


class PointNavVector:
    """N point robots with goals `goals` [N, 2], stepped together (the arithmetic of the family).

    Positions start at the origin. `step` moves every point by `STEP_SIZE * clip(action, -1, 1)` and
    returns the sparse rewards; it knows nothing of episodes (callers count steps).
    """

    def __init__(self, goals_n2: np.ndarray):
        self.goals = np.asarray(goals_n2, np.float64).reshape(-1, 2).copy()
        self.positions = np.zeros_like(self.goals)

    def reset(self, mask=None) -> None:
        if mask is None:
            self.positions[:] = 0.0
        else:
            self.positions[mask] = 0.0

    def step(self, actions_n2, mask=None) -> np.ndarray:
        """Moves the points (only `mask`'s, when given); returns float32 [N] rewards (0 where not moved)."""
        delta = STEP_SIZE * np.clip(np.asarray(actions_n2, np.float64), -1.0, 1.0)
        if mask is None:
            self.positions += delta
            return rewards(self.positions, self.goals)
        self.positions[mask] += delta[mask]
        return np.where(mask, rewards(self.positions, self.goals), np.float32(0.0)).astype(np.float32)


class PointNav(dm_env.Environment):
    """One point robot with a hidden goal; a `dm_env.Environment` of `EPISODE_LENGTH` steps.

    Args:
      split: "hidden" (train goals) or "hidden_heldout" (held-out goals): where seeds draw goals from.
      seed: draws the goal (`draw_task(split, seed)`) unless `task` is given.
      task: an explicit goal, float [2]; it stays fixed even when the environment is reseeded.
      episode_length: steps per episode.
    """

    def __init__(self, split: str, seed: int, task=None, episode_length: int = EPISODE_LENGTH):
        if split not in SPLITS:
            raise ValueError(f"split: expected one of {sorted(SPLITS)}, got {split!r}")
        self._split, self._pinned = split, task is not None
        self._episode_length = int(episode_length)
        goal = check_goal(task) if self._pinned else draw_task(split, seed)
        self._core = PointNavVector(goal[None])
        self._t = 0
        self._needs_reset = True

    @property
    def task_parameter(self) -> np.ndarray:
        """float64 [2]: the goal (for data tools; never part of the observation)."""
        return self._core.goals[0].copy()

    def reseed(self, seed: int) -> None:
        """Draws a new goal from `seed` (unless the goal was given explicitly); takes effect now."""
        if not self._pinned:
            self._core.goals[0] = draw_task(self._split, seed)
        self._needs_reset = True

    def get_physics_state(self) -> np.ndarray:
        """float64 [2]: the position."""
        return self._core.positions[0].copy()

    def reset(self) -> dm_env.TimeStep:
        self._core.reset()
        self._t = 0
        self._needs_reset = False
        return dm_env.restart(self._observation())

    def step(self, action) -> dm_env.TimeStep:
        if self._needs_reset:
            return self.reset()
        action = np.asarray(action, np.float64)
        if action.shape != (2,):
            raise ValueError(f"action: expected shape (2,), got {action.shape}")
        reward = self._core.step(action[None])[0]
        self._t += 1
        if self._t >= self._episode_length:
            self._needs_reset = True
            return dm_env.truncation(reward, self._observation())
        return dm_env.transition(reward, self._observation())

    def _observation(self) -> np.ndarray:
        return self._core.positions[0].astype(np.float32)

    def observation_spec(self):
        return specs.Array((2,), np.float32, name="observation")

    def action_spec(self):
        return _action_spec()

    def reward_spec(self):
        return specs.Array((), np.float32, name="reward")

    def discount_spec(self):
        return specs.BoundedArray((), np.float32, 0.0, 1.0, name="discount")


class _TaskView:
    """What `PointNavBatch.envs[i]` offers: the i-th environment's name, spec and task, without stepping."""

    def __init__(self, batch: "PointNavBatch", index: int):
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


class PointNavBatch:
    """N `point_nav` environments stepped as arrays, with `envs.BatchEnv`'s interface and semantics.

    The fast twin of `BatchEnv([envs.make(name, seed=s) for s in seeds])`: the same observations,
    rewards, discounts, `done`, `returns` and `lengths` step for step (tests hold them equal), at a
    fraction of the cost (no per-environment Python objects). `envs` gives read-only views (name,
    spec, episode_length, task_parameter) of the environments, not steppable ones.

    Args:
      spec: the task's `envs.TaskSpec` (a point_nav task).
      goals_n2: float [N, 2], each environment's goal.
      action_repeat: each action is applied this many times; rewards are summed.
    """

    def __init__(self, spec, goals_n2, action_repeat: int = 1):
        self.spec = spec
        self.action_repeat = int(action_repeat)
        self._core = PointNavVector(goals_n2)
        n = self._core.goals.shape[0]
        self._inner_t = np.zeros((n,), np.int64)
        self._done = np.ones((n,), bool)
        self._returns = np.zeros((n,), np.float64)
        self._lengths = np.zeros((n,), np.int64)

    @property
    def num_envs(self) -> int:
        return self._core.goals.shape[0]

    @property
    def envs(self) -> list[_TaskView]:
        return [_TaskView(self, i) for i in range(self.num_envs)]

    @property
    def episode_length(self) -> int:
        """Agent steps in an episode."""
        return -(-self.spec.episode_length // self.action_repeat)

    @property
    def task_parameters(self) -> np.ndarray:
        """float64 [N, 2]: each environment's goal (for data tools; never observed)."""
        return self._core.goals.copy()

    def physics_states(self) -> np.ndarray:
        """float64 [N, 2]: every environment's position (what `envs.physics_state` gives one by one)."""
        return self._core.positions.copy()

    def observation_spec(self):
        return specs.Array((2,), np.float32, name="observation")

    def action_spec(self):
        return _action_spec()

    @property
    def done(self) -> np.ndarray:
        return self._done.copy()

    @property
    def all_done(self) -> bool:
        return bool(self._done.all())

    @property
    def returns(self) -> np.ndarray:
        return self._returns.copy()

    @property
    def lengths(self) -> np.ndarray:
        return self._lengths.copy()

    def reset(self, mask=None) -> np.ndarray:
        """Starts new episodes (in the environments of `mask`, default all); returns [N, 2] observations."""
        if mask is None:
            mask = np.ones((self.num_envs,), bool)
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != bool:
            raise ValueError(f"mask: expected bool [{self.num_envs}], got {mask.dtype} {mask.shape}")
        self._core.reset(mask)
        self._inner_t[mask] = 0
        self._done[mask] = False
        self._returns[mask] = 0.0
        self._lengths[mask] = 0
        return self._core.positions.astype(np.float32)

    def step(self, actions):
        """Steps every environment that is not done; returns an `envs.BatchStep`."""
        from envs.batch import BatchStep

        actions = np.asarray(actions)
        if actions.shape != (self.num_envs, 2):
            raise ValueError(f"actions: expected shape {(self.num_envs, 2)}, got {actions.shape}")
        if self._done.all():
            raise ValueError("actions: every environment is done; call reset() first")
        running = ~self._done
        if np.isnan(actions[running]).any():
            raise ValueError("action: contains NaN")
        # Exactly envs.make's RescaleActions to the bounds [-1, 1] (not the identity in floating point).
        unit = (np.clip(actions.astype(np.float64), -1.0, 1.0) + 1.0) / 2.0
        actions = (-1.0 + unit * 2.0).astype(np.float32)
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
        return BatchStep(self._core.positions.astype(np.float32), reward, discount, self._done.copy())

    def close(self) -> None:
        pass
