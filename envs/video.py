"""Offscreen frames of MuJoCo environments and evaluation videos (MP4 or GIF) through imageio.

Rendering uses MuJoCo's own offscreen renderer with the backend named by MUJOCO_GL ("egl" on headless
Linux: Debian packages libegl1 and libgl1; "osmesa": libosmesa6). When no backend works,
`RenderingUnavailableError` says so and how to fix it; nothing else in `envs` needs rendering.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_HEIGHT = 240
DEFAULT_WIDTH = 320


class RenderingUnavailableError(RuntimeError):
    """Offscreen rendering cannot work in this process (no usable OpenGL backend)."""


def _model_and_data(env: Any):
    physics = getattr(env, "physics", None)
    if physics is not None:
        return physics.model.ptr, physics.data.ptr, True
    unwrapped = getattr(getattr(env, "gym_env", None), "unwrapped", None)
    if unwrapped is not None and hasattr(unwrapped, "model") and hasattr(unwrapped, "data"):
        return unwrapped.model, unwrapped.data, False
    raise ValueError(f"env: {type(env).__name__} has no MuJoCo `physics` or `gym_env` to render")


class FrameRenderer:
    """Renders RGB frames of one environment's current state.

    Args:
      env: an environment from `envs.make` (dm_control or gymnasium MuJoCo task).
      height: frame height in pixels.
      width: frame width in pixels.
      camera: camera name or id; None means the model's camera 0 for dm_control tasks and a camera
        tracking the robot's root body for gymnasium tasks (or models without cameras).

    Raises:
      RenderingUnavailableError: when no OpenGL context can be created (message names MUJOCO_GL).
      ValueError: naming `env`, `height`, `width` or `camera` when invalid.
    """

    def __init__(self, env: Any, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH,
                 camera: int | str | None = None):
        for arg, value in (("height", height), ("width", width)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{arg}: expected a positive integer, got {value!r}")
        import mujoco

        self._model, self._data, is_dm_control = _model_and_data(env)
        # The offscreen buffer must hold the frame; its size only matters for rendering.
        self._model.vis.global_.offwidth = max(self._model.vis.global_.offwidth, int(width))
        self._model.vis.global_.offheight = max(self._model.vis.global_.offheight, int(height))
        if camera is None and is_dm_control and self._model.ncam > 0:
            camera = 0
        if camera is None:
            camera = mujoco.MjvCamera()
            camera.type = mujoco.mjtCamera.mjCAMERA_TRACKING
            camera.trackbodyid = 1
            camera.distance = 3.0  # metres: frames a 1-2 m tall robot
            camera.elevation = -15.0
            camera.azimuth = 90.0
        elif isinstance(camera, (int, np.integer)) and not 0 <= camera < self._model.ncam:
            raise ValueError(f"camera: id {camera} out of range, the model has {self._model.ncam}")
        self._camera = camera
        try:
            self._renderer = mujoco.Renderer(self._model, int(height), int(width))
        except (RuntimeError, AttributeError, ImportError, OSError) as error:
            backend = os.environ.get("MUJOCO_GL", "<unset>")
            raise RenderingUnavailableError(
                f"offscreen rendering is unavailable (MUJOCO_GL={backend}): {error}. "
                "Use MUJOCO_GL=egl with the Debian packages libegl1 and libgl1 (or a GPU's EGL), "
                "or MUJOCO_GL=osmesa with libosmesa6; run without video otherwise."
            ) from error

    def render(self) -> np.ndarray:
        """Returns uint8 [height, width, 3], the current state seen from the camera."""
        self._renderer.update_scene(self._data, camera=self._camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()

    def __enter__(self) -> "FrameRenderer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(frames: Sequence[np.ndarray], path: str, fps: float = 30.0) -> str:
    """Writes frames to an MP4 (ffmpeg through imageio-ffmpeg) or GIF (Pillow) file.

    Args:
      frames: uint8 arrays [height, width, 3], all of one size.
      path: output file ending in ".mp4" or ".gif"; parent folders are created.
      fps: frames per second.

    Returns:
      `path`.

    Raises:
      ValueError: naming `path`, `frames` or `fps` when invalid.
    """
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in (".mp4", ".gif"):
        raise ValueError(f"path: expected a .mp4 or .gif file, got {path!r}")
    if len(frames) == 0:
        raise ValueError("frames: no frames to write")
    if not fps > 0:
        raise ValueError(f"fps: must be positive, got {fps!r}")
    stack = np.stack([np.asarray(f) for f in frames])
    if stack.dtype != np.uint8 or stack.ndim != 4 or stack.shape[-1] != 3:
        raise ValueError(f"frames: expected uint8 [T, H, W, 3], got {stack.dtype} {stack.shape}")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    import imageio.v3 as iio

    if suffix == ".gif":
        iio.imwrite(path, stack, extension=".gif", duration=1000.0 / fps, loop=0)
    else:
        import imageio.v2 as iio2

        # macro_block_size=1 keeps any frame size (no resizing to multiples of 16).
        with iio2.get_writer(path, format="FFMPEG", fps=fps, macro_block_size=1) as writer:
            for frame in stack:
                writer.append_data(frame)
    return path


def record_episodes(env: Any, policy: Callable[[np.ndarray], np.ndarray], path: str, *,
                    num_episodes: int = 1, fps: float = 30.0, height: int = DEFAULT_HEIGHT,
                    width: int = DEFAULT_WIDTH, camera: int | str | None = None) -> list[float]:
    """Runs evaluation episodes, renders every step and writes one video of all of them.

    Args:
      env: an environment from `envs.make`.
      policy: maps an observation float32 [obs_dim] to an action [action_dim] in [-1, 1].
      path: ".mp4" or ".gif" output file.
      num_episodes: episodes to run back to back.
      fps: frames per second of the video.
      height: frame height.
      width: frame width.
      camera: as in `FrameRenderer`.

    Returns:
      The undiscounted return of each episode.

    Raises:
      RenderingUnavailableError: when rendering is unavailable (before any episode runs).
    """
    if not isinstance(num_episodes, (int, np.integer)) or num_episodes < 1:
        raise ValueError(f"num_episodes: expected a positive integer, got {num_episodes!r}")
    frames, returns = [], []
    with FrameRenderer(env, height, width, camera) as renderer:
        for _ in range(num_episodes):
            timestep = env.reset()
            frames.append(renderer.render())
            total = 0.0
            while not timestep.last():
                timestep = env.step(policy(timestep.observation))
                total += float(timestep.reward)
                frames.append(renderer.render())
            returns.append(total)
    write_video(frames, path, fps)
    return returns
