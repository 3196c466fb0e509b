"""Reliability on tiny presets (issue 29): a run can always finish, --force never destroys, the data cannot
change under a run, non-finite state is never kept as good, nothing is written where it must not be, and
bad values are refused before any work.

One tiny run is trained once (``stopped``: 8 of 12 steps, checkpoints 4 and 8); each test that needs a run
works on its own copy.
"""

import dataclasses
import errno
import os
import shutil

import numpy as np
import pytest

from experiments import train as train_job
from experiments.checkpoints import Checkpoints
from experiments.run import RunDir
from tests.test_experiments import _config


@pytest.fixture(scope="module")
def stopped(data_root, tmp_path_factory):
    """A run of 12 steps stopped after step 8 (checkpoints 4 and 8), as if killed there."""
    config = _config(data_root, tmp_path_factory.mktemp("runs"))
    assert train_job.train(config, evaluate_at_end=False, quiet=True, until=8) == {"stopped_at": 8}
    return config


def _copy(config, runs_dir):
    """A copy of ``config``'s run directory under ``runs_dir``, and the config that names it."""
    copy = dataclasses.replace(config, runs_dir=str(runs_dir))
    shutil.copytree(config.run_dir, copy.run_dir)
    (copy.run_dir / "config.json").write_text(copy.to_json())
    return copy


# 1. A damaged latest checkpoint.

def _truncate(step_dir):
    for path in step_dir.rglob("*"):
        if path.is_file() and path.stat().st_size > 16:
            path.write_bytes(path.read_bytes()[:8])


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_latest_checkpoint_is_set_aside_and_the_run_finishes(stopped, tmp_path, capsys, damage):
    config = _copy(stopped, tmp_path)
    latest = config.run_dir / "checkpoints" / "8"
    if damage == "truncated":
        _truncate(latest)
    else:  # an empty step directory once made a fresh start that died at its first save
        shutil.rmtree(latest)
        latest.mkdir()
    summary = train_job.train(config, evaluate_at_end=False, quiet=True)
    assert summary["steps"] == 12 and np.isfinite(summary["final_loss"])
    err = capsys.readouterr().err
    message = [line for line in err.splitlines() if "could not be restored" in line]
    assert len(message) == 1 and "checkpoint 8 could not" in message[0] and "restored step 4 instead" in message[0]
    assert "8.unreadable-1" in message[0]
    assert (config.run_dir / "checkpoints" / "8.unreadable-1").is_dir()  # kept for a person to inspect
    assert Checkpoints(config.run_dir / "checkpoints", 3).steps() == [4, 8, 12]


def test_no_readable_checkpoint_says_so(stopped, tmp_path, capsys):
    config = _copy(stopped, tmp_path)
    for step in (4, 8):
        _truncate(config.run_dir / "checkpoints" / str(step))
    train_job.train(config, evaluate_at_end=False, quiet=True, until=4)
    err = capsys.readouterr().err
    assert "no checkpoint restores" in err and "training starts again from step 0" in err
    assert {p.name for p in (config.run_dir / "checkpoints").iterdir()} >= {"4.unreadable-1", "8.unreadable-1", "4"}


def test_evaluation_falls_back_past_a_step_that_vanishes_and_touches_nothing(stopped, tmp_path, capsys):
    config = _copy(stopped, tmp_path)
    latest = config.run_dir / "checkpoints" / "8"
    shutil.rmtree(latest)  # a trainer deleting the step while it is read leaves at most an empty directory
    latest.mkdir()
    model, mesh, state, step = RunDir(config.run_dir).restore()
    assert step == 4 and state is not None
    assert "checkpoint 8 could not be restored" in capsys.readouterr().err
    assert latest.is_dir() and not list((config.run_dir / "checkpoints").glob("*.unreadable-*"))


# 2. --force never destroys.

def _files(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}


