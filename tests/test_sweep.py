"""The context sweep: which cells it trains, with what compute, and its tables from a tiny end-to-end run."""

import dataclasses
import json

import numpy as np
import pytest

from experiments import sweep
from experiments.presets import get_preset
from experiments.run import RunDir


def test_cells_share_batch_steps_and_overrides():
    base = get_preset("cartpole_sac").replace(sampler={"loss_on": "last"})
    cells = sweep.cell_configs(base, [1, 2, 16], [0, 3], steps=40, episode_length=250, batch_steps=2048,
                               baseline_trials=6)
    assert sorted(cells) == sorted(f"{m}_seed{s}" for m in ("at_k1", "at_k2", "at_k16", "dt", "bc10") for s in (0, 3))
    shapes = {name: (c.sampler.batch_size, c.sampler.max_steps) for name, c in cells.items() if name.endswith("seed0")}
    # k episodes of 250 steps, rounded up to the 256-step chunk; 2048 // steps contexts (at least one).
    assert shapes == {"at_k1_seed0": (8, 250), "at_k2_seed0": (4, 512), "at_k16_seed0": (1, 4096),
                      "dt_seed0": (102, 20), "bc10_seed0": (102, 20)}
    for name, c in cells.items():
        assert c.train.steps == c.optim.total_steps == 40 and c.train.seed == int(name[-1])
        assert c.sampler.loss_on == "last"
    at, dt, bc = cells["at_k16_seed3"], cells["dt_seed3"], cells["bc10_seed3"]
    assert (at.num_trials, at.sampler.window, at.model.max_trajectories) == (16, "end", 16)
    assert not at.eval.reset_context_each_trial and at.model.use_returns
    for baseline in (dt, bc):
        assert baseline.num_trials == 6 and baseline.eval.reset_context_each_trial and baseline.eval.context_steps == 20
        assert baseline.sampler.window == "random" and baseline.sampler.num_trajectories == 1
    assert dt.model.use_returns and dt.sampler.filter_top_fraction == 1.0
    assert not bc.model.use_returns and not bc.model.use_rewards and bc.sampler.filter_top_fraction == 0.1
    # Without a token budget every cell keeps the preset's batch size.
    plain = sweep.cell_configs(base, [4], [0], 10, 250, methods=("at", "dt"))
    assert sorted(plain) == ["at_k4_seed0", "dt_seed0"]
    assert {c.sampler.batch_size for c in plain.values()} == {base.sampler.batch_size}


def test_ablations_use_the_train_command_line():
    args = sweep.parse(sweep.SweepCommand, ["--preset", "tiny", "--sampler.loss-on", "last", "--trajectories", "1",
                                            "4", "--methods", "at", "dt", "--name", "abl"], description="")
    assert args.config.sampler.loss_on == "last" and args.config.name == "abl"
    assert args.trajectories == (1, 4) and args.methods == ("at", "dt")
    cells = sweep.cell_configs(args.config, list(args.trajectories), [0], 10, 250, methods=args.methods)
    assert {c.sampler.loss_on for c in cells.values()} == {"last"}


@pytest.mark.parametrize("argv", [["--sampler.loss-on", "first"], ["--sampler.loss", "last"],
                                  ["--methods", "at", "ppo"]])
def test_bad_ablations_are_refused_by_the_parser(argv, capsys):
    assert sweep.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and argv[-1] in err


