"""From a DataConfig to normalised, tokenisable batches whose order depends only on (seed, step)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.tokens import step_inputs
from datasets import ContextSampler, NormStats, Prefetcher
from experiments.config import DataConfig, ExperimentConfig


def load_trajectories(data: DataConfig):
    """The episodes named by ``data``; a missing source says what to download and where it goes."""
    from datasets import d4rl, exorl, minari

    root = Path(data.root).expanduser()
    if data.format == "minari":
        return minari.load(data.root)
    if not root.exists():
        hint = f" {data.download_hint}." if data.download_hint else ""
        raise FileNotFoundError(f"data path {root} does not exist.{hint}")
    if data.format == "exorl":
        return exorl.load(root, data.domain, data.algo, task=data.task if data.relabel else None,
                          max_episodes=data.max_episodes)
    episodes = d4rl.load(root)
    return episodes[: data.max_episodes] if data.max_episodes else episodes


def dataset_returns(trajectories) -> np.ndarray:
    return np.array([t.total_return for t in trajectories], np.float64)


class BatchStream:
    """Batches for steps ``start, start+1, ...``: batch ``i`` is drawn from ``default_rng((seed, i))``, so a
    resumed run sees exactly the batches an uninterrupted one would. Computed ahead in a thread.
    """

    def __init__(self, config: ExperimentConfig, trajectories, stats: NormStats, start: int):
        self.sampler = ContextSampler(trajectories, config.sampler)
        self.stats, self.seed, self.step = stats, config.train.seed, start
        self._prefetch = Prefetcher(self._produce, config.sampler.prefetch)

    @staticmethod
    def example(config: ExperimentConfig, trajectories) -> dict:
        """One batch of the right shapes (for initialising parameters)."""
        raw = ContextSampler(trajectories, config.sampler).sample_batch(np.random.default_rng(0))
        return {**step_inputs(raw), "loss_mask": raw["loss_mask"]}

    def _produce(self) -> dict:
        rng = np.random.default_rng((self.seed, self.step))
        self.step += 1
        raw = self.sampler.sample_batch(rng)
        raw["observations"] = self.stats.normalize_observations(raw["observations"]) * raw["mask"][..., None]
        return {**step_inputs(raw), "loss_mask": raw["loss_mask"]}

    def __next__(self) -> dict:
        return next(self._prefetch)

    def close(self) -> None:
        self._prefetch.close()
