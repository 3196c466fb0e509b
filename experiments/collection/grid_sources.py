"""Learning histories on the hidden-task grids (Dark Room, Key-to-Door), N histories played as arrays.

A history is ``episodes_per_history`` episodes on one grid, so on one hidden task (drawn from
``demonstrators.history_seed(seed, h)``, as every other family's). Four sources, each an object with
``begin_history()``, ``begin_episode(index)``, ``actions(cells [N, 2]) -> int [N]`` and ``observe(rewards [N],
cells [N, 2])``, all vectorised over the N histories:

- ``searcher`` (task-agnostic, the grid version of the project's systematic searcher): walks to the
  nearest cell it has not visited in this history (ties in a random order per history) until a reward
  reveals the goal; from then on it goes straight to it (Key-to-Door: it searches the key, then, holding it,
  the door; once both are known it goes key then door). ``noise`` of its actions are uniform random.
- ``ad_eps`` (ADε): the optimal action (``envs.grid.optimal_actions``, told the task) with probability
  1 − ε, a uniform random one with probability ε; ε falls linearly from 1 at the first episode to
  ``eps_min`` at 90% of the history and stays there. ``eps_min`` sets the best policy in the data.
- ``q_learning`` (Algorithm Distillation's recipe with a learner that runs here): tabular Q-learning from
  zero values per history, on the state (cell, key held), ε-greedy with ε falling from 1 to 0.05 over the
  history's first half; its episodes are the learning history, in order.
- ``random``: uniform random actions (the floor).

Every random draw is keyed by ``(seed, purpose, history)``, so a history is the same however a run was
split into chunks. NumPy only.
"""

from __future__ import annotations

import numpy as np

import datasets
from envs import grid, registry

SOURCES = ("searcher", "ad_eps", "q_learning", "random", "oracle")
_ACT, _TIE = 11, 12  # random streams
CELLS = grid.SIZE * grid.SIZE


class _Source:
    def __init__(self, domain: str, tasks, histories, seed: int, episodes_per_history: int):
        self.domain, self.tasks = domain, np.asarray(tasks, np.float64)
        self.n, self.per_history = len(self.tasks), int(episodes_per_history)
        self.rngs = [np.random.default_rng([int(seed), _ACT, int(h)]) for h in histories]
        self.has_key = np.zeros(self.n, bool)

    def begin_episode(self, index: int) -> None:
        self.index = index
        self.has_key[:] = False

    def _uniform(self) -> np.ndarray:
        return np.array([rng.integers(grid.NUM_ACTIONS) for rng in self.rngs], np.int64)

    def _explore(self, rate) -> np.ndarray:
        """bool [N]: which histories take a uniform random action this step (probability ``rate``)."""
        return np.array([rng.random() for rng in self.rngs]) < rate

    def observe(self, rewards, cells) -> None:
        if self.domain == "dark_key_to_door":
            self.has_key |= (np.asarray(rewards) > 0) & ~self.has_key


class RandomSource(_Source):
    def actions(self, cells) -> np.ndarray:
        return self._uniform()


class AnnealedExpert(_Source):
    """ADε; ``eps_min=0`` with ``anneal=False`` is the oracle (always optimal)."""

    def __init__(self, *args, eps_min: float = 0.0, anneal: bool = True):
        super().__init__(*args)
        self.eps_min, self.anneal = float(eps_min), anneal

    def begin_episode(self, index: int) -> None:
        super().begin_episode(index)
        progress = min(index / max(0.9 * (self.per_history - 1), 1e-9), 1.0)
        self.epsilon = 1.0 + (self.eps_min - 1.0) * progress if self.anneal else self.eps_min

    def actions(self, cells) -> np.ndarray:
        best = grid.optimal_actions(self.domain, self.tasks, cells, self.has_key)
        return np.where(self._explore(self.epsilon), self._uniform(), best)


class Searcher(_Source):
    """Nearest unvisited cell until rewarded, then straight to what the rewards revealed."""

    def __init__(self, *args, noise: float = 0.1):
        super().__init__(*args)
        self.noise = float(noise)
        self.tie = np.stack([rng.permutation(CELLS) for rng in self.rngs]) * 1e-3  # tie order per history
        self.visited = np.zeros((self.n, 2, CELLS), bool)  # [without key, holding key] cells visited
        self.found = np.full((self.n, 2, 2), -1, np.int64)  # (goal or key, door) cells, -1: unknown

    def _phase(self) -> np.ndarray:
        """int [N]: what each history searches for: 0 the goal (or the key), 1 the door (the key is held)."""
        return self.has_key.astype(np.int64)  # always False on Dark Room

    def actions(self, cells) -> np.ndarray:
        cells = np.asarray(cells).astype(np.int64)
        phase = self._phase()
        index = cells[:, 0] * grid.SIZE + cells[:, 1]
        self.visited[np.arange(self.n), phase, index] = True
        coords = np.stack(np.divmod(np.arange(CELLS), grid.SIZE), axis=1)
        distance = np.abs(coords[None] - cells[:, None]).sum(-1) + self.tie
        distance = np.where(self.visited[np.arange(self.n), phase], np.inf, distance)
        target = coords[np.argmin(distance, axis=1)]
        known = self.found[np.arange(self.n), phase]
        target = np.where((known >= 0).all(axis=1, keepdims=True), known, target)
        task = np.concatenate([target, target], axis=1) if self.domain == "dark_key_to_door" else target
        best = grid.optimal_actions(self.domain, task, cells, np.zeros(self.n, bool))
        return np.where(self._explore(self.noise), self._uniform(), best)

    def observe(self, rewards, cells) -> None:
        rewarded = np.asarray(rewards) > 0
        phase = self._phase()
        rows = np.flatnonzero(rewarded)
        self.found[rows, phase[rows]] = np.asarray(cells).astype(np.int64)[rows]
        super().observe(rewards, cells)


