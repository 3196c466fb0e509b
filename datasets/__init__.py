"""Trajectories in the ExoRL, D4RL and Minari formats, normalisation, and multi-trajectory contexts.

Plain NumPy throughout (no JAX). Readers: ``datasets.exorl``, ``datasets.d4rl``, ``datasets.minari``;
each ``load`` returns :class:`Episodes`, a list of :class:`Trajectory`; ``read_episodes`` reads any of them
from a path (format detected or given). Heavy imports (h5py, minari, the
simulator for reward relabelling) happen inside the functions that need them.
"""

from datasets import d4rl, exorl, minari
from datasets.episodes import BadEpisodeError, Episodes
from datasets.normalization import NormStats
from datasets.prefetch import Prefetcher
from datasets.read import read_episodes
from datasets.sampler import ContextSampler, SamplerConfig, top_fraction
from datasets.trajectory import Trajectory

__all__ = [
    "BadEpisodeError",
    "ContextSampler",
    "Episodes",
    "NormStats",
    "Prefetcher",
    "SamplerConfig",
    "Trajectory",
    "d4rl",
    "exorl",
    "minari",
    "read_episodes",
    "top_fraction",
]
