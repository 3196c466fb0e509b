"""Evaluate a trained run: n trials x m environments of in-context rollouts, with reports.

    python -m experiments.evaluate --run runs/default [--num-envs 8] [--num-trials 4] [--video]

Writes ``<run>/eval.json`` (per-trial mean and std return, last-trial mean, best-of-n mean, normalised
scores where defined, the dataset's median and best return), ``eval.md`` (a table) and ``eval.png``
(return against trial). Best-of-n (the largest of the n trials, as the paper reports) inflates scores,
so the last trial and the per-trial means are reported beside it, labelled.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from datasets import NormStats
from experiments.config import ExperimentConfig


class _Normalised:
    """The policy seen through the dataset's observation statistics."""

    def __init__(self, policy, stats: NormStats):
        self.policy, self.stats = policy, stats

    def start_trial(self):
        self.policy.start_trial()

    def act(self, observations, active=None):
        return self.policy.act(self.stats.normalize_observations(observations), active)

    def observe(self, actions, rewards):
        self.policy.observe(actions, rewards)


def evaluate_params(config: ExperimentConfig, params, model, stats: NormStats, dataset_returns) -> dict:
    """Rolls the model out in ``config.eval.num_envs`` environments for ``config.num_trials`` trials."""
    import envs
    from agent.policy import InContextPolicy, run_trials

    ev = config.eval
    batch_env = envs.make_batch(config.data.task, ev.num_envs, seed=ev.seed, action_repeat=config.data.action_repeat)
    episode_length = batch_env.envs[0].episode_length
    target = float(np.max(dataset_returns)) if ev.target_return is None else float(ev.target_return)
    trials = config.num_trials

    def policy(num_envs, num_trials):
        return _Normalised(InContextPolicy(model, params, num_envs=num_envs, obs_dim=stats.obs_mean.shape[0],
                                           episode_length=episode_length, num_trials=num_trials, target_return=target,
                                           window=ev.context_steps), stats)

    if ev.reset_context_each_trial:  # one policy (one compilation); its context is emptied before each trial
        single = policy(ev.num_envs, 1)
        rows = []
        for _ in range(trials):
            single.policy.reset()
            rows.append(run_trials(single, batch_env, 1))
        returns = np.concatenate(rows)
    else:
        returns = run_trials(policy(ev.num_envs, trials), batch_env, trials)
    result = {
        "task": config.data.task,
        "num_envs": ev.num_envs,
        "num_trials": trials,
        "target_return": target,
        "returns": returns.tolist(),
        "per_trial_mean_return": returns.mean(axis=1).tolist(),
        "per_trial_std_return": returns.std(axis=1).tolist(),
        "last_trial_mean_return": float(returns[-1].mean()),
        "best_of_n_mean_return": float(returns.max(axis=0).mean()),
        "normalized": _normalized(config.data.task, returns),
        "dataset_median_return": float(np.median(dataset_returns)),
        "dataset_max_return": float(np.max(dataset_returns)),
    }
    if ev.video:
        result["video"] = _video(config, policy, stats)
    return result


def _normalized(task: str, returns: np.ndarray):
    """D4RL normalised scores for the gymnasium locomotion tasks; None for dm_control tasks."""
    from datasets import d4rl

    family = task.split("-")[0]
    if family not in ("halfcheetah", "hopper", "walker2d", "ant"):
        return None
    return {"per_trial_mean": [float(d4rl.normalized_score(family, r.mean())) for r in returns],
            "last_trial_mean": float(d4rl.normalized_score(family, returns[-1].mean())),
            "best_of_n_mean": float(d4rl.normalized_score(family, returns.max(axis=0).mean()))}


def _video(config, make_policy, stats) -> str | None:
    """Records the first trial of one environment to ``<run>/eval_trial1.mp4``."""
    import envs

    path = config.run_dir / "eval_trial1.mp4"
    env = envs.make(config.data.task, seed=config.eval.seed, action_repeat=config.data.action_repeat)
    policy = make_policy(1, 1)
    policy.start_trial()
    last = {}

    def act(observation):
        if "action" in last:  # the reward of the previous action is not passed to this callback
            policy.observe(last["action"][None], np.zeros(1, np.float32))
        last["action"] = policy.act(observation[None])[0]
        return last["action"]

    try:
        envs.record_episodes(env, act, str(path))
    except envs.RenderingUnavailableError as error:
        print(f"video: {error}", file=sys.stderr)
        return None
    return str(path)


def write_reports(run_dir: Path, result: dict) -> None:
    """eval.json, eval.md and eval.png in ``run_dir`` (each written whole, then renamed)."""
    run_dir = Path(run_dir)
    _atomic_text(run_dir / "eval.json", json.dumps(result, indent=2))
    _atomic_text(run_dir / "eval.md", markdown_table(result))
    _plot(run_dir / "eval.png", result)


