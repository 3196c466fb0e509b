"""The training summary: the short table the main job ends with (``experiments.train``), its results beside
the preset's reference lines, and where every file of the run lies."""

from __future__ import annotations

from pathlib import Path

from experiments.reports.sweep import spread

__all__ = ["shown_trials", "summary_table"]


def summary_table(summary: dict, references=()) -> str:
    """The short summary the main job ends with: results, ``references`` (``(label, return)`` lines measured
    elsewhere, ``experiments.presets.Preset.references``) and where everything lies."""
    ev = summary.get("eval") or {}
    run = Path(summary["run_dir"])
    rows = [("final training loss", f"{summary['final_loss']:.4f}")]
    if ev:
        precision = 2 if ev["dataset_max_return"] < 100 else 0
        shown = shown_trials(len(ev["per_trial_mean_return"]))
        per_trial = " -> ".join(f"{ev['per_trial_mean_return'][i]:.{precision}f}" for i in shown)
        rows += [("return per trial (mean)", per_trial),
                 ("last trial mean return", f"{ev['last_trial_mean_return']:.1f}"),
                 ("best of n mean return", f"{ev['best_of_n_mean_return']:.1f}"),
                 ("dataset median / best return", f"{ev['dataset_median_return']:.1f} / {ev['dataset_max_return']:.1f}")]
        if ev.get("per_trial_success_rate"):
            rows.insert(2, ("success rate per trial", " -> ".join(f"{ev['per_trial_success_rate'][i]:.0%}"
                                                                  for i in shown)))
        if len(shown) < ev["num_trials"]:
            rows.insert(1, ("trials shown", ", ".join(str(i + 1) for i in shown) + " (all in eval.md)"))
        if floor := ev.get("random_floor"):
            success = floor.get("per_trial_success_rate")
            rows.append(("random policy, last trial", f"{floor['last_trial_mean_return']:.{precision}f}"
                         + (f" (success {success[-1]:.0%})" if success else "")))
        if ev.get("oracle_return") is not None:
            rows.append(("oracle (told the task; exact)", f"{ev['oracle_return']:.2f}"))
        rows += [(label, f"{value:.2f}") for label, value in references]
    rows += [("TensorBoard logs", summary["tensorboard"]), ("checkpoints", summary["checkpoints"]),
             ("evaluation", str(run / "eval.md")), ("plot", str(run / "eval.png"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(per_trial_lines(ev) + ["", "| " + "result".ljust(width) + " | value |",
                                              "|" + "-" * (width + 2) + "|---|"]
                     + [f"| {k.ljust(width)} | {v} |" for k, v in rows])


def shown_trials(num_trials: int, most: int = 16) -> list[int]:
    """0-based trials a summary shows: all of up to ``most``, else the first eight, then ever sparser ones
    (doubling) up to the last."""
    if num_trials <= most:
        return list(range(num_trials))
    shown, step, trial = list(range(8)), 2, 8
    while trial < num_trials - 1:
        shown.append(trial)
        trial += step
        step *= 2
    return shown + [num_trials - 1]


def per_trial_lines(ev: dict) -> list[str]:
    """A hidden-task run's return per trial (episode) on its evaluation tasks, beside the reference lines."""
    success = ev.get("per_trial_success_rate") if ev else None
    if not success:
        return []
    floor, oracle = ev.get("random_floor"), ev.get("oracle_return")
    header = ("| trial | return (mean" + (" ± std" if ev["num_envs"] > 1 else "") + ") | success |"
              + (" random |" if floor else "") + (" oracle |" if oracle else ""))
    lines = ["", f"Per trial on {ev['task']} ({ev['num_envs']} environments):", "", header,
             "|" + "---|" * (header.count("|") - 1)]
    for i in shown_trials(len(success)):
        mean, std = ev["per_trial_mean_return"][i], ev["per_trial_std_return"][i]
        line = f"| {i + 1} | {spread(mean, std if ev['num_envs'] > 1 else None, '.2f')} | {success[i]:.0%} |"
        if floor:
            line += f" {floor['per_trial_mean_return'][i]:.2f} |"
        if oracle is not None:
            line += f" {oracle:.2f} |"
        lines.append(line)
    return lines
