"""Your own data (issue 28, item 3): own-data presets, the refusal of another preset's task settings on other
data, Minari directories through the HDF5 reader, the task from a Minari env_spec, any gymnasium MuJoCo id."""

import numpy as np
import pytest

import datasets
import envs
from datasets import Trajectory, minari
from experiments import train as train_job
from experiments.own_data import FROM_DATA, inherited_task_fields, resolve_task
from experiments.presets import get_preset

pytestmark = pytest.mark.filterwarnings("ignore")


def test_any_gymnasium_mujoco_id_is_a_task():
    spec = envs.task_spec("InvertedPendulum-v4")  # not in the table: read from the environment's spaces
    assert (spec.name, spec.kind, spec.obs_dim, spec.action_dim, spec.physics_dim) == (
        "InvertedPendulum-v4", "gymnasium", 4, 1, 4)
    assert envs.canonical_name("Ant-v4") == "Ant-v4" and envs.task_spec("Ant-v4").action_dim == 8
    assert envs.make("InvertedPendulum-v4", seed=0).reset().observation.shape == (4,)
    with pytest.raises(ValueError, match="any gymnasium MuJoCo id"):
        envs.task_spec("CartPole-v1")  # registered, but not MuJoCo


def test_another_presets_task_settings_on_other_data_are_refused(capsys):
    code = train_job.main(["--preset", "tiny", "--data.format", "d4rl", "--data.root", "my.hdf5"])
    err = capsys.readouterr().err
    assert code == 2
    assert "data.task='cartpole_swingup'" in err and "data.action_repeat=4" in err and "d4rl_file" in err


def test_own_data_presets_inherit_nothing_and_a_moved_root_only_warns():
    for name in ("d4rl_file", "minari_file", "d4rl_file_tiny"):
        preset = get_preset(name)
        assert preset.data.task == FROM_DATA and preset.data.action_repeat == 1 and preset.data.make == "none"
        moved = preset.replace(data={"root": "mine.hdf5"})
        assert inherited_task_fields(preset, moved) == []
    walker = get_preset("walker_walk")
    assert "data.task='walker_walk'" in inherited_task_fields(walker, walker.replace(data={"root": "/data/exorl"}))
    with pytest.raises(ValueError, match="data.task"):
        resolve_task(get_preset("d4rl_file").replace(data={"root": "mine.hdf5"}))  # a D4RL file names no task


def _episodes(count=6, length=12):
    rng = np.random.default_rng(0)
    return [Trajectory(observations=rng.normal(size=(length, 4)).astype(np.float32),
                       actions=rng.uniform(-1, 1, (length, 1)).astype(np.float32),
                       rewards=np.full(length, 1.0 + i, np.float32), terminals=np.eye(length, dtype=bool)[-1],
                       timeouts=np.zeros(length, bool), final_observation=np.zeros(4, np.float32))
            for i in range(count)]


def test_a_minari_directory_trains_and_evaluates_on_the_task_it_names(tmp_path):
    minari.save("mine/pendulum-v0", _episodes(), root=tmp_path / "ds", env_id="InvertedPendulum-v4")
    directory = tmp_path / "ds" / "mine" / "pendulum-v0"
    assert len(datasets.read_episodes(directory, format="minari")) == 6  # a directory: the HDF5 reader
    assert minari.env_id(str(directory)) == "InvertedPendulum-v4"
    config = get_preset("minari_file_tiny").replace(
        runs_dir=str(tmp_path / "runs"), data={"root": str(directory)},
        sampler={"max_steps": 16},
        train={"steps": 2, "checkpoint_every": 2}, eval={"num_envs": 2, "num_trials": 1, "context_steps": 8})
    summary = train_job.train(config, quiet=True)
    saved = train_job.RunDir(config.run_dir).config()
    assert saved.data.task == "InvertedPendulum-v4" and saved.data.action_repeat == 1
    assert summary["eval"]["task"] == "InvertedPendulum-v4" and len(summary["eval"]["returns"][0]) == 2
