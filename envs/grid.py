"""The field's shared hidden-task grid benchmarks: Dark Room and Dark Key-to-Door (Algorithm Distillation, ADε).

Both are 9×9 grids whose task is hidden: drawn from the environment's seed (or given), never observed,
fixed across resets. The observation is the agent's cell only, as (row, column) integers; the model sees
them as two coordinates (standardised with the dataset's statistics), which carry "near the rewarded cell"
over to cells never rewarded in training, where one learned embedding per cell does not.

Actions (``dm_env.specs.DiscreteArray`` of 5): 0 no-op, 1 up (row − 1), 2 right (column + 1), 3 down
(row + 1), 4 left (column − 1); moves are clipped at the walls. No episode terminates; only the time
limit ends it.

- ``dark_room``: every episode starts at the centre (4, 4). Reward 1 on every step whose cell after the
  move is the goal, else 0; 20 steps. The task is the goal cell, float64 [2] (row, column). The split is
  ADε's: ``np.random.RandomState(42).permutation`` of the 81 cells in row-major ``np.mgrid`` order, the
  first 65 train (``dark_room_hidden``), the last 16 held out (``dark_room_hidden_heldout``). The best
  return is 21 − the Manhattan distance from the centre (20 for the centre itself).
- ``dark_key_to_door``: the task is a (key, door) pair of distinct cells, float64 [4] (key row, key
  column, door row, door column). Every reset draws the start uniformly (again while it is the key).
  Reward 1 the first time the agent stands on the key, and 1 the first time it stands on the door while
  holding the key: at most 2; 50 steps. The pairs are ``RandomState(42).permutation`` of the 6,480 ordered
  pairs of distinct cells: the first 1,000 train, the next 50 held out (ADε's sizes), never overlapping.

Pure NumPy. ``GridVector`` steps N grids at once (what ``envs.make_batch`` uses, through
``envs.batch.ArrayBatch``); ``GridEnv`` is one ``dm_env.Environment``, the same arithmetic with N = 1.
"""

from __future__ import annotations

import functools

import numpy as np
from dm_env import specs

from envs.batch import CoreEnv

SIZE = 9
NUM_ACTIONS = 5
CENTRE = (4, 4)
# Row and column change of each action: no-op, up, right, down, left.
MOVES = np.array([(0, 0), (-1, 0), (0, 1), (1, 0), (0, -1)], np.int64)
EPISODE_LENGTH = {"dark_room": 20, "dark_key_to_door": 50}
TASK_DIM = {"dark_room": 2, "dark_key_to_door": 4}
SPLITS = ("hidden", "hidden_heldout")
KEY_TO_DOOR_TRAIN, KEY_TO_DOOR_HELDOUT = 1000, 50
_TASK_STREAM, _START_STREAM = 7919, 104_729  # separate the task and start draws from other uses of a seed


def _check(domain: str, split: str) -> None:
    if domain not in EPISODE_LENGTH:
        raise ValueError(f"domain: expected one of {sorted(EPISODE_LENGTH)}, got {domain!r}")
    if split not in SPLITS:
        raise ValueError(f"split: expected one of {list(SPLITS)}, got {split!r}")


@functools.cache
def _task_table(domain: str, split: str) -> np.ndarray:
    cells = np.mgrid[0:SIZE, 0:SIZE].reshape(2, -1).T  # row-major (row, column)
    if domain == "dark_room":
        order = np.random.RandomState(42).permutation(cells)
        tasks = order[:65] if split == "hidden" else order[65:]
    else:
        pairs = np.array([(*a, *b) for a in cells for b in cells if tuple(a) != tuple(b)])
        order = np.random.RandomState(42).permutation(pairs)
        train_end = KEY_TO_DOOR_TRAIN
        tasks = order[:train_end] if split == "hidden" else order[train_end:train_end + KEY_TO_DOOR_HELDOUT]
    tasks = tasks.astype(np.float64)
    tasks.flags.writeable = False
    return tasks


def task_set(domain: str, split: str) -> np.ndarray:
    """float64 [n, task_dim]: the tasks a seed draws from (goal cells, or (key, door) pairs)."""
    _check(domain, split)
    return _task_table(domain, split).copy()


def draw_task(domain: str, split: str, seed: int) -> np.ndarray:
    """The task (float64 [task_dim]) that ``seed`` draws for ``split``: uniform over its task set."""
    candidates = task_set(domain, split)
    index = np.random.default_rng([int(seed), _TASK_STREAM]).integers(len(candidates))
    return candidates[index].copy()


