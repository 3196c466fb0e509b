"""Histories of the scripted demonstrators, played and written as multi-task ExoRL datasets.

A history is ``episodes_per_history`` episodes on one environment, so on one hidden task (its seed is
``demonstrators.history_seed``). ``run_history`` plays one on any environment (the dm_control maze);
``run_histories`` plays many point_nav histories in lockstep on arrays, with equal results;
``write_dataset`` writes a whole dataset in ExoRL format with the task parameter and history index stored
per episode, resumably and atomically.

Besides the scripted sources (``demonstrators.make_source``), ``source="sac"`` writes learning histories:
each history is a fresh soft actor-critic learning its own task from scratch (the task is no secret to
it: it is rewarded by it), its episodes in the order it played them, as Algorithm Distillation's data.
``python -m experiments.collect curves`` prints each source's curve over a history.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

import datasets
import envs
from datasets.settings import DatasetSettings
from experiments.collection.demonstrators import Source, history_seed, make_source
from experiments.collection.sac import SACConfig
from experiments.collection.episode import play_episode

# Settings that data written before they existed was made with (its demonstrators.json lacks them).
_SETTING_DEFAULTS = {"action_repeat": 1}

__all__ = ["run_history", "run_histories", "write_dataset", "episode_index_curve"]


def _trajectory(observations, actions, rewards, physics, final_observation, final_physics, terminal: bool,
                task, history: int, index: int) -> datasets.Trajectory:
    last = np.arange(len(rewards)) == len(rewards) - 1
    return datasets.Trajectory(
        observations=observations, actions=actions, rewards=np.asarray(rewards, np.float32),
        terminals=last & terminal, timeouts=last & (not terminal), physics=physics,
        final_observation=final_observation, final_physics=final_physics,
        source=f"history {history} episode {index}", task=task, history=history)


def run_history(env, policy, history: int, episodes_per_history: int) -> list[datasets.Trajectory]:
    """Plays one history: ``episodes_per_history`` episodes on ``env`` (one task), each from a reset.

    The simple twin of ``run_histories`` (which plays many point_nav histories as arrays), and the way
    to play the dm_control maze.

    Args:
        env: an ``envs.make`` environment of a hidden-task family, seeded for this history.
        policy: a demonstrator (``set_task`` is called for task-aware ones).
        history: the history's index (episodes are numbered ``history * episodes_per_history + i``).
        episodes_per_history: episodes to play.

    Returns:
        The episodes, each with physics states, ``task`` and ``history``.
    """
    task = env.task_parameter
    if hasattr(policy, "set_task"):
        policy.set_task(task)
    episodes = []
    for index in range(episodes_per_history):
        episodes.append(play_episode(env, policy, history * episodes_per_history + index,
                                     source=f"history {history} episode {index}", task=task, history=history))
    return episodes


def run_histories(task: str, policy, histories, episodes_per_history: int, seed: int) -> list[list]:
    """Plays many point_nav histories in lockstep on arrays (``envs.point_nav.PointNavBatch``).

    History ``h`` runs on the task ``envs.make(task, seed=history_seed(seed, h))`` draws, exactly as
    ``run_history`` on that environment would (tests hold the two equal).

    Returns:
        One list of ``episodes_per_history`` trajectories per history, in the order of ``histories``.
    """
    from envs import point_nav

    spec = envs.task_spec(task)
    if spec.kind != "numpy":
        raise ValueError(f"task: {spec.name!r} is not a NumPy task; play it with run_history")
    histories = np.asarray(histories, np.int64)
    goals = np.stack([point_nav.draw_task(spec.task, history_seed(seed, int(h))) for h in histories])
    batch = point_nav.PointNavBatch(spec, goals)
    if hasattr(policy, "set_tasks"):
        policy.set_tasks(goals)
    steps, n = batch.episode_length, len(histories)
    out = [[] for _ in range(n)]
    for index in range(episodes_per_history):
        policy.begin_episodes(histories, index)
        observations = np.empty((steps + 1, n, spec.obs_dim), np.float32)
        actions = np.empty((steps, n, spec.action_dim), np.float32)
        rewards = np.empty((steps, n), np.float32)
        physics = np.empty((steps + 1, n, spec.physics_dim))
        observations[0], physics[0] = batch.reset(), batch.physics_states()
        for t in range(steps):
            actions[t] = policy.actions(observations[t])
            step = batch.step(actions[t])
            observations[t + 1], rewards[t], physics[t + 1] = step.observation, step.reward, batch.physics_states()
            policy.observe_steps(step.reward, step.observation)
        for row, history in enumerate(histories):
            out[row].append(_trajectory(observations[:-1, row], actions[:, row], rewards[:, row], physics[:-1, row],
                                        observations[-1, row], physics[-1, row], False, goals[row], int(history),
                                        index))
    return out


def write_dataset(root: str | Path, *, task: str = "point_nav_hidden", source: Source | Literal["sac"] = "searcher",
                  num_histories: int = 600, episodes_per_history: int = 12, seed: int = 0, algo: str | None = None,
                  noise_max: float = 0.15, eps_max: float = 1.0, sac: SACConfig | None = None,
                  chunk: int = 1000, action_repeat: int = 1, eps_min: float = 0.0) -> Path:
    """Writes ``num_histories`` histories of a demonstrator, each on its own task, in ExoRL format.

    Files: ``<root>/<domain>/<algo>/buffer/episode_<i>_<T>.npz`` with the keys ``task`` (the hidden task
    parameter) and ``history`` besides ExoRL's own, and ``<root>/<domain>/<algo>/demonstrators.json`` (the
    settings). Every file is written atomically; a rerun with the same settings skips the histories
    already complete on disk and rewrites incomplete ones identically (a different setting is refused).

    Args:
        root: the ExoRL root.
        task: the hidden-task family; each history's task is drawn from its seed (train goals for
            ``point_nav_hidden``).
        source: "searcher", "ad_eps", "oracle", "random", "explorer" (the maze) or "sac" (learning histories).
        num_histories, episodes_per_history: the dataset's size.
        seed: the run's seed (tasks, guess orders, noise).
        algo: the directory name (default: ``source``).
        noise_max: the searcher's largest noise standard deviation.
        eps_max: ADε's first-episode random-action rate.
        sac: the soft actor-critic's settings (source "sac"; default ``SACConfig()``).
        chunk: point_nav histories played together as arrays (memory only; the data do not depend on it).
        action_repeat: each recorded action is held this many simulator steps, rewards summed (the maze:
            10 makes its 1,000-step episodes 100 agent steps); point_nav has none (1 only).
        eps_min: the grids' ADε floor (``experiments.collection.grid_sources``): the random-action rate the
            annealing ends at. The grids also offer ``source="q_learning"`` (tabular learning histories).

    Returns:
        The buffer directory.
    """
    spec = envs.task_spec(task)
    if not spec.hidden:
        raise ValueError(f"task: {spec.name!r} is not a hidden-task family")
    if num_histories < 1:
        raise ValueError(f"num_histories: must be positive, got {num_histories}")
    if action_repeat < 1 or (action_repeat != 1 and spec.kind == "numpy"):
        raise ValueError(f"action_repeat: {action_repeat} is not available for {spec.name!r} (point_nav: 1 only; "
                         "dm_control families: a positive integer)")
    grid_sources = ("searcher", "ad_eps", "oracle", "random", "q_learning")
    if (source in grid_sources) != spec.discrete and source in ("q_learning", "sac", "explorer"):
        raise ValueError(f"source: {source!r} is not available for {spec.name!r} (the grids take "
                         f"{', '.join(grid_sources)}; the continuous families searcher, ad_eps, oracle, random, sac "
                         "and the maze's explorer)")
    algo = algo or source
    directory = Path(root) / spec.domain / algo
    buffer = directory / "buffer"
    buffer.mkdir(parents=True, exist_ok=True)
    settings = {"task": spec.name, "source": source, "episodes_per_history": episodes_per_history, "seed": seed,
                "noise_max": noise_max, "eps_max": eps_max, "action_repeat": action_repeat}
    if spec.discrete:
        settings["eps_min"] = eps_min
    if source == "sac":
        sac = sac or SACConfig()
        settings["sac"] = dataclasses.asdict(sac)
    DatasetSettings(directory, "demonstrators.json", settings, defaults=_SETTING_DEFAULTS).claim()
    on_disk = {datasets.exorl.parse_name(path)[0] for path in buffer.glob("episode_*.npz")}
    todo = [h for h in range(num_histories)
            if not all(h * episodes_per_history + i in on_disk for i in range(episodes_per_history))]
    if source == "sac":
        return _write_learning_histories(root, spec, algo, todo, episodes_per_history, seed, sac, action_repeat)
    if spec.discrete:  # the grids: their own sources, many histories at once as arrays
        from experiments.collection.grid_sources import play_grid_histories

        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            played = play_grid_histories(spec.name, source, part, episodes_per_history, seed, eps_min=eps_min)
            for history, episodes in zip(part, played):
                datasets.exorl.save(root, spec.domain, algo, episodes, first_index=history * episodes_per_history)
        return buffer
    policy = make_source(source, spec.name, seed, episodes_per_history, noise_max=noise_max, eps_max=eps_max)
    if spec.kind == "numpy":  # arrays over many histories at once
        for start in range(0, len(todo), chunk):
            part = todo[start:start + chunk]
            for history, episodes in zip(part, run_histories(spec.name, policy, part, episodes_per_history, seed)):
                datasets.exorl.save(root, spec.domain, algo, episodes, first_index=history * episodes_per_history)
        return buffer
    env = envs.make(spec.name, seed=history_seed(seed, 0), action_repeat=action_repeat)
    for history in todo:
        env.reseed(history_seed(seed, history))  # a new history: a new task
        episodes = run_history(env, policy, history, episodes_per_history)
        datasets.exorl.save(root, spec.domain, algo, episodes, first_index=history * episodes_per_history)
    return buffer


def _write_learning_histories(root, spec, algo: str, todo: list[int], episodes_per_history: int, seed: int,
                              sac: SACConfig, action_repeat: int) -> Path:
    """Each history of ``todo``: a new soft actor-critic on that history's task, written whole when done."""
    from tqdm import tqdm

    from experiments.collection.policies import SACPolicy

    env = envs.make(spec.name, seed=history_seed(seed, 0), action_repeat=action_repeat)
    for history in tqdm(todo, desc=f"{spec.name} sac histories", unit="history"):
        env.reseed(history_seed(seed, history))
        learner = SACPolicy(sac, spec.obs_dim, spec.action_dim, history_seed(seed, history))
        episodes = run_history(env, learner, history, episodes_per_history)
        datasets.exorl.save(root, spec.domain, algo, episodes, first_index=history * episodes_per_history)
    return Path(root) / spec.domain / algo / "buffer"


def episode_index_curve(trajectories, episodes_per_history: int) -> dict[str, np.ndarray]:
    """Mean return and success rate (a reward >= ``envs.SUCCESS_REWARD``) per episode index within a history.

    Args:
        trajectories: episodes in dataset order (episode e is index e % episodes_per_history).
        episodes_per_history: episodes of one history.

    Returns:
        ``{"mean_return": float64 [n], "success": float64 [n], "histories": int}``.
    """
    returns = np.array([t.total_return for t in trajectories]).reshape(-1, episodes_per_history)
    success = np.array([float(np.max(t.rewards) >= envs.SUCCESS_REWARD) for t in trajectories]).reshape(
        -1, episodes_per_history)
    return {"mean_return": returns.mean(axis=0), "success": success.mean(axis=0), "histories": returns.shape[0]}
