"""The collector: output reads back through the datasets readers, resumes exactly, and checks its settings."""

import json

import numpy as np
import pytest

import datasets
import envs
from experiments import collect
from experiments.analysis import dataset_stats
from experiments.collection.sac import SACConfig

# 1000-step cartpole episodes with action repeat 50 are 20 agent steps long.
TINY_SAC = SACConfig(hidden=(16, 16), batch_size=8, warmup_steps=30, update_every=5, buffer_capacity=1000)


def _config(out, **changes):
    settings = dict(out=out, task="cartpole_swingup", policy="random", episodes=3, action_repeat=50,
                    progress=False, sac=TINY_SAC)
    settings.update(changes)
    return collect.CollectConfig(**settings)


def _assert_same_episodes(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        for name in ("observations", "actions", "rewards", "physics", "final_observation", "terminals"):
            if getattr(a, name) is None:
                assert getattr(b, name) is None
            else:
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_random_exorl_reads_back_with_physics_that_relabels_to_the_stored_rewards(tmp_path):
    config = _config(tmp_path, episodes=2, action_repeat=1)
    log = collect.collect(config)
    episodes = datasets.exorl.load(tmp_path, "cartpole", "random")
    assert len(episodes) == 2 and [len(e) for e in episodes] == [1000, 1000]
    relabelled = datasets.exorl.load(tmp_path, "cartpole", "random", task="cartpole_swingup")
    for stored, again, entry in zip(episodes, relabelled, log["episodes"]):
        assert stored.physics.shape == (1000, 4) and stored.timeouts[-1] and not stored.terminals.any()
        np.testing.assert_allclose(again.rewards, stored.rewards, atol=1e-5)
        assert entry["return"] == pytest.approx(float(np.sum(stored.rewards, dtype=np.float64)))
        assert np.all(np.abs(stored.actions) <= 1)
    assert not np.array_equal(episodes[0].actions, episodes[1].actions)


def test_sac_d4rl_for_gymnasium_tasks_splits_files_and_reads_back(tmp_path):
    config = _config(tmp_path, task="hopper", policy="sac", episodes=3, action_repeat=1, episodes_per_file=2)
    log = collect.collect(config)
    assert np.isfinite(log["episodes"][-1]["critic_loss"])  # hopper falls fast: updates start in episode 1-2
    files = sorted((tmp_path / "hopper-v4" / "sac").glob("*.hdf5"))
    assert [f.name for f in files] == ["episodes_000000.hdf5", "episodes_000002.hdf5"]
    episodes = collect.load_episodes(config)
    assert len(episodes) == 3
    for episode, entry in zip(episodes, log["episodes"]):
        assert episode.terminals[-1] or episode.timeouts[-1]
        assert episode.physics.shape[1] == envs.task_spec("hopper").physics_dim
        assert episode.final_observation is not None
        assert entry["length"] == len(episode)


@pytest.mark.parametrize("task, per_file", [("cartpole_swingup", 100), ("hopper", 2)])
def test_random_resume_keeps_the_first_episodes_and_equals_an_uninterrupted_run(tmp_path, task, per_file):
    repeat = 50 if task == "cartpole_swingup" else 1
    first = _config(tmp_path / "a", task=task, episodes=3, action_repeat=repeat, episodes_per_file=per_file)
    collect.collect(first)
    directory = collect.data_dir(first)
    before = {p.name: p.read_bytes() for p in directory.rglob("*.npz")}
    collect.collect(_config(tmp_path / "a", task=task, episodes=5, action_repeat=repeat,
                            episodes_per_file=per_file))
    for name, content in before.items():
        assert next(directory.rglob(name)).read_bytes() == content
    whole = _config(tmp_path / "b", task=task, episodes=5, action_repeat=repeat, episodes_per_file=per_file)
    collect.collect(whole)
    resumed = collect.load_episodes(first)
    assert len(resumed) == 5
    _assert_same_episodes(resumed, collect.load_episodes(whole))


def test_episodes_written_before_a_crash_but_not_logged_are_played_again(tmp_path):
    """D4RL shards: episodes 1-2 are on disk (one in each file) but the log ends after episode 0."""
    settings = dict(task="hopper", action_repeat=1, episodes_per_file=2)
    crashed = _config(tmp_path / "a", episodes=3, **settings)
    collect.collect(crashed)
    log_path = collect.data_dir(crashed) / "progress.json"
    log = json.loads(log_path.read_text())
    log["episodes"] = log["episodes"][:1]
    log_path.write_text(json.dumps(log))
    resumed = collect.collect(_config(tmp_path / "a", episodes=4, **settings))
    whole = _config(tmp_path / "b", episodes=4, **settings)
    expected = collect.collect(whole)
    assert [e["return"] for e in resumed["episodes"]] == [e["return"] for e in expected["episodes"]]
    _assert_same_episodes(collect.load_episodes(crashed), collect.load_episodes(whole))


def test_sac_resume_and_crash_recovery_continue_the_same_learning_history(tmp_path):
    whole = _config(tmp_path / "whole", policy="sac", episodes=5)
    log = collect.collect(whole)
    assert "critic_loss" in log["episodes"][-1] and np.isfinite(log["episodes"][-1]["critic_loss"])

    split = _config(tmp_path / "split", policy="sac", episodes=2)
    collect.collect(split)
    directory = collect.data_dir(split)
    saved = (directory / "checkpoint.pkl").read_bytes()
    collect.collect(_config(tmp_path / "split", policy="sac", episodes=3))
    # A crash after writing episode 2 but before its checkpoint: the rerun must regenerate episode 2.
    (directory / "checkpoint.pkl").write_bytes(saved)
    collect.collect(_config(tmp_path / "split", policy="sac", episodes=5))

    _assert_same_episodes(collect.load_episodes(split), collect.load_episodes(whole))
    split_log = json.loads((directory / "progress.json").read_text())
    assert [e["return"] for e in split_log["episodes"]] == [e["return"] for e in log["episodes"]]
    assert split_log["episodes"][-1]["critic_loss"] == log["episodes"][-1]["critic_loss"]


def test_stop_return_ends_the_history_and_a_rerun_does_not_continue(tmp_path):
    config = _config(tmp_path, episodes=6, stop_return=0.0)
    log = collect.collect(config)
    assert log["stopped"] and len(log["episodes"]) == 1
    again = collect.collect(_config(tmp_path, episodes=8, stop_return=0.0))
    assert len(again["episodes"]) == 1 and len(collect.load_episodes(config)) == 1


def test_rerun_with_other_settings_names_the_setting(tmp_path):
    collect.collect(_config(tmp_path, episodes=1))
    with pytest.raises(ValueError, match="seed"):
        collect.collect(_config(tmp_path, episodes=2, seed=1))
    with pytest.raises(ValueError, match="action_repeat"):
        collect.collect(_config(tmp_path, episodes=2, action_repeat=25))


def test_the_command_line_collects_and_runs_the_recipes_as_subcommands(tmp_path, capsys):
    out = tmp_path / "data"
    assert collect.main(["--out", str(out), "--episodes", "2", "--action-repeat", "50", "--no-progress"]) == 0
    assert len(collect.load_episodes(_config(out, episodes=2))) == 2
    assert capsys.readouterr().out.startswith(f"2 episodes in {collect.data_dir(_config(out))}")
    assert collect.main(["curves", "--task", "dark_room_hidden", "--histories", "2", "--episodes-per-history", "3",
                         "--out", str(tmp_path / "curves")]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("dark_room_hidden: 2 histories x 3 episodes")
    assert [line.split()[0] for line in printed[1:]] == ["random", "searcher", "ad_eps", "oracle", "q_learning"]
    assert (tmp_path / "curves" / "dark_room" / "oracle" / "demonstrators.json").is_file()
    assert collect.main(["per-task", "--root", str(out), "--task", "cartpole_swingup", "--source-algo", "random",
                         "--algo", "copies"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: task: 'cartpole_swingup' is not a hidden-task family") and err.count("\n") == 1
    assert collect.main(["curves", "--histories", "many"]) == 2
    assert capsys.readouterr().err == "error: --histories: invalid literal for int() with base 10: 'many'\n"


@pytest.mark.parametrize("changes, field", [({"episodes": 0}, "episodes"), ({"task": "cartpol"}, "name"),
                                            ({"action_repeat": 0}, "action_repeat"), ({"seed": -1}, "seed"),
                                            ({"algo": "a/b"}, "algo")])
def test_config_errors_name_the_argument(tmp_path, changes, field):
    with pytest.raises(ValueError, match=field):
        _config(tmp_path, **changes)


def test_spread_stats_criterion():
    spread = dataset_stats.spread_stats([10, 20, 30, 40, 100])
    assert spread["n"] == 5 and spread["median"] == 30 and spread["best"] == 100
    assert spread["fraction_within_10pct"] == pytest.approx(0.2) and not spread["passes"]
    spread = dataset_stats.spread_stats([1.0] * 10 + [95.0, 100.0] + [2.0] * 8)
    assert spread["fraction_within_10pct"] == pytest.approx(0.1) and spread["passes"]
    assert dataset_stats.spread_stats([60, 70, 80, 100] + [1] * 40)["passes"]
    assert not dataset_stats.spread_stats([60.0] * 5 + [100.0] + [1.0] * 4)["passes"]  # median 60 > 50
    with pytest.raises(ValueError, match="returns"):
        dataset_stats.spread_stats([])
    with pytest.raises(ValueError, match="returns"):
        dataset_stats.spread_stats([-1.0, 0.0])


def test_stats_read_through_the_readers_and_print_the_verdict(tmp_path, capsys):
    config = _config(tmp_path, episodes=3)
    log = collect.collect(config)
    returns = dataset_stats.load_returns(collect.data_dir(config))
    np.testing.assert_allclose(returns, [e["return"] for e in log["episodes"]], rtol=1e-6)
    histogram = dataset_stats.text_histogram(returns, bins=3)
    assert sum(int(line.split(")")[1].split()[0]) for line in histogram.splitlines()) == 3
    png = tmp_path / "hist.png"
    stats = dataset_stats.main(dataset_stats.StatsConfig(path=collect.data_dir(config), png=png))
    out = capsys.readouterr().out
    assert "episodes 3" in out and ("PASS" if stats["passes"] else "FAIL") in out
    assert png.stat().st_size > 1000
    with pytest.raises(ValueError, match="path"):
        dataset_stats.load_returns(tmp_path)


def test_a_missing_episode_file_is_an_error_not_a_silent_gap(tmp_path):
    config = _config(tmp_path, episodes=3)
    collect.collect(config)
    next((collect.data_dir(config) / "buffer").glob("episode_1_*.npz")).unlink()
    with pytest.raises(ValueError, match=r"out: .* misses episodes \[1\]"):
        collect.collect(_config(tmp_path, episodes=4))


def test_exploration_mix_keeps_the_inner_stream_and_mixes_at_the_drawn_rate():
    from experiments.collection import policies

    inner, twin = policies.RandomPolicy(2, seed=0), policies.RandomPolicy(2, seed=0)
    mix = policies.ExplorationMix(inner, 2, seed=0, fraction=1.0, max_epsilon=0.6)
    rates = []
    for episode in range(20):
        mix.begin_episode(episode)
        twin.begin_episode(episode)
        same = [np.array_equal(mix.action(None), twin.action(None)) for _ in range(400)]
        rates.append(mix.epsilon)
        assert 1 - np.mean(same) == pytest.approx(mix.epsilon, abs=0.08)
    assert 0 <= min(rates) and max(rates) <= 0.6 and len(set(rates)) == 20
    mix.begin_episode(3)
    assert mix.epsilon == rates[3] and mix.stats() == {"epsilon": rates[3]}
    none = policies.ExplorationMix(policies.RandomPolicy(2, seed=0), 2, seed=0, fraction=0.0, max_epsilon=1.0)
    none.begin_episode(0)
    assert none.epsilon == 0.0
    with pytest.raises(ValueError, match="max_epsilon"):
        policies.ExplorationMix(inner, 2, seed=0, fraction=0.5, max_epsilon=1.5)


def test_collector_records_the_exploration_rate_per_episode(tmp_path):
    log = collect.collect(_config(tmp_path, episodes=3, explore_fraction=1.0, explore_max=0.5))
    assert all(0 <= entry["epsilon"] <= 0.5 for entry in log["episodes"])
    settings = json.loads((collect.data_dir(_config(tmp_path)) / "collect.json").read_text())
    assert settings["explore_fraction"] == 1.0 and settings["explore_max"] == 0.5
    with pytest.raises(ValueError, match="explore_fraction"):
        _config(tmp_path, explore_fraction=2.0)


def test_collect_writes_hidden_task_histories_with_their_task(tmp_path):
    config = collect.CollectConfig(out=tmp_path, task="point_nav_hidden", policy="searcher", episodes=24,
                                   episodes_per_history=12, progress=False)
    log = collect.collect(config)
    episodes = collect.load_episodes(config)
    assert len(episodes) == len(log["episodes"]) == 24
    assert [e.history for e in episodes] == [0] * 12 + [1] * 12
    for history in (0, 1):  # one hidden task per history, stored with every episode
        tasks = {tuple(e.task) for e in episodes if e.history == history}
        assert len(tasks) == 1
    # The stored task is what the rewards were earned for: relabelling each file for it gives them back.
    import datasets

    relabelled = datasets.read_episodes(tmp_path, format="exorl", domain="point_nav", algo="searcher",
                                        task="point_nav_hidden")
    assert sum(e.total_return for e in episodes) > 0
    for episode, again in zip(episodes, relabelled):
        np.testing.assert_allclose(again.rewards, episode.rewards)
    with pytest.raises(ValueError, match="not a multiple of episodes_per_history"):
        collect.CollectConfig(out=tmp_path, task="point_nav_hidden", policy="searcher", episodes=13)
    with pytest.raises(ValueError, match="hidden-task families"):
        collect.CollectConfig(out=tmp_path, task="cartpole_swingup", policy="searcher")