def test_force_refuses_checkpoints_of_another_model_and_fewer_steps_and_deletes_nothing(stopped, tmp_path):
    config = _copy(stopped, tmp_path)
    before = _files(config.run_dir)
    wider = config.replace(model={"embed_dim": 64})
    with pytest.raises(ValueError, match=r"another config \(model.embed_dim: 32 -> 64\).*choose another --name"):
        train_job.train(wider, force=True, evaluate_at_end=False, quiet=True)
    shorter = config.replace(train={"steps": 6})
    with pytest.raises(ValueError, match="train.steps=6 is below step 8 of the latest checkpoint"):
        train_job.train(shorter, force=True, evaluate_at_end=False, quiet=True)
    assert _files(config.run_dir) == before  # nothing trained over, rotated away or rewritten

    # A change the checkpoints fit resumes under the new config.
    slower = config.replace(optim={"learning_rate": config.optim.learning_rate / 2})
    assert train_job.train(slower, force=True, evaluate_at_end=False, quiet=True, until=8) == {"stopped_at": 8}
    assert RunDir(config.run_dir).config().optim == slower.optim


# 3. Data that changes under a run.

def test_a_resume_on_other_data_is_refused_and_forced_only_with_a_warning(stopped, data_root, tmp_path, capsys):
    from datasets import exorl
    from datasets.synthetic import random_trajectories

    root = tmp_path / "data"
    shutil.copytree(data_root, root)
    config = _copy(stopped.replace(data={"root": str(root)}), tmp_path / "runs")
    before = _files(config.run_dir)
    extra = random_trajectories(4, [250], obs_dim=5, act_dim=1)  # one episode more, written after the kill
    exorl.save(root, "cartpole", "random", extra, first_index=6)
    with pytest.raises(ValueError, match=r"data of .* changed since it was trained on \(6 episodes .* -> 7 episodes"):
        train_job.train(config, evaluate_at_end=False, quiet=True)
    assert _files(config.run_dir) == before

    assert train_job.train(config, force=True, evaluate_at_end=False, quiet=True, until=8) == {"stopped_at": 8}
    assert "WARNING: the data of" in capsys.readouterr().err
    assert RunDir(config.run_dir).data().episodes == 7


def test_the_config_s_histories_are_read_from_a_root_that_holds_more(tmp_path):
    from experiments.pipeline import load_episodes
    from experiments.presets import get_preset

    base = get_preset("nav_hidden_tiny").data
    four = dataclasses.replace(base, root=str(tmp_path / "nav"), histories=4)
    assert len(load_episodes(four)) == 4 * base.episodes_per_history
    two = load_episodes(dataclasses.replace(four, histories=2))
    assert len(two) == 2 * base.episodes_per_history and {e.history for e in two} == {0, 1}


# 4. Non-finite state.

def test_non_finite_parameters_are_not_saved_and_the_good_checkpoint_is_named(stopped, tmp_path, monkeypatch):
    import jax
    import jax.numpy as jnp

    import agent.train

    real = agent.train.make_train_step

    def poisoned(*args, **kwargs):  # the last step's update is NaN while its loss (before it) is finite
        step_fn, state = real(*args, **kwargs)

        def step(state, batch):
            state, metrics = step_fn(state, batch)
            if int(state.step) == 12:
                state = state.replace(params=jax.tree.map(lambda x: x * jnp.nan, state.params))
            return state, metrics

        return step, state

    monkeypatch.setattr(agent.train, "make_train_step", poisoned)
    config = _copy(stopped, tmp_path)
    with pytest.raises(train_job.NonFiniteLoss, match="non-finite by step 12.*checkpoint 8 in .* is the last good one"):
        train_job.train(config, evaluate_at_end=False, quiet=True)
    assert Checkpoints(config.run_dir / "checkpoints", 3).steps() == [4, 8]
    assert not (config.run_dir / "summary.json").exists()


# 5. Writing where it must not.

