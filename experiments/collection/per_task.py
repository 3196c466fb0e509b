"""Exploration data relabelled for every task of a hidden-task family: ExoRL's multi-task recipe.

ExoRL collects task-agnostic exploration once and relabels it for each task from the stored physics. For a
hidden-task family this gives one copy of every episode per task parameter (``envs.task_set``), each copy
carrying that parameter as its ``task`` key (and no ``history``: the episodes were not played on that task),
so the sampler groups chains by task (``SamplerConfig.group_by="task"``).

``write_per_task`` re-simulates each source episode once and reads every task's reward along it
(``envs.relabel_rewards`` with several task parameters), and first checks that relabelling for the task
the episode was collected under gives back its stored rewards, so data made with another action repeat
or another simulator is refused rather than relabelled wrongly. Files are written atomically; a rerun
with the same settings skips the episodes already complete and a different setting is refused
(``datasets.settings``). Its command line is ``python -m experiments.collect per-task``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

import datasets
import envs
from datasets.settings import DatasetSettings

__all__ = ["write_per_task", "STORED_REWARD_TOLERANCE"]

# Relabelled rewards of an episode's own task against the ones stored when it was played (the solver's
# warm start is all that differs; 40 maze episodes agree to 1e-6).
STORED_REWARD_TOLERANCE = 1e-4


def write_per_task(root: str | Path, *, task: str, source_algo: str, algo: str, action_repeat: int = 1,
                   max_episodes: int | None = None) -> Path:
    """Writes every episode of ``<root>/<domain>/<source_algo>`` once per task of the family ``task``.

    Episode ``e`` relabelled for task ``j`` (of ``n``) is episode ``e * n + j`` of
    ``<root>/<domain>/<algo>/buffer``; ``<root>/<domain>/<algo>/per_task.json`` records the settings.

    Args:
        root: the ExoRL root holding the source data.
        task: the hidden-task family (its ``envs.task_set`` are the tasks written).
        source_algo: the directory of the episodes to relabel (they need physics states and actions).
        algo: the directory to write.
        action_repeat: the repeat the source was collected with.
        max_episodes: relabel only the first this many source episodes.

    Returns:
        The written buffer directory.

    Raises:
        FileNotFoundError: naming the source directory when it is missing.
        ValueError: naming the problem: not a hidden family, the same directory for both, a source
            without physics, rewards that do not reproduce, settings that differ from the data on disk.
    """
    spec = envs.task_spec(task)
    if not spec.hidden:
        raise ValueError(f"task: {spec.name!r} is not a hidden-task family; it has one task, nothing to relabel for")
    if algo == source_algo:
        raise ValueError(f"algo: {algo!r} is the source directory itself; write the copies elsewhere")
    root = Path(root)
    source = root / spec.domain / source_algo
    if not source.exists():
        raise FileNotFoundError(f"source data {source} does not exist (collect it first, e.g. with "
                                "python -m experiments.collect --policy explorer)")
    tasks = envs.task_set(spec.name)
    directory = root / spec.domain / algo
    buffer = directory / "buffer"
    settings = {"task": spec.name, "source_algo": source_algo, "action_repeat": int(action_repeat),
                "tasks": tasks.tolist()}
    record = DatasetSettings(directory, "per_task.json", settings)
    record.check()
    n = len(tasks)
    on_disk = {datasets.exorl.parse_name(path)[0] for path in buffer.glob("episode_*.npz")}
    wanted = len(list((source / "buffer").glob("episode_*.npz")))
    wanted = wanted if max_episodes is None else min(wanted, max_episodes)
    if wanted and all(i in on_disk for i in range(wanted * n)):
        return buffer  # complete: nothing to read
    episodes = datasets.exorl.load(root, spec.domain, source_algo, max_episodes=max_episodes)
    for e, episode in enumerate(episodes):
        if all(e * n + j in on_disk for j in range(n)):
            continue
        copies = _copies(spec.name, episode, tasks, action_repeat)
        record.record()  # after the first episode relabels: a refused run leaves nothing
        datasets.exorl.save(root, spec.domain, algo, copies, first_index=e * n)
    return buffer


def _copies(family: str, episode: datasets.Trajectory, tasks: np.ndarray, action_repeat: int) -> list:
    """The episode relabelled for each task: rewards from one re-simulation, checked against the stored ones."""
    if episode.physics is None or episode.final_physics is None:
        raise ValueError(f"{episode.source}: has no physics states to relabel from")
    physics = np.concatenate([episode.physics, episode.final_physics[None]])
    actions = np.concatenate([np.zeros((1, episode.action_dim)), episode.actions])  # ExoRL's row 0
    own = episode.task is not None
    parameters = np.concatenate([tasks, np.asarray(episode.task, np.float64)[None]]) if own else tasks
    rewards = envs.relabel_rewards(family, physics, actions, task=parameters, action_repeat=action_repeat)[:, 1:]
    if own:
        error = float(np.max(np.abs(rewards[-1] - episode.rewards)))
        if not error <= STORED_REWARD_TOLERANCE:
            raise ValueError(f"{episode.source}: relabelling for the task it was collected under differs from its "
                             f"stored rewards by {error:.3g}; was it collected with action_repeat={action_repeat}?")
    return [dataclasses.replace(episode, rewards=rewards[j], task=tasks[j].copy(), history=None,
                                source=f"{episode.source} relabelled for task {j}") for j in range(len(tasks))]
