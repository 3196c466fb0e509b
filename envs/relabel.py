"""Physics states out of environments, and rewards recomputed from stored physics states.

ExoRL stores `physics` (dm_control `physics.get_state()`) per step and relabels rewards for any task of
the same domain: set each state and ask the task for its reward. Some dm_control rewards (walker,
cartpole) also include a control cost read from `physics.data.ctrl`, which is not part of the state:
pass the actions (the one that led to each state) to reproduce the online rewards exactly; without them
the control is zero, as in ExoRL's own relabelling.

Hidden-task families (`task_spec(name).hidden`) need the episode's task parameter (`task=`, what
`env.task_parameter` gave when it was collected, e.g. a maze target): the reward is that task's. The
pure-NumPy navigation tasks relabel from positions without a simulator.

Data collected with an action repeat ``r`` stores one state per agent step, after ``r`` environment steps,
and its reward is the sum over those steps. ``action_repeat=r`` reproduces it: each row's previous state
is set, its action applied for ``r`` environment steps, and the task's reward summed after each; the state
this reaches is checked against the stored one, so data made with another repeat is refused, not
relabelled wrongly. Row 0 (a reset state, nothing before it) keeps the single-state reward.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from envs import registry


def physics_state(env: Any) -> np.ndarray:
    """Returns a copy of the current physics state of an environment from `envs.make`.

    Args:
      env: a dm_control-based environment (anything with `.physics`), a gymnasium MuJoCo one
        (anything with `.gym_env`) or a NumPy task (anything with `.get_physics_state()`).

    Returns:
      float64 [physics_dim]: `physics.get_state()` for dm_control (qpos, qvel, act);
      qpos followed by qvel for gymnasium MuJoCo tasks; the position for point_nav.

    Raises:
      ValueError: naming `env` when it has no simulator state to read.
    """
    get_state = getattr(env, "get_physics_state", None)
    if callable(get_state):
        return np.array(get_state(), dtype=np.float64)
    physics = getattr(env, "physics", None)
    if physics is not None:
        return np.array(physics.get_state(), dtype=np.float64)
    gym_env = getattr(env, "gym_env", None)
    data = getattr(getattr(gym_env, "unwrapped", None), "data", None)
    if data is not None:
        return np.concatenate([data.qpos, data.qvel]).astype(np.float64)
    raise ValueError(f"env: {type(env).__name__} exposes neither `physics` nor a MuJoCo `gym_env`")


class Relabeler:
    """Recomputes a task's rewards from physics states; build once, call per episode.

    Args:
      name: a dm_control-based or NumPy task name (e.g. "walker_run", "point_mass_maze_reach_hidden",
        "point_nav_hidden").

    Raises:
      ValueError: naming `name` when it is unknown or a gymnasium task (their rewards depend on the
        transition, not on one state).
    """

    def __init__(self, name: str):
        spec = registry.task_spec(name)
        if spec.kind == registry.GYMNASIUM:
            raise ValueError(
                f"name: {spec.name!r} is a gymnasium task; its reward depends on the transition, "
                "so it cannot be relabelled from physics states"
            )
        self._spec = spec
        if spec.kind == registry.NUMPY:
            self._env = None
            return
        from envs import dm_control_tasks, wrappers

        self._env = dm_control_tasks.load(spec.name, 0)
        # Agent actions live in [-1, 1]; map them exactly as the environment from envs.make does.
        self._to_ctrl = wrappers.RescaleActions(self._env).to_env_action
        # One environment step is control_timestep / timestep simulator steps (10 for walker, 1 for the maze).
        self._substeps = int(round(self._env.control_timestep() / self._env.physics.timestep()))

    @property
    def name(self) -> str:
        return self._spec.name

    def __call__(self, physics_states, actions=None, *, task=None, action_repeat: int = 1) -> np.ndarray:
        """Rewards of the task at each physics state.

        Args:
          physics_states: float [T, physics_dim].
          actions: optional float [T, action_dim] in [-1, 1]; actions[t] is the action whose step
            ended in physics_states[t] (ExoRL's layout). Without it the control is zero.
          task: hidden-task families only, and required there: the task parameter (float
            [task_dim]) whose rewards to compute, or several (float [n, task_dim]) from one simulation.
          action_repeat: the environment steps each stored action was held for (see the module docstring);
            above 1 the actions are required and rows 1.. are re-simulated from the row before.

        Returns:
          float32 [T]; float32 [n, T] for n task parameters.

        Raises:
          ValueError: naming `physics_states`, `actions`, `task` or `action_repeat` when they are wrong,
            including states that re-simulating with `action_repeat` does not reach.
        """
        states = np.asarray(physics_states, dtype=np.float64)
        dim = self._spec.physics_dim
        if states.ndim != 2 or states.shape[1] != dim:
            raise ValueError(f"physics_states: expected shape [T, {dim}], got {states.shape}")
        if actions is not None:
            actions = np.asarray(actions, dtype=np.float64)
            want = (states.shape[0],) + (() if self._spec.discrete else (self._spec.action_dim,))
            if actions.shape != want:
                raise ValueError(f"actions: expected shape {list(want)}, got {list(actions.shape)}")
        single = True
        if self._spec.hidden:
            task = np.asarray(task, dtype=np.float64) if task is not None else None
            dim = self._spec.task_dim
            if (task is None or task.shape[-1:] != (dim,) or task.ndim not in (1, 2) or not task.size
                    or not np.isfinite(task).all()):
                raise ValueError(f"task: {self._spec.name!r} is a hidden-task family; pass its finite task "
                                 f"parameter of shape ({dim},), or several as [n, {dim}], got {task!r}")
            single = task.ndim == 1
        elif task is not None:
            raise ValueError(f"task: {self._spec.name!r} is not a hidden-task family; it takes no task parameter")
        if not isinstance(action_repeat, (int, np.integer)) or action_repeat < 1:
            raise ValueError(f"action_repeat: must be a positive integer, got {action_repeat!r}")
        if action_repeat > 1 and (actions is None or self._env is None):
            raise ValueError(f"action_repeat: relabelling {self._spec.name!r} with an action repeat of "
                             f"{action_repeat} re-simulates each step, so it needs "
                             + ("the actions" if self._env is not None else "a simulator (point_nav has none)"))
        tasks = None if task is None else task.reshape(-1, task.shape[-1])
        if self._env is None and self._spec.discrete:
            from envs import grid

            rewards = np.stack([grid.rewards_along(self._spec.domain, states, parameter) for parameter in tasks])
            return rewards[0] if single else rewards
        if self._env is None:
            from envs import point_nav

            rewards = np.stack([point_nav.rewards(states, parameter) for parameter in tasks])
            return rewards[0] if single else rewards
        physics = self._env.physics
        rewards = np.empty((1 if tasks is None else len(tasks), states.shape[0]), np.float32)
        for t, state in enumerate(states):
            if action_repeat > 1 and t > 0:
                rewards[:, t] = self._resimulate(states[t - 1], actions[t], action_repeat, state, t, tasks)
                continue
            with physics.reset_context():
                physics.set_state(state)
                if actions is not None:
                    physics.set_control(self._to_ctrl(actions[t]))
            rewards[:, t] = self._rewards_now(tasks)
        return rewards[0] if single else rewards

    def _rewards_now(self, tasks) -> np.ndarray:
        """float64 [n]: the reward of each task parameter (or of the one fixed task) at the current state."""
        if tasks is None:
            return np.array([self._env.task.get_reward(self._env.physics)], np.float64)
        out = np.empty((len(tasks),), np.float64)
        for j, parameter in enumerate(tasks):  # a hidden family's reward reads its target, not the simulation
            self._env.task.set_target(parameter)
            out[j] = self._env.task.get_reward(self._env.physics)
        return out

    # Stepping from a set state differs from the online run only by the solver's warm start.
    _RESIMULATION_TOLERANCE = 1e-6

    def _resimulate(self, previous, action, repeat: int, stored, row: int, tasks) -> np.ndarray:
        """The summed reward of each task (``_rewards_now``) over holding ``action`` for ``repeat`` steps from
        ``previous``; checks that this reaches ``stored``."""
        physics = self._env.physics
        with physics.reset_context():
            physics.set_state(previous)
        physics.set_control(self._to_ctrl(action))
        total = 0.0
        for _ in range(repeat):
            physics.step(self._substeps)
            total = total + self._rewards_now(tasks)
        reached = physics.get_state()
        error = float(np.max(np.abs(reached - stored)))
        if not error <= self._RESIMULATION_TOLERANCE * max(1.0, float(np.max(np.abs(stored)))):
            raise ValueError(f"action_repeat: holding row {row}'s action for {repeat} environment steps from row "
                             f"{row - 1}'s state does not reach the stored state (largest difference {error:.3g}); "
                             f"were these states collected with action_repeat={repeat}?")
        return total


@functools.lru_cache(maxsize=8)
def _cached_relabeler(name: str) -> Relabeler:
    # Building the task's simulator costs 0.1-0.2 s: a dataset relabels file by file with one task.
    return Relabeler(name)


def relabel_rewards(name: str, physics_states, actions=None, *, task=None, action_repeat: int = 1) -> np.ndarray:
    """Rewards of task `name` at each physics state, from a simulator kept per task (not thread-safe).

    Args:
      name: a dm_control-based or NumPy task name.
      physics_states: float [T, physics_dim].
      actions: optional float [T, action_dim] in [-1, 1], the actions that led to each state.
      task: the task parameter, required for (and only for) hidden-task families; [n, task_dim] for
        several at once.
      action_repeat: environment steps per stored action (rewards summed over them; needs the actions).

    Returns:
      float32 [T] (float32 [n, T] for n task parameters).
    """
    return _cached_relabeler(registry.canonical_name(name))(physics_states, actions, task=task,
                                                            action_repeat=action_repeat)
