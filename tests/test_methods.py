"""The methods as configurations of one model (experiments.methods): what each row changes, and AD and
DPT trained and evaluated end to end on a tiny Dark Room with ring attention over the 8 devices."""

import json

import numpy as np
import pytest

from experiments import methods, sweep
from experiments import train as train_job
from experiments.presets import get_preset


def test_each_method_is_its_row_of_the_table():
    base = get_preset("dark_room")
    cells = sweep.cell_configs(base, [2, 8], [0], steps=50, episode_length=20, trials=12,
                               methods=("at", "ad", "dpt", "dt", "bc10", "oracle", "random"))
    assert sorted(cells) == sorted(f"{m}_seed0" for m in ("at_k2", "at_k8", "ad_k2", "ad_k8", "dpt_k2", "dpt_k8", "dt",
                                                         "bc10", "oracle", "random"))
    at, ad, dpt = cells["at_k8_seed0"], cells["ad_k8_seed0"], cells["dpt_k8_seed0"]
    assert (at.sampler.order, at.model.use_returns, at.data.labels) == ("return", True, "taken")
    assert (ad.sampler.order, ad.model.use_returns, ad.data.labels) == ("history", False, "taken")
    assert (dpt.sampler.order, dpt.model.use_returns, dpt.data.labels) == ("history", False, "optimal")
    for cell in (at, ad, dpt):  # 8 episodes in context, rolled over 12 trials by the last 8
        assert cell.sampler.num_trajectories == 8 and cell.sampler.max_steps == 160
        assert cell.num_trials == 12 and cell.eval.context_trials == 8
    assert cells["ad_k2_seed0"].eval.context_trials == 2
    dt, bc, oracle = cells["dt_seed0"], cells["bc10_seed0"], cells["oracle_seed0"]
    assert dt.model.use_returns and dt.sampler.max_steps == 20 and dt.eval.reset_context_each_trial
    assert not bc.model.use_returns and bc.sampler.filter_top_fraction == 0.1
    assert oracle.data.observe_task and cells["random_seed0"].num_trials == 12
    assert {c.model.action_head for c in cells.values()} == {"categorical"}
    with pytest.raises(ValueError, match="unknown"):
        methods.method_configs("adx", methods.Cell(base, 20, 1, lambda s: 1, None, 1), [2])


@pytest.mark.parametrize("method", ["ad", "dpt"])
def test_ad_and_dpt_train_and_evaluate_on_dark_room(method, tmp_path):
    base = get_preset("dark_room_tiny").replace(runs_dir=str(tmp_path), data={"root": str(tmp_path / "data")},
                                                eval={"num_envs": 4, "num_trials": 3})
    cell = methods.Cell(base, 20, 8, lambda steps: 2, 3, 3)
    config = methods.TABLE[method](cell, 2).replace(name=method, train={"steps": 4, "checkpoint_every": 4})
    assert config.model.attention == "ring" and config.train.mesh == "sp=-1"
    summary = train_job.train(config, quiet=True)
    assert np.isfinite(summary["final_loss"])
    result = json.loads((tmp_path / method / "eval.json").read_text())
    returns = np.array(result["returns"])
    assert returns.shape == (3, 4) and (returns >= 0).all() and (returns <= 20).all()
    assert len(result["random_floor"]["per_trial_mean_return"]) == 3
