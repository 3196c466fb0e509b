"""Builds the raw dm_control environment (dict observations, native action bounds) for a task.

Suite tasks come from `dm_control.suite`; cheetah_run_backward, jaco reach and point_mass_maze are the
project's own (see their modules). `envs.make` wraps what this returns; `envs.relabel` uses it bare.
"""

from __future__ import annotations

import os

import numpy as np

from envs import registry

_SUITE_DOMAINS = ("walker", "cheetah", "quadruped", "cartpole")


def import_dm_control() -> None:
    """Imports dm_control, explaining the failure when its rendering backend cannot start.

    dm_control sets up the OpenGL backend named by MUJOCO_GL when it is first imported, even for
    code that never renders; a broken backend (e.g. MUJOCO_GL=egl without EGL) makes that import fail.

    Raises:
      envs.video.RenderingUnavailableError: when the import fails for that reason.
    """
    try:
        import dm_control.suite  # noqa: F401
    except (RuntimeError, ImportError, OSError, AttributeError) as error:
        if isinstance(error, ImportError) and error.name == "dm_control":
            raise  # not installed at all: the plain ImportError says it best
        from envs.video import RenderingUnavailableError

        backend = os.environ.get("MUJOCO_GL", "<unset>")
        raise RenderingUnavailableError(
            f"dm_control failed to set up its rendering backend at import (MUJOCO_GL={backend}): "
            f"{error}. Without rendering, set MUJOCO_GL=disable; for rendering install EGL "
            "(Debian: libegl1 libgl1) or OSMesa (libosmesa6) and set MUJOCO_GL accordingly."
        ) from error


def load(name: str, seed: int | np.random.RandomState | None, task=None):
    """Returns the unwrapped dm_control environment of a dm_control-based task.

    Args:
      name: a dm_control-based task name, e.g. "walker_walk" or "jaco_reach_top_left".
      seed: seed (or RandomState) of the task's randomness (initial states; a hidden task too).
      task: a hidden-task family's explicit task parameter (the maze target), or None.

    Returns:
      A `dm_control.rl.control.Environment`.

    Raises:
      ValueError: naming `name` when it is unknown or a gymnasium task.
    """
    spec = registry.task_spec(name)
    if spec.kind != registry.DM_CONTROL:
        raise ValueError(f"name: {spec.name!r} is a gymnasium task, not a dm_control one")
    if task is not None and not spec.hidden:
        raise ValueError(f"task: {spec.name!r} is not a hidden-task family; it takes no task parameter")
    import_dm_control()
    if spec.domain == "cheetah" and spec.task == "run_backward":
        from envs import cheetah_backward

        return cheetah_backward.load(seed)
    if spec.domain == "jaco":
        from envs import jaco

        return jaco.load(spec.task, seed)
    if spec.domain == "point_mass_maze":
        from envs import point_mass_maze

        return point_mass_maze.load(spec.task, seed, target=task)
    if spec.domain in _SUITE_DOMAINS:
        from dm_control import suite

        return suite.load(spec.domain, spec.task, task_kwargs={"random": seed})
    raise ValueError(f"name: no builder for dm_control domain {spec.domain!r}")
