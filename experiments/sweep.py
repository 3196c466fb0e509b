"""The context-length sweep: trajectories in context x seeds, with BC-10% and DT baselines from the same code.

    python -m experiments.sweep                                  # default data, k = 1 2 4, one seed
    python -m experiments.sweep --trajectories 1 2 4 8 16 --seeds 0 1 2 --steps 2000 --name cartpole_sweep

Every cell is an ordinary run under ``runs/<name>/<cell>``: a cell whose eval.json exists is skipped, and
one that was interrupted resumes from its checkpoint, so the sweep resumes cell by cell. Produces
``runs/<name>/sweep.md``, ``sweep.csv`` and ``sweep.png`` (return against trajectories in context).

Baselines (Table 5 of the Ring Attention paper): DT is one trajectory in a 20-step window conditioned on
returns-to-go, evaluated with the same window; BC-10% is the same model without returns or rewards,
trained on the best 10% of episodes. All cells train for the same number of optimiser steps with the same
batch size.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import io
import json
import sys
from pathlib import Path

import numpy as np

from experiments.config import ExperimentConfig, get_preset


def cell_configs(base: ExperimentConfig, trajectories: list[int], seeds: list[int], steps: int, episode_length: int,
                 window: int = 20) -> dict[str, ExperimentConfig]:
    """The config of every cell, keyed by cell name (``at_k4_seed0``, ``dt_seed0``, ``bc10_seed0``)."""
    chunk = base.model.query_chunk_size
    cells = {}
    for seed in seeds:
        common = dict(train=dataclasses.replace(base.train, steps=steps, seed=seed, eval_every=0,
                                                checkpoint_every=max(steps // 4, 1)),
                      optim=dataclasses.replace(base.optim, total_steps=steps))
        for k in trajectories:
            max_steps = -(-k * episode_length // chunk) * chunk if k * episode_length > chunk else k * episode_length
            cells[f"at_k{k}_seed{seed}"] = dataclasses.replace(
                base, **common, sampler=dataclasses.replace(base.sampler, num_trajectories=k, max_steps=max_steps,
                                                            window="end"),
                model=dataclasses.replace(base.model, max_trajectories=max(base.model.max_trajectories, k)),
                eval=dataclasses.replace(base.eval, num_trials=k))
        short = dict(query_chunk_size=window, key_chunk_size=window, ffn_chunk_size=window)
        dt_eval = dataclasses.replace(base.eval, num_trials=1, context_steps=window, reset_context_each_trial=True)
        cells[f"dt_seed{seed}"] = dataclasses.replace(
            base, **common, sampler=dataclasses.replace(base.sampler, num_trajectories=1, max_steps=window,
                                                        window="random"),
            model=dataclasses.replace(base.model, **short), eval=dt_eval)
        cells[f"bc10_seed{seed}"] = dataclasses.replace(
            base, **common, sampler=dataclasses.replace(base.sampler, num_trajectories=1, max_steps=window,
                                                        window="random", filter_top_fraction=0.1),
            model=dataclasses.replace(base.model, use_returns=False, use_rewards=False, **short), eval=dt_eval)
    return cells


def run_sweep(base: ExperimentConfig, name: str, trajectories: list[int], seeds: list[int], steps: int,
              quiet: bool = False) -> list[dict]:
    from experiments.data import load_trajectories
    from experiments.train import train

    episode_length = max(len(t) for t in load_trajectories(base.data))
    root = Path(base.runs_dir) / name
    rows = []
    for cell, config in cell_configs(base, trajectories, seeds, steps, episode_length).items():
        config = dataclasses.replace(config, name=cell, runs_dir=str(root))
        done = config.run_dir / "eval.json"
        if done.exists():
            result = json.loads(done.read_text())
            if not quiet:
                print(f"{cell}: done earlier")
        else:
            if not quiet:
                print(f"{cell}: training {steps} steps")
            result = train(config, quiet=quiet)["eval"]
        rows.append({"cell": cell, "method": cell.split("_seed")[0], "seed": config.train.seed,
                     "trajectories": config.sampler.num_trajectories,
                     "last_trial_mean_return": result["last_trial_mean_return"],
                     "best_of_n_mean_return": result["best_of_n_mean_return"],
                     "first_trial_mean_return": result["per_trial_mean_return"][0]})
    write_tables(root, rows)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds for each method."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        entry = {"method": method, "trajectories": group[0]["trajectories"], "seeds": len(group)}
        for key in ("first_trial_mean_return", "last_trial_mean_return", "best_of_n_mean_return"):
            values = np.array([r[key] for r in group])
            entry[key] = float(values.mean())
            entry[key.replace("mean_return", "std")] = float(values.std())
        out.append(entry)
    return out


def write_tables(root: Path, rows: list[dict]) -> None:
    summary = aggregate(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(summary[0]))
    writer.writeheader()
    writer.writerows(summary)
    (root / "sweep.csv").write_text(buffer.getvalue())
    lines = ["| method | trajectories in context | seeds | first trial | last trial | best of n |", "|---|---|---|---|---|---|"]
    for e in summary:
        lines.append(f"| {e['method']} | {e['trajectories']} | {e['seeds']} | "
                     f"{e['first_trial_mean_return']:.1f} ± {e['first_trial_std']:.1f} | "
                     f"{e['last_trial_mean_return']:.1f} ± {e['last_trial_std']:.1f} | "
                     f"{e['best_of_n_mean_return']:.1f} ± {e['best_of_n_std']:.1f} |")
    (root / "sweep.md").write_text("\n".join(lines) + "\n")
    _plot(root / "sweep.png", summary)


def _plot(path: Path, summary: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = [e for e in summary if e["method"].startswith("at_")]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if at:
        ks = [e["trajectories"] for e in at]
        for key, label in (("last_trial", "AT, last trial"), ("best_of_n", "AT, best of n")):
            ax.errorbar(ks, [e[f"{key}_mean_return"] for e in at], yerr=[e[f"{key}_std"] for e in at], marker="o",
                        capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
    for e, style in zip([e for e in summary if not e["method"].startswith("at_")], ("--", ":")):
        ax.axhline(e["last_trial_mean_return"], linestyle=style, color="gray", label=e["method"].upper())
    ax.set_xlabel("trajectories in context")
    ax.set_ylabel("return")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="default")
    parser.add_argument("--name", default="sweep")
    parser.add_argument("--trajectories", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--runs-dir", default=None)
    args = parser.parse_args(argv)
    try:
        base = get_preset(args.preset)
        if args.runs_dir:
            base = dataclasses.replace(base, runs_dir=args.runs_dir)
        run_sweep(base, args.name, args.trajectories, args.seeds, args.steps)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = Path(base.runs_dir) / args.name
    print((root / "sweep.md").read_text())
    print(f"wrote {root / 'sweep.md'}, {root / 'sweep.csv'}, {root / 'sweep.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
