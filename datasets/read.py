"""One reader for "a place that holds episodes", whatever its format: ``read_episodes``.

It serves the three ways the project names data:

- a dataset of a training config: an ExoRL root with ``domain``/``algo`` (and a task to relabel for), a
  D4RL ``.hdf5`` file, or a Minari dataset id or path (``format`` given);
- a collector's data directory: ExoRL ``<out>/<domain>/<algo>`` (holding ``buffer/``) or a directory of
  D4RL ``episodes_<first>.hdf5`` files, possibly still empty (``allow_empty=True``), whose episodes must be
  numbered 0..n-1 (``contiguous=True``);
- a path given on a command line, format detected (``format="auto"``).

Detection (``format="auto"``): a ``.hdf5`` file is D4RL; a directory holding ``buffer/`` is an ExoRL
``<root>/<domain>/<algo>`` directory; a directory of ``.npz`` files is an ExoRL buffer itself; a directory of
``.hdf5`` files is D4RL (read in ``d4rl.episode_files`` order). ``format="exorl"`` with ``domain`` and
``algo`` reads ``<path>/<domain>/<algo>/buffer``; without them ``path`` is detected as above.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from datasets import d4rl, exorl
from datasets.episodes import Episodes

__all__ = ["read_episodes"]

Format = Literal["auto", "exorl", "d4rl", "minari"]


def read_episodes(path: str | os.PathLike, *, format: Format = "auto", domain: str | None = None,
                  algo: str | None = None, task: str | None = None, max_episodes: int | None = None,
                  skip_bad: bool = False, allow_empty: bool = False, contiguous: bool = False,
                  relabel_with_actions: bool = True, action_repeat: int = 1) -> Episodes:
    """Reads the episodes stored at ``path`` (see the module docstring for what ``path`` may be).

    Args:
        path: a file, a directory, or (``format="minari"``) a Minari dataset id or path.
        format: "auto" (detect), "exorl", "d4rl" or "minari".
        domain, algo: ExoRL only: read ``<path>/<domain>/<algo>/buffer`` (give both or neither).
        task: ExoRL only: relabel rewards for this task (see ``exorl.load``); hidden-task families use
            each file's stored task parameter.
        max_episodes: read at most this many episodes (in order).
        skip_bad: leave out unreadable episodes instead of raising (ExoRL, D4RL).
        allow_empty: return no episodes, instead of raising, when ``path`` is a missing or empty
            directory (a collector that has not written yet).
        contiguous: ExoRL only: the episode indices in the file names must be exactly 0..n-1 (a
            collector's buffer); a gap raises ``ValueError`` naming the missing indices.
        relabel_with_actions, action_repeat: as for ``exorl.load``.

    Returns:
        Episodes (a list of ``Trajectory``) in episode order.

    Raises:
        FileNotFoundError: when ``path`` does not exist (and ``allow_empty`` is off).
        ValueError: naming ``path``, ``format``, ``domain``/``algo`` or ``task`` when they do not fit.
    """
    if format not in ("auto", "exorl", "d4rl", "minari"):
        raise ValueError(f"format: expected 'auto', 'exorl', 'd4rl' or 'minari', got {format!r}")
    if (domain is None) != (algo is None):
        raise ValueError(f"domain, algo: give both or neither, got domain={domain!r}, algo={algo!r}")
    if format == "minari":
        from datasets import minari

        episodes = minari.load(str(path), skip_bad=skip_bad)
        return Episodes(episodes[:max_episodes] if max_episodes else episodes, episodes.skipped)
    path = Path(path).expanduser()
    if domain is not None:
        if format not in ("auto", "exorl"):
            raise ValueError(f"domain, algo: only ExoRL data has them, but format={format!r}")
        if not allow_empty:
            exorl.buffer_dir(path, domain, algo)  # a missing level is named, with what exists instead
        format, path = "exorl", path / domain / algo
    if task is not None and format == "d4rl":
        raise ValueError(f"task: D4RL rewards cannot be relabelled, got task={task!r}")
    if not path.exists():
        if allow_empty:
            return Episodes()
        raise FileNotFoundError(f"path: {path} does not exist")
    kind, target = _detect(path, format)
    if kind is None:
        if allow_empty:
            return Episodes()
        raise ValueError(f"path: {path} holds neither an ExoRL buffer/ directory, .npz episode files nor D4RL "
                         ".hdf5 files")
    if kind == "d4rl":
        files = [target] if target.is_file() else d4rl.episode_files(target)
        episodes = Episodes()
        for file in files:
            part = d4rl.load(file, skip_bad=skip_bad)
            episodes.extend(part)
            episodes.skipped.extend(part.skipped)
            if max_episodes and len(episodes) >= max_episodes:
                return Episodes(episodes[:max_episodes], episodes.skipped)
        return episodes
    buffer = target
    if contiguous:
        indices = [exorl.parse_name(file)[0] for file in exorl.episode_files(buffer)]
        if indices != list(range(len(indices))):
            missing = sorted(set(range(max(indices) + 1)) - set(indices))
            raise ValueError(f"path: {buffer} misses episodes {missing[:10]}; its episodes must be 0..n-1")
    algo_dir = buffer.parent
    return exorl.load(algo_dir.parent.parent, algo_dir.parent.name, algo_dir.name, task=task,
                      max_episodes=max_episodes, skip_bad=skip_bad, relabel_with_actions=relabel_with_actions,
                      action_repeat=action_repeat)


def _detect(path: Path, format: str) -> tuple[str | None, Path]:
    """``("exorl", buffer directory)``, ``("d4rl", file or directory)`` or ``(None, path)`` when empty."""
    if path.is_file():
        if path.suffix == ".hdf5" and format in ("auto", "d4rl"):
            return "d4rl", path
        raise ValueError(f"path: {path} is a file but not a D4RL .hdf5 file (format={format!r})")
    if format in ("auto", "exorl"):
        if (path / "buffer").is_dir():
            buffer = path / "buffer"
            return ("exorl", buffer) if any(buffer.glob("*.npz")) else (None, path)
        if any(path.glob("*.npz")):
            return "exorl", path
    if format in ("auto", "d4rl") and any(path.glob("*.hdf5")):
        return "d4rl", path
    return None, path
