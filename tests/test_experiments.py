"""End to end on tiny presets: train, checkpoint, kill, resume, evaluate; and the jobs' bad inputs."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from datasets import exorl
from datasets.synthetic import random_trajectories
from experiments import evaluate as evaluate_job
from experiments import train as train_job
from experiments.checkpoints import Checkpoints
from experiments.config import ExperimentConfig, get_preset


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Six 250-step episodes of cartpole's sizes (obs 5, action 1) in the ExoRL layout."""
    root = tmp_path_factory.mktemp("exorl")
    exorl.save(root, "cartpole", "random", random_trajectories(3, [250] * 6, obs_dim=5, act_dim=1))
    return root


def _config(data_root, runs, name="run", **train):
    base = get_preset("tiny")
    return dataclasses.replace(
        base, name=name, runs_dir=str(runs),
        data=dataclasses.replace(base.data, root=str(data_root), algo="random"),
        train=dataclasses.replace(base.train, **{"steps": 12, "checkpoint_every": 4, "log_every": 2, **train}),
        eval=dataclasses.replace(base.eval, num_envs=2, num_trials=2))


def _final_params(config):
    model, mesh, state = train_job.build(config, train_job.load_trajectories(config.data))
    restored, step = Checkpoints(config.run_dir / "checkpoints", 3).restore_latest(state)
    assert step == config.train.steps
    return restored.params


def test_kill_resume_equals_uninterrupted_and_evaluates(data_root, tmp_path):
    whole = _config(data_root, tmp_path / "a")
    train_job.train(whole, evaluate_at_end=False, quiet=True)

    interrupted = _config(data_root, tmp_path / "b")
    assert train_job.train(interrupted, evaluate_at_end=False, quiet=True, stop_after=6) == {"stopped_at": 6}
    assert Checkpoints(interrupted.run_dir / "checkpoints", 3).steps() == [4]  # killed after step 6
    summary = train_job.train(interrupted, evaluate_at_end=False, quiet=True)  # resumes from step 4
    assert summary["steps"] == 12

    for got, want in zip(jax.tree.leaves(_final_params(interrupted)), jax.tree.leaves(_final_params(whole))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    result = evaluate_job.evaluate_run(whole.run_dir)
    saved = json.loads((whole.run_dir / "eval.json").read_text())
    assert saved["per_trial_mean_return"] == result["per_trial_mean_return"] and len(saved["returns"]) == 2
    for key in ("per_trial_std_return", "last_trial_mean_return", "best_of_n_mean_return", "dataset_median_return",
                "dataset_max_return", "normalized"):
        assert key in saved
    assert saved["best_of_n_mean_return"] >= saved["last_trial_mean_return"]
    assert (whole.run_dir / "eval.png").stat().st_size > 0 and "| 2 |" in (whole.run_dir / "eval.md").read_text()
    assert any((whole.run_dir / "tb").iterdir())
    assert ExperimentConfig.from_json((whole.run_dir / "config.json").read_text()) == whole

    # Another target return, reported elsewhere: the run's own evaluation stays as it was.
    other = evaluate_job.evaluate_run(whole.run_dir, target_return=123.5, num_trials=1, out_dir=tmp_path / "t")
    assert other["target_return"] == 123.5 and len(other["returns"]) == 1
    assert json.loads((tmp_path / "t" / "eval.json").read_text())["target_return"] == 123.5
    assert json.loads((whole.run_dir / "eval.json").read_text()) == saved


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(data_root, tmp_path):
    config = _config(data_root, tmp_path, checkpoint_every=1)
    config = dataclasses.replace(config, optim=dataclasses.replace(config.optim, learning_rate=1e30, warmup_steps=1))
    with pytest.raises(train_job.NonFiniteLoss, match="loss became .* at step"):
        train_job.train(config, evaluate_at_end=False, quiet=True)
    model, mesh, state = train_job.build(config, train_job.load_trajectories(config.data))
    restored, step = Checkpoints(config.run_dir / "checkpoints", 3).restore_latest(state)
    assert step is not None and step < config.train.steps
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored.params))


def test_corrupt_checkpoint_falls_back(data_root, tmp_path, capsys):
    config = _config(data_root, tmp_path, steps=8)
    train_job.train(config, evaluate_at_end=False, quiet=True)
    directory = config.run_dir / "checkpoints"
    for path in (directory / "8").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    model, mesh, state = train_job.build(config, train_job.load_trajectories(config.data))
    restored, step = Checkpoints(directory, 3).restore_latest(state)
    assert step == 4 and restored is not None
    assert "checkpoint 8 could not be restored" in capsys.readouterr().err


def test_bad_inputs(data_root, tmp_path, capsys):
    with pytest.raises(ValueError, match="experiment preset 'walker_wakl' is unknown; did you mean"):
        get_preset("walker_wakl")
    missing = dataclasses.replace(get_preset("walker_walk_tiny"), runs_dir=str(tmp_path),
                                  data=dataclasses.replace(get_preset("walker_walk").data, root=str(tmp_path / "nope")))
    with pytest.raises(FileNotFoundError, match="does not exist. Download ExoRL's walker/proto buffer"):
        train_job.train(missing, quiet=True)

    config = _config(data_root, tmp_path, steps=4)
    with pytest.raises(ValueError, match="cartpole_swingupp"):
        train_job.train(dataclasses.replace(config, data=dataclasses.replace(config.data, task="cartpole_swingupp")))
    assert not config.run_dir.exists()  # nothing written for a run that could not start
    train_job.prepare_run(config)
    changed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, learning_rate=0.5))
    with pytest.raises(ValueError, match="different config \\(optim.learning_rate: .* -> 0.5\\).*--force"):
        train_job.prepare_run(changed)
    train_job.prepare_run(changed, force=True)
    assert ExperimentConfig.from_json((config.run_dir / "config.json").read_text()) == changed

    assert train_job.main(["--preset", "no_such_preset"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert evaluate_job.main(["--run", str(tmp_path / "not_a_run")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    shutil.rmtree(config.run_dir)
