"""ExoRL replay buffers: ``<root>/<domain>/<algo>/buffer/<prefix>_<idx>_<len>.npz``, one episode per file.

Each file holds ``T + 1`` rows (``np.savez_compressed``): ``observation`` float32 [T+1, obs],
``action`` float32 [T+1, act] (discrete actions: integers [T+1]), ``reward`` float32 [T+1, 1],
``discount`` float32 [T+1, 1] and ``physics`` float64 [T+1, state]. Row 0 is the reset step: its action
and reward are padding. ExoRL's replay loader samples ``i`` in ``1..T`` and forms ``(observation[i-1],
action[i], reward[i], discount[i], observation[i])``; this module keeps exactly that pairing:

======================  ====================  ===========================================
Trajectory field        file rows             meaning
======================  ====================  ===========================================
``observations[t]``     ``observation[t]``    the observation ``actions[t]`` was taken from
``actions[t]``          ``action[t+1]``
``rewards[t]``          ``reward[t+1]``       reward after ``actions[t]``
``terminals[t]``        ``discount[t+1]==0``  (dm_control tasks have none)
``final_observation``   ``observation[T]``
``physics[t]``          ``physics[t]``        the state at ``observations[t]``
``final_physics``       ``physics[T]``
======================  ====================  ===========================================

``timeouts[-1]`` is set unless the last step is terminal: every file ends an episode (a time limit).

Two optional keys carry a hidden-task family's bookkeeping: ``task`` float64 [task_dim] (the episode's
``Trajectory.task``) and ``history`` int64 [] (``Trajectory.history``). They are written after the
standard keys, because ExoRL's own loader takes an episode's length from its first key; that loader
reads any keys, so these files still load there.

Relabelling (``task=...``) follows ExoRL: every stored state ``physics[i]`` is set in the task's
simulator and the task's reward read off it, ``reward[i] = r(physics[i])``, in one call
``envs.relabel_rewards(task, physics, action)`` per file (all T+1 rows). dm_control computes a step's
reward after stepping the simulator, from the state the action led to, and the state stored with row
``i`` is the state at ``observation[i]``, i.e. after ``action[i]``; so ``rewards[t] = r(physics[t+1])``
and the relabelled row 0 (the reset state) is dropped like the stored padding. Some rewards also charge
the control (cartpole swingup's ``small_control``), which the state does not hold: by default the file's
``action[i]`` (the action that led to ``physics[i]``) is passed along so those rewards equal the online
ones; ``relabel_with_actions=False`` relabels with zero control, as ExoRL's own script did. A hidden-task
family (``task="point_nav_hidden"``) relabels each file for the task parameter stored in it. Data
collected with an action repeat (``action_repeat=r``) is relabelled by re-simulating each row's ``r``
environment steps from the row before and summing their rewards, as the collector did; data made with
another repeat is refused (see ``envs.relabel``).
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_path
from datasets.episodes import BadEpisodeError, Episodes, checked, collect
from datasets.trajectory import Trajectory

__all__ = ["load", "save", "episode_files", "buffer_dir", "parse_name"]
_EXTRA_KEYS = ("task", "history")  # per-episode values, not [T+1] rows

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, KeyError)


def buffer_dir(root: str | os.PathLike, domain: str, algo: str) -> Path:
    """``<root>/<domain>/<algo>/buffer``; errors name what is missing and what exists instead."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"ExoRL root {root} does not exist")
    for level, name in ((root, domain), (root / domain, algo)):
        if not (level / name).is_dir():
            available = sorted(p.name for p in level.iterdir() if p.is_dir())
            kind = "domain" if level == root else "algo"
            raise FileNotFoundError(f"unknown ExoRL {kind} {name!r}: {level / name} does not exist "
                                    f"(found {available})")
    path = root / domain / algo / "buffer"
    if not path.is_dir():
        raise FileNotFoundError(f"ExoRL buffer directory {path} does not exist")
    return path


def parse_name(path: Path) -> tuple[int, int]:
    """``(episode index, episode length)`` from ``<prefix>_<idx>_<len>.npz``."""
    parts = path.stem.rsplit("_", 2)
    if len(parts) != 3 or not parts[1].isdigit() or not parts[2].isdigit():
        raise BadEpisodeError(f"{path}: file name is not <prefix>_<index>_<length>.npz")
    return int(parts[1]), int(parts[2])


def episode_files(directory: Path, *, skip_bad: bool = False) -> list[Path]:
    """The ``.npz`` files of a buffer directory ordered by the episode index in their names.

    Names that do not parse raise ``BadEpisodeError`` (or are left out with ``skip_bad``; ``load``
    then sees them again and reports them as skipped). Two files with one index are always an error.
    """
    keyed = []
    for path in directory.glob("*.npz"):
        try:
            keyed.append((parse_name(path)[0], path))
        except BadEpisodeError:
            if not skip_bad:
                raise
            keyed.append((-1, path))
    keyed.sort(key=lambda item: (item[0], item[1].name))
    indices = [index for index, _ in keyed if index >= 0]
    if len(set(indices)) != len(indices):
        duplicate = next(i for i in indices if indices.count(i) > 1)
        names = [p.name for i, p in keyed if i == duplicate]
        raise ValueError(f"{directory}: episode index {duplicate} appears in several files {names}")
    return [path for _, path in keyed]


