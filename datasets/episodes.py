"""What readers return, and how they report or skip bad episodes.

Every reader raises :class:`BadEpisodeError` (a ``ValueError``) naming the file and the problem. With
``skip_bad=True`` such episodes are left out instead: the reader warns once with the count and the first
reason, and the returned :class:`Episodes` lists every skipped ``(source, reason)`` in ``skipped``.
Problems that are not about one episode (a missing directory, an unknown task) are never skipped.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

from datasets.trajectory import Trajectory

__all__ = ["BadEpisodeError", "Episodes", "collect"]


class BadEpisodeError(ValueError):
    """One episode (a file, an HDF5 group, a span of rows) cannot be read."""


class Episodes(list):
    """A ``list[Trajectory]`` that also records what was skipped.

    Attributes:
        skipped: ``(source, reason)`` for each episode left out under ``skip_bad=True``.
    """

    def __init__(self, trajectories: Iterable[Trajectory] = (), skipped: Iterable[tuple[str, str]] = ()):
        super().__init__(trajectories)
        self.skipped = list(skipped)

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)


def collect(items: Iterable, read: Callable[[object], Trajectory], *, skip_bad: bool,
            max_episodes: int | None = None, where: str = "",
            name: Callable[[object], str] = str) -> Episodes:
    """Read items one by one into trajectories, skipping bad ones when asked.

    Args:
        items: what to read (file paths, group names, row spans); consumed lazily.
        read: turns one item into a Trajectory or raises ``BadEpisodeError``.
        skip_bad: leave out items whose ``read`` raised ``BadEpisodeError`` instead of raising.
        max_episodes: stop after this many good trajectories (``None``: all).
        where: the dataset's name for the warning.
        name: how an item is named in ``Episodes.skipped``.

    Returns:
        Episodes, in the order of ``items``.
    """
    if max_episodes is not None and max_episodes < 1:
        raise ValueError(f"max_episodes must be None or positive, got {max_episodes}")
    episodes = Episodes()
    for item in items:
        if max_episodes is not None and len(episodes) >= max_episodes:
            break
        try:
            episodes.append(read(item))
        except BadEpisodeError as error:
            if not skip_bad:
                raise
            episodes.skipped.append((name(item), str(error)))
    if episodes.skipped:
        warnings.warn(f"skipped {len(episodes.skipped)} bad episode(s) in {where}; first: "
                      f"{episodes.skipped[0][1]}", RuntimeWarning, stacklevel=3)
    return episodes


def checked(source: str, build: Callable[[], Trajectory]) -> Trajectory:
    """Build a trajectory, turning validation errors into ``BadEpisodeError`` that name ``source``."""
    try:
        return build()
    except BadEpisodeError:
        raise
    except ValueError as error:
        message = str(error) if source in str(error) else f"{source}: {error}"
        raise BadEpisodeError(message) from error
