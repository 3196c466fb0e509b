"""End to end on tiny presets: train, checkpoint, kill, resume, evaluate; and the jobs' bad inputs."""

import dataclasses
import json
import shutil

import jax
import numpy as np
import pytest

from experiments import evaluate as evaluate_job
from experiments import train as train_job
from experiments.checkpoints import Checkpoints
from experiments.config import ExperimentConfig
from experiments.presets import get_preset
from experiments.run import RunDir, RunLockedError


def _config(data_root, runs, name="run", **train):
    base = get_preset("tiny")
    return dataclasses.replace(
        base, name=name, runs_dir=str(runs),
        data=dataclasses.replace(base.data, root=str(data_root), algo="random"),
        train=dataclasses.replace(base.train, **{"steps": 12, "checkpoint_every": 4, "log_every": 2, **train}),
        eval=dataclasses.replace(base.eval, num_envs=2, num_trials=2))


def _final_params(config):
    model, mesh, state, step = RunDir(config.run_dir).restore()
    assert step == config.train.steps
    return state.params


def test_kill_resume_equals_uninterrupted_and_evaluates(data_root, tmp_path):
    whole = _config(data_root, tmp_path / "a")
    train_job.train(whole, evaluate_at_end=False, quiet=True)

    interrupted = _config(data_root, tmp_path / "b")
    assert train_job.train(interrupted, evaluate_at_end=False, quiet=True, until=6) == {"stopped_at": 6}
    assert Checkpoints(interrupted.run_dir / "checkpoints", 3).steps() == [4, 6]
    shutil.rmtree(interrupted.run_dir / "checkpoints" / "6")  # as if killed after step 6, before it was saved
    summary = train_job.train(interrupted, evaluate_at_end=False, quiet=True)  # resumes from step 4
    assert summary["steps"] == 12 and np.isfinite(summary["final_loss"])

    for got, want in zip(jax.tree.leaves(_final_params(interrupted)), jax.tree.leaves(_final_params(whole))):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))

    result = evaluate_job.evaluate_run(whole.run_dir)
    saved = json.loads((whole.run_dir / "eval.json").read_text())
    assert saved["per_trial_mean_return"] == result["per_trial_mean_return"] and len(saved["returns"]) == 2
    for key in ("per_trial_std_return", "last_trial_mean_return", "best_of_n_mean_return", "dataset_median_return",
                "dataset_max_return", "normalized"):
        assert key in saved
    assert saved["best_of_n_mean_return"] >= saved["last_trial_mean_return"]
    assert (whole.run_dir / "eval.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| 2 |" in (whole.run_dir / "eval.md").read_text()
    events = [p for p in (whole.run_dir / "tb").iterdir() if p.name.startswith("events.out.tfevents")]
    assert events and max(p.stat().st_size for p in events) > 100  # holds scalars, not only a header
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
    model, mesh, state, step = RunDir(config.run_dir).restore()
    assert step is not None and step < config.train.steps
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state.params))


def test_corrupt_checkpoint_falls_back(data_root, tmp_path, capsys):
    config = _config(data_root, tmp_path, steps=8)
    train_job.train(config, evaluate_at_end=False, quiet=True)
    directory = config.run_dir / "checkpoints"
    for path in (directory / "8").rglob("*"):
        if path.is_file():
            path.write_bytes(b"not a checkpoint")
    model, mesh, state, step = RunDir(config.run_dir).restore()
    assert step == 4 and state is not None
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
    RunDir(config.run_dir).claim(config)
    changed = dataclasses.replace(config, optim=dataclasses.replace(config.optim, learning_rate=0.5))
    with pytest.raises(ValueError, match="different config \\(optim.learning_rate: .* -> 0.5\\).*--force"):
        RunDir(config.run_dir).claim(changed)
    RunDir(config.run_dir).claim(changed, force=True)
    assert ExperimentConfig.from_json((config.run_dir / "config.json").read_text()) == changed

    assert train_job.main(["--preset", "no_such_preset"]) == 2
    assert "unknown" in capsys.readouterr().err
    assert evaluate_job.main(["--run", str(tmp_path / "not_a_run")]) == 2
    assert "not a run directory" in capsys.readouterr().err
    shutil.rmtree(config.run_dir)


def test_finished_run_reports_its_summary_and_a_second_process_is_refused(data_root, tmp_path, capsys):
    config = _config(data_root, tmp_path, steps=4)
    first = train_job.train(config, quiet=True)
    saved = json.loads((config.run_dir / "summary.json").read_text())
    again = train_job.train(config, quiet=True)  # nothing trains: the saved summary comes back
    assert again["already_finished"] and again["final_loss"] == saved["final_loss"] == first["final_loss"]
    assert np.isfinite(again["final_loss"])

    before = {p: p.read_bytes() for p in config.run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}
    with RunDir(config.run_dir).lock():  # another process holds the run
        longer = dataclasses.replace(config, train=dataclasses.replace(config.train, steps=8),
                                     optim=config.optim)
        with pytest.raises(RunLockedError, match="is in use by process"):
            train_job.train(longer, quiet=True, force=True)
    after = {p: p.read_bytes() for p in config.run_dir.rglob("*") if p.is_file() and p.name != "run.lock"}
    assert after == before  # the refused run touched nothing


