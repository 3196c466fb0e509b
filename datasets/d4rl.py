"""D4RL HDF5 files, read directly with h5py (the ``d4rl`` package needs MuJoCo 2.1 binaries).

Keys: ``observations`` [N, obs], ``actions`` [N, act], ``rewards`` [N], ``terminals`` [N],
``timeouts`` [N], optional ``next_observations`` [N, obs], ``infos/qpos`` [N, nq], ``infos/qvel`` [N, nv].
Rows are concatenated episodes; an episode ends at a row where ``terminals | timeouts``. Files without
``timeouts`` fall back to a time limit of 1000 steps (counted from the previous episode end). Rows after the
last end form a final episode with neither flag set.

``infos/qpos`` and ``infos/qvel`` are recorded with ``observations[t]``, so they become
``physics[t] = concat(qpos[t], qvel[t])`` (``final_physics`` is unknown). The last row of an episode's
``next_observations`` becomes its ``final_observation``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_path
from datasets.episodes import Episodes, checked, collect
from datasets.trajectory import Trajectory

__all__ = ["load", "save", "normalized_score", "split_episodes", "episode_files", "append_episodes",
           "truncate_episodes", "REFERENCE_SCORES", "DEFAULT_TIME_LIMIT"]

DEFAULT_TIME_LIMIT = 1000
# (random return, expert return) per environment family, from D4RL's infos.
REFERENCE_SCORES = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
}
_REQUIRED = ("observations", "actions", "rewards", "terminals")


def split_episodes(terminals: np.ndarray, timeouts: np.ndarray | None,
                   time_limit: int = DEFAULT_TIME_LIMIT) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Episode row spans of a flat D4RL file.

    Args:
        terminals: bool [N].
        timeouts: bool [N], or ``None`` to cut every ``time_limit`` steps since the last episode end.
        time_limit: the fallback limit.

    Returns:
        ``(spans, timeouts)``: ``[(start, stop), ...]`` covering all N rows in order, and the timeouts
        used (bool [N], synthesised when none were given).
    """
    terminals = np.asarray(terminals, dtype=bool)
    if timeouts is None:
        timeouts = np.zeros_like(terminals)
        start = 0
        for stop in list(np.flatnonzero(terminals) + 1) + [terminals.shape[0]]:
            timeouts[start + time_limit - 1:stop:time_limit] = True
            start = stop
        timeouts &= ~terminals  # an episode that ends in a terminal state is not also cut
    ends = np.flatnonzero(terminals | np.asarray(timeouts, dtype=bool)) + 1
    bounds = [0] + [int(end) for end in ends]
    if bounds[-1] != terminals.shape[0]:
        bounds.append(terminals.shape[0])
    return list(zip(bounds[:-1], bounds[1:])), np.asarray(timeouts, dtype=bool)


def _read_file(path: Path) -> dict[str, np.ndarray]:
    import h5py  # lazily: optional heavy import

    if not path.is_file():
        raise FileNotFoundError(f"D4RL file {path} does not exist")
    try:
        with h5py.File(path, "r") as file:
            missing = [key for key in _REQUIRED if key not in file]
            if missing:
                raise ValueError(f"{path}: missing keys {missing} (has {sorted(file.keys())})")
            names = list(_REQUIRED) + [key for key in ("timeouts", "next_observations", "infos/qpos",
                                                        "infos/qvel") if key in file]
            data = {name: file[name][()] for name in names}
    except (OSError, KeyError) as error:
        raise ValueError(f"{path}: corrupt or truncated HDF5 file ({type(error).__name__}: {error})") from error
    lengths = {name: array.shape[0] if array.ndim else None for name, array in data.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"{path}: keys have different numbers of rows {lengths}")
    if lengths["observations"] in (None, 0):
        raise ValueError(f"{path}: no rows")
    for name in ("rewards", "terminals", "timeouts"):
        if name in data and data[name].ndim == 2 and data[name].shape[1] == 1:
            data[name] = data[name][:, 0]
    return data


