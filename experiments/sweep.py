"""The context-length sweep: trajectories in context x seeds, with BC-10% and DT baselines from the same code.

    python -m experiments.sweep                                  # default data, k = 1 2 4, one seed
    python -m experiments.sweep --trajectories 1 2 4 8 16 --seeds 0 1 2 --steps 800 \\
        --batch-steps 4096 --name cartpole
    python -m experiments.sweep --methods at --trajectories 4 --sampler.loss-on last --name loss_last
    python -m experiments.sweep --name cartpole --retarget 277 719 1000   # re-evaluate at other targets
    python -m experiments.sweep --compare runs/cartpole runs/loss_last --compare-methods at_k4

Every cell is an ordinary run under ``runs/<name>/<cell>``: a cell whose eval.json exists is skipped, and
one that was interrupted resumes from its checkpoint, so the sweep resumes cell by cell. Produces
``runs/<name>/sweep.md`` (a table in the shape of the paper's Table 5, then the per-trial returns),
``sweep.csv``, ``cells.json`` (every cell, with its wall and CPU time), ``sweep.png`` (return against
trajectories in context) and ``trials.png`` (return against trial).

Baselines (Table 5 of the Ring Attention paper): DT is one trajectory in a 20-step window conditioned on
returns-to-go, evaluated with the same window; BC-10% is the same model without returns or rewards,
trained on the best 10% of episodes. Both are evaluated over ``--baseline-trials`` independent trials
(each starts from an empty context), so their best-of-n is comparable with AT's.

Equal compute: every cell trains for the same number of optimiser steps. With ``--batch-steps T`` every
batch also holds about T environment steps (batch size T // context steps, at least one context), which in
the default fused token layout (one token per step) is the same number of tokens for every method;
without it every cell keeps the preset's batch size.

Every flag of ``experiments.train`` (``--preset`` and its fields, ``--help`` lists them) sets the base config
of every cell, so an ablation is the same flag as in a single run (``--sampler.loss-on last``). A cell then
sets what makes it that cell: the trajectories in context, its window and batch size, its trials, and for
the baselines their window, returns and data filter.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

from experiments.cli import ConfigArg, DistributedArgs, PresetArg, parse
from experiments.config import ExperimentConfig
from experiments.run import RunDir

METHODS = ("at", "dt", "bc10")


def cell_configs(base: ExperimentConfig, trajectories: list[int], seeds: list[int], steps: int, episode_length: int,
                 *, window: int = 20, batch_steps: int | None = None, baseline_trials: int | None = None,
                 methods=METHODS) -> dict[str, ExperimentConfig]:
    """The config of every cell, keyed by cell name (``at_k4_seed0``, ``dt_seed0``, ``bc10_seed0``)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods {sorted(unknown)} are unknown; expected some of {list(METHODS)}")
    chunk = base.model.query_chunk_size
    baseline_trials = baseline_trials or max(trajectories)

    def batch(context_steps: int) -> int:
        if batch_steps is None:
            return base.sampler.batch_size
        return max(1, batch_steps // context_steps)  # a context longer than T trains alone

    cells = {}
    for seed in seeds:
        common = dict(train=dataclasses.replace(base.train, steps=steps, seed=seed, eval_every=0,
                                                checkpoint_every=max(steps // 4, 1)),
                      optim=dataclasses.replace(base.optim, total_steps=steps))
        if "at" in methods:
            for k in trajectories:
                steps_k = k * episode_length
                max_steps = -(-steps_k // chunk) * chunk if steps_k > chunk else steps_k
                cells[f"at_k{k}_seed{seed}"] = dataclasses.replace(
                    base, **common,
                    sampler=dataclasses.replace(base.sampler, num_trajectories=k, max_steps=max_steps, window="end",
                                                batch_size=batch(max_steps)),
                    model=dataclasses.replace(base.model, max_trajectories=max(base.model.max_trajectories, k)),
                    eval=dataclasses.replace(base.eval, num_trials=k))
        # A 20-step window needs no ring: the baselines attend on one device even where AT uses the ring.
        short = dict(query_chunk_size=window, key_chunk_size=window, ffn_chunk_size=window,
                     attention="blockwise" if base.model.attention == "ring" else base.model.attention)
        dt_eval = dataclasses.replace(base.eval, num_trials=baseline_trials, context_steps=window,
                                      reset_context_each_trial=True)
        dt_sampler = dataclasses.replace(base.sampler, num_trajectories=1, max_steps=window, window="random",
                                         batch_size=batch(window))
        if "dt" in methods:
            cells[f"dt_seed{seed}"] = dataclasses.replace(
                base, **common, sampler=dt_sampler, model=dataclasses.replace(base.model, **short), eval=dt_eval)
        if "bc10" in methods:
            cells[f"bc10_seed{seed}"] = dataclasses.replace(
                base, **common, sampler=dataclasses.replace(dt_sampler, filter_top_fraction=0.1),
                model=dataclasses.replace(base.model, use_returns=False, use_rewards=False, **short), eval=dt_eval)
    return cells


def run_sweep(base: ExperimentConfig, name: str, trajectories: list[int], seeds: list[int], steps: int,
              quiet: bool = False, **options) -> list[dict]:
    """Trains and evaluates every cell that has not finished (see the module docstring); returns the rows."""
    import envs
    from experiments.pipeline import load_episodes
    from experiments.train import train

    episode_length = envs.make(base.data.task, seed=0, action_repeat=base.data.action_repeat).episode_length
    root = RunDir(Path(base.runs_dir) / name)
    episodes = None  # read once, on the first cell that trains
    rows = []
    for cell, config in cell_configs(base, trajectories, seeds, steps, episode_length, **options).items():
        config = dataclasses.replace(config, name=cell, runs_dir=str(root.path))
        run = RunDir(config.run_dir)
        if (run.path / "eval.json").exists() and (run.path / "timing.json").exists():
            run.claim(config)  # a finished cell made with another config is refused, not reused
            result, seconds = run.read_json("eval.json"), run.read_json("timing.json")
            if not quiet:
                print(f"{cell}: done earlier")
        else:
            if not quiet:
                print(f"{cell}: training {steps} steps, batch {config.sampler.batch_size} x "
                      f"{config.sampler.max_steps} steps", flush=True)
            episodes = episodes if episodes is not None else load_episodes(base.data)
            wall, cpu = time.perf_counter(), time.process_time()
            result = train(config, quiet=quiet, episodes=episodes)["eval"]
            # CPU seconds of every thread of this process (XLA's included); resumed cells count this call only.
            seconds = {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}
            run.write_json("timing.json", seconds)  # with eval.json, the mark of a finished cell
        rows.append({"cell": cell, "method": cell.split("_seed")[0], "seed": config.train.seed,
                     "trajectories": config.sampler.num_trajectories, "trials": result["num_trials"],
                     "batch_size": config.sampler.batch_size, "context_steps": config.sampler.max_steps,
                     "last_trial_mean_return": result["last_trial_mean_return"],
                     "best_of_n_mean_return": result["best_of_n_mean_return"],
                     "first_trial_mean_return": result["per_trial_mean_return"][0],
                     "per_trial_mean_return": result["per_trial_mean_return"],
                     "dataset_median_return": result["dataset_median_return"],
                     "dataset_max_return": result["dataset_max_return"], **seconds})
    write_tables(root, rows)
    return rows


def aggregate(rows: list[dict]) -> list[dict]:
    """Mean and std over seeds for each method (per-trial curves included)."""
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        group = [r for r in rows if r["method"] == method]
        entry = {"method": method, **{key: group[0][key] for key in ("trajectories", "trials", "batch_size",
                                                                      "context_steps")},
                 "seeds": len(group), "cpu_minutes": sum(r["cpu_s"] for r in group) / 60,
                 "wall_minutes": sum(r["wall_s"] for r in group) / 60}
        for key in ("first_trial_mean_return", "last_trial_mean_return", "best_of_n_mean_return"):
            values = np.array([r[key] for r in group])
            entry[key] = float(values.mean())
            entry[key.replace("mean_return", "std")] = float(values.std())
        curves = np.array([r["per_trial_mean_return"] for r in group])
        entry["per_trial_mean"], entry["per_trial_std"] = curves.mean(0).tolist(), curves.std(0).tolist()
        out.append(entry)
    return out


def _label(method: str) -> str:
    return {"dt": "DT", "bc10": "BC-10%"}.get(method, method.replace("at_k", "AT, k = "))


def markdown(rows: list[dict]) -> str:
    summary = aggregate(rows)
    first = rows[0]
    lines = [f"Dataset: median return {first['dataset_median_return']:.1f}, best {first['dataset_max_return']:.1f}. "
             "Mean ± standard deviation over seeds of each seed's mean over the evaluation environments. "
             "Last trial: the return of the final trial. Best of n: each environment's best trial, n = trials. "
             "DT and BC-10% trials are independent (empty context each time).", "",
             "| method | trajectories in context | steps per batch | seeds | trials (n) | first trial | last trial "
             "| best of n | CPU min |", "|---|---|---|---|---|---|---|---|---|"]
    for e in summary:
        lines.append(f"| {_label(e['method'])} | {e['trajectories']} | {e['batch_size']} x {e['context_steps']} | "
                     f"{e['seeds']} | {e['trials']} | "
                     f"{e['first_trial_mean_return']:.1f} ± {e['first_trial_std']:.1f} | "
                     f"{e['last_trial_mean_return']:.1f} ± {e['last_trial_std']:.1f} | "
                     f"{e['best_of_n_mean_return']:.1f} ± {e['best_of_n_std']:.1f} | {e['cpu_minutes']:.1f} |")
    most = max(e["trials"] for e in summary)
    lines += ["", "Per-trial mean return (AT conditions each trial on the earlier ones):", "",
              "| method | " + " | ".join(f"trial {i + 1}" for i in range(most)) + " |", "|---|" + "---|" * most]
    for e in summary:
        cells = [f"{m:.0f} ± {s:.0f}" for m, s in zip(e["per_trial_mean"], e["per_trial_std"])]
        lines.append(f"| {_label(e['method'])} | " + " | ".join(cells + [""] * (most - len(cells))) + " |")
    total_cpu = sum(r["cpu_s"] for r in rows) / 60
    total_wall = sum(r["wall_s"] for r in rows) / 60
    lines += ["", f"{len(rows)} cells; {total_cpu:.0f} CPU minutes, {total_wall:.0f} wall minutes in all."]
    return "\n".join(lines) + "\n"


def write_tables(root: RunDir, rows: list[dict]) -> None:
    summary = aggregate(rows)
    buffer = io.StringIO()
    fields = [k for k in summary[0] if not k.startswith("per_trial")]
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(summary)
    root.write_text("sweep.csv", buffer.getvalue())
    root.write_json("cells.json", rows)
    root.write_text("sweep.md", markdown(rows))
    _plot(root, summary)


def _plot(root: RunDir, summary: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    at = [e for e in summary if e["method"].startswith("at_")]
    baselines = [e for e in summary if not e["method"].startswith("at_")]

    def save(fig, ax, xlabel: str, name: str) -> None:
        ax.set_xlabel(xlabel)
        ax.set_ylabel("return")
        ax.legend(fontsize=7)
        fig.tight_layout()
        root.write(name, lambda path: fig.savefig(path, dpi=120, format="png"))
        plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    if at:
        ks = [e["trajectories"] for e in at]
        for key, label in (("last_trial", "AT, last trial"), ("best_of_n", "AT, best of n")):
            ax.errorbar(ks, [e[f"{key}_mean_return"] for e in at], yerr=[e[f"{key}_std"] for e in at], marker="o",
                        capsize=3, label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ks, [str(k) for k in ks])
    for e, color in zip(baselines, ("tab:red", "tab:gray")):
        mean, std = e["last_trial_mean_return"], e["last_trial_std"]
        ax.axhline(mean, linestyle="--", color=color, label=f"{_label(e['method'])} (one trial)")
        ax.axhspan(mean - std, mean + std, color=color, alpha=0.15)
    save(fig, ax, "trajectories in context", "sweep.png")

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for e in at + baselines:
        trials = np.arange(1, len(e["per_trial_mean"]) + 1)
        ax.errorbar(trials, e["per_trial_mean"], yerr=e["per_trial_std"], marker="o", capsize=2,
                    linestyle="-" if e in at else ":", label=_label(e["method"]))
    save(fig, ax, "trial", "trials.png")


def retarget(root: Path, targets: list[float], methods: list[str], num_envs: int | None = None) -> str:
    """Evaluates the finished cells of ``methods`` (e.g. ``at_k4``) again at each target return, into
    ``<cell>/target_<T>/``, and writes ``targets.md``: the evaluation target-return ablation, no retraining."""
    from experiments.evaluate import evaluate_run

    cells = json.loads((root / "cells.json").read_text())
    lines = ["| method | target return | seeds | first trial | last trial | best of n |", "|---|---|---|---|---|---|"]
    for method in methods:
        group = [c for c in cells if c["method"] == method]
        if not group:
            raise ValueError(f"{root} has no finished cells of method {method!r}")
        for target in targets:
            results = []
            for cell in group:
                out = root / cell["cell"] / f"target_{target:g}"
                if (out / "eval.json").exists():
                    results.append(json.loads((out / "eval.json").read_text()))
                else:
                    results.append(evaluate_run(root / cell["cell"], target_return=target, out_dir=out,
                                                num_envs=num_envs))
            values = {key: np.array([r[key] if key != "first" else r["per_trial_mean_return"][0] for r in results])
                      for key in ("first", "last_trial_mean_return", "best_of_n_mean_return")}
            stats = " | ".join(f"{v.mean():.1f} ± {v.std():.1f}" for v in values.values())
            lines.append(f"| {_label(method)} | {target:g} | {len(results)} | {stats} |")
    text = "\n".join(lines) + "\n"
    RunDir(root).write_text("targets.md", text)
    return text


def compare(roots: list[Path], methods: list[str]) -> str:
    """One method across several finished sweeps (an ablation table): what each sweep's ``--set`` changed,
    and its first-trial, last-trial and best-of-n returns (mean ± std over seeds)."""
    lines = ["| sweep | method | seeds | trials (n) | first trial | last trial | best of n | CPU min |",
             "|---|---|---|---|---|---|---|---|"]
    for root in roots:
        cells = json.loads((Path(root) / "cells.json").read_text())
        for entry in aggregate(cells):
            if entry["method"] not in methods:
                continue
            stats = " | ".join(f"{entry[f'{key}_mean_return']:.1f} ± {entry[f'{key}_std']:.1f}"
                               for key in ("first_trial", "last_trial", "best_of_n"))
            lines.append(f"| {Path(root).name} | {_label(entry['method'])} | {entry['seeds']} | {entry['trials']} | "
                         f"{stats} | {entry['cpu_minutes']:.1f} |")
    return "\n".join(lines) + "\n"


@dataclasses.dataclass(frozen=True)
class SweepCommand:
    """Trajectories in context x seeds, with DT and BC-10% baselines from the same code and compute.

    Attributes:
      config: the base config of every cell (the preset and every flag of experiments.train); its name is the
        sweep's directory under runs_dir, which holds one run directory per cell.
      preset: the base preset.
      trajectories: the trajectories in context of the AT cells.
      seeds: training seeds.
      steps: optimiser steps of every cell.
      batch_steps: environment steps per batch for every cell (equal compute); None: the preset's batch size.
      baseline_trials: DT and BC-10% trials (None: the largest k).
      methods: which methods to run.
      retarget: instead of training, evaluate the finished cells of retarget_methods at these target returns
        and write targets.md.
      retarget_methods: the methods retarget evaluates (e.g. at_k4, dt).
      compare: instead of training, print compare_methods across these finished sweep directories.
      compare_methods: the methods compare prints.
      distributed: several processes as one JAX runtime (as in experiments.train).
    """

    config: ConfigArg
    preset: PresetArg = "default"
    trajectories: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0,)
    steps: int = 300
    batch_steps: int | None = None
    baseline_trials: int | None = None
    methods: tuple[Literal["at", "dt", "bc10"], ...] = METHODS
    retarget: tuple[float, ...] = ()
    retarget_methods: tuple[str, ...] = ("at_k4", "dt")
    compare: tuple[Path, ...] = ()
    compare_methods: tuple[str, ...] = ("at_k4",)
    distributed: DistributedArgs = DistributedArgs()


def main(argv=None) -> int:
    try:
        args = parse(SweepCommand, argv, description=__doc__.splitlines()[0])
        args.distributed.initialize()
        base = args.config
        if args.compare:
            print(compare(list(args.compare), list(args.compare_methods)))
            return 0
        if args.retarget:
            print(retarget(Path(base.runs_dir) / base.name, list(args.retarget), list(args.retarget_methods)))
            return 0
        run_sweep(base, base.name, list(args.trajectories), list(args.seeds), args.steps,
                  batch_steps=args.batch_steps, baseline_trials=args.baseline_trials, methods=tuple(args.methods))
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    root = Path(base.runs_dir) / base.name
    print((root / "sweep.md").read_text())
    print(f"wrote {root / 'sweep.md'}, {root / 'sweep.csv'}, {root / 'sweep.png'}, {root / 'trials.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