def _read_arrays(path: Path, keys: tuple[str, ...], optional: tuple[str, ...]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in keys if key not in archive.files]
            if missing:
                raise BadEpisodeError(f"{path}: missing keys {missing} (has {sorted(archive.files)})")
            return {key: archive[key] for key in keys + optional if key in archive.files}
    except BadEpisodeError:
        raise
    except _READ_ERRORS as error:
        raise BadEpisodeError(f"{path}: corrupt or truncated file ({type(error).__name__}: {error})") from error


def _column(path: Path, name: str, array: np.ndarray) -> np.ndarray:
    """[T+1, 1] or [T+1] to [T+1]; anything wider is an error."""
    if array.ndim == 2 and array.shape[1] == 1:
        return array[:, 0]
    if array.ndim == 1:
        return array
    raise BadEpisodeError(f"{path}: {name} has shape {array.shape}; expected [T+1, 1] "
                          "(multi-dimensional rewards need task=... to relabel)")


def _read_episode(path: Path, task: str | None, with_actions: bool, action_repeat: int = 1) -> Trajectory:
    _, length = parse_name(path)
    keys = ("observation", "action", "discount") + (("physics",) if task else ("reward",))
    arrays = _read_arrays(path, keys, optional=("physics",) + _EXTRA_KEYS)
    extra = {name: arrays.pop(name) for name in _EXTRA_KEYS if name in arrays}
    if "history" in extra and extra["history"].size != 1:
        raise BadEpisodeError(f"{path}: history has shape {extra['history'].shape}; expected one integer")
    rows = {name: array.shape[0] if array.ndim else 0 for name, array in arrays.items()}
    if len(set(rows.values())) != 1:
        raise BadEpisodeError(f"{path}: keys have different numbers of rows {rows}")
    if rows["observation"] != length + 1:
        raise BadEpisodeError(f"{path}: name says {length} steps but observation has {rows['observation']} "
                              f"rows (expected {length + 1})")
    if length < 1:
        raise BadEpisodeError(f"{path}: an episode needs at least one step")
    if task:
        rewards = _relabel(path, task, arrays["physics"], arrays["action"] if with_actions else None,
                           extra.get("task"), action_repeat)
    else:
        rewards = _column(path, "reward", arrays["reward"])
    terminals = _column(path, "discount", arrays["discount"])[1:] == 0
    timeouts = np.zeros(length, dtype=bool)
    timeouts[-1] = not terminals[-1]
    physics = arrays.get("physics")
    return checked(str(path), lambda: Trajectory(
        observations=arrays["observation"][:-1],
        actions=arrays["action"][1:],
        rewards=rewards[1:],
        terminals=terminals,
        timeouts=timeouts,
        physics=None if physics is None else physics[:-1],
        final_observation=arrays["observation"][-1],
        final_physics=None if physics is None else physics[-1],
        source=str(path),
        task=extra.get("task"),
        history=int(extra["history"].reshape(())) if "history" in extra else None,
    ))


def _relabel(path: Path, task: str, physics: np.ndarray, actions: np.ndarray | None,
             parameter: np.ndarray | None, action_repeat: int = 1) -> np.ndarray:
    import envs  # lazily: the simulator is heavy and only needed here

    try:
        hidden = envs.task_spec(task).hidden
    except ValueError as error:
        raise ValueError(f"{path}: relabelling for task {task!r} failed: {error}") from error
    if hidden and parameter is None:
        raise BadEpisodeError(f"{path}: no 'task' key; relabelling for the hidden-task family {task!r} needs "
                              "the task parameter each episode was collected under")
    options = {"task": parameter} if hidden else {}
    if action_repeat != 1:
        options["action_repeat"] = action_repeat
    if physics.ndim != 2:
        raise BadEpisodeError(f"{path}: physics has shape {physics.shape}; expected [T+1, state_dim]")
    if not np.isfinite(physics).all():
        raise BadEpisodeError(f"{path}: physics has NaN or infinite values")
    if actions is not None and (actions.ndim != 2 or not np.isfinite(actions).all()):
        raise BadEpisodeError(f"{path}: action must be a finite [T+1, act_dim] array to relabel, "
                              f"got shape {actions.shape}")
    try:
        rewards = envs.relabel_rewards(task, physics, **options) if actions is None else envs.relabel_rewards(
            task, physics, actions, **options)
    except (KeyError, ValueError) as error:
        raise ValueError(f"{path}: relabelling for task {task!r} failed: {error}") from error
    rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
    if rewards.shape[0] != physics.shape[0]:
        raise ValueError(f"{path}: envs.relabel_rewards returned {rewards.shape[0]} rewards for "
                         f"{physics.shape[0]} states")
    return rewards