def check_task(domain: str, task) -> np.ndarray:
    """A float64 [task_dim] task of integer cells inside the grid (distinct key and door), or a ValueError
    naming ``task``."""
    task = np.asarray(task, np.float64)
    dim = TASK_DIM[domain]
    if task.shape != (dim,) or not np.isfinite(task).all() or (task != np.round(task)).any() \
            or (task < 0).any() or (task >= SIZE).any():
        raise ValueError(f"task: expected {dim} integer cell coordinates in [0, {SIZE}) for {domain}, got {task!r}")
    if domain == "dark_key_to_door" and (task[:2] == task[2:]).all():
        raise ValueError(f"task: the key and the door must be different cells, got {task!r}")
    return task.copy()


def optimal_actions(domain: str, tasks, cells, has_key=None) -> np.ndarray:
    """The action an agent that knows the task plays: straight to the goal (to the key first, then the
    door, for Key-to-Door), rows before columns; the no-op on the goal (Dark Room keeps collecting there).

    Args:
      domain: "dark_room" or "dark_key_to_door".
      tasks: float [N, task_dim].
      cells: int [N, 2], the agent's cells.
      has_key: bool [N] (Key-to-Door only): whether the key was collected.

    Returns:
      int64 [N] actions in 0..4.
    """
    tasks = np.asarray(tasks, np.float64).reshape(-1, TASK_DIM[domain]).astype(np.int64)
    cells = np.asarray(cells).reshape(-1, 2).astype(np.int64)
    target = tasks[:, :2]
    if domain == "dark_key_to_door":
        target = np.where(np.asarray(has_key, bool).reshape(-1, 1), tasks[:, 2:], tasks[:, :2])
    delta = target - cells
    return np.select([delta[:, 0] < 0, delta[:, 0] > 0, delta[:, 1] > 0, delta[:, 1] < 0], [1, 3, 2, 4], 0)


def optimal_actions_along(domain: str, cells, task) -> np.ndarray:
    """int64 [T]: the optimal action at each of an episode's cells under ``task`` (what DPT predicts):
    Key-to-Door heads for the door from the step the key was reached (the key is collected on arrival, so a
    step taken from the key's cell already holds it).

    Args:
      domain: "dark_room" or "dark_key_to_door".
      cells: float [T, 2], the cell each action was taken from, in order from the episode's start.
      task: float [task_dim].
    """
    cells = np.asarray(cells, np.float64)
    task = check_task(domain, task)
    has_key = np.zeros(len(cells), bool)
    if domain == "dark_key_to_door":
        has_key = np.logical_or.accumulate((cells == task[:2]).all(axis=1))
    return optimal_actions(domain, np.broadcast_to(task, (len(cells), task.size)), cells, has_key)


def best_return(domain: str, tasks) -> np.ndarray:
    """float64 [N]: the largest return of an episode on each task (Dark Room: 21 − the Manhattan distance
    of the goal from the centre, 20 for the centre; Key-to-Door: 2, as a start's key and door are reachable
    within 50 steps)."""
    tasks = np.asarray(tasks, np.float64).reshape(-1, TASK_DIM[domain])
    if domain == "dark_key_to_door":
        return np.full(len(tasks), 2.0)
    distance = np.abs(tasks - np.array(CENTRE)).sum(axis=1)
    return np.where(distance == 0, float(EPISODE_LENGTH[domain]), EPISODE_LENGTH[domain] + 1 - distance)


def rewards_along(domain: str, cells, task) -> np.ndarray:
    """The rewards of an episode's cells under ``task``: what relabels a stored episode for another task.

    Args:
      domain: "dark_room" or "dark_key_to_door".
      cells: float [T, 2], the cell after each step, in order, from the start of the episode (a row that
        is the reset cell, as ExoRL's row 0, is never the key, so it earns nothing on Key-to-Door).
      task: float [task_dim].

    Returns:
      float32 [T].
    """
    cells = np.asarray(cells, np.float64)
    task = check_task(domain, task)
    if domain == "dark_room":
        return (cells == task).all(axis=1).astype(np.float32)
    on_key, on_door = (cells == task[:2]).all(axis=1), (cells == task[2:]).all(axis=1)
    first_key = int(np.argmax(on_key)) if on_key.any() else len(cells)
    rewards = np.zeros(len(cells), np.float32)
    rewards[first_key:first_key + 1] = 1.0
    doors = np.flatnonzero(on_door[first_key + 1:])
    if doors.size:
        rewards[first_key + 1 + doors[0]] = 1.0
    return rewards


def action_spec() -> specs.DiscreteArray:
    return specs.DiscreteArray(NUM_ACTIONS, dtype=np.int32, name="action")


def observation_spec() -> specs.BoundedArray:
    return specs.BoundedArray((2,), np.int32, 0, SIZE - 1, name="observation")


