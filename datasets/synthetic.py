"""Random episodes of a given size, for tests and benchmarks (no simulator involved)."""

from __future__ import annotations

import numpy as np

from datasets.trajectory import Trajectory

__all__ = ["random_trajectory", "random_trajectories"]


def random_trajectory(rng: np.random.Generator, length: int, obs_dim: int = 3, act_dim: int = 2,
                      state_dim: int | None = 4, *, terminal: bool = False, reward_scale: float = 1.0,
                      source: str = "<synthetic>") -> Trajectory:
    """One episode with Gaussian observations/actions/physics and uniform rewards in [0, reward_scale).

    Args:
        rng: the random generator.
        length: T, number of steps.
        obs_dim, act_dim: observation and action sizes.
        state_dim: physics state size, or ``None`` for no physics.
        terminal: end in a terminal state (otherwise the last step is a timeout).
        reward_scale: rewards are drawn from [0, reward_scale).
        source: name recorded in the trajectory.

    Returns:
        Trajectory with ``final_observation`` (and ``final_physics`` when it has physics).
    """
    terminals = np.zeros(length, dtype=bool)
    timeouts = np.zeros(length, dtype=bool)
    (terminals if terminal else timeouts)[-1] = True
    physics = final_physics = None
    if state_dim is not None:
        states = rng.standard_normal((length + 1, state_dim))
        physics, final_physics = states[:-1], states[-1]
    observations = rng.standard_normal((length + 1, obs_dim), dtype=np.float32)
    return Trajectory(
        observations=observations[:-1],
        actions=rng.uniform(-1.0, 1.0, (length, act_dim)).astype(np.float32),
        rewards=(reward_scale * rng.random(length)).astype(np.float32),
        terminals=terminals,
        timeouts=timeouts,
        physics=physics,
        final_observation=observations[-1],
        final_physics=final_physics,
        source=source,
    )


def random_trajectories(seed: int, lengths, **kwargs) -> list[Trajectory]:
    """``random_trajectory`` for each length, from ``np.random.default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return [random_trajectory(rng, int(length), source=f"<synthetic {i}>", **kwargs)
            for i, length in enumerate(lengths)]
