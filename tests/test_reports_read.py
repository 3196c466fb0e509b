"""Pictures and logs people read (issue 28, item 5): no "± 0.00" for one seed or one environment, eval.png's
title, TensorBoard's success rate, random floor and config, trials.png's distinct curves."""

import numpy as np

from experiments.config import ExperimentConfig
from experiments.reports import evaluation, summary, sweep as sweep_report
from experiments.run import RunDir
from experiments.train import MetricLog


def _row(method, seed, value):
    return {"method": method, "seed": seed, "trajectories": 1, "trials": 2, "batch_size": 2, "context_steps": 20,
            "cpu_s": 60.0, "wall_s": 30.0, "first_trial_mean_return": value, "last_trial_mean_return": value,
            "best_of_n_mean_return": value, "per_trial_mean_return": [value, value],
            "per_trial_success_rate": [0.5, 0.5], "dataset_median_return": 1.0, "dataset_max_return": 5.0}


def test_one_seed_tables_show_no_spread_and_several_seeds_do():
    one = sweep_report.markdown([_row("at", 0, 2.0), _row("dt", 0, 2.0)])
    assert "±" not in one.split("\n", 1)[1]  # the legend line above the table may name it
    two = sweep_report.markdown([_row("at", 0, 2.0), _row("at", 1, 4.0)])
    assert "3.00 ± 1.00" in two
    assert sweep_report.spread(2.0, None) == "2.0" and sweep_report.spread(2.0, 0.5, ".2f") == "2.00 ± 0.50"


def _result(num_envs):
    returns = np.arange(2 * num_envs, dtype=float).reshape(2, num_envs)
    return {"task": "dark_room_hidden_heldout", "num_envs": num_envs, "num_trials": 2, "target_return": 5.0,
            "returns": returns.tolist(), "per_trial_mean_return": returns.mean(1).tolist(),
            "per_trial_std_return": returns.std(1).tolist(), "last_trial_mean_return": float(returns[-1].mean()),
            "best_of_n_mean_return": float(returns.max(0).mean()), "dataset_median_return": 1.0,
            "dataset_max_return": 5.0, "per_trial_success_rate": [0.0, 1.0], "oracle_return": None,
            "random_floor": {"per_trial_mean_return": [0.5, 0.5], "per_trial_success_rate": [0.0, 0.5],
                             "last_trial_mean_return": 0.5, "best_of_n_mean_return": 1.0}}


def test_one_environment_prints_no_spread_and_the_plot_names_task_success_and_floor(tmp_path):
    lines = "\n".join(summary.per_trial_lines(_result(1)))
    assert "±" not in lines and "| 1 | 0.00 | 0% |" in lines
    assert "± 0.50" in "\n".join(summary.per_trial_lines(_result(2)))
    title = evaluation.plot_title(_result(2))
    assert title == "dark_room_hidden_heldout: 2 envs x 2 trials; last-trial success 100%; random floor 0.50"
    evaluation.write_reports(RunDir(tmp_path), _result(2))
    assert (tmp_path / "eval.png").stat().st_size > 1000


class _Writer:
    def __init__(self, path):
        self.scalars, self.texts = {}, {}

    def add_scalar(self, name, value, step):
        self.scalars[name] = (value, step)

    def add_text(self, name, text, step):
        self.texts[name] = (text, step)

    def close(self):
        pass


def test_tensorboard_gets_success_rate_random_floor_and_config(tmp_path, monkeypatch):
    import tensorboardX

    monkeypatch.setattr(tensorboardX, "SummaryWriter", _Writer)
    config = ExperimentConfig(name="r", runs_dir=str(tmp_path))
    log = MetricLog(config, RunDir(config.run_dir), 0, quiet=True)
    log.evaluation(_result(2), 7)
    scalars = log.writer.scalars
    assert scalars["eval/trial_1_success_rate"] == (0.0, 7) and scalars["eval/trial_2_success_rate"] == (1.0, 7)
    assert scalars["eval/random_floor_last_trial_mean_return"] == (0.5, 7)
    assert scalars["eval/random_floor_last_trial_success_rate"] == (0.5, 7)
    text, step = log.writer.texts["config"]
    assert step == 0 and ExperimentConfig.from_json(text.strip("`\n")) == config
    log.close()


def test_trials_plot_gives_every_curve_its_own_marker_and_offset(tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = []
    real = matplotlib.axes.Axes.errorbar

    def spy(self, x, y, *args, **kwargs):
        drawn.append((np.asarray(x, float), kwargs.get("marker"), kwargs.get("linestyle"), kwargs.get("yerr")))
        return real(self, x, y, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", spy)
    rows = [_row("at", 0, 2.0), _row("dt", 0, 2.0)]
    sweep_report.write_tables(RunDir(tmp_path), rows)
    plt.close("all")
    at, dt = drawn[-2:]  # trials.png's two curves, drawn last
    assert at[1] != dt[1] and not np.allclose(at[0], dt[0]) and at[3] is None  # one seed: no error bars
    assert (tmp_path / "trials.png").is_file()


def test_a_long_evaluation_s_summary_shows_a_readable_choice_of_trials():
    assert summary.shown_trials(12) == list(range(12))
    picked = summary.shown_trials(256)
    assert picked[:8] == list(range(8)) and picked[-1] == 255 and len(picked) <= 16
    assert picked == sorted(set(picked))


def test_the_main_job_s_summary_prints_its_preset_s_reference_lines():
    from experiments.presets import DEFAULT_PRESET, PRESETS

    ev = {"task": "dark_room_hidden_heldout", "num_envs": 2, "num_trials": 2, "per_trial_mean_return": [1.0, 2.0],
          "per_trial_std_return": [0.5, 0.5], "per_trial_success_rate": [0.5, 1.0], "oracle_return": 16.0,
          "last_trial_mean_return": 2.0, "best_of_n_mean_return": 2.0, "dataset_median_return": 14.0,
          "dataset_max_return": 20.0}
    run = {"eval": ev, "run_dir": "runs/x", "final_loss": 0.5, "tensorboard": "t", "checkpoints": "c"}
    references = PRESETS[DEFAULT_PRESET].references
    assert references and all(label.startswith(("DT", "BC")) for label, _ in references)
    text = summary.summary_table(run, references=references)
    for label, value in references:
        assert label in text and f"{value:.2f}" in text
    assert "oracle (told the task; exact)" in text and "16.00" in text