def load(path: str | os.PathLike, *, skip_bad: bool = False,
         time_limit: int = DEFAULT_TIME_LIMIT) -> Episodes:
    """Read a D4RL HDF5 file and split it into episodes.

    Args:
        path: the ``.hdf5`` file.
        skip_bad: leave out episodes with NaN/inf values or bad flags instead of raising.
        time_limit: the episode length assumed when the file has no ``timeouts``.

    Returns:
        Episodes in file order. ``physics`` is set when ``infos/qpos`` and ``infos/qvel`` exist,
        ``final_observation`` when ``next_observations`` exists.
    """
    if time_limit < 1:
        raise ValueError(f"time_limit must be positive, got {time_limit}")
    path = Path(path)
    data = _read_file(path)
    spans, timeouts = split_episodes(data["terminals"], data.get("timeouts"), time_limit)
    physics = None
    if "infos/qpos" in data and "infos/qvel" in data:
        physics = np.concatenate([data.pop("infos/qpos").reshape(len(timeouts), -1),
                                  data.pop("infos/qvel").reshape(len(timeouts), -1)], axis=1)

    def name(span: tuple[int, int]) -> str:
        return f"{path} rows {span[0]}:{span[1]}"

    def read(span: tuple[int, int]) -> Trajectory:
        start, stop = span
        source = name(span)
        nexts = data.get("next_observations")
        return checked(source, lambda: Trajectory(
            observations=data["observations"][start:stop],
            actions=data["actions"][start:stop],
            rewards=data["rewards"][start:stop],
            terminals=data["terminals"][start:stop],
            timeouts=timeouts[start:stop],
            physics=None if physics is None else physics[start:stop],
            final_observation=None if nexts is None else nexts[stop - 1],
            source=source,
        ))

    return collect(spans, read, skip_bad=skip_bad, where=str(path), name=name)


def save(path: str | os.PathLike, trajectories, *, qpos_dim: int | None = None) -> None:
    """Write trajectories as one flat D4RL HDF5 file (atomically).

    Args:
        path: the ``.hdf5`` file to write.
        trajectories: sequence of Trajectory. Each but the last must end with a terminal or timeout,
            or it would merge with the next one when read back.
        qpos_dim: with physics, how many leading state values are ``qpos`` (the rest is ``qvel``);
            ``None`` writes no ``infos``.

    ``next_observations`` is written when every trajectory has a ``final_observation``.
    """
    import h5py

    trajectories = list(trajectories)
    if not trajectories:
        raise ValueError(f"cannot write {path}: no trajectories")
    for index, trajectory in enumerate(trajectories[:-1]):
        if not (trajectory.terminals[-1] or trajectory.timeouts[-1]):
            raise ValueError(f"trajectory {index} ({trajectory.source}) ends with neither a terminal nor a "
                             "timeout; in a D4RL file it would merge with the next episode")
    columns = {
        "observations": [t.observations for t in trajectories],
        "actions": [t.actions for t in trajectories],
        "rewards": [t.rewards for t in trajectories],
        "terminals": [t.terminals for t in trajectories],
        "timeouts": [t.timeouts for t in trajectories],
    }
    if all(t.final_observation is not None for t in trajectories):
        columns["next_observations"] = [t.next_observations for t in trajectories]
    if qpos_dim is not None:
        if any(t.physics is None for t in trajectories):
            raise ValueError(f"qpos_dim={qpos_dim} given but some trajectories have no physics")
        if not 0 < qpos_dim < trajectories[0].physics.shape[1]:
            raise ValueError(f"qpos_dim={qpos_dim} must be in 1..{trajectories[0].physics.shape[1] - 1}")
        columns["infos/qpos"] = [t.physics[:, :qpos_dim] for t in trajectories]
        columns["infos/qvel"] = [t.physics[:, qpos_dim:] for t in trajectories]
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as file:
            for name, parts in columns.items():
                try:
                    column = np.concatenate(parts, axis=0)
                except ValueError as error:
                    raise ValueError(f"cannot write {path}: trajectories disagree on {name} shape: {error}") from error
                file.create_dataset(name, data=column, compression="gzip")


def _file_first_index(path: Path) -> int | None:
    """The first episode index of a collector file ``episodes_<first>.hdf5``; None for other names."""
    parts = path.stem.split("_")
    return int(parts[1]) if len(parts) == 2 and parts[0] == "episodes" and parts[1].isdigit() else None


def episode_files(directory: str | os.PathLike) -> list[Path]:
    """The ``.hdf5`` files of a directory in episode order.

    Collector files ``episodes_<first>.hdf5`` are ordered by ``<first>`` and come before any other
    ``.hdf5`` file, which are ordered by name.
    """
    files = list(Path(directory).glob("*.hdf5"))
    return sorted(files, key=lambda p: (0, _file_first_index(p), "") if _file_first_index(p) is not None
                  else (1, 0, p.name))