class QLearner(_Source):
    """Tabular Q-learning per history on (cell, key held): an RL learner's own history of episodes."""

    def __init__(self, *args, learning_rate: float = 0.5, gamma: float = 0.9, eps_end: float = 0.05):
        super().__init__(*args)
        self.q = np.zeros((self.n, 2 * CELLS, grid.NUM_ACTIONS))
        self.learning_rate, self.gamma, self.eps_end = learning_rate, gamma, eps_end

    def begin_episode(self, index: int) -> None:
        super().begin_episode(index)
        progress = min(index / max(0.5 * (self.per_history - 1), 1e-9), 1.0)
        self.epsilon = 1.0 + (self.eps_end - 1.0) * progress

    def _state(self, cells) -> np.ndarray:
        cells = np.asarray(cells).astype(np.int64)
        return self.has_key * CELLS + cells[:, 0] * grid.SIZE + cells[:, 1]

    def actions(self, cells) -> np.ndarray:
        self._from = self._state(cells)
        values = self.q[np.arange(self.n), self._from]
        ties = np.array([rng.random(grid.NUM_ACTIONS) for rng in self.rngs]) * 1e-9
        self._taken = np.where(self._explore(self.epsilon), self._uniform(), np.argmax(values + ties, axis=1))
        return self._taken

    def observe(self, rewards, cells) -> None:
        super().observe(rewards, cells)
        rows = np.arange(self.n)
        target = np.asarray(rewards, np.float64) + self.gamma * self.q[rows, self._state(cells)].max(axis=1)
        current = self.q[rows, self._from, self._taken]
        self.q[rows, self._from, self._taken] = current + self.learning_rate * (target - current)


def make_grid_source(source: str, domain: str, tasks, histories, seed: int, episodes_per_history: int, *,
                     noise: float = 0.1, eps_min: float = 0.0):
    """The source named ``source`` for N histories with ``tasks`` [N, task_dim]."""
    args = (domain, tasks, histories, seed, episodes_per_history)
    if source == "searcher":
        return Searcher(*args, noise=noise)
    if source == "ad_eps":
        return AnnealedExpert(*args, eps_min=eps_min)
    if source == "oracle":
        return AnnealedExpert(*args, eps_min=0.0, anneal=False)
    if source == "q_learning":
        return QLearner(*args)
    if source == "random":
        return RandomSource(*args)
    raise ValueError(f"source: expected one of {list(SOURCES)} for a grid, got {source!r}")


def play_grid_histories(task: str, source: str, histories, episodes_per_history: int, seed: int, *,
                        noise: float = 0.1, eps_min: float = 0.0) -> list[list[datasets.Trajectory]]:
    """Plays histories ``histories`` of ``source`` on a grid family, all at once as arrays.

    Returns:
        One list of ``episodes_per_history`` trajectories per history (integer actions, the cells as
        physics states, ``task`` and ``history`` set), in the order of ``histories``.
    """
    from dm_env import specs

    from envs.batch import ArrayBatch
    from experiments.collection.demonstrators import history_seed

    spec = registry.task_spec(task)
    if not spec.discrete:
        raise ValueError(f"task: {spec.name!r} is not a grid family")
    histories = np.asarray(histories, np.int64)
    seeds = [history_seed(seed, int(h)) for h in histories]  # as envs.make(task, seed=...) of each history
    tasks = np.stack([grid.draw_task(spec.domain, spec.task, s) for s in seeds])
    batch = ArrayBatch(spec, grid.GridVector(spec.domain, tasks, seeds),
                       specs.Array((2,), np.float32, name="observation"), grid.action_spec())
    policy = make_grid_source(source, spec.domain, tasks, histories, seed, episodes_per_history, noise=noise,
                              eps_min=eps_min)
    steps, n = batch.episode_length, len(histories)
    out = [[] for _ in range(n)]
    for index in range(episodes_per_history):
        policy.begin_episode(index)
        observations = np.empty((steps + 1, n, 2), np.float32)
        actions = np.empty((steps, n), np.int64)
        rewards = np.empty((steps, n), np.float32)
        observations[0] = batch.reset()
        for t in range(steps):
            actions[t] = policy.actions(observations[t])
            step = batch.step(actions[t])
            observations[t + 1], rewards[t] = step.observation, step.reward
            policy.observe(step.reward, step.observation)
        for row, history in enumerate(histories):
            cells = observations[:, row].astype(np.float64)
            last = np.arange(steps) == steps - 1
            out[row].append(datasets.Trajectory(
                observations=observations[:-1, row], actions=actions[:, row], rewards=rewards[:, row],
                terminals=np.zeros(steps, bool), timeouts=last, physics=cells[:-1],
                final_observation=observations[-1, row], final_physics=cells[-1],
                source=f"history {history} episode {index}", task=tasks[row], history=int(history)))
    return out
