"""Experiment configuration: frozen, typed dataclasses, one per section of a run.

Parsing a config imports no JAX. Presets by name live in :mod:`experiments.presets`; the command lines
parse them with tyro in :mod:`experiments.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Literal

from agent.config import ModelConfig, OptimConfig, check_counts, check_range, preset as model_preset
from datasets import SamplerConfig

DEFAULT_DATA = str(Path(__file__).resolve().parent / "data" / "default")

DataFormat = Literal["exorl", "d4rl", "minari"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the episodes come from and which task they are evaluated on.

    Attributes:
      format: "exorl" (root/domain/algo/buffer/*.npz), "d4rl" (an HDF5 file) or "minari" (a dataset id, or a
        dataset's own directory, read by the HDF5 reader).
      root: the ExoRL root directory, the D4RL file, or the Minari dataset id or directory.
      domain: the ExoRL domain directory (e.g. walker).
      algo: the ExoRL algorithm directory (e.g. proto).
      task: the envs task the agent is evaluated on (and, with relabel, the reward relabelled for): any name of
        ``envs.list_tasks()`` or gymnasium MuJoCo id (Ant-v4); "from_data" (the own-data presets): the task a
        Minari dataset's env_spec names (``experiments.own_data``).
      relabel: recompute rewards for task from the stored physics states (ExoRL).
      max_episodes: read at most this many episodes.
      action_repeat: the action repeat the data was collected with; evaluation uses the same.
      download_hint: how to get the data (what to download and where), printed when root is missing.
      make: hidden-task families: when root holds no data yet, write it first with this scripted
        demonstrator ("none": never); the data the project generates itself, so a job needs no download.
        "explorer_per_task" (the maze): task-agnostic exploration under ``explorer``, then every episode
        relabelled for each target under ``algo`` (``experiments.collection.per_task``); "q_learning" (the
        grids): tabular Q-learning histories (``experiments.collection.grid_sources``).
      histories: with make: histories written, one hidden task each.
      episodes_per_history: with make: episodes in a history.
      observe_task: the oracle baseline (hidden-task families only): every episode's stored task parameter
        is appended to its observations, and so is every evaluation environment's own; every other agent
        learns the task from rewards alone.
      eps_min: with make="ad_eps" on a grid: the random-action rate ADε's annealing ends at (it sets the
        best policy in the data).
      labels: what the loss predicts: "taken" (the data's actions) or "optimal" (DPT: the optimal action
        of every step, computed from each episode's stored task; ``Trajectory.with_optimal_labels``).
    """

    format: DataFormat = "exorl"
    root: str = DEFAULT_DATA
    domain: str = "cartpole"
    algo: str = "sac"
    task: str = "cartpole_swingup"
    relabel: bool = False
    max_episodes: int | None = None
    action_repeat: int = 4
    download_hint: str = ""
    make: Literal["none", "searcher", "ad_eps", "oracle", "random", "explorer_per_task", "q_learning"] = "none"
    histories: int = 600
    episodes_per_history: int = 12
    observe_task: bool = False
    eps_min: float = 0.0
    labels: Literal["taken", "optimal"] = "taken"

    def __post_init__(self):
        if self.format not in ("exorl", "d4rl", "minari"):
            raise ValueError(f"DataConfig.format={self.format!r} is unknown; expected exorl, d4rl or minari")
        check_counts(self, "action_repeat", "histories", "episodes_per_history", optional=("max_episodes",))


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The training loop.

    Attributes:
      steps: optimiser steps.
      seed: parameter initialisation and data order (batch i is drawn from a generator seeded by (seed, i)).
      eval_every: evaluate every this many steps (0: only at the end).
      checkpoint_every: save every this many steps (and at the end).
      keep_checkpoints: keep the last N checkpoints (plus the best evaluated one).
      log_every: TensorBoard and progress-bar interval.
      mesh: mesh spec over ("dp", "fsdp", "tp", "sp"), e.g. "dp=2,sp=-1".
    """

    steps: int = 2000
    seed: int = 0
    eval_every: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 25
    mesh: str = "dp=-1"

    def __post_init__(self):
        check_counts(self, "steps", "checkpoint_every", "keep_checkpoints", "log_every")
        check_counts(self, "eval_every", "seed", minimum=0)  # eval_every 0: only at the end
        # The sizes are checked against the devices when the mesh is made; an axis named twice would silently
        # keep its last size, so it is refused here, before any work.
        axes = [entry.partition("=")[0].strip() for entry in self.mesh.split(",") if entry.strip()]
        if repeated := sorted({axis for axis in axes if axes.count(axis) > 1}):
            raise ValueError(f"TrainConfig.mesh={self.mesh!r} names the axes {repeated} more than once")


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation by in-context rollouts.

    Attributes:
      num_trials: consecutive trials per environment, each conditioned on the earlier ones
        (None: as many as trajectories in the training context).
      num_envs: environments run together, with one batched model call per step.
      target_return: the return asked for (None: the dataset's best episode return).
      seed: environment seed (environment i gets a seed derived from seed and i).
      reset_context_each_trial: condition every trial only on itself (the BC and DT baselines).
      context_steps: condition on only the last this many steps (DT's window; recomputed, no cache).
      context_trials: condition on only the current trial and the ones before it up to this many in all (a
        model trained on k trajectories, evaluated over more trials; recomputed, no cache).
      video: record the first environment's first trial, as evaluated, to an MP4 in the run directory.
      sample: draw actions from the action head's distribution (gaussian, mixture) instead of playing its
        most likely action.
      sample_noise: with sample, also draw the spread around the chosen mode (False: the mixture plays the
        mean of a component drawn by its weight, choosing among modes without the noise around them).
      temperature: with sample, divide the categorical head's logits by this (below 1: sharper, towards
        the most likely action; the other heads take 1 only).
      random_floor: also roll out a uniform random policy on the same environments and report it beside the
        agent (the floor of a hidden-task family).
    """

    num_trials: int | None = None
    num_envs: int = 8
    target_return: float | None = None
    seed: int = 10_000
    reset_context_each_trial: bool = False
    context_steps: int | None = None
    context_trials: int | None = None
    video: bool = False
    sample: bool = False
    sample_noise: bool = True
    temperature: float = 1.0
    random_floor: bool = False

    def __post_init__(self):
        check_counts(self, "num_envs", optional=("num_trials", "context_steps", "context_trials"))
        check_range(self, "target_return", -math.inf, optional=True)
        check_counts(self, "seed", minimum=0)
        check_range(self, "temperature", 0.0, open_low=True)


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """One run: its data, how contexts are sampled, the model, the optimiser, training and evaluation.

    Attributes:
      name: the run's directory under runs_dir.
      data: where the episodes come from.
      sampler: how contexts are drawn from them.
      model: the Agentic Transformer.
      optim: the optimiser.
      train: the training loop.
      eval: the in-context evaluation.
      runs_dir: the directory that holds the run directories.
    """

    name: str = "default"
    data: DataConfig = DataConfig()
    # The main job's defaults: sized to train and evaluate in under 10 minutes on 2 CPU cores.
    sampler: SamplerConfig = SamplerConfig(num_trajectories=4, max_steps=1024, batch_size=8, prefetch=2)
    model: ModelConfig = model_preset("small", embed_dim=64, num_heads=2, num_kv_heads=2, remat_policy="none",
                                      max_timestep=256, max_trajectories=16)
    optim: OptimConfig = OptimConfig(learning_rate=1e-3, warmup_steps=100, total_steps=1200, clip_norm=1.0)
    train: TrainConfig = TrainConfig(steps=1200, checkpoint_every=300)
    eval: EvalConfig = EvalConfig(num_envs=16)
    runs_dir: str = "runs"

    def __post_init__(self):
        # The name is joined to runs_dir: anything but one plain component writes a run elsewhere ("../x",
        # "/abs") or turns runs_dir itself into a run ("").
        if self.name in ("", ".", "..") or any(c in self.name for c in "/\\\0"):
            raise ValueError(f"name={self.name!r} must be one plain directory name (not empty, '.' or '..', no '/'): "
                             f"the run's directory under runs_dir={self.runs_dir!r}")
        if self.eval.temperature != 1.0 and self.model.action_head != "categorical":
            raise ValueError(f"eval.temperature={self.eval.temperature} applies to the categorical action head "
                             f"only, not model.action_head={self.model.action_head!r}")

    @property
    def run_dir(self) -> Path:
        return Path(self.runs_dir) / self.name

    @property
    def num_trials(self) -> int:
        return self.eval.num_trials or self.sampler.num_trajectories

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ExperimentConfig:
        """The config ``to_json`` wrote; ValueError for text that is not one (damaged, or another program's)."""
        try:
            raw = json.loads(text)
            sampler = dict(raw["sampler"])
            if "seed" not in {f.name for f in dataclasses.fields(SamplerConfig)}:
                sampler.pop("seed", None)  # configs saved before the batch stream's seed became train.seed alone
            return cls(name=raw["name"], runs_dir=raw["runs_dir"], data=DataConfig(**raw["data"]),
                       sampler=SamplerConfig(**sampler), model=ModelConfig(**raw["model"]),
                       optim=OptimConfig(**raw["optim"]), train=TrainConfig(**raw["train"]),
                       eval=EvalConfig(**raw["eval"]))
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a config written by ringrl ({type(error).__name__}: {error})") from None

    def replace(self, **sections) -> ExperimentConfig:
        """A copy with sections replaced: ``section=dict(field=value, ...)`` or ``section=value``."""
        updates = {}
        for section, value in sections.items():
            current = getattr(self, section)
            updates[section] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        return dataclasses.replace(self, **updates)


def differences(a: ExperimentConfig, b: ExperimentConfig) -> list[str]:
    """``"section.field: old -> new"`` for every field where two configs differ."""
    return _differences(json.loads(a.to_json()), json.loads(b.to_json()))


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.append(f"{prefix}{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out
