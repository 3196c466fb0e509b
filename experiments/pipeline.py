"""The one-way batch pipeline: a DataConfig's episodes -> contexts -> model inputs, in an order that
depends only on (train.seed, step).

Nothing here normalises or scales: the model standardises observations and scales returns itself
(``agent.model``), so training and acting see the same transform by construction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.tokens import step_inputs
from datasets import ContextSampler, Prefetcher
from experiments.config import DataConfig, ExperimentConfig


def load_episodes(data: DataConfig):
    """The episodes named by ``data`` (with ``data.observe_task``, each one's task appended to its
    observations); a missing source says what to download and where it goes."""
    import datasets

    root = Path(data.root).expanduser()
    if data.make != "none":
        make_data(data)
    if data.format != "minari" and not root.exists():
        hint = f" {data.download_hint}." if data.download_hint else ""
        raise FileNotFoundError(f"data path {root} does not exist.{hint}")
    exorl = data.format == "exorl"
    episodes = datasets.read_episodes(root if data.format != "minari" else data.root, format=data.format,
                                      domain=data.domain if exorl else None, algo=data.algo if exorl else None,
                                      task=data.task if data.relabel else None, max_episodes=episode_limit(data),
                                      action_repeat=data.action_repeat)
    if data.labels == "optimal":  # DPT: predict the task's optimal action; the context keeps the taken ones
        episodes = [episode.with_optimal_labels(data.task) for episode in episodes]
    if data.observe_task:  # the oracle baseline: told the task it acts in, here and when evaluated
        import envs

        if not envs.task_spec(data.task).hidden:
            raise ValueError(f"data.observe_task: {data.task!r} is not a hidden-task family; it has no task to observe")
        episodes = [episode.with_task_observed() for episode in episodes]
    return episodes


def episode_limit(data: DataConfig) -> int | None:
    """The episodes ``data`` reads at most: ``max_episodes``, and with ``make`` the histories it names, so a root
    written for a larger run is read only as far as this config's size (episode ``h * episodes_per_history +
    i`` of history ``h``, in order; with ``explorer_per_task`` each once per task)."""
    limits = [data.max_episodes] if data.max_episodes is not None else []
    if data.make != "none":
        import envs

        copies = len(envs.task_set(_train_task(data))) if data.make == "explorer_per_task" else 1
        limits.append(data.histories * data.episodes_per_history * copies)
    return min(limits) if limits else None


def _train_task(data: DataConfig) -> str:
    """The family ``data.make`` writes histories of: evaluation on held-out tasks trains on the others."""
    import envs

    return envs.task_spec(data.task).name.replace("_heldout", "")


def make_data(data: DataConfig) -> None:
    """Writes the histories ``data.make`` names under ``data.root`` unless they are there already (each file
    atomically; a rerun completes an interrupted one; data made with other settings is refused)."""
    from experiments.collection.histories import write_dataset

    if data.format != "exorl":
        raise ValueError(f"data.make={data.make!r} writes ExoRL files; data.format is {data.format!r}")
    train_task = _train_task(data)
    root = Path(data.root).expanduser()
    per_task = data.make == "explorer_per_task"
    source = "explorer" if per_task else data.make
    write_dataset(root, task=train_task, source=source, algo=source if per_task else data.algo,
                  num_histories=data.histories, episodes_per_history=data.episodes_per_history,
                  action_repeat=data.action_repeat, eps_min=data.eps_min)
    if per_task:
        from experiments.collection.per_task import write_per_task

        write_per_task(root, task=train_task, source_algo=source, algo=data.algo, action_repeat=data.action_repeat)


class BatchStream:
    """Batches for steps ``start, start+1, ...``: batch ``i`` is drawn from ``default_rng((seed, i))``, so a
    resumed run sees exactly the batches an uninterrupted one would. Computed ahead in a thread.

    Args:
      config: the run's config (its sampler section and ``train.seed``).
      trajectories: the episodes.
      start: the first step.
    """

    def __init__(self, config: ExperimentConfig, trajectories, start: int):
        self.sampler = ContextSampler(trajectories, config.sampler)
        self.seed, self.step = config.train.seed, start
        self._prefetch = Prefetcher(self._produce, config.sampler.prefetch)

    def _produce(self) -> dict:
        rng = np.random.default_rng((self.seed, self.step))
        self.step += 1
        raw = self.sampler.sample_batch(rng)
        return {**step_inputs(raw), "loss_mask": raw["loss_mask"]}

    def __next__(self) -> dict:
        return next(self._prefetch)

    def close(self) -> None:
        self._prefetch.close()