def _chunk_path(directory: Path, first: int) -> Path:
    return directory / f"episodes_{first:06d}.hdf5"


def append_episodes(directory: str | os.PathLike, trajectories, first_index: int, per_file: int,
                    qpos_dim: int | None) -> list[Path]:
    """Append episodes ``first_index, first_index + 1, ...`` to a directory of D4RL files of ``per_file`` each.

    Episode ``i`` lives in ``episodes_<f>.hdf5`` with ``f = i - i % per_file`` (six digits). D4RL files
    have no append: each file that gains episodes is rewritten once, atomically, with its earlier
    episodes and the new ones, so an interrupted call leaves every file either as it was or complete.

    Args:
        directory: the directory (created if missing).
        trajectories: sequence of Trajectory, each ending with a terminal or a timeout.
        first_index: the episode index of the first trajectory; the directory must hold exactly the
            episodes before it in that file (``first_index % per_file`` of them).
        per_file: episodes per file, at least 1.
        qpos_dim: as for ``save`` (None writes no physics).

    Returns:
        The files written, in order.

    Raises:
        ValueError: naming the file when it does not hold the episodes the index says it should.
    """
    if per_file < 1 or first_index < 0:
        raise ValueError(f"per_file must be positive and first_index non-negative, got {per_file}, {first_index}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    trajectories = list(trajectories)
    written = []
    offset = 0
    while offset < len(trajectories):
        index = first_index + offset
        file_first = index - index % per_file
        take = min(len(trajectories) - offset, file_first + per_file - index)
        path = _chunk_path(directory, file_first)
        earlier = list(load(path)) if path.exists() else []
        if len(earlier) != index - file_first:
            raise ValueError(f"{path}: holds {len(earlier)} episodes, expected {index - file_first} before "
                             f"episode {index}")
        save(path, earlier + trajectories[offset:offset + take], qpos_dim=qpos_dim)
        written.append(path)
        offset += take
    return written


def truncate_episodes(directory: str | os.PathLike, keep: int, per_file: int, qpos_dim: int | None) -> None:
    """Keep only episodes ``0..keep-1`` of a directory written by ``append_episodes``.

    Files that start at or after ``keep`` are removed; the file holding episode ``keep - 1`` is
    rewritten (atomically) with its episodes before ``keep``.

    Args:
        directory: the directory of ``episodes_<first>.hdf5`` files.
        keep: how many leading episodes to keep (0 removes them all).
        per_file: episodes per file, as they were appended.
        qpos_dim: as for ``save``, used for the rewritten file.
    """
    if per_file < 1 or keep < 0:
        raise ValueError(f"per_file must be positive and keep non-negative, got {per_file}, {keep}")
    directory = Path(directory)
    for path in episode_files(directory):
        first = _file_first_index(path)
        if first is not None and first >= keep:
            path.unlink()
    if keep % per_file:
        start = keep - keep % per_file
        path = _chunk_path(directory, start)
        episodes = list(load(path))
        if len(episodes) < keep - start:
            raise ValueError(f"{path}: holds {len(episodes)} episodes, fewer than the {keep - start} to keep")
        if len(episodes) > keep - start:
            save(path, episodes[:keep - start], qpos_dim=qpos_dim)


def normalized_score(env_name: str, returns) -> np.ndarray | float:
    """D4RL normalised score ``100 * (return - random) / (expert - random)``.

    Args:
        env_name: a D4RL or gymnasium name: ``"hopper-medium-v2"``, ``"hopper"``, ``"Hopper-v4"``,
            ``"HalfCheetah-v4"``, ``"antmaze-umaze-v0"``.
        returns: a return or an array of returns.

    Returns:
        float for a scalar, float64 array of the same shape otherwise.
    """
    family = _family(env_name)
    low, high = REFERENCE_SCORES[family]
    scores = 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)
    return float(scores) if scores.ndim == 0 else scores


def _family(env_name: str) -> str:
    base = re.split(r"[-_]", env_name.strip().lower(), maxsplit=1)[0]
    if env_name.strip().lower().startswith("antmaze"):
        return "antmaze"
    if base in REFERENCE_SCORES:
        return base
    raise ValueError(f"no D4RL reference scores for env_name {env_name!r}; known: {sorted(REFERENCE_SCORES)}")
