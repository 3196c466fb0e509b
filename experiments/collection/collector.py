"""The collector: episodes of a behaviour policy in any `envs` task, written through the `datasets` writers.

Its command line is ``experiments.collect``:

    python -m experiments.collect --out runs/data/demo --task cartpole_swingup --policy random --episodes 10
    python -m experiments.collect --out runs/data/demo --task walker_walk --policy sac --episodes 400 \
        --action-repeat 2

dm_control tasks are written in the ExoRL layout with physics states,
``<out>/<domain>/<algo>/buffer/episode_<i>_<T>.npz``; gymnasium tasks as D4RL HDF5 files of up to
``episodes_per_file`` episodes, ``<out>/<task>/<algo>/episodes_<first>.hdf5``. ``explore_fraction`` mixes
uniform random actions into a share of the episodes, so that returns spread at every stage of learning. Next to the data:
``collect.json`` (the settings; a rerun must match them), ``progress.json`` (return, length, agent steps and
wall time of every episode) and, for SAC, ``checkpoint.pkl`` (agent state and step counter).

Every file is written atomically after each episode, so rerunning the same command continues after the
episodes on disk: the SAC state is restored from the checkpoint and its replay buffer refilled from the
episode files, and since all randomness is keyed by (seed, episode, step), the resumed history equals an
uninterrupted one. ``stop_return`` ends a learning history at its first episode with at least that return.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import time
from pathlib import Path
from typing import Literal

import numpy as np

import datasets
import envs
from datasets.atomic import atomic_path
from datasets.settings import DatasetSettings
from experiments.collection.episode import play_episode
from experiments.collection.sac_config import SACConfig

__all__ = ["CollectConfig", "collect", "data_dir", "load_episodes", "run_episode"]


@dataclasses.dataclass(frozen=True)
class CollectConfig:
    """What to collect and where.

    Attributes:
        out: dataset root (ExoRL root for dm_control tasks).
        task: an `envs` task name.
        policy: "random" (uniform exploration), "sac" (the whole learning history of an online agent; for a
            hidden-task family, one new agent per history, learning that history's task), or, for
            hidden-task families only, a scripted demonstrator: "searcher" (tries distinct goals until
            one is rewarded, then returns to it), "ad_eps" (a task-aware expert whose random-action rate
            falls from eps_max to 0 along each history), "oracle" (the expert without noise) or, for the maze,
            "explorer" (task-agnostic: each episode drives to a random place in the corridor); see
            `experiments.collection.demonstrators`.
        episodes: total episodes wanted on disk (a rerun with more continues).
        seed: seeds the environment and the policy.
        action_repeat: each agent action is applied this many simulator steps (rewards summed).
        algo: the ExoRL algorithm directory name (default: the policy name).
        stop_return: end the history after the first episode whose return reaches this.
        explore_fraction: share of episodes into which uniform random actions are mixed (see
            `policies.ExplorationMix`); 0 plays the policy as it is.
        explore_max: in such an episode a rate is drawn from U(0, explore_max), and each step takes a
            uniform random action with that probability.
        episodes_per_file: D4RL only: episodes per HDF5 file.
        progress: show a progress bar.
        sac: SAC hyper-parameters.
        episodes_per_history: hidden-task families: episodes per history, one hidden task each (episodes
            must be a multiple of it).
        noise_max: searcher: the largest per-history action-noise standard deviation.
        eps_max: ad_eps: the random-action rate of a history's first episode (the continuous families).
        eps_min: ad_eps on the grids: the random-action rate ADε's annealing ends at (from 1, over 90% of each
            history); "q_learning" (grids only) writes tabular Q-learning histories.
    """

    out: Path
    task: str = "cartpole_swingup"
    policy: Literal["random", "sac", "searcher", "ad_eps", "oracle", "explorer", "q_learning"] = "random"
    episodes: int = 10
    seed: int = 0
    action_repeat: int = 1
    algo: str | None = None
    stop_return: float | None = None
    explore_fraction: float = 0.0
    explore_max: float = 1.0
    episodes_per_file: int = 100
    progress: bool = True
    sac: SACConfig = SACConfig()
    episodes_per_history: int = 12
    noise_max: float = 0.15
    eps_max: float = 1.0
    eps_min: float = 0.0

    def __post_init__(self):
        spec = envs.task_spec(self.task)  # ValueError naming `name` for unknown tasks
        if spec.hidden:
            if self.episodes % self.episodes_per_history:
                raise ValueError(f"episodes: {self.episodes} is not a multiple of episodes_per_history="
                                 f"{self.episodes_per_history}")
        elif self.policy not in ("random", "sac"):
            raise ValueError(f"policy: {self.policy!r} is for hidden-task families; {spec.name} takes random or sac")
        if self.policy not in ("random", "sac", "searcher", "ad_eps", "oracle", "explorer", "q_learning"):
            raise ValueError(f"policy: expected 'random' or 'sac', got {self.policy!r}")
        for name in ("episodes", "action_repeat", "episodes_per_file"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.seed < 0:
            raise ValueError(f"seed: must be non-negative, got {self.seed}")
        for name in ("explore_fraction", "explore_max"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {getattr(self, name)}")
        if self.algo is not None and (not self.algo or "/" in self.algo):
            raise ValueError(f"algo: must be a plain directory name, got {self.algo!r}")

    @property
    def algo_name(self) -> str:
        return self.algo or self.policy

    @property
    def is_exorl(self) -> bool:
        return envs.task_spec(self.task).data_format == "exorl"

    def identity(self) -> dict:
        """Everything that must stay the same when a run is resumed (all but episodes and progress)."""
        fields = dataclasses.asdict(self)
        for name in ("episodes", "progress", "out"):
            fields.pop(name)
        fields["task"] = envs.task_spec(self.task).name
        fields["sac"]["hidden"] = list(fields["sac"]["hidden"])
        if self.policy != "sac":
            fields.pop("sac")
        if not envs.task_spec(self.task).hidden:  # the histories' settings; earlier runs match without them
            for name in ("episodes_per_history", "noise_max", "eps_max", "eps_min"):
                fields.pop(name)
        if self.explore_fraction == 0:  # no mix: the runs written before these settings existed match
            fields.pop("explore_fraction")
            fields.pop("explore_max")
        return fields


def data_dir(config: CollectConfig) -> Path:
    """The directory of the run's files (its ExoRL ``buffer/`` or D4RL files and the bookkeeping)."""
    spec = envs.task_spec(config.task)
    return Path(config.out) / (spec.domain if config.is_exorl else spec.name) / config.algo_name


