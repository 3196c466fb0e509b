"""Video that never breaks a run: headless backend choice, NumPy renderers of the grids and point_nav, the
writer checked before the rollout, video problems that only warn, and evaluation-only fields that do not
claim the run directory (issue 28, item 2)."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import envs
from envs import drawing, video
from experiments.config import DataConfig, EvalConfig, ExperimentConfig
from experiments.evaluate import evaluate_actor, random_actor
from experiments.run import DataSummary, RunDir

pytestmark = pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def headless(monkeypatch):
    for name in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "mujoco", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")


def test_headless_backend_falls_back_to_osmesa_when_egl_fails(headless):
    tried = []
    chosen = video.choose_headless_backend(lambda b: tried.append(b) or b == "osmesa")
    assert chosen == "osmesa" and os.environ["MUJOCO_GL"] == "osmesa" and tried == ["egl", "osmesa"]


def test_headless_backend_leaves_a_users_choice_and_a_display_alone(headless, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "glfw")
    assert video.choose_headless_backend(lambda b: True) is None and os.environ["MUJOCO_GL"] == "glfw"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setenv("DISPLAY", ":0")
    assert video.choose_headless_backend(lambda b: True) is None and "MUJOCO_GL" not in os.environ
    monkeypatch.delenv("DISPLAY")
    assert video.choose_headless_backend(lambda b: False) is None and "MUJOCO_GL" not in os.environ


def test_a_process_without_display_or_mujoco_gl_renders_mujoco():
    if not any(video.backend_works(b) for b in video.HEADLESS_BACKENDS):
        pytest.skip("no headless OpenGL backend on this machine")
    code = textwrap.dedent("""
        from envs import video
        chosen = video.choose_headless_backend()
        import envs
        env = envs.make("cartpole_swingup", seed=0)
        env.reset()
        print("CHOSEN", chosen, video.renderer_for(env, 0, 16, 24).render().shape)
    """)
    environment = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=environment, cwd=_REPO)
    assert result.returncode == 0, result.stderr
    assert "CHOSEN egl (16, 24, 3)" in result.stdout or "CHOSEN osmesa (16, 24, 3)" in result.stdout


@pytest.mark.parametrize("task", ["dark_room_hidden", "dark_key_to_door_hidden", "point_nav_hidden"])
def test_numpy_tasks_render_the_agent_and_the_hidden_task(task):
    batch = envs.make_batch(task, 2, seed=0)
    batch.reset()
    renderer = video.renderer_for(batch, 1, height=60, width=80)
    first = renderer.render()
    action = np.full((2,), 2) if envs.task_spec(task).discrete else np.ones((2, 2), np.float32)
    batch.step(action)
    moved = renderer.render()
    assert first.shape == (60, 80, 3) and first.dtype == np.uint8
    assert (first != moved).any()  # the agent moved (and left a trail)
    colours = {tuple(c) for c in first.reshape(-1, 3)}
    expected = {"dark_room": [drawing.GOAL], "dark_key_to_door": [drawing.KEY, drawing.DOOR],
                "point_nav": [drawing.GOAL]}[envs.task_spec(task).domain]
    assert all(c in colours for c in expected) and drawing.AGENT in colours
    # One environment from envs.make draws the same as the batch's environment of its seed.
    single = envs.make(task, seed=envs.batch.env_seeds(0, 2)[1])
    single.reset()
    assert np.array_equal(video.renderer_for(single, 0, 60, 80).render(), first)


def test_drawing_refuses_bad_sizes_and_domains():
    with pytest.raises(ValueError, match="height"):
        drawing.grid_frame("dark_room", (0, 0), (1, 1), 4, 40)
    with pytest.raises(ValueError, match="domain"):
        drawing.grid_frame("maze", (0, 0), (1, 1), 40, 40)


_DATA = DataSummary(obs_dim=2, action_dim=1, longest_episode=20, episodes=4, median_return=1.0, max_return=5.0,
                    mean_return=1.5, discrete=True)


def _config(**eval_fields):
    return ExperimentConfig(data=DataConfig(task="dark_room_hidden", action_repeat=1),
                            eval=EvalConfig(num_envs=2, num_trials=2, **eval_fields))


def _evaluate(tmp_path, config):
    return evaluate_actor(config, random_actor(config, _DATA), _DATA, RunDir(tmp_path))


def test_grid_evaluation_writes_its_video_and_reports(tmp_path):
    import imageio.v2 as iio2

    result = _evaluate(tmp_path, _config(video=True))
    assert result["video"] == str(tmp_path / "eval_trial1.mp4")
    with iio2.get_reader(result["video"], format="FFMPEG") as reader:
        assert reader.count_frames() == 21  # the reset and 20 steps of the first trial
        assert reader.get_data(0).shape == (video.DEFAULT_HEIGHT, video.DEFAULT_WIDTH, 3)
    assert all((tmp_path / name).is_file() for name in ("eval.json", "eval.md", "eval.png"))


def test_a_missing_writer_warns_before_the_rollout_and_reports_are_written(tmp_path, monkeypatch, capsys):
    def missing(path):
        raise video.VideoUnavailableError("imageio is not installed")

    monkeypatch.setattr(video, "check_video_writer", missing)
    monkeypatch.setattr(video, "renderer_for", lambda *a, **k: pytest.fail("rendered without a writer"))
    result = _evaluate(tmp_path, _config(video=True))
    assert "video" not in result and "WARNING: video: imageio is not installed" in capsys.readouterr().err
    assert (tmp_path / "eval.json").is_file() and (tmp_path / "eval.png").is_file()


def test_a_renderer_failing_midway_only_warns(tmp_path, monkeypatch, capsys):
    class Failing:
        calls = 0

        def render(self):
            Failing.calls += 1
            if Failing.calls > 3:
                raise video.RenderingUnavailableError("the GL context was lost")
            return np.zeros((8, 8, 3), np.uint8)

        def close(self):
            pass

    monkeypatch.setattr(video, "renderer_for", lambda *a, **k: Failing())
    result = _evaluate(tmp_path, _config(video=True))
    assert result["video_problem"] == "the GL context was lost" and "video" not in result
    assert "the GL context was lost" in capsys.readouterr().err
    assert len(result["per_trial_mean_return"]) == 2 and (tmp_path / "eval.md").is_file()


def test_a_failed_video_write_only_warns(tmp_path, monkeypatch, capsys):
    def broken(frames, path, fps=30.0):
        raise OSError("No space left on device")

    monkeypatch.setattr(envs, "write_video", broken)
    result = _evaluate(tmp_path, _config(video=True))
    assert result["video"] is None and "No space left on device" in capsys.readouterr().err
    assert (tmp_path / "eval.json").is_file()


def test_evaluation_only_fields_do_not_claim_the_run_directory(tmp_path):
    config = _config().replace(name="r", runs_dir=str(tmp_path))
    run = RunDir(config.run_dir)
    run.claim(config)
    assert run.check_config(config.replace(eval={"video": True, "random_floor": True})) == []
    with pytest.raises(ValueError, match="eval.num_envs"):
        run.check_config(config.replace(eval={"video": True, "num_envs": 3}))
