"""Learning curves of a collector run: return against wall time and environment steps (PNG + JSON).

    python -m experiments.analysis.sac_curves --run runs/data/walker_walk_sac/walker/sac --name walker_walk \
        --threshold 700 --out experiments/results/sac

Reads the run's ``progress.json`` (every training episode's return, agent steps and wall time) and
``collect.json`` (the action repeat, to count simulator steps). Returns are those of the behaviour policy
(the stochastic SAC actor while it learns), not of separate evaluation episodes.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

__all__ = ["curve", "first_reaching", "main"]


def curve(run: str | Path) -> dict:
    """The learning curve of a collector data directory.

    Returns:
        ``episode_return``, ``agent_steps``, ``env_steps`` (agent steps x action repeat) and ``wall_time``
        (seconds since the start of the run, summed over resumed sessions), one entry per episode.
    """
    run = Path(run)
    for name in ("progress.json", "collect.json"):
        if not (run / name).is_file():
            raise ValueError(f"run: {run / name} does not exist (not a collector data directory)")
    history = json.loads((run / "progress.json").read_text())["episodes"]
    settings = json.loads((run / "collect.json").read_text())
    repeat = int(settings["action_repeat"])
    return {
        "task": settings["task"], "action_repeat": repeat, "settings": settings,
        "episode_return": [h["return"] for h in history],
        "agent_steps": [h["agent_steps"] for h in history],
        "env_steps": [h["agent_steps"] * repeat for h in history],
        "wall_time": [h["wall_time"] for h in history],
    }


def first_reaching(values, threshold: float) -> int | None:
    """Index of the first value >= threshold, or None."""
    hits = np.flatnonzero(np.asarray(values, dtype=np.float64) >= threshold)
    return int(hits[0]) if hits.size else None


@dataclasses.dataclass(frozen=True)
class CurveConfig:
    """Plot a collector run's learning curve.

    Attributes:
        run: the collector data directory (holding progress.json and collect.json).
        name: base name of the written files.
        out: directory for ``<name>.png`` and ``<name>.json``.
        threshold: the return to time (first episode reaching it).
        note: free text stored in the JSON (e.g. the machine load).
    """

    run: Path
    name: str
    out: Path = Path("experiments/results/sac")
    threshold: float = 800.0
    note: str = ""


def main(config: CurveConfig) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = curve(config.run)
    returns = np.asarray(data["episode_return"])
    hit = first_reaching(returns, config.threshold)
    summary = {
        "episodes": len(returns), "best_return": float(returns.max()),
        "last10_mean_return": float(returns[-10:].mean()), "wall_time_s": data["wall_time"][-1],
        "env_steps": data["env_steps"][-1], "threshold": config.threshold,
        "first_episode_reaching": hit,
        "wall_time_to_threshold_s": None if hit is None else data["wall_time"][hit],
        "env_steps_to_threshold": None if hit is None else data["env_steps"][hit],
        "note": config.note,
    }
    config.out.mkdir(parents=True, exist_ok=True)
    (config.out / f"{config.name}.json").write_text(json.dumps({"summary": summary, **data}, indent=1) + "\n")
    figure, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for axis, key, label, scale in ((axes[0], "wall_time", "wall time [min]", 60.0),
                                    (axes[1], "env_steps", "simulator steps", 1.0)):
        x = np.asarray(data[key]) / scale
        axis.plot(x, returns, ".", alpha=0.4, label="episode")
        window = min(10, len(returns))
        smooth = np.convolve(returns, np.ones(window) / window, mode="valid")
        axis.plot(x[window - 1:], smooth, "-", label=f"mean of {window}")
        axis.axhline(config.threshold, color="tab:red", linestyle=":", label=f"{config.threshold:g}")
        axis.set_xlabel(label)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel("episode return")
    axes[0].legend(loc="lower right")
    figure.suptitle(f"SAC {data['task']} (action repeat {data['action_repeat']})")
    figure.tight_layout()
    figure.savefig(config.out / f"{config.name}.png", dpi=100)
    plt.close(figure)
    print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    import tyro

    main(tyro.cli(CurveConfig))