def load_episodes(config: CollectConfig) -> datasets.Episodes:
    """The episodes on disk, in order, read back through the `datasets` reader (empty if none)."""
    try:
        return datasets.read_episodes(data_dir(config), allow_empty=True, contiguous=True)
    except ValueError as error:
        raise ValueError(f"out: {error}") from error


def _qpos_dim(env) -> int:
    return int(env.gym_env.unwrapped.model.nq)


def _write_episodes(config: CollectConfig, env, episodes: list, first: int) -> None:
    """Write ``episodes`` (numbered from ``first``) without touching earlier ones on disk."""
    if config.is_exorl:
        datasets.exorl.save(config.out, envs.task_spec(config.task).domain, config.algo_name, episodes,
                            first_index=first)
        return
    datasets.d4rl.append_episodes(data_dir(config), episodes, first, config.episodes_per_file, _qpos_dim(env))


def _remove_from(config: CollectConfig, env, episodes: datasets.Episodes, keep: int) -> None:
    """Drop episodes ``keep..`` from disk (written after the last checkpoint, before a crash)."""
    directory = data_dir(config)
    if config.is_exorl:
        for path in directory.glob("buffer/*.npz"):
            if datasets.exorl.parse_name(path)[0] >= keep:
                path.unlink()
        return
    datasets.d4rl.truncate_episodes(directory, keep, config.episodes_per_file, _qpos_dim(env))


def run_episode(env, policy, seed: int, episode: int) -> datasets.Trajectory:
    """One episode from a reset; the environment is reseeded from ``(seed, episode)`` first."""
    env.reseed(int(np.random.SeedSequence([seed, episode]).generate_state(1)[0]))
    return play_episode(env, policy, episode, source=f"episode {episode}")


def _write_json(path: Path, value) -> None:
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(value, indent=1) + "\n")


def _make_policy(config: CollectConfig, spec):
    from experiments.collection import policies  # JAX and Flax: not needed to parse a command line

    if config.policy == "random":
        policy = policies.RandomPolicy(spec.action_dim, config.seed)
    else:
        policy = policies.SACPolicy(config.sac, spec.obs_dim, spec.action_dim, config.seed)
    if config.explore_fraction > 0:
        policy = policies.ExplorationMix(policy, spec.action_dim, config.seed, config.explore_fraction,
                                         config.explore_max)
    return policy