@pytest.mark.parametrize("name", ["", ".", "..", "../../x", "/abs/path", "a/b"])
def test_a_run_name_is_one_plain_path_component(name, tmp_path, capsys):
    from experiments.config import ExperimentConfig

    with pytest.raises(ValueError, match="name=.* must be one plain directory name"):
        ExperimentConfig(name=name, runs_dir=str(tmp_path / "runs"))
    assert train_job.main(["--preset", "tiny", "--name", name, "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.startswith("error: name=")
    assert not list(tmp_path.iterdir())


def test_reports_record_their_run_and_never_replace_another_run_s(stopped, tmp_path):
    import json

    from experiments.evaluate import evaluate_run

    config = _copy(stopped, tmp_path / "a")
    other = _copy(stopped, tmp_path / "b")
    out = tmp_path / "reports"
    evaluate_run(config.run_dir, num_trials=1, out_dir=out)
    saved = json.loads((out / "eval.json").read_text())
    assert saved["run"] == str(config.run_dir) and saved["checkpoint_step"] == 8
    assert f"run {config.run_dir}, checkpoint step 8" in (out / "eval.md").read_text()

    before = _files(other.run_dir)
    with pytest.raises(ValueError, match="holds another run"):
        evaluate_run(config.run_dir, num_trials=1, out_dir=other.run_dir)
    assert _files(other.run_dir) == before
    with pytest.raises(ValueError, match="holds the evaluation of another run"):
        evaluate_run(other.run_dir, num_trials=1, out_dir=out)
    assert json.loads((out / "eval.json").read_text()) == saved


# 6. Bad values: refused where they are defined, before any work, in one line.

@pytest.mark.parametrize("flag, value, field", [
    ("--eval.num-trials", "0", "EvalConfig.num_trials"), ("--eval.num-envs", "0", "EvalConfig.num_envs"),
    ("--eval.target-return", "inf", "EvalConfig.target_return"),
    ("--eval.context-steps", "0", "EvalConfig.context_steps"),
    ("--eval.context-trials", "0", "EvalConfig.context_trials"),
    ("--model.num-layers", "0", "ModelConfig.num_layers"), ("--model.num-heads", "0", "ModelConfig.num_heads"),
    ("--model.return-scale", "0", "ModelConfig.return_scale"),
    ("--optim.learning-rate", "nan", "OptimConfig.learning_rate"),
    ("--optim.learning-rate", "-0.5", "OptimConfig.learning_rate"),
    ("--optim.clip-norm", "-1", "OptimConfig.clip_norm"), ("--optim.total-steps", "0", "OptimConfig.total_steps"),
    ("--train.mesh", "dp=2,dp=4", "TrainConfig.mesh"), ("--data.histories", "0", "DataConfig.histories"),
])
def test_a_bad_value_is_refused_by_the_command_line_naming_its_field(flag, value, field, tmp_path, capsys):
    # A value that a config refuses is a refused command line, as any bad flag is: one line and exit code 2.
    assert train_job.main(["--preset", "tiny", "--runs-dir", str(tmp_path / "runs"), flag, value]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}=") and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("argv, field", [(["--batch-steps", "0"], "batch_steps"), (["--trials", "0"], "trials"),
                                         (["--steps", "0"], "steps"), (["--trajectories", "0"], "trajectories")])
