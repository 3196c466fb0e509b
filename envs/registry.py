"""The table of tasks `envs.make` knows: names, sizes, episode lengths, and name resolution.

Names follow ExoRL (`walker_walk`, `jaco_reach_top_left`, ...) for the dm_control-based tasks and D4RL
(`halfcheetah`, `hopper`, `walker2d`) for the gymnasium MuJoCo tasks. A gymnasium task may carry its
version (`hopper-v5`); the bare name means v4, the closest to the gym v2 environments that produced the
D4RL data. Results must name the version, so `canonical_name("hopper") == "hopper-v4"`. Any other
gymnasium MuJoCo id (`Ant-v4`, `InvertedPendulum-v4`) is a task too, its `TaskSpec` read from the
environment's own spaces the first time it is named.

Nothing here imports a simulator, except to read the spaces of a gymnasium id the table does not hold.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import warnings
from typing import Literal

DM_CONTROL = "dm_control"
GYMNASIUM = "gymnasium"
NUMPY = "numpy"
# Hidden-task families: a step reward of at least this means the hidden task was found (an episode with one
# such step is a success). point_nav's rewards are 0 or 1; the maze's tolerance reward is positive, if tiny,
# almost everywhere, and at least 0.5 only near the target.
SUCCESS_REWARD = 0.5
# Families whose success is a return, not one rewarded step: Key-to-Door succeeds when the door opens.
SUCCESS_RETURN = {"dark_key_to_door": 2.0}


def successes(name: str, best_step_rewards, returns):
    """bool [...]: which episodes succeeded: a step rewarded at least ``SUCCESS_REWARD``, or for the
    families of ``SUCCESS_RETURN`` a return of at least theirs (the key alone is not success)."""
    import numpy as np

    threshold = SUCCESS_RETURN.get(task_spec(name).domain)
    if threshold is not None:
        return np.asarray(returns) >= threshold
    return np.asarray(best_step_rewards) >= SUCCESS_REWARD


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a task is and the flat sizes its environment must have.

    Attributes:
      name: canonical name (`walker_walk`, `hopper-v4`).
      kind: "dm_control" (suite or the project's own dm_control tasks), "gymnasium", or "numpy" (the
        project's pure-NumPy tasks, `envs.point_nav`).
      domain: dm_control or NumPy domain (`walker`, `point_mass_maze`, `point_nav`) or gymnasium id
        (`Hopper-v4`).
      task: the task within the domain (`walk`, `reach_top_left`, `hidden`); "" for gymnasium.
      obs_dim: length of the flat float32 observation.
      action_dim: length of the action, each entry in [-1, 1]; 1 for a discrete action (one integer).
      physics_dim: length of the physics state (dm_control `physics.get_state()`; qpos+qvel for
        gymnasium).
      episode_length: steps in an episode that is not terminated early (action_repeat=1).
      task_dim: length of the hidden task parameter (`env.task_parameter`); 0 for tasks whose
        observation shows everything.
      num_actions: a discrete task's number of actions (its action is one integer in 0..num_actions-1,
        a `dm_env.specs.DiscreteArray`); 0 for continuous actions.
    """

    name: str
    kind: Literal["dm_control", "gymnasium", "numpy"]
    domain: str
    task: str
    obs_dim: int
    action_dim: int
    physics_dim: int
    episode_length: int
    task_dim: int = 0
    num_actions: int = 0

    @property
    def discrete(self) -> bool:
        """Whether the action is one integer of `num_actions` choices (else a vector in [-1, 1])."""
        return self.num_actions > 0

    @property
    def hidden(self) -> bool:
        """Whether the task is drawn from the seed and hidden from the observation."""
        return self.task_dim > 0

    @property
    def data_format(self) -> Literal["exorl", "d4rl"]:
        """How collected episodes are written: ExoRL files (per-step physics states) or D4RL HDF5."""
        return "d4rl" if self.kind == GYMNASIUM else "exorl"


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
        "reach_hidden",
    ),
}
_DMC_EPISODE_LENGTH = {"jaco": 250}
_DMC_TASK_DIM = {("point_mass_maze", "reach_hidden"): 2}
# NumPy tasks: domain -> (tasks, obs, action, physics, episode length, task_dim, num_actions); see
# envs/point_nav.py and envs/grid.py.
_NUMPY_TASKS = {"point_nav": (("hidden", "hidden_heldout"), 2, 2, 2, 20, 2, 0),
                "dark_room": (("hidden", "hidden_heldout"), 2, 1, 2, 20, 2, 5),
                "dark_key_to_door": (("hidden", "hidden_heldout"), 2, 1, 2, 50, 4, 5)}

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
            table[name] = TaskSpec(name, DM_CONTROL, domain, task, obs, act, phys, length,
                                   _DMC_TASK_DIM.get((domain, task), 0))
    for domain, (tasks, obs, act, phys, length, task_dim, num_actions) in _NUMPY_TASKS.items():
        for task in tasks:
            name = f"{domain}_{task}"
            table[name] = TaskSpec(name, NUMPY, domain, task, obs, act, phys, length, task_dim, num_actions)
    for short, (stem, obs, act, phys) in _GYM_TASKS.items():
        for version in GYM_VERSIONS:
            name = f"{short}-{version}"
            table[name] = TaskSpec(name, GYMNASIUM, f"{stem}-{version}", "", obs, act, phys, 1000)
    return table


