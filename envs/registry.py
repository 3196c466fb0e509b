"""The table of tasks `envs.make` knows: names, sizes, episode lengths, and name resolution.

Names follow ExoRL (`walker_walk`, `jaco_reach_top_left`, ...) for the dm_control-based tasks and D4RL
(`halfcheetah`, `hopper`, `walker2d`) for the gymnasium MuJoCo tasks. A gymnasium task may carry its
version (`hopper-v5`); the bare name means v4, the closest to the gym v2 environments that produced the
D4RL data. Results must name the version, so `canonical_name("hopper") == "hopper-v4"`.

Nothing here imports a simulator.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Literal

DM_CONTROL = "dm_control"
GYMNASIUM = "gymnasium"


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a task is and the flat sizes its environment must have.

    Attributes:
      name: canonical name (`walker_walk`, `hopper-v4`).
      kind: "dm_control" (suite or the project's own dm_control tasks) or "gymnasium".
      domain: dm_control domain (`walker`, `jaco`, `point_mass_maze`) or gymnasium id (`Hopper-v4`).
      task: the dm_control task within the domain (`walk`, `reach_top_left`); "" for gymnasium.
      obs_dim: length of the flat float32 observation.
      action_dim: length of the action, each entry in [-1, 1].
      physics_dim: length of the physics state (dm_control `physics.get_state()`; qpos+qvel for
        gymnasium).
      episode_length: steps in an episode that is not terminated early (action_repeat=1).
    """

    name: str
    kind: Literal["dm_control", "gymnasium"]
    domain: str
    task: str
    obs_dim: int
    action_dim: int
    physics_dim: int
    episode_length: int


# (obs, action, physics) sizes from REFERENCE.md section 4.
_DMC_SIZES = {
    "walker": (24, 6, 18),
    "cheetah": (17, 6, 18),
    "quadruped": (78, 12, 57),
    "cartpole": (5, 1, 4),
    "point_mass_maze": (4, 2, 4),
    "jaco": (42, 9, 18),
}
_DMC_TASKS = {
    "walker": ("stand", "walk", "run"),
    "cheetah": ("run", "run_backward"),
    "quadruped": ("walk", "run"),
    "cartpole": ("balance", "balance_sparse", "swingup", "swingup_sparse"),
    "jaco": ("reach_top_left", "reach_top_right", "reach_bottom_left", "reach_bottom_right"),
    "point_mass_maze": (
        "reach_top_left",
        "reach_top_right",
        "reach_bottom_left",
        "reach_bottom_right",
    ),
}
_DMC_EPISODE_LENGTH = {"jaco": 250}

# D4RL name -> (gymnasium id stem, obs, action, physics = nq + nv).
_GYM_TASKS = {
    "halfcheetah": ("HalfCheetah", 17, 6, 18),
    "hopper": ("Hopper", 11, 3, 12),
    "walker2d": ("Walker2d", 17, 6, 18),
}
GYM_VERSIONS = ("v4", "v5")
DEFAULT_GYM_VERSION = "v4"


def _build_table() -> dict[str, TaskSpec]:
    table = {}
    for domain, tasks in _DMC_TASKS.items():
        obs, act, phys = _DMC_SIZES[domain]
        length = _DMC_EPISODE_LENGTH.get(domain, 1000)
        for task in tasks:
            name = f"{domain}_{task}"
            table[name] = TaskSpec(name, DM_CONTROL, domain, task, obs, act, phys, length)
    for short, (stem, obs, act, phys) in _GYM_TASKS.items():
        for version in GYM_VERSIONS:
            name = f"{short}-{version}"
            table[name] = TaskSpec(name, GYMNASIUM, f"{stem}-{version}", "", obs, act, phys, 1000)
    return table


_TABLE = _build_table()
_ALIASES = {short: f"{short}-{DEFAULT_GYM_VERSION}" for short in _GYM_TASKS}


def list_tasks() -> list[str]:
    """Returns the canonical names of every known task, dm_control-based first.

    Returns:
      Names such as "walker_walk", "jaco_reach_top_left", "hopper-v4", "hopper-v5". The bare
      gymnasium names ("hopper") are accepted too and mean the v4 version.
    """
    return list(_TABLE)


def canonical_name(name: str) -> str:
    """Returns the name results should report for `name` (adds the gymnasium version).

    Args:
      name: a task name as a user typed it, e.g. "hopper" or "walker_walk".

    Returns:
      "hopper-v4" for "hopper", the name itself for already canonical names.

    Raises:
      ValueError: naming `name` when the task is unknown, with the closest known names.
    """
    if not isinstance(name, str):
        raise ValueError(f"name: expected a task name string, got {name!r}")
    key = name.strip().lower()
    key = _ALIASES.get(key, key)
    if key in _TABLE:
        return key
    known = list(_TABLE) + list(_ALIASES)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"name: unknown task {name!r}.{hint} Known tasks: {', '.join(known)}.")


def task_spec(name: str) -> TaskSpec:
    """Returns the `TaskSpec` for a task name (bare gymnasium names mean v4).

    Args:
      name: a task name.

    Returns:
      The task's `TaskSpec`.

    Raises:
      ValueError: naming `name` when the task is unknown.
    """
    return _TABLE[canonical_name(name)]