def test_a_bad_sweep_value_is_one_error_line(argv, field, tmp_path, capsys):
    from experiments import sweep

    assert sweep.main(["--preset", "tiny", "--runs-dir", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and field in err and err.count("\n") == 1
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("text", ["{", '{"name": "x"}', "[1, 2]"])
def test_a_damaged_or_foreign_config_json_is_one_error_line(stopped, tmp_path, capsys, text):
    from experiments import evaluate as evaluate_job

    config = _copy(stopped, tmp_path)
    (config.run_dir / "config.json").write_text(text)
    with pytest.raises(ValueError, match="config.json: not a config written by ringrl"):
        RunDir(config.run_dir).config()
    assert evaluate_job.main(["--run", str(config.run_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "config.json" in err and err.count("\n") == 1


def test_a_rejected_setup_does_not_claim_the_run_directory(data_root, tmp_path):
    config = _config(data_root, tmp_path)
    with pytest.raises(ValueError, match="mesh spec 'dp=3'"):
        train_job.train(config.replace(train={"mesh": "dp=3"}), quiet=True)
    with pytest.raises(ValueError, match="data.task='walker_walk' has observations of size 24"):
        train_job.train(config.replace(data={"task": "walker_walk"}), quiet=True)
    assert not config.run_dir.exists()  # the corrected command needs no --force


def test_a_resume_that_runs_no_step_reports_the_saved_loss(stopped, tmp_path):
    config = _copy(stopped, tmp_path)
    done = config.replace(train={"steps": 8})  # the latest checkpoint is the last step: nothing to run
    summary = train_job.train(done, force=True, evaluate_at_end=False, quiet=True)
    assert summary["steps"] == 8 and np.isfinite(summary["final_loss"])
    assert summary["final_loss"] == Checkpoints(config.run_dir / "checkpoints", 3).notes(8)["loss"]


# Files and disks: a read-only run directory and a full disk are one error line, and lose nothing on disk.

def _train_argv(config) -> list[str]:
    """The command line of ``config`` (a ``_config`` run)."""
    return ["--preset", "tiny", "--name", config.name, "--runs-dir", config.runs_dir, "--data.root", config.data.root,
            "--data.algo", config.data.algo, "--train.steps", str(config.train.steps), "--train.checkpoint-every",
            str(config.train.checkpoint_every), "--train.log-every", str(config.train.log_every),
            "--eval.num-envs", str(config.eval.num_envs), "--eval.num-trials", str(config.eval.num_trials)]


def _one_error_line(err: str, *words: str) -> str:
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in err, err
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def _read_only(path):
    """Makes ``path`` read-only (0o555); skips where that does not stop this process writing (root)."""
    path.chmod(0o555)
    if os.access(path, os.W_OK):
        path.chmod(0o755)
        pytest.skip("running as root: chmod 0o555 leaves the directory writable to this process, so a read-only "
                    "directory cannot be made here (the injected EROFS tests cover the same path)")


@pytest.mark.parametrize("job", ["train", "evaluate"])
def test_a_read_only_run_directory_is_one_error_line_and_loses_nothing(job, stopped, tmp_path, capsys):
    from experiments import evaluate as evaluate_job

    config = _copy(stopped, tmp_path)
    before = _files(config.run_dir)
    _read_only(config.run_dir)
    try:
        if job == "train":
            assert train_job.main(_train_argv(config)) == 2
        else:
            assert evaluate_job.main(["--run", str(config.run_dir)]) == 2
    finally:
        config.run_dir.chmod(0o755)
    _one_error_line(capsys.readouterr().err, "Permission denied", str(config.run_dir))
    assert _files(config.run_dir) == before


def _failing_write(monkeypatch, name: str, code: int, message: str):
    """Every atomic write of a run file called ``name`` fails after its temporary file is written, as a full
    (or read-only) disk fails it."""
    import contextlib

    from experiments import run as run_module

    real = run_module.atomic_path

    @contextlib.contextmanager
    def failing(path, suffix=""):
        with real(path, suffix) as temporary:
            yield temporary
            if os.path.basename(path) == name:
                raise OSError(code, message, str(temporary))

    monkeypatch.setattr(run_module, "atomic_path", failing)


@pytest.mark.parametrize("code, message", [(errno.ENOSPC, "No space left on device"),
                                           (errno.EROFS, "Read-only file system")])
def test_a_full_or_read_only_disk_at_a_report_is_one_error_line_and_keeps_the_earlier_reports(
        code, message, stopped, tmp_path, capsys, monkeypatch):
    from experiments import evaluate as evaluate_job

    config = _copy(stopped, tmp_path)
    assert evaluate_job.main(["--run", str(config.run_dir), "--num-trials", "1"]) == 0
    capsys.readouterr()
    before = _files(config.run_dir)
    _failing_write(monkeypatch, "eval.json", code, message)  # the first report an evaluation writes
    assert evaluate_job.main(["--run", str(config.run_dir), "--seed", "5"]) == 2
    _one_error_line(capsys.readouterr().err, message, "eval.json")
    assert _files(config.run_dir) == before  # the earlier reports whole, no temporary file left


def test_a_full_disk_at_a_checkpoint_is_one_error_line_and_the_run_resumes_later(stopped, tmp_path, capsys,
                                                                                   monkeypatch):
    config = _copy(stopped, tmp_path)
    before = _files(config.run_dir / "checkpoints")

    def full_disk(self, step, state, metrics=None, notes=None):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.directory / str(step)))

    monkeypatch.setattr(Checkpoints, "save", full_disk)
    assert train_job.main(_train_argv(config)) == 2
    _one_error_line(capsys.readouterr().err, "No space left on device", "checkpoints")
    assert _files(config.run_dir / "checkpoints") == before  # checkpoints 4 and 8 as they were
    assert not (config.run_dir / "summary.json").exists()
    monkeypatch.undo()  # space again: the run resumes from step 8 and finishes
    summary = train_job.train(config, evaluate_at_end=False, quiet=True)
    assert summary["steps"] == 12 and np.isfinite(summary["final_loss"])
    assert Checkpoints(config.run_dir / "checkpoints", 3).steps() == [4, 8, 12]
