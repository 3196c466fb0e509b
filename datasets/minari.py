"""Local Minari datasets, through the ``minari`` package or by reading its HDF5 file directly.

A dataset ``<namespace>/<env>/<name>-vN`` lives under ``<MINARI_DATASETS_PATH or ~/.minari/datasets>``
as ``<id>/data/main_data.hdf5`` with one group ``episode_<i>`` per episode holding ``observations``
[T+1, obs] (the reset observation first), ``actions`` [T, act], ``rewards`` [T], ``terminations`` [T]
and ``truncations`` [T]. Trajectories take ``observations[:-1]`` and the last row as
``final_observation``. Only flat (Box) observations and actions are supported. Nothing is downloaded.

This module is named like the package it wraps; ``importlib`` brings in the real one.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import numpy as np

from datasets.atomic import atomic_path
from datasets.episodes import BadEpisodeError, Episodes, checked, collect
from datasets.trajectory import Trajectory

__all__ = ["load", "save", "dataset_path", "env_id"]

_EPISODE_KEYS = ("observations", "actions", "rewards", "terminations", "truncations")
_INSTALL_HINT = "install the optional extra: pip install 'ringrl[minari]'"


def dataset_path(dataset_id: str, root: str | os.PathLike | None = None) -> Path:
    """The directory of a local dataset: ``<root>/<dataset_id>``.

    Args:
        dataset_id: ``"<namespace>/<env>/<name>-vN"`` (namespace and env optional).
        root: the datasets directory; ``None`` means ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``.
    """
    if not re.fullmatch(r"[\w.\-]+(/[\w.\-]+)*-v\d+", dataset_id):
        raise ValueError(f"dataset_id {dataset_id!r} is not of the form [namespace/][env/]name-vN")
    if root is None:
        root = os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets"
    return Path(root) / dataset_id


def _import_minari():
    try:
        return importlib.import_module("minari")
    except ModuleNotFoundError as error:
        if error.name != "minari":
            raise
        raise ModuleNotFoundError(f"reading Minari datasets with reader='minari' needs the minari package; "
                                  f"{_INSTALL_HINT} (or pass reader='hdf5')", name="minari") from error


def load(dataset_id: str, *, reader: str = "minari", root: str | os.PathLike | None = None,
         skip_bad: bool = False) -> Episodes:
    """Read a local Minari dataset.

    Args:
        dataset_id: e.g. ``"mujoco/hopper/medium-v0"``.
        reader: ``"minari"`` uses ``minari.load_dataset(dataset_id, download=False)`` (needs the extra
            ``ringrl[minari]``); ``"hdf5"`` reads ``data/main_data.hdf5`` with h5py only.
        root: the datasets directory (``reader="hdf5"`` only; the package reads
            ``MINARI_DATASETS_PATH`` itself).
        skip_bad: leave out unreadable episodes instead of raising.

    Returns:
        Episodes in episode-id order, each with ``final_observation``.

    A ``dataset_id`` that is a dataset's own directory (holding ``data/main_data.hdf5``) is read by the HDF5
    reader, whatever ``reader`` says.
    """
    directory = Path(dataset_id).expanduser()
    if root is None and directory.is_dir():
        return _load_hdf5(directory, skip_bad)
    if reader == "minari":
        if root is not None:
            raise ValueError("root is only for reader='hdf5'; the minari package reads MINARI_DATASETS_PATH")
        return _load_with_package(dataset_id, skip_bad)
    if reader == "hdf5":
        return _load_hdf5(dataset_path(dataset_id, root), skip_bad)
    raise ValueError(f"reader must be 'minari' or 'hdf5', got {reader!r}")


def env_id(dataset: str, root: str | os.PathLike | None = None) -> str | None:
    """The gymnasium id of the environment a local dataset was collected in: ``env_spec`` of its
    ``data/metadata.json`` (a JSON string, or an object, with an ``id``); None where it records none.

    Args:
        dataset: a dataset's directory, or its id under ``root``.
        root: as for ``dataset_path``.

    Raises:
        ValueError: naming the file when its metadata or env_spec is not JSON.
    """
    directory = Path(dataset).expanduser()
    if not directory.is_dir():
        directory = dataset_path(dataset, root)
    path = directory / "data" / "metadata.json"
    if not path.is_file():
        return None
    try:
        spec = json.loads(path.read_text()).get("env_spec")
        if isinstance(spec, str):
            spec = json.loads(spec)
    except (json.JSONDecodeError, AttributeError) as error:
        raise ValueError(f"{path}: its metadata or env_spec is not valid JSON ({error})") from error
    found = spec.get("id") if isinstance(spec, dict) else None
    return found if isinstance(found, str) and found else None


def _load_with_package(dataset_id: str, skip_bad: bool) -> Episodes:
    minari = _import_minari()
    try:
        dataset = minari.load_dataset(dataset_id, download=False)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"Minari dataset {dataset_id!r} is not available locally: {error}") from error

    def read(episode) -> Trajectory:
        source = f"{dataset_id} episode {episode.id}"
        return _trajectory(source, {key: getattr(episode, key) for key in _EPISODE_KEYS})

    return collect(dataset.iterate_episodes(), read, skip_bad=skip_bad, where=dataset_id,
                   name=lambda episode: f"{dataset_id} episode {episode.id}")


def _episode_names(path: Path, file) -> list[str]:
    names = [name for name in file.keys() if re.fullmatch(r"episode_\d+", name)]
    if not names:
        raise ValueError(f"{path}: no episode_<i> groups")
    return sorted(names, key=lambda name: int(name.split("_")[1]))


def _load_hdf5(directory: Path, skip_bad: bool) -> Episodes:
    import h5py

    path = directory / "data" / "main_data.hdf5"
    if not path.is_file():
        raise FileNotFoundError(f"Minari dataset file {path} does not exist")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: corrupt or truncated HDF5 file ({error})") from error
    with file:
        def read(name: str) -> Trajectory:
            source = f"{path} {name}"
            group = file[name]
            missing = [key for key in _EPISODE_KEYS if key not in group]
            if missing:
                raise BadEpisodeError(f"{source}: missing keys {missing} (has {sorted(group.keys())})")
            if not all(isinstance(group[key], h5py.Dataset) for key in _EPISODE_KEYS):
                raise BadEpisodeError(f"{source}: nested (dict) observations or actions are not supported")
            try:
                arrays = {key: group[key][()] for key in _EPISODE_KEYS}
            except OSError as error:
                raise BadEpisodeError(f"{source}: corrupt data ({error})") from error
            return _trajectory(source, arrays)

        return collect(_episode_names(path, file), read, skip_bad=skip_bad, where=str(path),
                       name=lambda group: f"{path} {group}")


def _trajectory(source: str, arrays: dict) -> Trajectory:
    for key in ("observations", "actions"):
        if not isinstance(arrays[key], np.ndarray):
            raise BadEpisodeError(f"{source}: {key} is a {type(arrays[key]).__name__}; only flat arrays "
                                  "are supported")
    observations = arrays["observations"]
    steps = {key: np.shape(arrays[key])[0] if np.ndim(arrays[key]) else 0 for key in _EPISODE_KEYS[1:]}
    if len(set(steps.values())) != 1 or np.ndim(observations) == 0 or observations.shape[0] != steps["actions"] + 1:
        raise BadEpisodeError(f"{source}: mismatched lengths: observations has "
                              f"{np.shape(observations)[:1]} rows, expected one more than {steps}")
    return checked(source, lambda: Trajectory(
        observations=observations[:-1],
        actions=arrays["actions"],
        rewards=arrays["rewards"],
        terminals=arrays["terminations"],
        timeouts=arrays["truncations"],
        final_observation=observations[-1],
        source=source,
    ))


def save(dataset_id: str, trajectories, *, root: str | os.PathLike | None = None,
         num_actions: int | None = None, env_id: str | None = None) -> Path:
    """Write trajectories as a local Minari dataset (HDF5 layout of minari 0.5, with ``metadata.json``).

    Args:
        dataset_id: ``"<namespace>/<env>/<name>-vN"``.
        trajectories: sequence of Trajectory, each with ``final_observation``.
        root: the datasets directory (``None``: ``$MINARI_DATASETS_PATH`` or ``~/.minari/datasets``).
        num_actions: discrete actions only, and required there: the size of the ``Discrete`` action space.
        env_id: the gymnasium id the episodes were collected in, kept as ``env_spec`` (what Minari records).

    Returns:
        The path of the written ``main_data.hdf5``.
    """
    import h5py

    trajectories = list(trajectories)
    if not trajectories:
        raise ValueError(f"cannot write Minari dataset {dataset_id!r}: no trajectories")
    for index, trajectory in enumerate(trajectories):
        if trajectory.final_observation is None:
            raise ValueError(f"trajectory {index} ({trajectory.source}) has no final_observation; Minari "
                             "stores T+1 observations")
    action_space = _action_space_json(trajectories, num_actions)
    data_dir = dataset_path(dataset_id, root) / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "main_data.hdf5"
    with atomic_path(path) as temporary:
        with h5py.File(temporary, "w") as file:
            for index, trajectory in enumerate(trajectories):
                group = file.create_group(f"episode_{index}")
                group.attrs["id"] = index
                group.attrs["total_steps"] = len(trajectory)
                group.create_dataset("observations", data=np.concatenate(
                    [trajectory.observations, trajectory.final_observation[None]]))
                group.create_dataset("actions", data=trajectory.actions)
                group.create_dataset("rewards", data=trajectory.rewards.astype(np.float64))
                group.create_dataset("terminations", data=trajectory.terminals)
                group.create_dataset("truncations", data=trajectory.timeouts)
    metadata = {
        "dataset_id": dataset_id,
        "total_episodes": len(trajectories),
        "total_steps": int(sum(len(t) for t in trajectories)),
        "data_format": "hdf5",
        "observation_space": _box_json(trajectories[0].observation_dim),
        "action_space": action_space,
        "minari_version": "0.5.4",
    }
    if env_id is not None:
        metadata["env_spec"] = json.dumps({"id": env_id})
    with atomic_path(data_dir / "metadata.json") as temporary:
        temporary.write_text(json.dumps(metadata))
    return path


def _action_space_json(trajectories, num_actions: int | None) -> str:
    """The ``Discrete`` space of integer actions (``num_actions`` choices) or the ``Box`` of vectors."""
    kinds = {t.discrete for t in trajectories}
    if len(kinds) != 1:
        raise ValueError("trajectories mix discrete and continuous actions; one dataset has one action space")
    if not kinds.pop():
        if num_actions is not None:
            raise ValueError(f"num_actions={num_actions} is for discrete actions; these trajectories' are vectors")
        return _box_json(trajectories[0].action_dim)
    largest = max(int(t.actions.max()) for t in trajectories)
    if num_actions is None or num_actions <= largest:
        raise ValueError(f"num_actions={num_actions!r}: discrete actions need the Discrete space's size, more than "
                         f"the largest action stored ({largest})")
    return json.dumps({"type": "Discrete", "dtype": "int64", "start": 0, "n": int(num_actions)})


def _box_json(size: int) -> str:
    return json.dumps({"type": "Box", "dtype": "float32", "shape": [size],
                       "low": [-np.inf] * size, "high": [np.inf] * size})