def markdown_table(result: dict) -> str:
    lines = [f"Evaluation on {result['task']}: {result['num_envs']} environments x {result['num_trials']} trials, "
             f"target return {result['target_return']:.1f}", "",
             "| trial | mean return | std |", "|---|---|---|"]
    for i, (mean, std) in enumerate(zip(result["per_trial_mean_return"], result["per_trial_std_return"])):
        lines.append(f"| {i + 1} | {mean:.1f} | {std:.1f} |")
    lines += ["", "| summary | return |", "|---|---|",
              f"| last trial (mean over environments) | {result['last_trial_mean_return']:.1f} |",
              f"| best of n trials (mean over environments) | {result['best_of_n_mean_return']:.1f} |",
              f"| dataset median episode | {result['dataset_median_return']:.1f} |",
              f"| dataset best episode | {result['dataset_max_return']:.1f} |"]
    if result.get("normalized"):
        lines.append(f"| last trial, D4RL normalised | {result['normalized']['last_trial_mean']:.1f} |")
    return "\n".join(lines) + "\n"


def _plot(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = np.arange(1, result["num_trials"] + 1)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.errorbar(trials, result["per_trial_mean_return"], yerr=result["per_trial_std_return"], marker="o", capsize=3,
                label="agent (mean ± std over environments)")
    ax.axhline(result["dataset_median_return"], color="gray", linestyle="--", label="dataset median")
    ax.axhline(result["dataset_max_return"], color="black", linestyle=":", label="dataset best")
    ax.set_xlabel("trial")
    ax.set_ylabel("return")
    ax.set_xticks(trials)
    ax.set_title(result["task"])
    ax.legend(fontsize=7)
    fig.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def summary_table(summary: dict) -> str:
    """The short summary the main job ends with: results and where everything lies."""
    ev = summary.get("eval") or {}
    run = Path(summary["run_dir"])
    rows = [("final training loss", f"{summary['final_loss']:.4f}")]
    if ev:
        per_trial = " -> ".join(f"{r:.0f}" for r in ev["per_trial_mean_return"])
        rows += [("return per trial (mean)", per_trial),
                 ("last trial mean return", f"{ev['last_trial_mean_return']:.1f}"),
                 ("best of n mean return", f"{ev['best_of_n_mean_return']:.1f}"),
                 ("dataset median / best return", f"{ev['dataset_median_return']:.1f} / {ev['dataset_max_return']:.1f}")]
    rows += [("TensorBoard logs", summary["tensorboard"]), ("checkpoints", summary["checkpoints"]),
             ("evaluation", str(run / "eval.md")), ("plot", str(run / "eval.png"))]
    width = max(len(k) for k, _ in rows)
    return "\n".join(["", "| " + "result".ljust(width) + " | value |", "|" + "-" * (width + 2) + "|---|"]
                     + [f"| {k.ljust(width)} | {v} |" for k, v in rows])


def evaluate_run(run_dir: Path, *, num_envs: int | None = None, num_trials: int | None = None, video: bool = False,
                 target_return: float | None = None, out_dir: Path | None = None):
    """Loads ``run_dir``'s config, statistics and latest checkpoint, evaluates, and writes the reports to
    ``out_dir`` (default: ``run_dir``, replacing its earlier evaluation)."""
    from experiments.checkpoints import Checkpoints
    from experiments.data import dataset_returns, load_trajectories
    from experiments.train import build

    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run directory (no config.json)")
    config = ExperimentConfig.from_json((run_dir / "config.json").read_text())
    config = dataclasses.replace(config, runs_dir=str(run_dir.parent), name=run_dir.name, eval=dataclasses.replace(
        config.eval, **{k: v for k, v in (("num_envs", num_envs), ("num_trials", num_trials), ("video", video or None),
                                          ("target_return", target_return)) if v is not None}))
    stats = NormStats.load(run_dir / "norm_stats.json")
    trajectories = load_trajectories(config.data)
    model, mesh, state = build(config, trajectories)
    restored, step = Checkpoints(run_dir / "checkpoints", config.train.keep_checkpoints).restore_latest(state)
    if restored is None:
        raise FileNotFoundError(f"{run_dir / 'checkpoints'} holds no checkpoint that can be restored")
    result = evaluate_params(config, restored.params, model, stats, dataset_returns(trajectories))
    result["checkpoint_step"] = step
    out_dir = run_dir if out_dir is None else Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_reports(out_dir, result)
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a run directory, e.g. runs/default")
    parser.add_argument("--num-envs", type=int)
    parser.add_argument("--num-trials", type=int)
    parser.add_argument("--video", action="store_true")
    parser.add_argument("--target-return", type=float, help="the return asked for (default: the run's own)")
    parser.add_argument("--out", type=Path, help="write the reports here instead of into the run directory")
    args = parser.parse_args(argv)
    try:
        result = evaluate_run(args.run, num_envs=args.num_envs, num_trials=args.num_trials, video=args.video,
                              target_return=args.target_return, out_dir=args.out)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(markdown_table(result))
    out = args.out or args.run
    print(f"wrote {out / 'eval.json'}, {out / 'eval.md'}, {out / 'eval.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
