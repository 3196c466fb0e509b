"""load_policy: a trained run acting from a user's own code exactly as the evaluator acts, for one environment
(dm_env TimeSteps, gymnasium observations) or a batch; checkpoints by name or step; evaluate's --checkpoint,
--seed and --task. One tiny discrete (Dark Room) run serves the whole file."""

import json
import logging

import jax
import numpy as np
import pytest

import envs
from envs.batch import env_seeds
from experiments import evaluate as evaluate_job
from experiments import load_policy
from experiments import train as train_job
from experiments.presets import get_preset


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """dark_room_tiny for 4 steps: checkpoints 2 (scored by an evaluation during training) and 4."""
    tmp = tmp_path_factory.mktemp("load_policy")
    config = get_preset("dark_room_tiny").replace(
        runs_dir=str(tmp / "runs"), data={"root": str(tmp / "data")},
        train={"steps": 4, "checkpoint_every": 2, "eval_every": 2},
        eval={"num_envs": 2, "num_trials": 2, "random_floor": False})
    train_job.train(config, evaluate_at_end=False, quiet=True)
    return config


def _dm_env_returns(policy, env):
    for _ in range(policy.num_trials):
        timestep = env.reset()
        while not timestep.last():
            timestep = env.step(policy.act(timestep))
        assert policy.act(timestep) is None  # the last reward ends the trial
    return policy.trial_returns


def test_acts_as_the_evaluator_for_a_batch_one_dm_env_and_one_gymnasium_env(run):
    evaluated = np.array(evaluate_job.evaluate_run(run.run_dir)["returns"])  # [trials, envs]

    batch = load_policy(run.run_dir, num_envs=2)
    assert (batch.num_trials, batch.task, batch.step) == (2, "dark_room_hidden_heldout", 4)
    batch_env = batch.make_batch()
    for _ in range(batch.num_trials):
        actions = batch.act(batch_env.reset())
        assert actions.shape == (2,) and actions.dtype == np.int32
        while actions is not None:
            actions = batch.act(batch_env.step(actions))
    np.testing.assert_array_equal(batch.trial_returns, evaluated)

    one = load_policy(run.run_dir)  # environment 0 of the evaluation, alone
    seed = env_seeds(run.eval.seed, 2)[0]
    np.testing.assert_array_equal(_dm_env_returns(one, one.make_env(seed))[:, 0], evaluated[:, 0])

    one.reset()
    gym_env = envs.to_gymnasium(envs.make(one.task, seed=seed))
    for _ in range(one.num_trials):
        observation, _ = gym_env.reset()
        reward, done = None, False
        while not done:
            action = one.act(observation, reward)
            assert np.ndim(action) == 0
            observation, reward, terminated, truncated, _ = gym_env.step(action)
            done = terminated or truncated
        assert one.act(observation, reward, done=True) is None
    np.testing.assert_array_equal(one.trial_returns[:, 0], evaluated[:, 0])
    with pytest.raises(ValueError, match="the 2 trials of this policy's context are used; call reset"):
        one.act(observation)
    with pytest.raises(ValueError, match=r"takes \[2\] \(one environment\) or \[1, 2\]"):
        load_policy(run.run_dir).act(np.zeros(3))


def test_restores_any_checkpoint_into_abstract_targets_without_compiling(run, caplog):
    jax.config.update("jax_log_compiles", True)
    try:
        with caplog.at_level(logging.WARNING):
            policy = load_policy(run.run_dir, checkpoint="best")
    finally:
        jax.config.update("jax_log_compiles", False)
    compiled = [r.getMessage() for r in caplog.records if "ompil" in r.getMessage()]
    assert compiled == []  # no throwaway train state is computed
    assert policy.step == 2  # the only checkpoint scored during training
    assert load_policy(run.run_dir, checkpoint=4).step == 4
    with pytest.raises(ValueError, match=r"checkpoint=3: .* holds the steps \[2, 4\]"):
        load_policy(run.run_dir, checkpoint=3)
    with pytest.raises(ValueError, match="checkpoint='latest-ish'"):
        load_policy(run.run_dir, checkpoint="latest-ish")


def test_evaluate_checkpoint_seed_and_another_task_of_the_family(run, tmp_path, capsys):
    out = tmp_path / "train_goals"
    code = evaluate_job.main(["--run", str(run.run_dir), "--checkpoint", "2", "--seed", "3", "--task",
                              "dark_room_hidden", "--out", str(out)])
    assert code == 0
    result = json.loads((out / "eval.json").read_text())
    assert (result["checkpoint_step"], result["task"]) == (2, "dark_room_hidden")
    expected = envs.make_batch("dark_room_hidden", 2, seed=3).task_parameters
    np.testing.assert_array_equal(result["tasks"], expected)  # the seed drew the goals
    assert evaluate_job.main(["--run", str(run.run_dir), "--task", "walker_walk"]) == 2
    assert "task='walker_walk' has observations of size 24" in capsys.readouterr().err


def test_eval_plot_band_stays_within_the_returns_that_happened():
    from experiments.reports.evaluation import return_band

    returns = np.array([[0.0, 0.0, 0.0, 10.0], [0.0, 10.0, 10.0, 10.0]])  # sparse: mean - std < 0 in trial 1
    assert (returns.mean(axis=1) - returns.std(axis=1))[0] < 0
    low, high = return_band(returns)
    assert (low >= returns.min(axis=1)).all() and (high <= returns.max(axis=1)).all()
    np.testing.assert_allclose(low, [0.0, 7.5])
    np.testing.assert_allclose(high, [2.5, 10.0])


def test_tensorboard_numbers_trials_from_1(run):
    import struct

    from tensorboardX.proto import event_pb2

    tags = set()
    for path in (run.run_dir / "tb").glob("events.*"):
        data, offset = path.read_bytes(), 0
        while offset < len(data):  # TFRecord: length, its CRC, the event, its CRC
            (length,) = struct.unpack("<Q", data[offset:offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
            tags |= {value.tag for value in event.summary.value}
            offset += 16 + length
    assert {"eval/trial_1_mean_return", "eval/trial_2_mean_return"} <= tags and "eval/trial_0_mean_return" not in tags