_TABLE = _build_table()
_ALIASES = {short: f"{short}-{DEFAULT_GYM_VERSION}" for short in _GYM_TASKS}


def list_tasks() -> list[str]:
    """Returns the canonical names of every known task, dm_control-based first, then NumPy, gymnasium.

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
    if (spec := gymnasium_spec(name.strip())) is not None:
        return spec.name
    known = list(_TABLE) + list(_ALIASES)
    close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise ValueError(f"name: unknown task {name!r}.{hint} Known tasks: {', '.join(known)}, or any gymnasium "
                     "MuJoCo id (e.g. Ant-v4).")


@functools.cache
def gymnasium_spec(env_id: str) -> TaskSpec | None:
    """The `TaskSpec` of a gymnasium MuJoCo id from its environment's spaces (made once, then closed); None
    for a name that is not a registered gymnasium MuJoCo id (or without gymnasium).

    Args:
      env_id: a gymnasium id, e.g. "Ant-v4" (case as gymnasium registers it).

    Returns:
      A `TaskSpec` named `env_id` (kind "gymnasium", domain `env_id`), or None.

    Raises:
      ValueError: naming `env_id` when it is a MuJoCo environment whose observations or actions are not
        flat boxes.
    """
    if not re.fullmatch(r"[A-Za-z][\w.:/-]*-v\d+", env_id):
        return None
    try:
        import gymnasium
    except ImportError:
        return None
    registered = gymnasium.envs.registry.get(env_id)
    entry = getattr(registered, "entry_point", None)
    if not isinstance(entry, str) or not entry.startswith("gymnasium.envs.mujoco"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # older versions warn that they are out of date
        env = gymnasium.make(env_id, disable_env_checker=True)
    try:
        obs, act, model = env.observation_space, env.action_space, env.unwrapped.model
        if not (isinstance(obs, gymnasium.spaces.Box) and isinstance(act, gymnasium.spaces.Box)
                and len(obs.shape) == 1 and len(act.shape) == 1):
            raise ValueError(f"name: {env_id!r} has observations {obs} and actions {act}; only flat Box spaces "
                             "are supported")
        length = registered.max_episode_steps or 1000
        return TaskSpec(env_id, GYMNASIUM, env_id, "", int(obs.shape[0]), int(act.shape[0]),
                        int(model.nq + model.nv), int(length))
    finally:
        env.close()


def task_spec(name: str) -> TaskSpec:
    """Returns the `TaskSpec` for a task name (bare gymnasium names mean v4).

    Args:
      name: a task name.

    Returns:
      The task's `TaskSpec`.

    Raises:
      ValueError: naming `name` when the task is unknown.
    """
    name = canonical_name(name)
    return _TABLE[name] if name in _TABLE else gymnasium_spec(name)


def best_return(name: str, tasks):
    """The largest return an episode can earn on each task, where the family defines it exactly (the grids:
    ``envs.grid.best_return``): the oracle's line beside every result. None for other tasks.

    Args:
      name: a task name.
      tasks: float [N, task_dim], the tasks (e.g. an evaluation's ``task_parameters``).

    Returns:
      float64 [N], or None.
    """
    spec = task_spec(name)
    if not spec.discrete:  # the grids are the discrete families
        return None
    from envs import grid

    return grid.best_return(spec.domain, tasks)


def task_set(name: str):
    """The task parameters a hidden-task family draws from (what a task-aware data source may know).

    Args:
      name: a hidden task's name (`task_spec(name).hidden`).

    Returns:
      float64 [num_tasks, task_dim]: the maze's four targets, the split's goals for point_nav and Dark Room,
      the split's (key, door) pairs for Key-to-Door.

    Raises:
      ValueError: naming `name` when the task is unknown or not hidden.
    """
    spec = task_spec(name)
    if not spec.hidden:
        raise ValueError(f"name: {spec.name!r} is not a hidden-task family (its task_dim is 0)")
    if spec.domain == "point_mass_maze":
        from envs import point_mass_maze

        return point_mass_maze.task_set()
    if spec.discrete:
        from envs import grid

        return grid.task_set(spec.domain, spec.task)
    from envs import point_nav

    return point_nav.task_set(spec.task)
