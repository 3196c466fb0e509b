"""An evaluation's reports: ``eval.json`` (every figure), ``eval.md`` (a table) and ``eval.png`` (return
against trial, with the dataset's returns, the random floor and the oracle where they are known)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from experiments.run import RunDir

__all__ = ["markdown_table", "plot_title", "return_band", "write_reports"]


def write_reports(out: RunDir, result: dict) -> None:
    """eval.json, eval.md and eval.png in ``out`` (each written whole, then renamed)."""
    out.write_json("eval.json", result)
    out.write_text("eval.md", markdown_table(result))
    out.write("eval.png", lambda path: plot(path, result))


def markdown_table(result: dict) -> str:
    """eval.md: the return (and success rate) per trial, then the summary figures beside the dataset's."""
    target = result["target_return"]
    lines = [f"Evaluation on {result['task']}: {result['num_envs']} environments x {result['num_trials']} trials, "
             + ("no target return (no model)" if target is None else f"target return {target:.1f}")
             + (f"; run {result['run']}, checkpoint step {result['checkpoint_step']}" if "run" in result else ""), "",
             "| trial | mean return | std |", "|---|---|---|"]
    success = result.get("per_trial_success_rate")
    if success:
        lines[-2:] = ["| trial | mean return | std | success rate |", "|---|---|---|---|"]
    for i, (mean, std) in enumerate(zip(result["per_trial_mean_return"], result["per_trial_std_return"])):
        lines.append(f"| {i + 1} | {mean:.1f} | {std:.1f} |" + (f" {success[i]:.0%} |" if success else ""))
    lines += ["", "| summary | return |", "|---|---|",
              f"| last trial (mean over environments) | {result['last_trial_mean_return']:.1f} |",
              f"| best of n trials (mean over environments) | {result['best_of_n_mean_return']:.1f} |",
              f"| dataset median episode | {result['dataset_median_return']:.1f} |",
              f"| dataset best episode | {result['dataset_max_return']:.1f} |"]
    if result.get("dataset_best_policy_return") is not None:
        lines.append(f"| best policy in the data (its best episode index, mean over histories) | "
                     f"{result['dataset_best_policy_return']:.2f} |")
    if result.get("normalized"):
        lines.append(f"| last trial, D4RL normalised | {result['normalized']['last_trial_mean']:.1f} |")
    if floor := result.get("random_floor"):
        lines.append(f"| uniform random policy, last trial (same environments) | {floor['last_trial_mean_return']:.1f} |")
    if result.get("oracle_return") is not None:
        lines.append(f"| oracle (told the task; exact), every trial | {result['oracle_return']:.2f} |")
    return "\n".join(lines) + "\n"


def return_band(returns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 25th and 75th percentiles of every trial's returns [trials, envs] over environments: a spread drawn
    from returns that happened, so it never leaves the possible returns (mean ± std does, e.g. below 0 on
    sparse 0/1 rewards).

    Returns:
      (low [trials], high [trials]).
    """
    low, high = np.percentile(returns, [25, 75], axis=1)
    return low, high


def plot(path: Path, result: dict) -> None:
    """eval.png: the mean return per trial with its 25th-75th percentile band, the reference lines and, on
    hidden-task families, the success rate on its own axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = np.arange(1, result["num_trials"] + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    low, high = return_band(np.asarray(result["returns"], np.float64))
    ax.fill_between(trials, low, high, alpha=0.25, label="agent, 25th-75th percentile over environments")
    ax.plot(trials, result["per_trial_mean_return"], marker="o", label="agent (mean over environments)")
    ax.axhline(result["dataset_median_return"], color="gray", linestyle="--", label="dataset median")
    ax.axhline(result["dataset_max_return"], color="black", linestyle=":", label="dataset best")
    if result.get("dataset_best_policy_return") is not None:
        ax.axhline(result["dataset_best_policy_return"], color="tab:olive", linestyle="--",
                   label="best policy in the data")
    if result.get("oracle_return") is not None:
        ax.axhline(result["oracle_return"], color="tab:green", linestyle="-.", label="oracle (exact)")
    if floor := result.get("random_floor"):
        ax.plot(trials, floor["per_trial_mean_return"], color="tab:red", linestyle=":", label="uniform random")
    ax.set_xlabel("trial")
    ax.set_ylabel("return")
    ax.set_xticks(trials)
    handles, labels = ax.get_legend_handles_labels()
    success = result.get("per_trial_success_rate")
    if success:  # on its own axis: a rate in [0, 1] beside returns of any scale
        rate = ax.twinx()
        rate.plot(trials, success, color="tab:purple", marker="s", linestyle="--", label="agent success rate")
        if floor and floor.get("per_trial_success_rate"):
            rate.plot(trials, floor["per_trial_success_rate"], color="tab:pink", linestyle=":",
                      label="uniform random success rate")
        rate.set_ylim(-0.02, 1.02)
        rate.set_ylabel("success rate")
        more = rate.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    ax.set_title(plot_title(result), fontsize=9)
    ax.legend(handles, labels, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_title(result: dict) -> str:
    """eval.png's title: the evaluated task and its size, the last trial's success rate and the random floor."""
    parts = [f"{result['task']}: {result['num_envs']} envs x {result['num_trials']} trials"]
    if success := result.get("per_trial_success_rate"):
        parts.append(f"last-trial success {success[-1]:.0%}")
    if floor := result.get("random_floor"):
        parts.append(f"random floor {floor['last_trial_mean_return']:.2f}")
    return "; ".join(parts)
