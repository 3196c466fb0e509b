"""``experiments.train`` as 2 processes x 4 CPU devices over localhost equals one process with 8 devices:
the same final loss and the same evaluation, and only process 0 writes the run directory."""

import json
import sys

import jax
import numpy as np
import pytest

from datasets import exorl
from datasets.synthetic import random_trajectories
from experiments.run import RunDir
from tests.processes import free_port, run_together


def _command(data_root, runs, name):
    return [sys.executable, "-m", "experiments.train", "--preset", "tiny", "--data.root", str(data_root),
            "--data.algo", "random", "--runs-dir", str(runs), "--name", name, "--train.steps", "4",
            "--train.checkpoint-every", "2", "--eval.num-envs", "2", "--eval.num-trials", "2"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("exorl")
    exorl.save(root, "cartpole", "random", random_trajectories(3, [250] * 6, obs_dim=5, act_dim=1))
    return root


def test_two_processes_train_and_evaluate_as_one(data_root, tmp_path):
    runs = tmp_path / "runs"
    run_together([_command(data_root, runs, "one")], devices=8)
    port = free_port()
    distributed = ["--distributed.enable", "--distributed.coordinator", f"localhost:{port}",
                   "--distributed.num-processes", "2", "--distributed.process-id"]
    run_together([_command(data_root, runs, "two") + distributed + [str(pid)] for pid in (0, 1)], devices=4)
    one, two = (json.loads((runs / name / "summary.json").read_text()) for name in ("one", "two"))
    assert np.isfinite(one["final_loss"])
    np.testing.assert_allclose(two["final_loss"], one["final_loss"], rtol=1e-5)
    params = [RunDir(runs / name).restore()[2].params for name in ("one", "two")]
    for got, want in zip(jax.tree.leaves(params[1]), jax.tree.leaves(params[0])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    # The same policy in a chaotic simulator: collectives that sum in another order leave float32 noise in
    # the parameters, which 250 steps of cartpole amplify to about 1e-3 of the return.
    np.testing.assert_allclose(two["eval"]["returns"], one["eval"]["returns"], rtol=1e-2)
    assert sorted(p.name for p in (runs / "two" / "checkpoints").iterdir() if p.name.isdigit()) == ["2", "4"]
