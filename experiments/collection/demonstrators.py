"""Scripted, task-aware data sources for the hidden-task families, and a writer of multi-task datasets.

A *history* is a run of ``episodes_per_history`` episodes on ONE environment, so on one hidden task (the
task is drawn from the environment's seed, which is set once per history: ``history_seed``). Episode
``e`` of a dataset is episode ``e % episodes_per_history`` of history ``e // episodes_per_history``.

Two sources, each driven through the collector's policy protocol (``begin_episode(episode)``,
``action(observation)``, ``observe(...)``, ``state_dict``/``load_state_dict``/``replay``/``stats``):

- ``SystematicSearcher``: knows the family's goal set, never the true goal. Within a history each episode
  heads to a goal it has not tried yet (a random order per history) until an episode is rewarded
  (a reward >= ``envs.SUCCESS_REWARD``); from the next episode on it heads to the found goal: the goal
  nearest to where the episode's largest reward was last observed (the guess itself, or a goal the path
  crossed). It learns all this only from what ``observe`` hands it (rewards, observations). Gaussian
  action noise of a standard deviation drawn per history from U(0, noise_max), in units of the largest
  action.
- ``AnnealedExpert`` (ADε, Zisman et al. 2023): told the true task (``set_task``), it heads straight to
  it; each step takes a uniform random action instead with probability ε, and ε falls linearly along
  the history from ``eps_max`` (first episode) to 0 (last episode). With ``eps_max=0`` it is the oracle.

Every random draw is keyed by ``(seed, purpose, history[, episode in history])``, so a history is the
same however a run was split. :mod:`experiments.collection.histories` plays them and writes whole
datasets. NumPy only.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

import envs

__all__ = ["SystematicSearcher", "AnnealedExpert", "UniformRandom", "MazeExplorer", "Source", "history_seed",
           "make_source", "controller_for"]

_ORDER, _NOISE, _STEP, _ENV = range(4)  # random streams, one per purpose
WAYPOINT_TOLERANCE = 0.05  # maze: metres from a waypoint at which the next one is targeted


def history_seed(seed: int, history: int) -> int:
    """The environment seed of a history (and so its hidden task)."""
    return int(np.random.SeedSequence([seed, _ENV, history]).generate_state(1)[0] % (2**31))


class NavController:
    """point_nav: full-speed velocity straight at the goal (the observation is the position), N at once."""

    def begin(self, goals_n2) -> None:
        self._goals = np.asarray(goals_n2, np.float64).reshape(-1, 2).copy()

    def __call__(self, observations) -> np.ndarray:
        from envs import point_nav

        return np.clip((self._goals - observations[:, :2]) / point_nav.STEP_SIZE, -1.0, 1.0)


class MazeController:
    """point_mass_maze: out of the central box through its opening (+y), along the top, then to the target.

    A damped proportional force towards the current waypoint; the next waypoint is taken within
    ``WAYPOINT_TOLERANCE`` of the current one. Reaches every target in about 170 (top) or 400 (bottom)
    of the 1000 steps.
    """

    GAIN, DAMPING = 50.0, 5.0

    def begin(self, goals_n2) -> None:
        goals = np.asarray(goals_n2, np.float64).reshape(-1, 2)
        waypoints = np.empty((goals.shape[0], 3, 2))
        waypoints[:, 0] = (0.0, 0.2)  # the box's opening
        waypoints[:, 1, 0], waypoints[:, 1, 1] = goals[:, 0], 0.2  # above the target
        waypoints[:, 2] = goals
        top = goals[:, 1] > 0
        waypoints[top, 1] = goals[top]  # a top target is on the way already
        self._waypoints, self._next = waypoints, np.zeros(goals.shape[0], np.int64)

    def begin_path(self, waypoints_nk2) -> None:
        """Follows the given waypoints [N, k, 2] instead (the last one held), e.g. a corridor path."""
        self._waypoints = np.asarray(waypoints_nk2, np.float64).copy()
        self._next = np.zeros(self._waypoints.shape[0], np.int64)

    def __call__(self, observations) -> np.ndarray:
        position, velocity = observations[:, :2], observations[:, 2:4]
        rows = np.arange(position.shape[0])
        last = self._waypoints.shape[1] - 1
        for _ in range(last):  # at most all but the first waypoint can be passed in one step
            close = np.linalg.norm(self._waypoints[rows, self._next] - position, axis=1) < WAYPOINT_TOLERANCE
            self._next = np.where(close & (self._next < last), self._next + 1, self._next)
        target = self._waypoints[rows, self._next]
        return np.clip(self.GAIN * (target - position) - self.DAMPING * velocity, -1.0, 1.0)


def controller_for(task: str):
    """The goal-reaching controller of a hidden-task family (``point_nav_*`` or the hidden maze)."""
    spec = envs.task_spec(task)
    if not spec.hidden:
        raise ValueError(f"task: {spec.name!r} is not a hidden-task family")
    return MazeController() if spec.domain == "point_mass_maze" else NavController()


class _Demonstrator:
    """A demonstrator of N histories played in lockstep; the collector's protocol is the case N = 1.

    Vectorised use (``run_histories``): ``begin_episodes(histories, index)``, then per step
    ``actions(observations [N, obs])`` and ``observe_steps(rewards [N], next_observations [N, obs])``.
    Protocol use (one environment): ``begin_episode(episode)``, ``action(observation)``, ``observe(...)``. Per (history, episode) the random
    numbers of the whole episode are drawn at its start, so both uses give the same actions.
    """

    def __init__(self, task: str, seed: int, episodes_per_history: int):
        if episodes_per_history < 1:
            raise ValueError(f"episodes_per_history: must be positive, got {episodes_per_history}")
        spec = envs.task_spec(task)
        self._controller = controller_for(task)
        self._action_dim, self._max_steps = spec.action_dim, spec.episode_length
        self._seed, self._per_history = int(seed), int(episodes_per_history)
        self.histories = np.zeros((0,), np.int64)
        self.index = -1  # episode within the current histories

    # Vectorised interface.
    def begin_episodes(self, histories, index: int) -> None:
        """Starts episode ``index`` of each history in ``histories`` (new histories when ``index == 0``)."""
        histories = np.asarray(histories, np.int64).reshape(-1)
        if index == 0:
            self.histories = histories.copy()
            self._begin_histories()
        elif not (np.array_equal(histories, self.histories) and index == self.index + 1):
            raise ValueError(f"episode: episode {index} of histories {histories[:4].tolist()}... does not follow "
                             f"episode {self.index} of histories {self.histories[:4].tolist()}...; replay() the "
                             "episodes already played first")
        self.index, self._t = int(index), 0
        self._begin_episodes([np.random.default_rng([self._seed, _STEP, int(h), self.index]) for h in histories])

    def actions(self, observations) -> np.ndarray:
        """float32 [N, act_dim] in [-1, 1] for float [N, obs_dim] observations."""
        if self._t >= self._max_steps:
            raise ValueError(f"observation: more than {self._max_steps} steps in one episode")
        actions = self._actions(np.asarray(observations, np.float64))
        self._t += 1
        return np.clip(actions, -1.0, 1.0).astype(np.float32)

    def observe_steps(self, rewards, next_observations) -> None:
        """What the last actions led to: float [N] rewards and float [N, obs_dim] observations."""

    def _begin_histories(self) -> None:
        pass

    # The collector's protocol (one environment).
    def begin_episode(self, episode: int) -> None:
        history, index = divmod(int(episode), self._per_history)
        self.begin_episodes([history], index)

    def action(self, observation: np.ndarray) -> np.ndarray:
        return self.actions(np.asarray(observation)[None])[0]

    def observe(self, observation, action, reward, discount, next_observation) -> None:
        self.observe_steps(np.array([reward], np.float64), np.asarray(next_observation, np.float64)[None])

    def state_dict(self):
        return None  # everything follows from the seed and the episodes on disk (replay)

    def load_state_dict(self, state) -> None:
        pass

    def replay(self, trajectories) -> None:
        """Catches up with the episodes already played (item e of the list is episode e of the run)."""
        for episode, trajectory in enumerate(trajectories):
            if episode % self._per_history == 0 and hasattr(self, "set_task") and trajectory.task is not None:
                self.set_task(trajectory.task)  # a task-aware source was told each history's task
            self.begin_episode(episode)
            for reward, next_observation in zip(trajectory.rewards, trajectory.next_observations):
                self.observe_steps(np.array([reward], np.float64), np.asarray(next_observation, np.float64)[None])


class SystematicSearcher(_Demonstrator):
    """Tries the family's goals one per episode, in a random order per history, until one is rewarded.

    Args:
        task: the hidden-task family, e.g. "point_nav_hidden"; its goal set (``envs.task_set``) is the
            only task knowledge the searcher has.
        seed: the run's seed.
        episodes_per_history: episodes of one history.
        noise_max: per history the action noise's standard deviation is drawn from U(0, noise_max).
    """

    def __init__(self, task: str, seed: int, episodes_per_history: int, noise_max: float = 0.15):
        super().__init__(task, seed, episodes_per_history)
        if noise_max < 0:
            raise ValueError(f"noise_max: must be non-negative, got {noise_max}")
        self.goals = envs.task_set(task)
        self._noise_max = float(noise_max)

    def _begin_histories(self) -> None:
        self.order = np.stack([np.random.default_rng([self._seed, _ORDER, int(h)]).permutation(len(self.goals))
                               for h in self.histories])
        self.noise = np.array([np.random.default_rng([self._seed, _NOISE, int(h)]).uniform(0, self._noise_max)
                               for h in self.histories])
        self.found = np.full(len(self.histories), -1)  # index into goals of the found goal, -1: none yet
        self._best = None

    def _end_episodes(self) -> None:
        """After an episode: a history whose episode was rewarded has found the goal nearest to where it was."""
        if self._best is None:
            return
        reward, position = self._best
        new = (self.found < 0) & (reward >= envs.SUCCESS_REWARD)
        nearest = np.argmin(np.linalg.norm(self.goals[None] - position[:, None], axis=-1), axis=1)
        self.found = np.where(new, nearest, self.found)

    def _begin_episodes(self, rngs) -> None:
        if self.index > 0:
            self._end_episodes()
        # Until found, every earlier episode of the history was unrewarded: episode i tries order[:, i].
        self.guess = np.where(self.found >= 0, self.found, self.order[:, self.index % len(self.goals)])
        self._controller.begin(self.goals[self.guess])
        self._noise_steps = np.stack([rng.normal(0.0, 1.0, (self._max_steps, self._action_dim)) for rng in rngs])
        n = len(self.histories)
        self._best = (np.full(n, -np.inf), np.zeros((n, 2)))

    def _actions(self, observations) -> np.ndarray:
        return self._controller(observations) + self.noise[:, None] * self._noise_steps[:, self._t]

    def observe_steps(self, rewards, next_observations) -> None:
        # The last step with the episode's largest reward: on the way to another goal the point may
        # cross the true goal's reward (a maze path to a bottom target passes the top one).
        reward, position = self._best
        better = np.asarray(rewards, np.float64) >= reward
        self._best = (np.where(better, rewards, reward), np.where(better[:, None], next_observations[:, :2], position))

    def stats(self) -> dict[str, float]:
        return {"noise": float(self.noise[0]), "guess": float(self.guess[0]), "found": float(self.found[0] >= 0)}


class AnnealedExpert(_Demonstrator):
    """ADε: the true task's controller, with uniform random actions at a rate falling along the history.

    Episode ``i`` of a history of ``n`` takes a uniform random action at each step with probability
    ``eps_max * (1 - i / (n - 1))`` (``eps_max`` for ``n = 1``). It is task-aware: call
    ``set_tasks(task_parameters [N, task_dim])`` (one environment: ``set_task(env.task_parameter)``) at
    the start of every history, before its first episode.

    Args:
        task: the hidden-task family.
        seed: the run's seed.
        episodes_per_history: episodes of one history.
        eps_max: the first episode's random-action rate, in [0, 1]; 0 is the noiseless oracle.
    """

    def __init__(self, task: str, seed: int, episodes_per_history: int, eps_max: float = 1.0):
        super().__init__(task, seed, episodes_per_history)
        if not 0 <= eps_max <= 1:
            raise ValueError(f"eps_max: must be in [0, 1], got {eps_max}")
        self._eps_max = float(eps_max)
        self._tasks = None

    def set_tasks(self, task_parameters) -> None:
        self._tasks = np.asarray(task_parameters, np.float64).reshape(-1, 2).copy()

    def set_task(self, task_parameter) -> None:
        self.set_tasks(np.asarray(task_parameter)[None])

    def _begin_episodes(self, rngs) -> None:
        if self._tasks is None or len(self._tasks) != len(self.histories):
            raise ValueError("task: AnnealedExpert is task-aware; call set_task(env.task_parameter) (or set_tasks "
                             "with one row per history) before each history")
        self.epsilon = self._eps_max * (1.0 - self.index / max(self._per_history - 1, 1))
        self._controller.begin(self._tasks)
        draws = [(rng.random(self._max_steps), rng.uniform(-1.0, 1.0, (self._max_steps, self._action_dim)))
                 for rng in rngs]
        self._explore = np.stack([d[0] for d in draws]) < self.epsilon
        self._random_actions = np.stack([d[1] for d in draws])

    def _actions(self, observations) -> np.ndarray:
        expert = self._controller(observations)  # always called: the maze controller keeps its waypoints
        return np.where(self._explore[:, self._t, None], self._random_actions[:, self._t], expert)

    def stats(self) -> dict[str, float]:
        return {"epsilon": self.epsilon}


class UniformRandom(_Demonstrator):
    """Uniform random actions in [-1, 1]^act_dim: the floor of the family."""

    def _begin_episodes(self, rngs) -> None:
        self._random_actions = np.stack([rng.uniform(-1.0, 1.0, (self._max_steps, self._action_dim))
                                         for rng in rngs])

    def _actions(self, observations) -> np.ndarray:
        return self._random_actions[:, self._t]

    def stats(self) -> dict[str, float]:
        return {}


class MazeExplorer(_Demonstrator):
    """Task-agnostic maze exploration: each episode drives to its own random place in the corridor.

    The destination is uniform over the corridor around the central box (``CORRIDOR``, away from the
    walls); the path leaves the box through its opening, follows the corridor round the side nearer the
    destination and stops there. Paths pass the corridor's corners, where
    the targets sit, so relabelling its episodes for every target (``envs.relabel_rewards`` with several
    task parameters) gives each target a spread of returns: episodes that end at it, pass it, or miss
    it. It knows the maze's layout, never a target; per-history Gaussian action noise as the searcher's.
    """

    CORRIDOR = (0.14, 0.27)  # |x| or |y| within these bounds (metres): inside the corridor, off its walls

    def __init__(self, task: str, seed: int, episodes_per_history: int, noise_max: float = 0.15):
        super().__init__(task, seed, episodes_per_history)
        if envs.task_spec(task).domain != "point_mass_maze":
            raise ValueError(f"task: the explorer drives the maze's corridor; {task!r} is not the maze")
        if noise_max < 0:
            raise ValueError(f"noise_max: must be non-negative, got {noise_max}")
        self._noise_max = float(noise_max)

    def _begin_histories(self) -> None:
        self.noise = np.array([np.random.default_rng([self._seed, _NOISE, int(h)]).uniform(0, self._noise_max)
                               for h in self.histories])

    @classmethod
    def draw_destination(cls, rng) -> np.ndarray:
        inner, outer = cls.CORRIDOR
        while True:
            point = rng.uniform(-outer, outer, 2)
            if np.max(np.abs(point)) >= inner:
                return point

    @staticmethod
    def corridor_path(destination, side: float) -> np.ndarray:
        """float64 [4, 2]: the box's opening, then along the corridor to ``destination``."""
        x, y = destination
        opening, corner = (0.0, 0.2), (side * 0.2, 0.2)
        if y >= 0.11:  # the top corridor: straight along it
            return np.array([opening, destination, destination, destination])
        if abs(x) >= 0.11:  # a side corridor: round the top corner of its side
            corner = (np.sign(x) * 0.2, 0.2)
            return np.array([opening, corner, destination, destination])
        return np.array([opening, corner, (side * 0.2, y), destination])  # under the box

    def _begin_episodes(self, rngs) -> None:
        paths, noise = [], []
        for rng in rngs:
            destination = self.draw_destination(rng)
            paths.append(self.corridor_path(destination, 1.0 if destination[0] >= 0 else -1.0))
            noise.append(rng.normal(0.0, 1.0, (self._max_steps, self._action_dim)))
        self.destinations = np.stack([path[-1] for path in paths])
        self._controller.begin_path(np.stack(paths))
        self._noise_steps = np.stack(noise)

    def _actions(self, observations) -> np.ndarray:
        return self._controller(observations) + self.noise[:, None] * self._noise_steps[:, self._t]

    def stats(self) -> dict[str, float]:
        return {"noise": float(self.noise[0]), "destination_x": float(self.destinations[0, 0]),
                "destination_y": float(self.destinations[0, 1])}


Source = Literal["searcher", "ad_eps", "oracle", "random", "explorer"]


def make_source(source: Source, task: str, seed: int, episodes_per_history: int, *, noise_max: float = 0.15,
                eps_max: float = 1.0):
    """The demonstrator named ``source`` ("oracle" is ADε with ``eps_max=0``)."""
    if source == "searcher":
        return SystematicSearcher(task, seed, episodes_per_history, noise_max)
    if source == "ad_eps":
        return AnnealedExpert(task, seed, episodes_per_history, eps_max)
    if source == "oracle":
        return AnnealedExpert(task, seed, episodes_per_history, 0.0)
    if source == "random":
        return UniformRandom(task, seed, episodes_per_history)
    if source == "explorer":
        return MazeExplorer(task, seed, episodes_per_history, noise_max)
    raise ValueError(f"source: expected 'searcher', 'ad_eps', 'oracle', 'random' or 'explorer', got {source!r}")