def test_tiny_sweep_writes_tables_and_resumes(tmp_path):
    base = get_preset("nav_hidden_tiny")
    base = base.replace(runs_dir=str(tmp_path / "runs"), data={"root": str(tmp_path / "nav")}, eval={"num_envs": 2})
    options = dict(batch_steps=160, trials=3, methods=("at", "dt", "bc10", "oracle", "random"))
    rows = sweep.run_sweep(base, "s", [2], [1], steps=2, quiet=True, **options)
    assert [r["cell"] for r in rows] == ["at_k2_seed1", "dt_seed1", "bc10_seed1", "oracle_seed1", "random_seed1"]
    for row in rows:
        assert row["cpu_s"] > 0 and row["wall_s"] > 0 and row["trials"] == 3
        assert len(row["per_trial_mean_return"]) == len(row["per_trial_success_rate"]) == 3
    out = tmp_path / "runs" / "s"
    table = (out / "sweep.md").read_text()
    # k = 2 episodes of 20 steps, 40 tokens, rounded up to 48 to split into the 16 zigzag pieces of the
    # 8-device ring: 160 // 48 contexts per batch. The baselines' 20-step windows (no ring): 160 // 20.
    assert "| AT, k = 2 | 2 | 3 x 48 | 1 | 3 |" in table and "| DT | 1 | 8 x 20 | 1 | 3 |" in table
    assert "| BC-10% |" in table and "| oracle (told the task) |" in table and "| random | none | none | 1 | 3 |" in table
    assert "Per-trial success rate" in table and "5 cells" in table
    assert json.loads((out / "cells.json").read_text()) == json.loads(json.dumps(rows))
    for name in ("sweep.csv", "sweep.png", "trials.png"):
        assert (out / name).stat().st_size > 0
    at = json.loads((out / "at_k2_seed1" / "config.json").read_text())["eval"]
    assert (at["num_trials"], at["context_trials"]) == (3, 2)  # the third trial sees only the second
    oracle = RunDir(out / "oracle_seed1")
    assert oracle.data().obs_dim == 4  # the position and the goal it is told
    assert not (out / "random_seed1" / "checkpoints").exists()  # nothing trained
    timing = (out / "dt_seed1" / "timing.json").read_text()
    again = sweep.run_sweep(base, "s", [2], [1], steps=2, quiet=True, **options)
    assert again == rows and (out / "dt_seed1" / "timing.json").read_text() == timing  # nothing retrained

    with pytest.raises(ValueError, match="dt_seed1 was made with a different config .*train.steps: 2 -> 3"):
        sweep.run_sweep(base, "s", [2], [1], steps=3, quiet=True, methods=("dt",), batch_steps=160, trials=3)

    text = sweep.retarget(out, [5.0], ["dt"])
    assert "| DT | 5 | 1 |" in text and (out / "targets.md").read_text() == text
    assert json.loads((out / "dt_seed1" / "target_5" / "eval.json").read_text())["target_return"] == 5.0
    table = sweep.compare([out, out], ["at_k2", "bc10"])
    assert table.count("| s | AT, k = 2 | 1 | 3 |") == 2 and table.count("| s | BC-10% | 1 | 3 |") == 2
    assert "| DT |" not in table
    with pytest.raises(ValueError, match="no finished cells of method 'at_k8'"):
        sweep.retarget(out, [5.0], ["at_k8"])


def test_oracle_and_random_need_a_hidden_task():
    with pytest.raises(ValueError, match=r"methods \['random'\] need a hidden-task family; 'cartpole_swingup'"):
        sweep.cell_configs(get_preset("tiny"), [2], [0], 10, 250, methods=("at", "random"))


def test_best_policy_in_the_data_and_the_reference_lines():
    from datasets import Trajectory
    from experiments.reports.sweep import references
    from experiments.run import DataSummary, best_policy_return

    def episode(reward, history):
        return Trajectory(np.zeros((2, 1), np.float32), np.zeros((2, 1), np.float32),
                          np.array([0.0, reward], np.float32), np.zeros(2, bool), np.array([False, True]),
                          history=history)

    # Two histories of 3 episodes and one of 1 (read in dataset order, interleaved): index means 1.0, 3.0,
    # 4.0 (the third index, which 2 of the 3 histories reach); the best policy is the third episode's.
    returns = {0: [1.0, 2.0, 5.0], 1: [0.0, 4.0, 3.0], 2: [2.0]}
    data = [episode(r, h) for i in range(3) for h, rs in returns.items() if i < len(rs) for r in [rs[i]]]
    assert best_policy_return(data) == 4.0 and DataSummary.of(data).best_policy_return == 4.0
    assert best_policy_return([episode(1.0, None), episode(2.0, 0)]) is None  # an episode with no history
    assert best_policy_return([episode(1.0, h) for h in range(3)]) is None  # no history longer than one episode
    assert DataSummary.of(data).same_data(dataclasses.replace(DataSummary.of(data), best_policy_return=None))
    rows = [{"method": "dt", "oracle_return": 16.0, "dataset_best_policy_return": None},
            {"method": "at_k4", "oracle_return": 15.0, "dataset_best_policy_return": 7.5}]
    assert references(rows) == {"oracle (exact)": 15.5, "best policy in the data": 7.5}
    assert references([{"method": "dt"}]) == {}
