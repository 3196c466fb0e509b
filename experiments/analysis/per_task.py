"""Evaluations on a hidden-task family broken down by task: which tasks a method solves, trial by trial.

    python -m experiments.analysis.per_task runs/maze/oracle_seed0 runs/maze/at_k4_seed0
    python -m experiments.analysis.per_task runs/ablate/eval.json --config runs/maze/oracle_seed0/config.json

Each path is a run directory (its ``eval.json``) or an ``eval.json``. Every environment's task comes from
the evaluation itself (its ``tasks``) or, for evaluations written before that was recorded, from the
run's config: the environments that ``experiments.evaluate`` builds from the eval seed, and so the same
tasks. Prints, per task, how many environments had it, the mean return per trial and (where the
evaluation recorded it) the success rate of the first and last trial.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tyro

__all__ = ["task_breakdown", "task_names", "main"]


def task_names(task: str, parameters: np.ndarray) -> list[str]:
    """A readable name per task parameter row: the maze's target names, else the rounded parameter."""
    import envs

    if envs.task_spec(task).domain == "point_mass_maze":
        from envs.point_mass_maze import TARGETS

        names, positions = list(TARGETS), np.array(list(TARGETS.values()))
        return [names[int(np.argmin(np.linalg.norm(positions - row, axis=1)))] for row in parameters]
    return ["(" + ", ".join(f"{x:.2f}" for x in row) + ")" for row in parameters]


def task_breakdown(result: dict, tasks) -> list[dict]:
    """Per distinct task (in order of first appearance): environments, per-trial mean return, success.

    Args:
        result: an ``eval.json`` of a hidden-task family (``returns`` [trials, envs]).
        tasks: float [envs, task_dim], each environment's task.
    """
    returns = np.asarray(result["returns"], np.float64)
    tasks = np.asarray(tasks, np.float64)
    if tasks.shape[0] != returns.shape[1]:
        raise ValueError(f"tasks: {tasks.shape[0]} rows for {returns.shape[1]} evaluated environments")
    successes = result.get("successes")  # [trials, envs]; evaluations before it was recorded have none
    successes = None if successes is None else np.asarray(successes, bool)
    _, first_rows, inverse = np.unique(tasks, axis=0, return_index=True, return_inverse=True)
    rows = []
    for group in np.argsort(first_rows):
        members = inverse.reshape(-1) == group
        row = {"task": tasks[first_rows[group]].tolist(), "environments": int(members.sum()),
               "per_trial_mean_return": returns[:, members].mean(axis=1).tolist()}
        if successes is not None:
            row["per_trial_success_rate"] = successes[:, members].mean(axis=1).tolist()
        rows.append(row)
    return rows


def _tasks_of(path: Path, result: dict, config_path: Path | None) -> np.ndarray:
    if result.get("tasks") is not None:
        return np.asarray(result["tasks"], np.float64)
    config_path = config_path or path.parent / "config.json"
    if not config_path.exists():
        raise FileNotFoundError(f"{path} records no tasks and {config_path} does not exist; pass --config")
    import envs
    from experiments.config import ExperimentConfig

    config = ExperimentConfig.from_json(config_path.read_text())
    if result["num_envs"] != config.eval.num_envs:
        raise ValueError(f"{path}: {result['num_envs']} environments, but {config_path} evaluates "
                         f"{config.eval.num_envs}")
    batch = envs.make_batch(config.data.task, config.eval.num_envs, seed=config.eval.seed,
                            action_repeat=config.data.action_repeat)
    return np.asarray(batch.task_parameters, np.float64)


@dataclasses.dataclass(frozen=True)
class PerTaskCommand:
    """Evaluations on a hidden-task family broken down by task.

    Attributes:
      paths: run directories or eval.json files.
      config: the run's config.json, for an eval.json that records no tasks and has none beside it.
    """

    paths: tyro.conf.Positional[tuple[Path, ...]]
    config: Path | None = None


def main(argv=None) -> int:
    args = tyro.cli(PerTaskCommand, args=argv, description=__doc__.splitlines()[0])
    for path in args.paths:
        path = path / "eval.json" if path.is_dir() else path
        try:
            result = json.loads(path.read_text())
            rows = task_breakdown(result, _tasks_of(path, result, args.config))
        except (OSError, ValueError, KeyError) as error:
            print(f"error: {path}: {error}")
            return 2
        names = task_names(result["task"], np.array([row["task"] for row in rows]))
        print(f"{path}")
        print("| task | environments | mean return per trial | success, first -> last trial |")
        print("|---|---|---|---|")
        for name, row in zip(names, rows):
            curve = " ".join(f"{r:.0f}" if abs(r) >= 10 else f"{r:.2f}" for r in row["per_trial_mean_return"])
            rate = row.get("per_trial_success_rate")
            success = f"{rate[0]:.0%} -> {rate[-1]:.0%}" if rate else "not recorded"
            print(f"| {name} | {row['environments']} | {curve} | {success} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
