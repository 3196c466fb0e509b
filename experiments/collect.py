"""Collect data: episodes of a policy in any `envs` task, written in the ExoRL or D4RL format.

    python -m experiments.collect --out runs/data/demo --task cartpole_swingup --policy random --episodes 10
    python -m experiments.collect --out runs/data/demo --task walker_walk --policy sac --episodes 400 \\
        --action-repeat 2
    python -m experiments.collect per-task --root runs/data/maze_explore --task point_mass_maze_reach_hidden \\
        --source-algo explorer --algo explorer_per_task --action-repeat 10
    python -m experiments.collect curves --task dark_room_hidden --histories 650 --episodes-per-history 12 \\
        --eps-min 0.4

Two recipes built on the collector are subcommands: ``per-task`` writes exploration data once per task of a
hidden-task family (``experiments.collection.per_task``), and ``curves`` writes every scripted
demonstrator's histories and prints its mean return and success rate by episode within a history. The
collector itself (layout, resumption, the policies) is the library ``experiments.collection``; ``--help``
(and ``per-task --help``, ``curves --help``) lists every setting with its meaning.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from experiments.cli import EXPECTED_ERRORS, enable_compilation_cache, fail, parse, prog_name
from experiments.collection.collector import CollectConfig, collect, data_dir, load_episodes

__all__ = ["CollectConfig", "collect", "data_dir", "load_episodes", "main"]


@dataclasses.dataclass(frozen=True)
class PerTaskCommand:
    """Write every episode of exploration data once per task of a hidden-task family, each copy relabelled
    with that task's rewards from the stored physics (ExoRL's multi-task recipe).

    Attributes:
      root: the ExoRL root of the source data.
      task: the hidden-task family, e.g. point_mass_maze_reach_hidden.
      source_algo: the directory of the episodes to relabel.
      algo: the directory to write the per-task copies to.
      action_repeat: the repeat the source was collected with.
      max_episodes: relabel only the first this many source episodes.
    """

    root: Path
    task: str
    source_algo: str
    algo: str
    action_repeat: int = 1
    max_episodes: int | None = None


@dataclasses.dataclass(frozen=True)
class CurvesCommand:
    """Write the histories of every scripted demonstrator of a hidden-task family and print each one's mean
    return and success rate by episode index within a history.

    Attributes:
      task: the hidden-task family.
      histories: histories per demonstrator.
      episodes_per_history: episodes in a history.
      seed: the histories' seed (tasks, guess orders, noise).
      eps_min: the grids' ADε floor.
      out: keep the datasets here (default: a temporary directory, removed at the end).
    """

    task: str = "point_nav_hidden"
    histories: int = 600
    episodes_per_history: int = 12
    seed: int = 0
    eps_min: float = 0.0
    out: Path | None = None


def per_task(command: PerTaskCommand) -> int:
    from experiments.collection.per_task import write_per_task

    buffer = write_per_task(command.root, task=command.task, source_algo=command.source_algo, algo=command.algo,
                            action_repeat=command.action_repeat, max_episodes=command.max_episodes)
    print(f"wrote {len(list(buffer.glob('episode_*.npz')))} episodes to {buffer}")
    return 0


def curves(command: CurvesCommand) -> int:
    import tempfile

    if command.out is not None:
        return _curves(command, command.out)
    with tempfile.TemporaryDirectory() as temporary:
        return _curves(command, Path(temporary))


def _curves(command: CurvesCommand, out: Path) -> int:
    import time

    import datasets
    import envs
    from experiments.collection.histories import episode_index_curve, write_dataset

    print(f"{command.task}: {command.histories} histories x {command.episodes_per_history} episodes, seed "
          f"{command.seed}; per episode index within a history: mean return / success rate")
    grid = envs.task_spec(command.task).discrete
    for source in ("random", "searcher", "ad_eps", "oracle") + (("q_learning",) if grid else ()):
        start, cpu = time.perf_counter(), time.process_time()
        buffer = write_dataset(out, task=command.task, source=source, num_histories=command.histories,
                               episodes_per_history=command.episodes_per_history, seed=command.seed,
                               eps_min=command.eps_min)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        curve = episode_index_curve(datasets.read_episodes(buffer.parent), command.episodes_per_history)
        cells = "  ".join(f"{r:5.2f}/{s:.2f}" for r, s in zip(curve["mean_return"], curve["success"], strict=True))
        print(f"{source:8s} written in {seconds:5.1f} s ({cpu:5.1f} s CPU)  {cells}")
    return 0


SUBCOMMANDS = {"per-task": (PerTaskCommand, per_task), "curves": (CurvesCommand, curves)}


def main(argv: list[str] | CollectConfig | None = None) -> int:
    """Collects as the command line ``argv`` (default: ``sys.argv[1:]``) or a ``CollectConfig`` asks; a first
    word ``per-task`` or ``curves`` runs that subcommand instead."""
    argv = argv if isinstance(argv, CollectConfig) else list(sys.argv[1:] if argv is None else argv)
    try:
        if isinstance(argv, list) and argv and argv[0] in SUBCOMMANDS:
            command_type, run = SUBCOMMANDS[argv[0]]
            description = " ".join(command_type.__doc__.split("\n\n")[0].split())
            return run(parse(command_type, argv[1:], description=description, prog=f"{prog_name(__name__)} {argv[0]}"))
        config = argv if isinstance(argv, CollectConfig) else parse(
            CollectConfig, argv, prog=prog_name(__name__),
            description=f"{__doc__.splitlines()[0]} Subcommands: per-task, curves (each with --help).")
        enable_compilation_cache()
        log = collect(config)
    except EXPECTED_ERRORS as error:
        return fail(error)
    returns = [entry["return"] for entry in log["episodes"]]
    stop = " (stop return reached)" if log["stopped"] else ""
    print(f"{len(returns)} episodes in {data_dir(config)}{stop}; best return {max(returns):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