class GridVector:
    """N grids of one family with tasks ``tasks`` [N, task_dim], stepped together.

    ``start_seeds`` [N] seed each grid's stream of start cells (Key-to-Door draws one at every reset);
    ``step`` applies the moves and returns the rewards; it knows nothing of episodes (callers count steps).
    """

    def __init__(self, domain: str, tasks, start_seeds):
        self.domain = domain
        self.tasks = np.stack([check_task(domain, t) for t in np.asarray(tasks, np.float64).reshape(
            -1, TASK_DIM[domain])])
        self._cells = self.tasks.astype(np.int64)
        n = len(self.tasks)
        self._rngs = [np.random.default_rng([int(s), _START_STREAM]) for s in np.asarray(start_seeds).reshape(n)]
        self.positions = np.tile(np.array(CENTRE, np.int64), (n, 1))
        self.has_key = np.zeros(n, bool)
        self.opened = np.zeros(n, bool)

    def reset(self, mask=None) -> None:
        mask = np.ones(len(self.tasks), bool) if mask is None else np.asarray(mask, bool)
        self.has_key[mask] = False
        self.opened[mask] = False
        for i in np.flatnonzero(mask):
            if self.domain == "dark_room":
                self.positions[i] = CENTRE
                continue
            while True:  # uniform over the cells, drawn again while it is the key
                cell = self._rngs[i].integers(0, SIZE, 2)
                if (cell != self._cells[i, :2]).any():
                    break
            self.positions[i] = cell

    def step(self, actions, mask=None) -> np.ndarray:
        """Moves the grids' agents (only ``mask``'s, when given); returns float32 [N] rewards (0 where not moved).

        Raises:
          ValueError: naming ``action`` when an action is not an integer in 0..4.
        """
        actions = np.asarray(actions)
        n = len(self.tasks)
        mask = np.ones(n, bool) if mask is None else np.asarray(mask, bool)
        moving = actions.reshape(n)[mask]
        if actions.dtype.kind not in "iu" and not (np.isfinite(moving).all() and (moving == np.round(moving)).all()):
            raise ValueError(f"action: expected integer actions in 0..{NUM_ACTIONS - 1}, got {actions!r}")
        moving = moving.astype(np.int64)
        if ((moving < 0) | (moving >= NUM_ACTIONS)).any():
            raise ValueError(f"action: expected integer actions in 0..{NUM_ACTIONS - 1}, got {actions!r}")
        self.positions[mask] = np.clip(self.positions[mask] + MOVES[moving], 0, SIZE - 1)
        rewards = np.zeros(n, np.float32)
        if self.domain == "dark_room":
            rewards[mask] = (self.positions[mask] == self._cells[mask]).all(axis=1)
            return rewards
        on_key = mask & (self.positions == self._cells[:, :2]).all(axis=1) & ~self.has_key
        on_door = mask & (self.positions == self._cells[:, 2:]).all(axis=1) & self.has_key & ~self.opened
        self.has_key |= on_key
        self.opened |= on_door
        rewards[on_key | on_door] = 1.0
        return rewards

    def observations(self) -> np.ndarray:
        """float32 [N, 2]: every agent's (row, column)."""
        return self.positions.astype(np.float32)

    def physics_states(self) -> np.ndarray:
        """float64 [N, 2]: every agent's (row, column); an episode's cells replay its rewards
        (``rewards_along``)."""
        return self.positions.astype(np.float64)


class GridEnv(CoreEnv):
    """One grid of a hidden-task family; a ``dm_env.Environment``.

    Args:
      domain: "dark_room" or "dark_key_to_door".
      split: "hidden" (train tasks) or "hidden_heldout" (held-out tasks): where seeds draw tasks from.
      seed: draws the task (``draw_task``) unless ``task`` is given, and seeds the start cells.
      task: an explicit task, float [task_dim]; it stays fixed even when the environment is reseeded.
    """

    def __init__(self, domain: str, split: str, seed: int, task=None):
        _check(domain, split)
        self._domain, self._split, self._pinned = domain, split, task is not None
        self._build(check_task(domain, task) if self._pinned else draw_task(domain, split, seed), seed)

    def _build(self, task, seed: int) -> None:
        self._start(GridVector(self._domain, task[None], [seed]), EPISODE_LENGTH[self._domain])

    def reseed(self, seed: int) -> None:
        """Draws a new task from ``seed`` (unless it was given) and restarts the start cells' stream."""
        task = self.task_parameter if self._pinned else draw_task(self._domain, self._split, seed)
        self._build(task, seed)

    def _action(self, action) -> np.ndarray:
        action = np.asarray(action)
        if action.shape not in ((), (1,)):
            raise ValueError(f"action: expected one integer action, got shape {action.shape}")
        return action.reshape(1)

    def _observation(self) -> np.ndarray:
        return self._core.positions[0].astype(np.int32)

    def observation_spec(self):
        return observation_spec()

    def action_spec(self):
        return action_spec()
