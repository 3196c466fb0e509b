"""Normalisation statistics, computed once from a dataset and saved as JSON beside a run.

Observations are standardised with the dataset mean and standard deviation (Decision Transformer). The
model applies them (``agent.model.AgenticTransformer``), the one place that does so for training and acting;
returns are scaled by the model's own ``ModelConfig.return_scale``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_path
from datasets.trajectory import Trajectory

__all__ = ["NormStats", "FILENAME"]

FILENAME = "norm_stats.json"
_MIN_STD = 1e-6


@dataclasses.dataclass(frozen=True, eq=False)
class NormStats:
    """Attributes:
        obs_mean: float32 [obs_dim].
        obs_std: float32 [obs_dim], at least 1e-6 so constant features do not divide by zero.
    """

    obs_mean: np.ndarray
    obs_std: np.ndarray

    def __post_init__(self):
        mean = np.array(self.obs_mean, dtype=np.float32)  # copies: the caller's arrays stay writable
        std = np.array(self.obs_std, dtype=np.float32)
        if mean.ndim != 1 or std.shape != mean.shape:
            raise ValueError(f"obs_mean {mean.shape} and obs_std {std.shape} must be equal 1-D shapes")
        if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
            raise ValueError("obs_mean must be finite and obs_std finite and positive")
        for name, value in (("obs_mean", mean), ("obs_std", std)):
            value.flags.writeable = False
            object.__setattr__(self, name, value)

    @classmethod
    def compute(cls, trajectories: Iterable[Trajectory]) -> NormStats:
        """Statistics over every observation of every trajectory (float64 accumulation, one pass).

        Args:
            trajectories: the training episodes.
        """
        count, mean, m2 = 0, None, None
        for trajectory in trajectories:
            obs = trajectory.observations.astype(np.float64)
            n, batch_mean = obs.shape[0], obs.mean(axis=0)
            batch_m2 = ((obs - batch_mean) ** 2).sum(axis=0)
            if mean is None:
                count, mean, m2 = n, batch_mean, batch_m2
            else:
                if batch_mean.shape != mean.shape:
                    raise ValueError(f"{trajectory.source}: observation size {batch_mean.shape[0]} differs from "
                                     f"earlier trajectories ({mean.shape[0]})")
                delta, total = batch_mean - mean, count + n
                mean = mean + delta * n / total
                m2 = m2 + batch_m2 + delta**2 * count * n / total  # Chan et al.'s parallel variance
                count = total
        if mean is None:
            raise ValueError("cannot compute NormStats from no trajectories")
        std = np.maximum(np.sqrt(m2 / count), _MIN_STD)
        return cls(mean, std)

    def normalize_observations(self, observations: np.ndarray) -> np.ndarray:
        """float32 [..., obs_dim] -> float32 [..., obs_dim] standardised."""
        return ((np.asarray(observations, np.float32) - self.obs_mean) / self.obs_std).astype(np.float32)

    def denormalize_observations(self, observations: np.ndarray) -> np.ndarray:
        return (np.asarray(observations, np.float32) * self.obs_std + self.obs_mean).astype(np.float32)

    def as_tuples(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) as tuples of floats, the form ``agent.model.AgenticTransformer`` takes."""
        return tuple(float(x) for x in self.obs_mean), tuple(float(x) for x in self.obs_std)

    def save(self, path: str | os.PathLike) -> Path:
        """Write JSON atomically. A directory means ``<directory>/norm_stats.json``. Returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        payload = {"obs_mean": self.obs_mean.tolist(), "obs_std": self.obs_std.tolist()}
        with atomic_path(path) as temporary:
            temporary.write_text(json.dumps(payload, indent=1))
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> NormStats:
        """Read what ``save`` wrote (a file or a run directory holding ``norm_stats.json``)."""
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        if not path.is_file():
            raise FileNotFoundError(f"normalisation statistics {path} do not exist")
        try:
            payload = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error
        keys = {"obs_mean", "obs_std"}
        # Files written before the return scale moved to the model carry an unused "return_scale".
        if not isinstance(payload, dict) or not keys <= set(payload) <= keys | {"return_scale"}:
            raise ValueError(f"{path}: expected exactly the keys {sorted(keys)}")
        try:
            return cls(np.asarray(payload["obs_mean"], np.float32), np.asarray(payload["obs_std"], np.float32))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{path}: {error}") from error
