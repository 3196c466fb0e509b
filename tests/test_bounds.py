"""Every bound checked before compiling: trajectories in a context against the model's embedding, in training
and in evaluation, and context lengths fitted by ring's own divisibility rule."""

import dataclasses

import pytest

from agent.config import preset
from experiments import train as train_job
from experiments.evaluate import override_eval
from experiments.presets import get_preset
from ring.checks import check_chunk
from ring.layouts import check_divisible


@pytest.mark.parametrize("sections, message", [
    ({"sampler": {"num_trajectories": 3}}, r"sampler.num_trajectories=3 exceeds model.max_trajectories=2"),
    ({"eval": {"num_trials": 3}}, r"eval.num_trials=3 exceeds model.max_trajectories=2"),
    ({"eval": {"num_trials": 4, "context_trials": 3}}, r"eval.context_trials=3 exceeds model.max_trajectories=2"),
    ({"sampler": {"num_trajectories": 2}, "eval": {"num_trials": None, "context_trials": None}}, None),
])
def test_trajectories_in_a_context_are_refused_before_anything_is_read(tmp_path, sections, message):
    config = get_preset("dark_room_tiny").replace(runs_dir=str(tmp_path / "runs"), data={"root": str(tmp_path / "d")},
                                                  model={"max_trajectories": 2}, **sections)
    if message is None:  # within the bound: the evaluation's own override passes it too
        assert override_eval(config, num_trials=2).num_trials == 2
        with pytest.raises(ValueError, match=r"eval.num_trials=5 exceeds"):
            override_eval(config, num_trials=5)
        return
    with pytest.raises(ValueError, match=message):
        train_job.train(config, quiet=True)
    assert not (tmp_path / "d").exists() and not (tmp_path / "runs").exists()  # no data made, no run claimed


def test_a_dt_run_resets_its_context_every_trial_so_any_number_of_trials_fits():
    config = get_preset("dark_room_tiny").replace(model={"max_trajectories": 2},
                                                  eval={"num_trials": 5, "reset_context_each_trial": True})
    assert override_eval(config).num_trials == 5


@pytest.mark.parametrize("layout", ["contiguous", "striped", "zigzag"])
@pytest.mark.parametrize("ring_size", [1, 2, 8])
@pytest.mark.parametrize("token_layout", ["fused", "interleaved"])
def test_fitting_steps_is_the_least_length_ring_accepts(layout, ring_size, token_layout):
    config = preset("tiny", attention="ring", layout=layout, token_layout=token_layout, query_chunk_size=16,
                    key_chunk_size=16)

    def accepted(steps):
        tokens = steps * config.tokens_per_step
        try:
            check_divisible(tokens, ring_size, layout)
            block = tokens // ring_size
            check_chunk("query_chunk_size", min(16, block), block)
        except ValueError:
            return False
        return True

    for steps in (1, 5, 21, 100, 129):
        fitted = config.fitting_steps(steps, ring_size)
        assert accepted(fitted) and not any(accepted(s) for s in range(steps, fitted)), (steps, fitted)


def test_zigzag_on_one_device_still_cuts_the_sequence_in_two():
    config = preset("tiny", attention="ring", layout="zigzag")  # one token a step
    assert config.fitting_steps(5, 1) == 6  # the rule the old restatement missed (it accepted 5)
    assert dataclasses.replace(config, layout="contiguous").fitting_steps(5, 1) == 5
    assert dataclasses.replace(config, attention="blockwise").fitting_steps(5, 1) == 5  # no layout without a ring
