"""Frames of every task's environments and evaluation videos (MP4 or GIF) through imageio.

MuJoCo tasks render with MuJoCo's own offscreen renderer and the backend named by MUJOCO_GL ("egl" on
headless Linux: Debian packages libegl1 and libgl1; "osmesa": libosmesa6); `choose_headless_backend` sets it
when the user has not and there is no display. The NumPy tasks (the grids, point_nav) are drawn with NumPy
(`envs.drawing`). `renderer_for` picks the renderer of any environment or batch. Every reason a video
cannot be made is a `VideoUnavailableError` (`RenderingUnavailableError` for rendering), so that a caller
can warn and go on; nothing else in `envs` needs rendering.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from typing import Any, Callable, Sequence

import numpy as np

DEFAULT_HEIGHT = 240
DEFAULT_WIDTH = 320
HEADLESS_BACKENDS = ("egl", "osmesa")  # tried in this order where there is no display


class VideoUnavailableError(RuntimeError):
    """A video cannot be made in this process: no renderer, or no writer (imageio, ffmpeg)."""


class RenderingUnavailableError(VideoUnavailableError):
    """Offscreen rendering cannot work in this process (no usable OpenGL backend)."""


@functools.cache
def backend_works(backend: str) -> bool:
    """Whether MuJoCo can make an offscreen OpenGL context with ``backend`` (tried in a child process, since
    a process picks its backend once, when mujoco is first imported)."""
    probe = "import mujoco; context = mujoco.GLContext(16, 16); context.make_current(); context.free()"
    environment = {k: v for k, v in os.environ.items() if k != "PYOPENGL_PLATFORM"}
    environment["MUJOCO_GL"] = backend
    try:
        result = subprocess.run([sys.executable, "-c", probe], env=environment, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def choose_headless_backend(probe: Callable[[str], bool] = backend_works) -> str | None:
    """Sets MUJOCO_GL to the first of ``HEADLESS_BACKENDS`` that works, where the user has not set it, there is
    no display (DISPLAY, WAYLAND_DISPLAY) and mujoco is not imported yet (it reads MUJOCO_GL once, at import).

    Args:
      probe: ``probe(backend) -> bool``, whether a backend works (default: `backend_works`).

    Returns:
      The backend set, or None where nothing was changed.
    """
    if "MUJOCO_GL" in os.environ or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return None
    if sys.platform != "linux" or "mujoco" in sys.modules:
        return None
    for backend in HEADLESS_BACKENDS:
        if probe(backend):
            os.environ["MUJOCO_GL"] = backend
            return backend
    return None


def check_video_writer(path: str) -> str:
    """The file a video for ``path`` can be written to here, checked before any rollout: ``path`` itself, or
    for an MP4 without ffmpeg (imageio-ffmpeg) the same name as a GIF (Pillow).

    Raises:
      VideoUnavailableError: imageio is missing, or neither ffmpeg nor Pillow is there.
      ValueError: naming ``path`` when it is not a .mp4 or .gif file.
    """
    stem, suffix = os.path.splitext(path)
    if suffix.lower() not in (".mp4", ".gif"):
        raise ValueError(f"path: expected a .mp4 or .gif file, got {path!r}")
    try:
        import imageio  # noqa: F401
    except ImportError as error:
        raise VideoUnavailableError(f"imageio is not installed ({error}); install the video extra "
                                    "(pip install 'ringrl[video]')") from error
    if suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
            return path
        except (ImportError, RuntimeError):
            pass  # no ffmpeg: a GIF where Pillow is there
    try:
        import PIL  # noqa: F401
    except ImportError as error:
        raise VideoUnavailableError(f"no video writer: imageio-ffmpeg (MP4) and Pillow (GIF) are both missing "
                                    f"({error}); install the video extra (pip install 'ringrl[video]')") from error
    return stem + ".gif"


def renderer_for(env: Any, index: int = 0, height: int = DEFAULT_HEIGHT, width: int = DEFAULT_WIDTH):
    """The renderer of one environment: MuJoCo's (`FrameRenderer`) for dm_control and gymnasium tasks, a NumPy
    drawing (`envs.drawing.SchematicRenderer`) for the grids and point_nav.

    Args:
      env: an environment from `envs.make`, or a batch from `envs.make_batch` (then ``index`` picks one).
      index: which environment of a batch.
      height, width: frame size in pixels.

    Returns:
      An object with ``render() -> uint8 [height, width, 3]`` and ``close()``.

    Raises:
      VideoUnavailableError: naming the environment where nothing can render it (or
        `RenderingUnavailableError` where OpenGL is unavailable).
    """
    from envs import drawing, registry
    from envs.relabel import physics_state

    spec = getattr(env, "spec", None)
    batch = hasattr(env, "num_envs")
    if isinstance(spec, registry.TaskSpec) and spec.kind == registry.NUMPY:
        if batch:
            return drawing.SchematicRenderer(spec.domain, lambda: env.physics_states()[index],
                                             env.task_parameters[index], height, width)
        return drawing.SchematicRenderer(spec.domain, lambda: physics_state(env), env.task_parameter, height, width)
    single = env.envs[index] if batch else env
    try:
        return FrameRenderer(single, height, width)
    except ValueError as error:
        raise VideoUnavailableError(f"no renderer for {getattr(spec, 'name', type(env).__name__)}: {error}") from None


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
        except (RuntimeError, AttributeError, ImportError, OSError, mujoco.FatalError) as error:
            backend = os.environ.get("MUJOCO_GL", "<unset>")
            raise RenderingUnavailableError(
                f"offscreen rendering is unavailable (MUJOCO_GL={backend}): {error}. "
                "Use MUJOCO_GL=egl with the Debian packages libegl1 and libgl1 (or a GPU's EGL), "
                "or MUJOCO_GL=osmesa with libosmesa6; run without video otherwise."
            ) from error

    def render(self) -> np.ndarray:
        """Returns uint8 [height, width, 3], the current state seen from the camera."""
        import mujoco

        try:
            self._renderer.update_scene(self._data, camera=self._camera)
            return self._renderer.render().copy()
        except mujoco.FatalError as error:
            raise RenderingUnavailableError(f"offscreen rendering failed (MUJOCO_GL="
                                            f"{os.environ.get('MUJOCO_GL', '<unset>')}): {error}") from error

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
      camera: as in `FrameRenderer` (MuJoCo tasks only; None: `renderer_for`'s choice for any task).

    Returns:
      The undiscounted return of each episode.

    Raises:
      RenderingUnavailableError: when rendering is unavailable (before any episode runs).
    """
    if not isinstance(num_episodes, (int, np.integer)) or num_episodes < 1:
        raise ValueError(f"num_episodes: expected a positive integer, got {num_episodes!r}")
    frames, returns = [], []
    renderer = FrameRenderer(env, height, width, camera) if camera is not None else renderer_for(env, 0, height, width)
    try:
        for _ in range(num_episodes):
            timestep = env.reset()
            frames.append(renderer.render())
            total = 0.0
            while not timestep.last():
                timestep = env.step(policy(timestep.observation))
                total += float(timestep.reward)
                frames.append(renderer.render())
            returns.append(total)
    finally:
        renderer.close()
    write_video(frames, path, fps)
    return returns
