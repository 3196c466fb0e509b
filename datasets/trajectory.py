"""One episode as immutable NumPy arrays.

Alignment (shared by every reader and writer of this package): step ``t`` is the transition
``(observations[t], actions[t], rewards[t], next observation)``; ``observations[t]`` is the observation the
action was taken from. The observation reached after the last action is ``final_observation`` (optional,
because D4RL files without ``next_observations`` do not have it). ``physics[t]`` is the simulator state at
``observations[t]`` and ``final_physics`` the state after the last action, so the reward of step ``t`` is a
function of ``next_physics[t]`` (dm_control computes the reward after stepping the simulator).

Episodes of a hidden-task family also carry ``task``, the task parameter they were collected under (a maze
target, a navigation goal; for data tools such as relabelling and grouping chains by task, never an
input of the agent), and ``history``, the index of the run of episodes on one environment they belong to.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

__all__ = ["Trajectory"]

_FLOAT_FIELDS = {
    "observations": (np.float32, 2),
    "actions": (np.float32, 2),
    "rewards": (np.float32, 1),
    "physics": (np.float64, 2),
    "final_observation": (np.float32, 1),
    "final_physics": (np.float64, 1),
    "task": (np.float64, 1),
    "labels": (np.float32, 2),
}
_BOOL_FIELDS = ("terminals", "timeouts")


def _as_float(name: str, value, dtype, ndim: int, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiub":
        raise ValueError(f"{where}: {name} has dtype {array.dtype}; expected real numbers")
    if array.ndim != ndim:
        raise ValueError(f"{where}: {name} has shape {array.shape}; expected {ndim} dimensions")
    array = array.astype(dtype, copy=False)
    if not np.isfinite(array).all():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise ValueError(f"{where}: {name} has {bad} NaN or infinite values")
    return array


def _is_discrete(actions) -> bool:
    """Integer actions of one dimension are discrete choices; everything else is a continuous vector."""
    array = np.asarray(actions)
    return array.ndim == 1 and array.dtype.kind in "iu"


def _as_discrete(actions, where: str) -> np.ndarray:
    array = np.asarray(actions)
    if array.size and (array.min() < 0 or array.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{where}: actions are integer choices and must lie in [0, 2**31), got values from "
                         f"{array.min()} to {array.max()}")
    return array.astype(np.int32, copy=False)


def _as_bool(name: str, value, where: str) -> np.ndarray:
    array = np.asarray(value)
    if array.ndim != 1:
        raise ValueError(f"{where}: {name} has shape {array.shape}; expected [T]")
    if array.dtype == np.bool_:
        return array
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{where}: {name} has dtype {array.dtype}; expected bool")
    if not np.isin(array, (0, 1)).all():
        raise ValueError(f"{where}: {name} holds values other than 0 and 1")
    return array.astype(np.bool_)


def _read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


@dataclasses.dataclass(frozen=True, eq=False)
class Trajectory:
    """One episode of ``T >= 1`` transitions.

    The constructor validates and converts (no copy when dtypes already match) and stores read-only views:
    do not mutate the arrays you passed in afterwards.

    Attributes:
        observations: float32 [T, obs_dim], the observation each action was taken from.
        actions: float32 [T, act_dim] (continuous), or int32 [T] (discrete: one choice per step; given as
            any one-dimensional integer array).
        rewards: float32 [T], reward received after ``actions[t]``.
        terminals: bool [T], true only possibly at the last step: the episode reached a terminal state.
        timeouts: bool [T], true only possibly at the last step: the episode was cut by a time limit.
        physics: optional float64 [T, state_dim], simulator state at ``observations[t]``.
        final_observation: optional float32 [obs_dim], the observation after the last action.
        final_physics: optional float64 [state_dim], the state after the last action (needs ``physics``).
        source: where the episode came from (a file name), used in error messages.
        task: optional float64 [task_dim], the hidden task's parameter the episode was collected under.
        history: optional non-negative int, the history (one environment, one task, several episodes)
            the episode belongs to.
        labels: optional, shaped as ``actions``: the action a learner should predict at each step where it
            is not the one taken (DPT: the task's optimal action; ``datasets.optimal_labels``).
    """

    observations: np.ndarray
    actions: np.ndarray
    rewards: np.ndarray
    terminals: np.ndarray
    timeouts: np.ndarray
    physics: np.ndarray | None = None
    final_observation: np.ndarray | None = None
    final_physics: np.ndarray | None = None
    source: str = "<memory>"
    task: np.ndarray | None = None
    history: int | None = None
    labels: np.ndarray | None = None

    def __post_init__(self):
        where = f"Trajectory from {self.source}"
        if self.history is not None:
            history = self.history
            if isinstance(history, np.ndarray) and history.ndim == 0:
                history = history.item()
            if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 0:
                raise ValueError(f"{where}: history must be None or a non-negative int, got {self.history!r}")
            object.__setattr__(self, "history", int(history))
        values = {}
        for name, (dtype, ndim) in _FLOAT_FIELDS.items():
            value = getattr(self, name)
            if name in ("actions", "labels") and _is_discrete(value):
                values[name] = _as_discrete(value, where)
            elif value is not None:
                values[name] = _as_float(name, value, dtype, ndim, where)
        for name in _BOOL_FIELDS:
            values[name] = _as_bool(name, getattr(self, name), where)
        length = values["observations"].shape[0]
        if length < 1:
            raise ValueError(f"{where}: an episode needs at least one step, got observations of shape "
                             f"{values['observations'].shape}")
        if "labels" in values and values["labels"].shape != values["actions"].shape:
            raise ValueError(f"{where}: labels has shape {values['labels'].shape}, actions {values['actions'].shape}")
        for name in ("actions", "rewards", "terminals", "timeouts", "physics"):
            if name in values and values[name].shape[0] != length:
                raise ValueError(f"{where}: {name} has {values[name].shape[0]} rows but observations has "
                                 f"{length}")
        for name in _BOOL_FIELDS:
            if values[name][:-1].any():
                step = int(np.flatnonzero(values[name][:-1])[0])
                raise ValueError(f"{where}: {name} is set at step {step} before the last step {length - 1}; "
                                 "one trajectory is one episode")
        if "final_observation" in values and values["final_observation"].shape[0] != values[
                "observations"].shape[1]:
            raise ValueError(f"{where}: final_observation has shape {values['final_observation'].shape}, "
                             f"observations rows have {values['observations'].shape[1]} values")
        if "final_physics" in values:
            if "physics" not in values:
                raise ValueError(f"{where}: final_physics given without physics")
            if values["final_physics"].shape[0] != values["physics"].shape[1]:
                raise ValueError(f"{where}: final_physics has shape {values['final_physics'].shape}, "
                                 f"physics rows have {values['physics'].shape[1]} values")
        for name, value in values.items():
            object.__setattr__(self, name, _read_only(value))

    def __len__(self) -> int:
        return self.observations.shape[0]

    @property
    def observation_dim(self) -> int:
        return self.observations.shape[1]

    @property
    def discrete(self) -> bool:
        """Whether the actions are integer choices (int32 [T]) rather than vectors."""
        return self.actions.ndim == 1

    @property
    def action_dim(self) -> int:
        """The action vector's size; 1 for a discrete action (one integer)."""
        return 1 if self.discrete else self.actions.shape[1]

    @functools.cached_property
    def cumulative_rewards(self) -> np.ndarray:
        """float64 [T]: return accumulated through step t (inclusive), read-only."""
        return _read_only(np.cumsum(self.rewards, dtype=np.float64))

    @property
    def total_return(self) -> float:
        """Undiscounted return, summed in float64 left to right (equal to ``cumulative_rewards[-1]``)."""
        return float(self.cumulative_rewards[-1])

    def returns_to_go(self, target: float | None = None) -> np.ndarray:
        """Return still to collect before each step.

        Args:
            target: the return the episode should reach; ``None`` means its own total return.

        Returns:
            float32 [T]: ``rtg[t] = target - sum(rewards[:t])``; with ``target=None`` this is
            ``sum(rewards[t:])``.
        """
        cumulative = self.cumulative_rewards
        if target is None:
            target = cumulative[-1]
        before = np.concatenate([[0.0], cumulative[:-1]])
        return (float(target) - before).astype(np.float32)

    @property
    def next_observations(self) -> np.ndarray:
        """float32 [T, obs_dim]: the observation after each action (a new array; needs ``final_observation``)."""
        if self.final_observation is None:
            raise ValueError(f"Trajectory from {self.source} has no final_observation")
        return np.concatenate([self.observations[1:], self.final_observation[None]], axis=0)

    @property
    def next_physics(self) -> np.ndarray:
        """float64 [T, state_dim]: the state after each action (a new array; needs ``final_physics``)."""
        if self.final_physics is None:
            raise ValueError(f"Trajectory from {self.source} has no final_physics")
        return np.concatenate([self.physics[1:], self.final_physics[None]], axis=0)

    def replace(self, **changes) -> Trajectory:
        """A copy with some fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_optimal_labels(self, task_name: str) -> Trajectory:
        """A copy whose ``labels`` are the optimal action at every step, computed from the stored task (what
        DPT predicts): for the grids, straight to the goal (Key-to-Door: to the key until it was collected
        on the way to this step, then to the door).

        Raises:
            ValueError: naming the episode when it stores no task, or the family when it has no such rule.
        """
        import envs
        from envs import grid

        spec = envs.task_spec(task_name)
        if self.task is None:
            raise ValueError(f"Trajectory from {self.source}: it stores no hidden task, so its optimal actions are "
                             "unknown")
        if not spec.discrete:
            raise ValueError(f"optimal labels are defined for the grid families; {spec.name!r} is not one")
        return self.replace(labels=grid.optimal_actions_along(spec.domain, self.observations[:, :2], self.task))

    def with_task_observed(self) -> Trajectory:
        """A copy whose observations (and final observation) end with the hidden task parameter: the
        oracle baseline's view, what ``envs.TaskInObservation`` shows when acting.

        Raises:
            ValueError: naming the episode when it stores no task parameter.
        """
        if self.task is None:
            raise ValueError(f"Trajectory from {self.source}: it stores no hidden task parameter, so there is "
                             "no task to observe (the oracle needs a hidden-task family's data)")
        task = self.task.astype(np.float32)
        observations = np.concatenate([self.observations, np.broadcast_to(task, (len(self), task.size))], axis=1)
        final = None if self.final_observation is None else np.concatenate([self.final_observation, task])
        return self.replace(observations=observations, final_observation=final)
