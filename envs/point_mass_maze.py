"""`point_mass_maze_reach_{top,bottom}_{left,right}` and `_reach_hidden`: a point mass navigating a maze.

The project's own task (ExoRL ships one, dm_control does not). Model: `assets/point_mass_maze.xml`,
dm_control's point mass (0.3 kg sphere on two damped slide joints, motors of gear 0.1, 0.02 s steps)
inside walls. The mass starts uniformly in the central box (|x|, |y| <= 0.05, at rest); the box opens
towards +y only. Targets are fixed at (+-0.2, +-0.2) ("top" = +y, "right" = +x).

    reward = tolerance(|mass - target|, bounds=(0, TARGET_SIZE), margin=TARGET_SIZE)   (gaussian)

Unlike dm_control's point mass there is no control-cost factor, so the reward is a function of the
physics state alone and relabelling from stored states is exact. Observation: position (2) and
velocity (2); physics state: qpos (2) + qvel (2); 1000 steps (20 s).

`reach_hidden` is the hidden-task family over the same four targets: the target is drawn from the seed
(`draw_task`) or given, never observed, kept across resets and redrawn by `reseed`. Its reward is the
fixed-target tasks' reward for that target, so any episode relabels for each of the four targets.
"""

from __future__ import annotations

import collections
import os

import numpy as np

TARGETS = {
    "reach_top_left": (-0.2, 0.2),
    "reach_top_right": (0.2, 0.2),
    "reach_bottom_left": (-0.2, -0.2),
    "reach_bottom_right": (0.2, -0.2),
}
TARGET_SIZE = 0.03  # metres: reward is 1 within this distance of the target.
START_HALF_WIDTH = 0.05  # metres: initial position is uniform in [-w, w]^2.
TIME_LIMIT = 20.0  # seconds: 1000 control steps of 0.02 s.
_XML_PATH = os.path.join(os.path.dirname(__file__), "assets", "point_mass_maze.xml")
HIDDEN = "reach_hidden"
_TASK_STREAM = 7919  # separates the target draw from the initial-position stream of the same seed


def task_set() -> np.ndarray:
    """float64 [4, 2]: the targets `reach_hidden` draws from, in `TARGETS` order."""
    return np.array(list(TARGETS.values()), dtype=np.float64)


def draw_task(seed: int) -> np.ndarray:
    """The target (float64 [2]) that `seed` draws for `reach_hidden`: uniform over the four."""
    targets = task_set()
    return targets[np.random.default_rng([int(seed), _TASK_STREAM]).integers(len(targets))].copy()


def check_target(target) -> np.ndarray:
    """One of the four targets as float64 [2], or a ValueError naming `task`."""
    target = np.asarray(target, dtype=np.float64)
    if target.shape != (2,) or not any(np.allclose(target, t) for t in TARGETS.values()):
        raise ValueError(f"task: expected one of the maze targets {list(TARGETS.values())}, got {target!r}")
    return target.copy()


def make_task_class():
    """Returns the `PointMassMaze` task class (built lazily: it subclasses dm_control's base.Task).

    Returns:
      A `dm_control.suite.base.Task` subclass; construct it as `cls(target=(x, y), random=seed)`.
    """
    from dm_control.suite import base
    from dm_control.utils import rewards

    class PointMassMaze(base.Task):
        """Reach a fixed target in the maze; the reward depends on the position only."""

        def __init__(self, target, random=None):
            self._target = np.asarray(target, dtype=np.float64)
            super().__init__(random=random)

        @property
        def target(self) -> np.ndarray:
            return self._target

        def initialize_episode(self, physics):
            physics.named.model.geom_pos["target", :2] = self._target
            physics.data.qpos[:] = self.random.uniform(-START_HALF_WIDTH, START_HALF_WIDTH, 2)
            physics.data.qvel[:] = 0.0
            super().initialize_episode(physics)

        def get_observation(self, physics):
            obs = collections.OrderedDict()
            obs["position"] = physics.position()
            obs["velocity"] = physics.velocity()
            return obs

        def get_reward(self, physics):
            mass = physics.named.data.geom_xpos["pointmass", :2]
            distance = np.linalg.norm(mass - self._target)
            return rewards.tolerance(distance, bounds=(0, TARGET_SIZE), margin=TARGET_SIZE)

    return PointMassMaze


def make_hidden_task_class():
    """Returns the `HiddenTargetMaze` task class: `cls(seed, target=None)`."""

    class HiddenTargetMaze(make_task_class()):
        """A maze task whose target is drawn from the seed (or pinned by `target`) and never observed."""

        def __init__(self, seed: int, target=None):
            self._pinned = target is not None
            super().__init__(check_target(target) if self._pinned else draw_task(seed), random=int(seed))

        def reseed(self, seed: int) -> None:
            """Restarts the initial-position stream and, unless pinned, draws a new target."""
            self.random.seed(int(seed))
            if not self._pinned:
                self._target = draw_task(seed)

        def set_target(self, target) -> None:
            """Sets the target the reward measures (relabelling); any finite [2] position."""
            target = np.asarray(target, dtype=np.float64)
            if target.shape != (2,) or not np.isfinite(target).all():
                raise ValueError(f"task: expected a finite target of shape (2,), got {target!r}")
            self._target = target.copy()

    return HiddenTargetMaze


def load(task: str, seed: int | np.random.RandomState | None, target=None):
    """Builds a point_mass_maze environment.

    Args:
      task: one of `TARGETS` ("reach_top_left", ...) or `HIDDEN`.
      seed: seed (or RandomState) for the initial position; for `HIDDEN` an integer that also draws
        the target.
      target: `HIDDEN` only: an explicit target (one of `TARGETS`' positions), kept across reseeds.

    Returns:
      A `dm_control.rl.control.Environment` with dict observations `position` and `velocity`.

    Raises:
      ValueError: naming `task` when it is not a maze task.
    """
    if task != HIDDEN and task not in TARGETS:
        raise ValueError(f"task: expected one of {sorted(TARGETS) + [HIDDEN]}, got {task!r}")
    if target is not None and task != HIDDEN:
        raise ValueError(f"task: {task!r} has a fixed target; only {HIDDEN!r} takes a target")
    from dm_control.rl import control
    from dm_control.suite import common
    from dm_control import mujoco

    with open(_XML_PATH) as f:
        xml = f.read()
    physics = mujoco.Physics.from_xml_string(xml, common.ASSETS)
    if task == HIDDEN:
        task_object = make_hidden_task_class()(seed, target)
    else:
        task_object = make_task_class()(TARGETS[task], random=seed)
    return control.Environment(physics, task_object, time_limit=TIME_LIMIT)