def test_evaluating_a_relabelled_exorl_run_reads_no_dataset_file(tmp_path, monkeypatch):
    from datasets import exorl as exorl_module

    from experiments import collect

    # Relabelling with the preset's action repeat (4) re-simulates each row, so it needs states a simulator
    # produced: two random episodes of the real task, collected with that repeat.
    collect.collect(collect.CollectConfig(out=tmp_path / "collected", task="cartpole_swingup", policy="random",
                                          episodes=2, action_repeat=4, progress=False))
    base = _config(tmp_path / "collected", tmp_path, steps=2)
    assert base.data.action_repeat == 4
    config = dataclasses.replace(base, data=dataclasses.replace(base.data, relabel=True))
    train_job.train(config, evaluate_at_end=False, quiet=True)
    reads = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: reads.append(a[0]) or real_load(*a, **k))
    monkeypatch.setattr(exorl_module, "load", lambda *a, **k: reads.append("exorl.load") or [])
    result = evaluate_job.evaluate_run(config.run_dir)
    assert reads == [] and len(result["returns"]) == 2


def test_help_lists_presets_and_choices(capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_job.main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("--preset", "walker_walk_tiny", "hopper-medium-replay", "{fused,interleaved}",
                   "{exorl,d4rl,minari}", "{contiguous,striped,zigzag}", "--distributed.enable",
                   "python -m experiments.train --preset walker_walk --data.root ~/exorl"):
        assert needle in text, needle
    assert train_job.main(["--model.token-layout", "braided"]) == 2  # tyro validates the Literal's choices
    err = capsys.readouterr().err
    assert err.startswith("error: invalid choice 'braided' for argument '--model.token-layout'") and err.count("\n") == 1


def test_parsing_a_config_imports_no_jax():
    import subprocess
    import sys

    code = ("import sys; from experiments.cli import parse; from experiments.train import TrainCommand; "
            "c = parse(TrainCommand, ['--preset', 'tiny', '--train.steps', '3'], description=''); "
            "assert c.config.train.steps == 3 and c.preset == 'tiny'; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('jax', 'flax', 'optax')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


class _ActionLog:
    """A run_trials observer that keeps environment 0's actions in trial 0."""

    def __init__(self):
        self.actions = []

    def begin(self, trial, batch_env):
        pass

    def step(self, trial, batch_env, actions, rewards, active):
        if trial == 0 and active[0]:
            self.actions.append(np.asarray(actions[0]))


def test_video_is_the_evaluated_trial(data_root, tmp_path):
    import envs

    config = _config(data_root, tmp_path, steps=2)
    train_job.train(config, evaluate_at_end=False, quiet=True)
    run = RunDir(config.run_dir)
    model, _, state, _ = run.restore()
    log, actor = _ActionLog(), evaluate_job.model_actor(config, state.params, model, run.data())
    plain = evaluate_job.rollout(config, actor, run.data(), recorder=log)
    recorder = evaluate_job.VideoRecorder()
    try:
        filmed = evaluate_job.rollout(config, actor, run.data(), recorder=recorder)
    finally:
        recorder.close()
    if recorder.problem:  # a video problem only warns; the rollout went on without frames
        pytest.skip(f"no offscreen rendering: {recorder.problem}")
    assert filmed["returns"] == plain["returns"]  # recording changes nothing of the rollout
    length = envs.make(config.data.task, seed=0, action_repeat=config.data.action_repeat).episode_length
    assert len(recorder.actions) == len(log.actions) == length
    np.testing.assert_array_equal(np.stack(recorder.actions), np.stack(log.actions))
    assert len(recorder.frames) == len(recorder.actions) + 1 and recorder.frames[0].dtype == np.uint8
    assert not np.array_equal(recorder.frames[0], recorder.frames[-1])  # the cart moved


def test_hidden_task_preset_makes_its_data_trains_and_reports_success(tmp_path):
    base = get_preset("nav_hidden_tiny")
    config = base.replace(runs_dir=str(tmp_path / "runs"), data={"root": str(tmp_path / "nav")},
                          train={"steps": 2, "checkpoint_every": 2}, eval={"num_envs": 4, "num_trials": 2})
    summary = train_job.train(config, quiet=True)
    buffer = tmp_path / "nav" / "point_nav" / "searcher" / "buffer"
    assert len(list(buffer.glob("episode_*.npz"))) == 16  # 4 histories x 4 episodes, made on first use
    ev = summary["eval"]
    assert ev["task"] == "point_nav_hidden_heldout" and len(ev["per_trial_success_rate"]) == 2
    returns = np.array(ev["returns"])
    for trial, rate in enumerate(ev["per_trial_success_rate"]):  # sparse 0/1 rewards: success = any reward
        assert rate == np.mean(returns[trial] > 0)
    assert "success rate" in (config.run_dir / "eval.md").read_text()
    # The hidden-task presets roll out the uniform random floor on the same environments: the same figures
    # as the random actor rolled out alone.
    from experiments.evaluate import random_actor, rollout
    from experiments.reports import summary_table
    from experiments.run import RunDir

    floor, data = ev["random_floor"], RunDir(config.run_dir).data()
    alone = rollout(config, random_actor(config, data), data)
    assert floor["per_trial_mean_return"] == alone["per_trial_mean_return"]
    assert floor["per_trial_success_rate"] == alone["per_trial_success_rate"]
    assert "random policy, last trial" in summary_table(summary)
    assert "uniform random policy" in (config.run_dir / "eval.md").read_text()
