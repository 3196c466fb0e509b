"""Offscreen frames and videos; and the message when rendering is unavailable (real broken backends)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import envs

# imageio-ffmpeg and these tests start subprocesses; JAX (imported by conftest) warns at any fork,
# but a fork followed at once by exec is safe.
pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")


def _rendering_problem():
    """None if offscreen rendering works in this process, else the reason it does not."""
    env = envs.make("cartpole_swingup", seed=0)
    env.reset()
    try:
        with envs.FrameRenderer(env, 16, 16):
            return None
    except envs.RenderingUnavailableError as error:
        return str(error)


_PROBLEM = _rendering_problem()
needs_rendering = pytest.mark.skipif(_PROBLEM is not None, reason=f"no offscreen rendering: {_PROBLEM}")


@needs_rendering
@pytest.mark.parametrize(
    "name", ["walker_walk", "jaco_reach_top_left", "point_mass_maze_reach_top_left", "hopper"]
)
def test_frames_show_the_scene(name):
    env = envs.make(name, seed=0)
    env.reset()
    with envs.FrameRenderer(env, height=48, width=64) as renderer:
        frame = renderer.render()
        for _ in range(5):
            env.step(np.ones(env.action_spec().shape, np.float32))
        moved = renderer.render()
    assert frame.shape == (48, 64, 3) and frame.dtype == np.uint8
    assert frame.std() > 5  # not a blank image
    assert np.abs(frame.astype(int) - moved.astype(int)).sum() > 0  # the robot moved


@needs_rendering
def test_gymnasium_adapter_renders_rgb_arrays():
    env = envs.to_gymnasium(envs.make("cheetah_run", seed=0), render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (envs.video.DEFAULT_HEIGHT, envs.video.DEFAULT_WIDTH, 3)
    assert frame.dtype == np.uint8 and frame.std() > 5
    env.close()
    assert envs.to_gymnasium(envs.make("cheetah_run", seed=0)).render() is None


@needs_rendering
@pytest.mark.parametrize("suffix", [".gif", ".mp4"])
def test_record_episodes_writes_a_readable_video(tmp_path, suffix):
    import imageio.v3 as iio

    env = envs.make("cartpole_swingup", seed=0, action_repeat=125)  # 8 steps per episode
    path = str(tmp_path / f"sub/eval{suffix}")
    returns = envs.record_episodes(env, lambda obs: np.zeros(1, np.float32), path, num_episodes=2,
                                   height=32, width=48, fps=10)
    assert len(returns) == 2 and all(0 <= r <= 1000 for r in returns)
    frames = iio.imread(path, index=None) if suffix == ".gif" else _read_mp4(path)
    assert len(frames) == 2 * 9  # reset frame + 8 steps, twice
    assert frames[0].shape[:2] == (32, 48)


def _read_mp4(path):
    import imageio.v2 as iio2

    with iio2.get_reader(path, format="FFMPEG") as reader:
        return [frame for frame in reader]


def test_write_video_rejects_bad_arguments(tmp_path):
    frame = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="path"):
        envs.write_video([frame], str(tmp_path / "a.avi"))
    with pytest.raises(ValueError, match="frames"):
        envs.write_video([], str(tmp_path / "a.gif"))
    with pytest.raises(ValueError, match="frames"):
        envs.write_video([frame.astype(np.float32)], str(tmp_path / "a.gif"))
    with pytest.raises(ValueError, match="fps"):
        envs.write_video([frame], str(tmp_path / "a.gif"), fps=0)


_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run_isolated(code, **env_vars):
    environment = dict(os.environ, **env_vars)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=120, env=environment, cwd=_REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_disabled_rendering_gives_a_clear_message():
    out = _run_isolated(
        """
        import numpy as np, envs
        env = envs.make("cartpole_swingup", seed=0)   # simulation works without rendering
        env.reset(); env.step(np.zeros(1, np.float32))
        try:
            envs.FrameRenderer(env)
        except envs.RenderingUnavailableError as error:
            print("MESSAGE", error)
        """,
        MUJOCO_GL="disable",
    )
    assert "MESSAGE offscreen rendering is unavailable (MUJOCO_GL=disable)" in out
    assert "libegl1" in out


def test_broken_egl_gives_a_clear_message():
    # An EGL device that does not exist: a genuine failure of the EGL backend.
    out = _run_isolated(
        """
        import envs
        try:
            envs.make("cartpole_swingup", seed=0)
        except envs.RenderingUnavailableError as error:
            print("DMC", error)
        env = envs.make("hopper", seed=0)   # gymnasium imports no renderer up front
        env.reset()
        try:
            envs.FrameRenderer(env)
        except envs.RenderingUnavailableError as error:
            print("RENDER", error)
        """,
        MUJOCO_GL="egl",
        MUJOCO_EGL_DEVICE_ID="99",
    )
    assert "DMC dm_control failed to set up its rendering backend at import (MUJOCO_GL=egl)" in out
    assert "MUJOCO_GL=disable" in out
    assert "RENDER offscreen rendering is unavailable (MUJOCO_GL=egl)" in out
