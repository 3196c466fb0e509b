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

import numpy as np
from dm_env import specs

from envs.batch import ArrayBatch, CoreEnv

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

    @property
    def tasks(self) -> np.ndarray:
        """float64 [N, 2]: the goals (the family's task parameters)."""
        return self.goals

    def observations(self) -> np.ndarray:
        """float32 [N, 2]: the positions."""
        return self.positions.astype(np.float32)

    def physics_states(self) -> np.ndarray:
        """float64 [N, 2]: the positions."""
        return self.positions.copy()

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


class PointNav(CoreEnv):
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
        goal = check_goal(task) if self._pinned else draw_task(split, seed)
        self._start(PointNavVector(goal[None]), episode_length)

    def reseed(self, seed: int) -> None:
        """Draws a new goal from `seed` (unless the goal was given explicitly); takes effect now."""
        if not self._pinned:
            self._core.goals[0] = draw_task(self._split, seed)
        self._needs_reset = True

    def _action(self, action) -> np.ndarray:
        action = np.asarray(action, np.float64)
        if action.shape != (2,):
            raise ValueError(f"action: expected shape (2,), got {action.shape}")
        return action[None]

    def _observation(self) -> np.ndarray:
        return self._core.positions[0].astype(np.float32)

    def observation_spec(self):
        return specs.Array((2,), np.float32, name="observation")

    def action_spec(self):
        return _action_spec()


class PointNavBatch(ArrayBatch):
    """N `point_nav` environments stepped as arrays (`envs.batch.ArrayBatch` on `PointNavVector`).

    Args:
      spec: the task's `envs.TaskSpec` (a point_nav task).
      goals_n2: float [N, 2], each environment's goal.
      action_repeat: each action is applied this many times; rewards are summed.
    """

    def __init__(self, spec, goals_n2, action_repeat: int = 1):
        super().__init__(spec, PointNavVector(goals_n2), specs.Array((2,), np.float32, name="observation"),
                         _action_spec(), action_repeat)

    def _convert(self, actions: np.ndarray) -> np.ndarray:
        # Exactly envs.make's RescaleActions to the bounds [-1, 1] (not the identity in floating point).
        unit = (np.clip(actions.astype(np.float64), -1.0, 1.0) + 1.0) / 2.0
        return (-1.0 + unit * 2.0).astype(np.float32)