def load(root: str | os.PathLike, domain: str, algo: str, *, task: str | None = None,
         max_episodes: int | None = None, skip_bad: bool = False,
         relabel_with_actions: bool = True, action_repeat: int = 1) -> Episodes:
    """Read an ExoRL buffer, one file at a time, in episode-index order.

    Args:
        root: the directory holding ``<domain>/<algo>/buffer``.
        domain: e.g. ``"walker"``.
        algo: the exploration algorithm, e.g. ``"proto"``.
        task: relabel rewards for this task (e.g. ``"walker_run"``) from the stored physics through
            ``envs.relabel_rewards``; ``None`` keeps the stored rewards (which must be one column).
        max_episodes: read only the first this many (good) episodes.
        skip_bad: leave out unreadable episodes (see ``datasets.episodes``) instead of raising.
        relabel_with_actions: also hand the stored actions to the relabeller, so that rewards with a control
            cost (cartpole swingup) equal the online ones; ``False`` relabels with zero control, as ExoRL did.
        action_repeat: the environment steps each stored action was held for when the data was collected;
            relabelling re-simulates them (it needs ``relabel_with_actions``).

    Returns:
        Episodes (a list of Trajectory) with ``observations`` [T, obs], ``actions`` [T, act],
        ``rewards`` [T], ``physics`` [T, state] when stored, ``final_observation``, ``final_physics``,
        and ``task`` / ``history`` when stored.
    """
    if task is not None and not task.startswith(f"{domain}_"):
        raise ValueError(f"task {task!r} is not a task of domain {domain!r} (expected {domain}_<name>)")
    if task is not None and action_repeat != 1 and not relabel_with_actions:
        raise ValueError(f"action_repeat: relabelling data collected with an action repeat of {action_repeat} "
                         "re-simulates the held actions, so relabel_with_actions must stay on")
    directory = buffer_dir(root, domain, algo)
    files = episode_files(directory, skip_bad=skip_bad)
    if not files:
        raise ValueError(f"ExoRL buffer directory {directory} holds no .npz files")
    return collect(files, lambda path: _read_episode(path, task, relabel_with_actions, action_repeat),
                   skip_bad=skip_bad, max_episodes=max_episodes, where=str(directory))


def save(root: str | os.PathLike, domain: str, algo: str, trajectories, *, first_index: int = 0) -> list[Path]:
    """Write trajectories as ``episode_<idx>_<len>.npz`` files (atomically, compressed).

    Every trajectory needs ``final_observation`` (the file's last observation row), and ``final_physics``
    when it has ``physics``. Row 0 gets a zero action, zero reward and discount 1, like ExoRL's reset
    step; ``discount[t+1]`` is 0 where ``terminals[t]``. Timeouts are implied (every file ends an episode).
    A trajectory's ``task`` and ``history`` are written as the keys ``task`` and ``history`` when set.

    Args:
        root, domain, algo: as for ``load``; directories are created.
        trajectories: iterable of Trajectory.
        first_index: the episode index of the first trajectory.

    Returns:
        The written paths, in order.
    """
    directory = Path(root) / domain / algo / "buffer"
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for offset, trajectory in enumerate(trajectories):
        arrays = _episode_arrays(trajectory, f"trajectory {offset} ({trajectory.source})")
        path = directory / f"episode_{first_index + offset}_{len(trajectory)}.npz"
        with atomic_path(path) as temporary, open(temporary, "wb") as handle:
            np.savez_compressed(handle, **arrays)
        paths.append(path)
    return paths


def _episode_arrays(trajectory: Trajectory, name: str) -> dict[str, np.ndarray]:
    if trajectory.final_observation is None:
        raise ValueError(f"{name} has no final_observation; ExoRL files store T+1 observations")
    if trajectory.physics is not None and trajectory.final_physics is None:
        raise ValueError(f"{name} has physics but no final_physics; ExoRL files store T+1 states")
    zero_row = np.zeros((1,), np.float32)
    arrays = {
        "observation": np.concatenate([trajectory.observations, trajectory.final_observation[None]]),
        "action": np.concatenate([np.zeros((1,) + trajectory.actions.shape[1:], trajectory.actions.dtype),
                                  trajectory.actions]),
        "reward": np.concatenate([zero_row, trajectory.rewards])[:, None],
        "discount": np.concatenate([[1.0], np.where(trajectory.terminals, 0.0, 1.0)]).astype(np.float32)[:, None],
    }
    if trajectory.physics is not None:
        arrays["physics"] = np.concatenate([trajectory.physics, trajectory.final_physics[None]])
    # After the standard keys: ExoRL's loader reads an episode's length off the first one.
    if trajectory.task is not None:
        arrays["task"] = np.asarray(trajectory.task, np.float64)
    if trajectory.history is not None:
        arrays["history"] = np.asarray(trajectory.history, np.int64)
    return arrays
