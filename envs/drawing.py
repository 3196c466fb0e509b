"""Schematic frames of the pure-NumPy tasks (the grids, point_nav), drawn with NumPy alone: no OpenGL.

The hidden task is drawn too (the goal cell, the key and the door, the goal disk): a video is for people,
who may see what the agent may not. Visited cells and the path so far are kept by `SchematicRenderer`.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

BACKGROUND = (24, 24, 28)
FLOOR = (58, 58, 66)
VISITED = (84, 84, 120)
GOAL = (60, 180, 75)
KEY = (230, 200, 40)
DOOR = (150, 90, 40)
AGENT = (240, 240, 240)
PATH = (90, 140, 230)
MARK = (110, 110, 110)


def _canvas(height: int, width: int) -> np.ndarray:
    for arg, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 8:
            raise ValueError(f"{arg}: expected an integer of at least 8 pixels, got {value!r}")
    frame = np.empty((int(height), int(width), 3), np.uint8)
    frame[:] = BACKGROUND
    return frame


def grid_frame(domain: str, cell, task, height: int, width: int, visited=()) -> np.ndarray:
    """One frame of a Dark Room or Key-to-Door grid (``envs.grid``), the board centred in the frame.

    Args:
      domain: "dark_room" or "dark_key_to_door".
      cell: the agent's (row, column).
      task: float [2] (the goal cell) for dark_room; float [4] (key cell, door cell) for Key-to-Door.
      height, width: frame size in pixels (at least 8 each).
      visited: (row, column) cells visited so far, shaded.

    Returns:
      uint8 [height, width, 3].
    """
    from envs import grid

    if domain not in grid.TASK_DIM:
        raise ValueError(f"domain: expected one of {sorted(grid.TASK_DIM)}, got {domain!r}")
    frame = _canvas(height, width)
    size = grid.SIZE
    pitch = max(min(height, width) // size, 1)
    top, left = (height - pitch * size) // 2, (width - pitch * size) // 2
    gap = 1 if pitch > 3 else 0  # a dark line between cells where they are large enough to show it

    def fill(rc, colour, inset: int = 0) -> None:
        row, col = (int(round(v)) for v in rc)
        y0, x0 = top + row * pitch + gap + inset, left + col * pitch + gap + inset
        y1, x1 = top + (row + 1) * pitch - inset, left + (col + 1) * pitch - inset
        frame[max(y0, 0):max(y1, y0 + 1), max(x0, 0):max(x1, x0 + 1)] = colour

    for row in range(size):
        for col in range(size):
            fill((row, col), FLOOR)
    for rc in visited:
        fill(rc, VISITED)
    task = np.asarray(task, np.float64).reshape(-1)
    if domain == "dark_room":
        fill(task[:2], GOAL)
    else:
        fill(task[:2], KEY)
        fill(task[2:4], DOOR)
    fill(cell, AGENT, inset=max(pitch // 4, 0))
    return frame


def point_nav_frame(position, goal, height: int, width: int, path=()) -> np.ndarray:
    """One frame of ``point_nav``: the semicircle of goals, the hidden goal's rewarded disk, the path, the point.

    Args:
      position: float [2], the point's (x, y).
      goal: float [2], the hidden goal.
      height, width: frame size in pixels (at least 8 each).
      path: float [n, 2], the positions so far (drawn as dots).

    Returns:
      uint8 [height, width, 3].
    """
    from envs import point_nav

    frame = _canvas(height, width)
    # The world shown: every goal (unit semicircle) with its radius, the origin and some room to stray.
    x_lo, x_hi, y_lo, y_hi = -1.35, 1.35, -0.45, 1.35
    scale = min(width / (x_hi - x_lo), height / (y_hi - y_lo))
    x_off = (width - scale * (x_hi - x_lo)) / 2 - scale * x_lo
    y_off = (height - scale * (y_hi - y_lo)) / 2 + scale * y_hi  # y grows upwards in the world
    rows, cols = np.mgrid[0:height, 0:width]
    world_x, world_y = (cols + 0.5 - x_off) / scale, (y_off - rows - 0.5) / scale

    def disk(centre, radius: float, colour) -> None:
        x, y = np.asarray(centre, np.float64).reshape(2)
        radius = max(radius, 1.0 / scale)  # at least a pixel
        frame[(world_x - x) ** 2 + (world_y - y) ** 2 <= radius ** 2] = colour

    disk(goal, point_nav.GOAL_RADIUS, GOAL)
    for mark in point_nav.goals():
        disk(mark, 0.025, MARK)
    disk((0.0, 0.0), 0.03, MARK)
    for point in np.asarray(path, np.float64).reshape(-1, 2):
        disk(point, 0.02, PATH)
    disk(position, 0.05, AGENT)
    return frame


class SchematicRenderer:
    """Renders one NumPy-task environment (a grid or point_nav) through `grid_frame` / `point_nav_frame`,
    keeping the cells visited or the path taken since it was made.

    Args:
      domain: the task's `envs.TaskSpec.domain` ("dark_room", "dark_key_to_door" or "point_nav").
      state: returns the environment's current physics state, float [2] (its cell or position).
      task: float [task_dim], the environment's hidden task.
      height, width: frame size in pixels.
    """

    def __init__(self, domain: str, state: Callable[[], np.ndarray], task, height: int, width: int):
        if domain not in ("dark_room", "dark_key_to_door", "point_nav"):
            raise ValueError(f"domain: no schematic renderer for {domain!r}")
        _canvas(height, width)  # checks the size now
        self._domain, self._state, self._task = domain, state, np.asarray(task, np.float64)
        self._height, self._width = int(height), int(width)
        self._trail: list[np.ndarray] = []

    def render(self) -> np.ndarray:
        """Returns uint8 [height, width, 3], the current state with the trail so far."""
        where = np.asarray(self._state(), np.float64).reshape(2)
        self._trail.append(where)
        if self._domain == "point_nav":
            return point_nav_frame(where, self._task, self._height, self._width, path=self._trail)
        return grid_frame(self._domain, where, self._task, self._height, self._width, visited=self._trail)

    def close(self) -> None:
        self._trail = []

    def __enter__(self) -> "SchematicRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
