"""The context-length sweep: trajectories in context x seeds, with BC-10% and DT baselines from the same code.

    python -m experiments.sweep                                  # dark_room, k = 1 2 4, one seed
    python -m experiments.sweep --preset cartpole_sac --trajectories 1 2 4 8 16 --seeds 0 1 2 --steps 800 \\
        --batch-steps 4096 --name cartpole
    python -m experiments.sweep --preset cartpole_sac --methods at --trajectories 4 --sampler.loss-on last \\
        --name loss_last
    python -m experiments.sweep --preset cartpole_sac --name cartpole --retarget 277 719 1000   # other targets
    python -m experiments.sweep --compare runs/cartpole runs/loss_last --compare-methods at_k4

Every cell is an ordinary run under ``runs/<name>/<cell>``: a cell whose eval.json exists is skipped, and
one that was interrupted resumes from its checkpoint, so the sweep resumes cell by cell. Produces
``runs/<name>/sweep.md`` (a table in the shape of the paper's Table 5, then the per-trial returns),
``sweep.csv``, ``cells.json`` (every cell, with its wall and CPU time), ``sweep.png`` (return against
trajectories in context) and ``trials.png`` (return against trial).

Baselines (Table 5 of the Ring Attention paper): DT is one trajectory in a 20-step window conditioned on
returns-to-go, evaluated with the same window; BC-10% is the same model without returns or rewards,
trained on the best 10% of episodes. On hidden-task families two more bound the comparison: the oracle
is DT told the task (``data.observe_task``: the task parameter appended to every observation), the
ceiling, and random plays uniform random actions, the floor (no training). Baselines are evaluated over
``--baseline-trials`` independent trials (each starts from an empty context), so their best-of-n is
comparable with AT's.

Trials: by default AT with k trajectories runs k trials in one growing context. ``--trials n`` gives every
method n trials instead; an AT cell with k < n then conditions each trial on the k - 1 before it
(``eval.context_trials``), as it was trained, so all methods are compared at the same trial.

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

import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Literal

import numpy as np

from agent.config import check_counts
from experiments.cli import EXPECTED_ERRORS, ConfigArg, DistributedArgs, PresetArg, fail, parse
from experiments.config import ExperimentConfig
from experiments.methods import METHODS
from experiments.presets import DEFAULT_PRESET
from experiments.run import RunDir
from experiments.reports import compare, label, write_tables

Method = Literal["at", "ad", "dpt", "dt", "bc10", "oracle", "random"]


def cell_configs(base: ExperimentConfig, trajectories: list[int], seeds: list[int], steps: int, episode_length: int,
                 *, window: int = 20, batch_steps: int | None = None, baseline_trials: int | None = None,
                 trials: int | None = None, methods=("at", "dt", "bc10")) -> dict[str, ExperimentConfig]:
    """The config of every cell, keyed by cell name (``at_k4_seed0``, ``ad_k8_seed0``, ``dt_seed0``, ...,
    ``random_seed0``); each method's changes are its row of ``experiments.methods.TABLE``."""
    from experiments.methods import HIDDEN_ONLY, Cell, method_configs

    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"methods {sorted(unknown)} are unknown; expected some of {list(METHODS)}")
    import envs

    needs_hidden = sorted(set(HIDDEN_ONLY) & set(methods))
    if needs_hidden and not envs.task_spec(base.data.task).hidden:
        raise ValueError(f"methods {needs_hidden} need a hidden-task family; {base.data.task!r} is not one")
    baseline_trials = baseline_trials or trials or max(trajectories)
    base = dataclasses.replace(base, eval=dataclasses.replace(base.eval, random_floor=False))  # a cell of its own

    def batch(context_steps: int) -> int:
        if batch_steps is None:
            return base.sampler.batch_size
        return max(1, batch_steps // context_steps)  # a context longer than T trains alone

    cells = {}
    for seed in seeds:
        seeded = dataclasses.replace(base, train=dataclasses.replace(base.train, steps=steps, seed=seed, eval_every=0,
                                                                     checkpoint_every=max(steps // 4, 1)),
                                     optim=dataclasses.replace(base.optim, total_steps=steps))
        cell = Cell(seeded, episode_length, _ring_size(base), batch, trials, baseline_trials, window)
        for method in methods:
            for name, config in method_configs(method, cell, trajectories).items():
                cells[f"{name}_seed{seed}"] = config
    return cells


def _ring_size(config: ExperimentConfig) -> int:
    """The devices the ring spans in ``config``'s mesh on this machine (1 without ring attention)."""
    if config.model.attention != "ring":
        return 1
    import jax

    from ring.mesh import parse_mesh_spec

    return parse_mesh_spec(config.train.mesh, jax.device_count())["sp"]


def run_sweep(base: ExperimentConfig, name: str, trajectories: list[int], seeds: list[int], steps: int,
              quiet: bool = False, **options) -> list[dict]:
    """Trains and evaluates every cell that has not finished (see the module docstring); returns the rows."""
    import envs

    episode_length = envs.make(base.data.task, seed=0, action_repeat=base.data.action_repeat).episode_length
    root = RunDir(Path(base.runs_dir) / name)
    episodes = {}  # each DataConfig's episodes, read once, on the first cell that needs them
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
                print(f"{cell}: " + ("evaluating" if cell.startswith("random") else
                                     f"training {steps} steps, batch {config.sampler.batch_size} x "
                                     f"{config.sampler.max_steps} steps"), flush=True)
            if config.data not in episodes:
                from experiments.pipeline import load_episodes

                episodes[config.data] = load_episodes(config.data)
            wall, cpu = time.perf_counter(), time.process_time()
            result = _run_cell(config, run, episodes[config.data], quiet)
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
                     "per_trial_success_rate": result.get("per_trial_success_rate"),
                     "dataset_median_return": result["dataset_median_return"],
                     "dataset_max_return": result["dataset_max_return"],
                     "dataset_best_policy_return": _best_policy(config, result, episodes),
                     "oracle_return": result.get("oracle_return"), **seconds})
    write_tables(root, rows)
    return rows


def _best_policy(config: ExperimentConfig, result: dict, episodes: dict) -> float | None:
    """The best policy in the cell's data (``experiments.run.best_policy_return``): from its evaluation, or
    from the data itself for cells evaluated before evaluations recorded it (the random floor has none)."""
    if "dataset_best_policy_return" in result or config.name.startswith("random"):
        return result.get("dataset_best_policy_return")
    if config.data not in episodes:
        from experiments.pipeline import load_episodes

        episodes[config.data] = load_episodes(config.data)
    from experiments.run import best_policy_return

    return best_policy_return(episodes[config.data])


def _run_cell(config: ExperimentConfig, run: RunDir, episodes, quiet: bool) -> dict:
    """Trains and evaluates one cell (a random cell only evaluates); returns its evaluation."""
    if not config.name.startswith("random"):
        from experiments.train import train

        return train(config, quiet=quiet, episodes=episodes)["eval"]
    from datasets import NormStats
    from experiments.evaluate import evaluate_actor, random_actor
    from experiments.run import DataSummary

    data = DataSummary.of(episodes)
    with run.lock():
        run.claim(config)
        run.save_data(data, NormStats.compute(episodes))
        return evaluate_actor(config, random_actor(config, data), data, run, extra=run.provenance(None))


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
            lines.append(f"| {label(method)} | {target:g} | {len(results)} | {stats} |")
    text = "\n".join(lines) + "\n"
    RunDir(root).write_text("targets.md", text)
    return text


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
      baseline_trials: trials of DT, BC-10%, the oracle and random (None: trials, else the largest k).
      trials: every method's trials (None: AT with k trajectories runs k; see the module docstring).
      methods: which methods to run (oracle and random: hidden-task families only).
      retarget: instead of training, evaluate the finished cells of retarget_methods at these target returns
        and write targets.md.
      retarget_methods: the methods retarget evaluates (e.g. at_k4, dt).
      compare: instead of training, print compare_methods across these finished sweep directories.
      compare_methods: the methods compare prints.
      distributed: several processes as one JAX runtime (as in experiments.train).
    """

    config: ConfigArg
    preset: PresetArg = DEFAULT_PRESET
    trajectories: tuple[int, ...] = (1, 2, 4)
    seeds: tuple[int, ...] = (0,)
    steps: int = 300
    batch_steps: int | None = None
    baseline_trials: int | None = None
    trials: int | None = None
    methods: tuple[Method, ...] = ("at", "dt", "bc10")
    retarget: tuple[float, ...] = ()
    retarget_methods: tuple[str, ...] = ("at_k4", "dt")
    compare: tuple[Path, ...] = ()
    compare_methods: tuple[str, ...] = ("at_k4",)
    distributed: DistributedArgs = DistributedArgs()

    def __post_init__(self):
        if not (self.compare or self.retarget):  # the lists that make the cells
            for name in ("trajectories", "seeds", "methods"):
                if not getattr(self, name):
                    raise ValueError(f"--{name} is empty: a sweep needs at least one")
        if any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in self.trajectories):
            raise ValueError(f"--trajectories {list(self.trajectories)}: every one must be a positive integer")
        if any(isinstance(seed, bool) or not isinstance(seed, int) or seed < 0 for seed in self.seeds):
            raise ValueError(f"--seeds {list(self.seeds)}: every one must be an integer >= 0")
        check_counts(self, "steps", optional=("batch_steps", "baseline_trials", "trials"))
        if any(not math.isfinite(target) for target in self.retarget):
            raise ValueError(f"--retarget {list(self.retarget)}: every target return must be finite")


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
                  batch_steps=args.batch_steps, baseline_trials=args.baseline_trials, trials=args.trials,
                  methods=tuple(args.methods))
    except EXPECTED_ERRORS as error:
        return fail(error)
    root = Path(base.runs_dir) / base.name
    print((root / "sweep.md").read_text())
    print(f"wrote {root / 'sweep.md'}, {root / 'sweep.csv'}, {root / 'sweep.png'}, {root / 'trials.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
