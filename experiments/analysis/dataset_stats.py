"""Return statistics of a collected dataset, and the "learning is a real test" criterion.

    python -m experiments.analysis.dataset_stats experiments/data/default/cartpole/sac
    python -m experiments.analysis.dataset_stats runs/data/x/hopper-v4/random --png hist.png

The path is a collector data directory: an ExoRL ``<root>/<domain>/<algo>`` (with ``buffer/``) or a directory
of D4RL ``.hdf5`` files (or one such file). Returns are read back through the `datasets` readers, not from
the collector's log. A dataset passes when its median return is at most half the best and at most 10% of
its episodes lie within 10% of the best (so behaviour cloning on it is not already expert).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import tyro

import datasets

__all__ = ["spread_stats", "text_histogram", "load_returns", "save_histogram", "main"]

MAX_MEDIAN_OVER_BEST = 0.5
MAX_FRACTION_NEAR_BEST = 0.1


def spread_stats(returns) -> dict:
    """Statistics of episode returns and whether they spread from poor to good.

    Args:
        returns: float [n] episode returns, n >= 1, best return > 0.

    Returns:
        ``n``, ``min``, ``median``, ``mean``, ``best``, ``median_over_best``, ``fraction_within_10pct``
        (episodes with return >= 0.9 * best) and ``passes`` (both criteria hold).
    """
    returns = np.asarray(returns, dtype=np.float64).reshape(-1)
    if returns.size == 0:
        raise ValueError("returns: no episodes")
    if not np.isfinite(returns).all():
        raise ValueError("returns: contains NaN or infinite values")
    best = float(returns.max())
    if best <= 0:
        raise ValueError(f"returns: the best return is {best}; the criterion needs a positive best")
    median = float(np.median(returns))
    near = float(np.mean(returns >= 0.9 * best))
    return {
        "n": int(returns.size), "min": float(returns.min()), "median": median, "mean": float(returns.mean()),
        "best": best, "median_over_best": median / best, "fraction_within_10pct": near,
        "passes": bool(median <= MAX_MEDIAN_OVER_BEST * best and near <= MAX_FRACTION_NEAR_BEST),
    }


def text_histogram(returns, bins: int = 10, width: int = 40) -> str:
    """A fixed-width text histogram, one line per bin: ``[low, high)  count  ####``."""
    returns = np.asarray(returns, dtype=np.float64)
    if bins < 1 or width < 1:
        raise ValueError(f"bins and width: must be positive, got {bins} and {width}")
    counts, edges = np.histogram(returns, bins=bins)
    scale = width / max(1, counts.max())
    lines = []
    for count, low, high in zip(counts, edges[:-1], edges[1:]):
        lines.append(f"[{low:8.1f}, {high:8.1f})  {count:4d}  {'#' * int(round(count * scale))}")
    return "\n".join(lines)


def load_returns(path: str | Path) -> np.ndarray:
    """Episode returns (float64 [n], in episode order) of whatever ``datasets.read_episodes`` reads at ``path``
    (a collector data directory, an ExoRL buffer, a D4RL file or a directory of them)."""
    return np.array([episode.total_return for episode in datasets.read_episodes(path)], np.float64)


def save_histogram(returns, path: str | Path, title: str) -> None:
    """A PNG histogram of the returns with the median and the 90%-of-best line marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    returns = np.asarray(returns, dtype=np.float64)
    stats = spread_stats(returns)
    figure, axis = plt.subplots(figsize=(6, 3.5))
    axis.hist(returns, bins=20, color="tab:blue", alpha=0.8)
    axis.axvline(stats["median"], color="k", linestyle="--", label=f"median {stats['median']:.0f}")
    axis.axvline(0.9 * stats["best"], color="tab:red", linestyle=":", label=f"90% of best {stats['best']:.0f}")
    axis.set_xlabel("episode return")
    axis.set_ylabel("episodes")
    axis.set_title(title)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


@dataclasses.dataclass(frozen=True)
class StatsConfig:
    """Print the return statistics of a dataset.

    Attributes:
        path: collector data directory (``<root>/<domain>/<algo>``), D4RL directory or ``.hdf5`` file.
        png: also write a histogram PNG here.
        json_out: also write the statistics as JSON here.
        bins: text histogram bins.
    """

    path: tyro.conf.Positional[Path]
    png: Path | None = None
    json_out: Path | None = None
    bins: int = 10


def main(config: StatsConfig) -> dict:
    returns = load_returns(config.path)
    stats = spread_stats(returns)
    print(f"dataset {config.path}")
    print(f"episodes {stats['n']}  min {stats['min']:.1f}  median {stats['median']:.1f}  "
          f"mean {stats['mean']:.1f}  best {stats['best']:.1f}")
    print(f"median / best {stats['median_over_best']:.3f} (<= {MAX_MEDIAN_OVER_BEST})  "
          f"within 10% of best {stats['fraction_within_10pct']:.3f} (<= {MAX_FRACTION_NEAR_BEST})  "
          f"-> {'PASS' if stats['passes'] else 'FAIL'}")
    print(text_histogram(returns, config.bins))
    if config.png is not None:
        save_histogram(returns, config.png, str(config.path))
    if config.json_out is not None:
        Path(config.json_out).write_text(json.dumps(stats, indent=1) + "\n")
    return stats


if __name__ == "__main__":
    main(tyro.cli(StatsConfig))
