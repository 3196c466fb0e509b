"""Exploration relabelled for every task of a hidden family: the explorer, multi-task relabelling, the writer."""

import json

import numpy as np
import pytest

import datasets
import envs
from experiments.collection import demonstrators as demo
from experiments.collection import histories as histories_lib
from experiments.collection.episode import play_episode
from experiments.collection.per_task import write_per_task

MAZE = "point_mass_maze_reach_hidden"


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """12 explorer episodes (3 histories of 4) at the maze preset's action repeat."""
    root = tmp_path_factory.mktemp("explore")
    histories_lib.write_dataset(root, task=MAZE, source="explorer", num_histories=3, episodes_per_history=4,
                                seed=5, action_repeat=10)
    return root


def test_several_task_parameters_relabel_as_each_one_alone(explored):
    episode = datasets.read_episodes(explored / "point_mass_maze" / "explorer")[1]
    physics = np.concatenate([episode.physics, episode.final_physics[None]])
    actions = np.concatenate([np.zeros((1, 2)), episode.actions])
    targets = envs.task_set(MAZE)
    together = envs.relabel_rewards(MAZE, physics, actions, task=targets, action_repeat=10)
    assert together.shape == (4, physics.shape[0]) and together.dtype == np.float32
    for j, target in enumerate(targets):
        np.testing.assert_array_equal(together[j], envs.relabel_rewards(MAZE, physics, actions, task=target,
                                                                        action_repeat=10))
    goals = envs.task_set("point_nav_hidden")[:3]  # the simulator-free family too
    positions = np.random.default_rng(0).uniform(-1, 1, (30, 2))
    nav = envs.relabel_rewards("point_nav_hidden", positions, task=goals)
    np.testing.assert_array_equal(nav[2], envs.relabel_rewards("point_nav_hidden", positions, task=goals[2]))
    for bad in (np.zeros((0, 2)), np.zeros((2, 3)), np.zeros((2, 2, 2))):
        with pytest.raises(ValueError, match="task"):
            envs.relabel_rewards(MAZE, physics, actions, task=bad, action_repeat=10)


def test_explorer_drives_to_its_destination_and_never_reads_the_target():
    explorer = demo.MazeExplorer(MAZE, 2, 4, noise_max=0.0)
    inner, outer = demo.MazeExplorer.CORRIDOR
    ends, destinations = [], []
    for history in range(4):
        env = envs.make(MAZE, seed=demo.history_seed(2, history), action_repeat=10)
        for index in range(4):
            episode = play_episode(env, explorer, 4 * history + index, source="test")
            ends.append(episode.final_observation[:2])
            destinations.append(explorer.destinations[0].copy())
    ends, destinations = np.array(ends), np.array(destinations)
    assert np.all(np.max(np.abs(destinations), axis=1) >= inner) and np.all(np.abs(destinations) <= outer)
    # Noise-free, every path round the box ends at its destination, wherever the corridor puts it.
    np.testing.assert_array_less(np.linalg.norm(ends - destinations, axis=1), 0.02)
    assert len({tuple(np.round(d, 3)) for d in destinations}) == len(destinations)  # each its own
    # The same seed and history give the same episodes whatever the hidden target is: it is never read.
    pinned = envs.make(MAZE, seed=demo.history_seed(2, 0), action_repeat=10, task=envs.task_set(MAZE)[3])
    again = histories_lib.run_history(pinned, demo.MazeExplorer(MAZE, 2, 4, noise_max=0.0), 0, 4)
    np.testing.assert_allclose(again[2].final_observation[:2], ends[2], atol=1e-9)
    with pytest.raises(ValueError, match="maze"):
        demo.MazeExplorer("point_nav_hidden", 0, 4)


def test_per_task_copies_carry_their_target_and_the_own_one_reproduces(explored, tmp_path):
    buffer = write_per_task(explored, task=MAZE, source_algo="explorer", algo="per_task", action_repeat=10)
    source = datasets.read_episodes(explored / "point_mass_maze" / "explorer")
    copies = datasets.read_episodes(buffer)
    targets = envs.task_set(MAZE)
    assert len(copies) == 4 * len(source) == 48
    for e, episode in enumerate(source):
        own = int(np.argmin(np.linalg.norm(targets - episode.task, axis=1)))
        for j in range(4):
            copy = copies[4 * e + j]
            np.testing.assert_array_equal(copy.task, targets[j])
            assert copy.history is None
            np.testing.assert_array_equal(copy.observations, episode.observations)
            np.testing.assert_array_equal(copy.actions, episode.actions)
        np.testing.assert_allclose(copies[4 * e + own].rewards, episode.rewards, atol=1e-4)
    # The copies differ by target: some pass or end at one target and not at another.
    returns = np.array([c.total_return for c in copies]).reshape(-1, 4)
    assert np.any(returns.max(axis=1) - returns.min(axis=1) > 10)
    # The sampler groups them by target: chains within one target only.
    groups = {tuple(c.task) for c in copies}
    assert groups == {tuple(t) for t in targets}
    settings = json.loads((buffer.parent / "per_task.json").read_text())
    assert settings["action_repeat"] == 10 and settings["tasks"] == targets.tolist()
    # A rerun finds them complete and rewrites nothing.
    stamps = {p.name: p.stat().st_mtime_ns for p in buffer.iterdir()}
    write_per_task(explored, task=MAZE, source_algo="explorer", algo="per_task", action_repeat=10)
    assert {p.name: p.stat().st_mtime_ns for p in buffer.iterdir()} == stamps