def _resume(config, env, policy, directory: Path) -> tuple[int, dict]:
    """Restore the policy and progress log to the state after the last complete episode; returns the count.

    Each episode is written as: its data file(s), then ``progress.json``, then (SAC) ``checkpoint.pkl``, so
    after a crash the disk holds at least as many episodes as the log, and the log at least as many as the
    checkpoint. Episodes past the last complete one are removed and played again (identically).
    """
    episodes = load_episodes(config)
    log_path = directory / "progress.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {"episodes": [], "stopped": False}
    keep = len(log["episodes"])
    checkpoint_path = directory / "checkpoint.pkl"
    if config.policy == "sac":
        checkpoint = {"episodes": 0}
        if checkpoint_path.exists():
            with open(checkpoint_path, "rb") as handle:
                checkpoint = pickle.load(handle)
            policy.load_state_dict(checkpoint["policy"])
        if checkpoint["episodes"] > keep:
            raise ValueError(f"checkpoint: {checkpoint_path} is after episode {checkpoint['episodes']} but "
                             f"{log_path} lists only {keep}")
        keep = checkpoint["episodes"]
    if keep > len(episodes):
        raise ValueError(f"{log_path}: lists {keep} complete episodes but only {len(episodes)} are on disk "
                         f"in {directory}")
    if keep < len(episodes):
        _remove_from(config, env, episodes, keep)
        episodes = datasets.Episodes(episodes[:keep])
    policy.replay(episodes)
    if config.policy == "sac" and policy.buffer.size != min(policy.t, policy.buffer.capacity):
        raise ValueError(f"checkpoint: counts {policy.t} agent steps but the files hold {policy.buffer.size}")
    log["episodes"] = log["episodes"][:keep]
    log["stopped"] = _stopped(config, log["episodes"])
    return keep, log


def _stopped(config: CollectConfig, history: list[dict]) -> bool:
    return config.stop_return is not None and any(h["return"] >= config.stop_return for h in history)


def collect(config: CollectConfig) -> dict:
    """Collect until ``config.episodes`` episodes are on disk (or the stop return is reached).

    Returns:
        The progress log: ``{"episodes": [{"return", "length", "agent_steps", "wall_time"}, ...],
        "stopped": bool}``.
    """
    from tqdm import tqdm

    spec = envs.task_spec(config.task)
    if spec.hidden:
        return _collect_histories(config)
    directory = data_dir(config)
    directory.mkdir(parents=True, exist_ok=True)
    DatasetSettings(directory, "collect.json", config.identity(),
                    advice="use another --out or --algo to start a different run").claim()
    env = envs.make(config.task, seed=config.seed, action_repeat=config.action_repeat)
    policy = _make_policy(config, spec)
    done, log = _resume(config, env, policy, directory)
    history = log["episodes"]
    elapsed = history[-1]["wall_time"] if history else 0.0
    steps = history[-1]["agent_steps"] if history else 0
    start = time.perf_counter() - elapsed
    bar = tqdm(total=config.episodes, initial=done, disable=not config.progress, unit="episode",
               desc=f"{spec.name} {config.algo_name}")
    for episode in range(done, config.episodes):
        if log["stopped"]:
            break
        trajectory = run_episode(env, policy, config.seed, episode)
        _write_episodes(config, env, [trajectory], episode)
        episode_return = float(np.sum(trajectory.rewards, dtype=np.float64))
        steps += len(trajectory)
        history.append({"return": episode_return, "length": len(trajectory), "agent_steps": steps,
                        "wall_time": round(time.perf_counter() - start, 3), **policy.stats()})
        log["stopped"] = _stopped(config, history)
        _write_json(directory / "progress.json", log)
        if config.policy == "sac":
            with atomic_path(directory / "checkpoint.pkl") as temporary, open(temporary, "wb") as handle:
                pickle.dump({"episodes": episode + 1, "policy": policy.state_dict()}, handle)
        bar.set_postfix(ret=f"{episode_return:.1f}", best=f"{max(h['return'] for h in history):.1f}")
        bar.update(1)
    bar.close()
    return log


def _collect_histories(config: CollectConfig) -> dict:
    """A hidden-task family: histories of a scripted demonstrator or of SAC learners, one hidden task each,
    with the task parameter and history index stored in every episode file (``histories.write_dataset``)."""
    from experiments.collection.histories import write_dataset

    write_dataset(config.out, task=config.task, source=config.policy, algo=config.algo_name, seed=config.seed,
                  num_histories=config.episodes // config.episodes_per_history,
                  episodes_per_history=config.episodes_per_history, noise_max=config.noise_max,
                  eps_max=config.eps_max, sac=config.sac, action_repeat=config.action_repeat, eps_min=config.eps_min)
    episodes = load_episodes(config)
    return {"episodes": [{"return": e.total_return, "length": len(e), "task": e.task.tolist(), "history": e.history}
                         for e in episodes], "stopped": False}