def test_the_per_task_command_line(explored, capsys):
    from experiments import collect

    assert collect.main(["per-task", "--root", str(explored), "--task", MAZE, "--source-algo", "explorer",
                         "--algo", "from_cli", "--action-repeat", "10", "--max-episodes", "1"]) == 0
    buffer = explored / "point_mass_maze" / "from_cli" / "buffer"
    assert capsys.readouterr().out == f"wrote 4 episodes to {buffer}\n"  # one episode, once per target
    assert json.loads((buffer.parent / "per_task.json").read_text())["source_algo"] == "explorer"


def test_per_task_refuses_what_it_cannot_relabel(explored, tmp_path):
    with pytest.raises(ValueError, match="action_repeat"):  # relabelled under another repeat: refused
        write_per_task(explored, task=MAZE, source_algo="explorer", algo="wrong_repeat", action_repeat=5)
    assert not (explored / "point_mass_maze" / "wrong_repeat").exists()  # nothing left behind
    write_per_task(explored, task=MAZE, source_algo="explorer", algo="first", action_repeat=10, max_episodes=2)
    with pytest.raises(ValueError, match="action_repeat"):  # the settings of the data on disk
        write_per_task(explored, task=MAZE, source_algo="explorer", algo="first", action_repeat=1)
    with pytest.raises(FileNotFoundError, match="missing_source"):
        write_per_task(explored, task=MAZE, source_algo="missing_source", algo="x", action_repeat=10)
    with pytest.raises(ValueError, match="source directory itself"):
        write_per_task(explored, task=MAZE, source_algo="explorer", algo="explorer", action_repeat=10)
    with pytest.raises(ValueError, match="not a hidden-task family"):
        write_per_task(explored, task="cartpole_swingup", source_algo="explorer", algo="x")
    # A source without physics states (a D4RL-like export) names the episode.
    plain = datasets.read_episodes(explored / "point_mass_maze" / "explorer")[:1]
    import dataclasses

    stripped = [dataclasses.replace(plain[0], physics=None, final_physics=None)]
    datasets.exorl.save(tmp_path, "point_mass_maze", "no_physics", stripped)
    with pytest.raises(ValueError, match="physics"):
        write_per_task(tmp_path, task=MAZE, source_algo="no_physics", algo="x", action_repeat=10)


def test_maze_explore_preset_makes_both_datasets_and_trains(tmp_path):
    from experiments import train as train_job
    from experiments.presets import get_preset

    base = get_preset("maze_explore_tiny")
    assert base.sampler.group_by == "task" and base.data.make == "explorer_per_task"
    config = base.replace(runs_dir=str(tmp_path / "runs"), data={"root": str(tmp_path / "maze")},
                          train={"steps": 2, "checkpoint_every": 2}, eval={"num_envs": 2, "num_trials": 2})
    summary = train_job.train(config, quiet=True)
    domain = tmp_path / "maze" / "point_mass_maze"
    assert len(list((domain / "explorer" / "buffer").glob("*.npz"))) == 16  # 4 histories x 4, on first use
    copies = datasets.read_episodes(domain / "explorer_per_task")
    assert len(copies) == 64 and all(c.history is None for c in copies)
    assert len(summary["eval"]["per_trial_success_rate"]) == 2


def test_breakdown_by_task_groups_environments_by_their_task(tmp_path, capsys):
    from experiments.analysis import per_task as analysis

    targets = envs.task_set(MAZE)
    tasks = targets[[2, 0, 2, 1, 0]]
    returns = [[10.0, 0.0, 30.0, 5.0, 2.0], [20.0, 4.0, 40.0, 0.0, 6.0]]  # [trials, envs]
    successes = [[True, False, True, False, False], [True, False, False, False, True]]
    result = {"task": MAZE, "num_envs": 5, "returns": returns, "tasks": tasks.tolist(), "successes": successes}
    rows = analysis.task_breakdown(result, tasks)
    assert [r["task"] for r in rows] == [targets[2].tolist(), targets[0].tolist(), targets[1].tolist()]
    assert [r["environments"] for r in rows] == [2, 2, 1]
    np.testing.assert_allclose(rows[0]["per_trial_mean_return"], [20.0, 30.0])
    np.testing.assert_allclose(rows[1]["per_trial_success_rate"], [0.0, 0.5])
    assert analysis.task_names(MAZE, np.array([r["task"] for r in rows])) == [
        "reach_bottom_left", "reach_top_left", "reach_top_right"]
    (tmp_path / "eval.json").write_text(json.dumps(result))
    assert analysis.main([str(tmp_path)]) == 0
    assert "| reach_bottom_left | 2 | 20 30 | 100% -> 50% |" in capsys.readouterr().out
    with pytest.raises(ValueError, match="rows"):
        analysis.task_breakdown(result, tasks[:3])
    del result["tasks"]
    (tmp_path / "eval.json").write_text(json.dumps(result))
    assert analysis.main([str(tmp_path)]) == 2  # no tasks recorded and no config beside it
    assert "--config" in capsys.readouterr().out
