"""Experiment configuration: frozen, typed dataclasses, presets by name, command-line overrides with tyro.

    python -m experiments.train                               # the "default" preset
    python -m experiments.train --preset tiny --train.steps 10
    python -m experiments.train --preset walker_walk --data.root ~/exorl

Every preset has a ``tiny`` sibling (``<name>_tiny``) that runs in seconds on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from agent.config import ModelConfig, preset as model_preset
from agent.train import OptimConfig
from datasets import SamplerConfig

DEFAULT_DATA = str(Path(__file__).resolve().parent / "data" / "default")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the episodes come from and which task they are evaluated on.

    Attributes:
      format: "exorl" (root/domain/algo/buffer/*.npz), "d4rl" (an HDF5 file) or "minari" (a dataset id).
      root: the ExoRL root directory, the D4RL file, or the Minari dataset id.
      domain, algo: the ExoRL buffer to read.
      task: the envs task the agent is evaluated on (and, with ``relabel``, the reward relabelled for).
      relabel: recompute rewards for ``task`` from the stored physics states (ExoRL).
      max_episodes: read at most this many episodes.
      action_repeat: the action repeat the data was collected with; evaluation uses the same.
      download_hint: how to get the data (what to download and where), printed when ``root`` is missing.
    """

    format: str = "exorl"
    root: str = DEFAULT_DATA
    domain: str = "cartpole"
    algo: str = "sac"
    task: str = "cartpole_swingup"
    relabel: bool = False
    max_episodes: int | None = None
    action_repeat: int = 4
    download_hint: str = ""

    def __post_init__(self):
        if self.format not in ("exorl", "d4rl", "minari"):
            raise ValueError(f"DataConfig.format={self.format!r} is unknown; expected exorl, d4rl or minari")


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


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Evaluation by in-context rollouts.

    Attributes:
      num_trials: consecutive trials per environment, each conditioned on the earlier ones
        (None: as many as trajectories in the training context).
      num_envs: environments run together, with one batched model call per step.
      target_return: the return asked for (None: the dataset's best episode return).
      seed: environment seed (environment i gets seed + i).
      reset_context_each_trial: condition every trial only on itself (the BC and DT baselines).
      context_steps: condition on only the last this many steps (DT's window; recomputed, no cache).
      video: record the first environment to an MP4 in the run directory.
    """

    num_trials: int | None = None
    num_envs: int = 8
    target_return: float | None = None
    seed: int = 10_000
    reset_context_each_trial: bool = False
    context_steps: int | None = None
    video: bool = False


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
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
        raw = json.loads(text)
        return cls(name=raw["name"], runs_dir=raw["runs_dir"], data=DataConfig(**raw["data"]),
                   sampler=SamplerConfig(**raw["sampler"]), model=ModelConfig(**raw["model"]),
                   optim=OptimConfig(**raw["optim"]), train=TrainConfig(**raw["train"]), eval=EvalConfig(**raw["eval"]))


def _replace(config: ExperimentConfig, **sections) -> ExperimentConfig:
    """``sections`` maps a section name to its field overrides (a dict) or to a plain value."""
    updates = {}
    for section, value in sections.items():
        current = getattr(config, section)
        updates[section] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **updates)


def _tiny(config: ExperimentConfig) -> ExperimentConfig:
    """The laptop-sized sibling: a few steps of a tiny model on a short context."""
    return _replace(config, name=f"{config.name}_tiny",
                    sampler={"num_trajectories": 2, "max_steps": 512 if config.data.task.startswith("cartpole")
                             else 64, "batch_size": 2, "prefetch": 1},
                    # Ring attention over however many devices there are (one on a laptop, 8 in the tests).
                    model=model_preset("tiny", max_timestep=config.model.max_timestep, max_trajectories=16,
                                       attention="ring"),
                    optim={"total_steps": 20, "warmup_steps": 2},
                    train={"steps": 20, "checkpoint_every": 10, "log_every": 5, "mesh": "sp=-1"},
                    eval={"num_envs": 2, "num_trials": 2})


def _exorl(task: str, domain: str, episode_length: int) -> ExperimentConfig:
    """The paper's Table 5 setting on a user's ExoRL download (proto data, relabelled, 1000-step episodes)."""
    return ExperimentConfig(
        name=task,
        data=DataConfig(format="exorl", root=str(Path("~/exorl").expanduser()), domain=domain, algo="proto",
                        task=task, relabel=True, action_repeat=1,
                        download_hint=f"Download ExoRL's {domain}/proto buffer, from the ExoRL repository's download script, "
                                      f"laid out as <root>/{domain}/proto/buffer/*.npz"),
        sampler=SamplerConfig(num_trajectories=4, max_steps=4 * episode_length, batch_size=8, prefetch=2),
        model=model_preset("paper", max_timestep=episode_length, max_trajectories=128),
        optim=OptimConfig(learning_rate=1e-4, warmup_steps=1000, total_steps=100_000),
        train=TrainConfig(steps=100_000, checkpoint_every=5000, eval_every=10_000),
        eval=EvalConfig(num_envs=10),
    )


def _d4rl(env: str, dataset: str) -> ExperimentConfig:
    """Decision-Transformer-style D4RL locomotion on a user's HDF5 file (gymnasium v4 evaluation)."""
    return ExperimentConfig(
        name=f"{env}-{dataset}",
        data=DataConfig(format="d4rl", root=str(Path(f"~/.d4rl/datasets/{env}_{dataset}-v2.hdf5").expanduser()),
                        task=env, action_repeat=1,
                        download_hint=f"Download the D4RL file {env}_{dataset}-v2.hdf5 (D4RL's dataset download), "
                                      "at the path given by --data.root"),
        sampler=SamplerConfig(num_trajectories=1, max_steps=20, window="random", batch_size=64, prefetch=2),
        model=model_preset("paper", max_timestep=1000, max_trajectories=4, return_scale=1e-3),
        optim=OptimConfig(learning_rate=1e-4, warmup_steps=10_000, total_steps=100_000),
        train=TrainConfig(steps=100_000, checkpoint_every=5000, eval_every=10_000),
        eval=EvalConfig(num_envs=10, num_trials=1, context_steps=20),
    )


def _walker_mix() -> ExperimentConfig:
    """The second collected dataset (experiments/data/README.md): walker_walk, SAC with exploration mixed in."""
    default = ExperimentConfig()
    return _replace(default, name="walker_mix",
                    data=DataConfig(root="runs/data/walker_walk_sac_mix", domain="walker", algo="sac",
                                    task="walker_walk", action_repeat=2,
                                    download_hint="Make it with experiments.collect: the command is in "
                                                  "experiments/data/README.md"),
                    sampler={"max_steps": 2048},
                    model={"max_timestep": 512})


def _presets() -> dict[str, ExperimentConfig]:
    base = {"default": ExperimentConfig(), "walker_mix": _walker_mix()}
    for task, domain, length in (("walker_stand", "walker", 1000), ("walker_run", "walker", 1000),
                                 ("walker_walk", "walker", 1000), ("cheetah_run", "cheetah", 1000),
                                 ("jaco_reach_top_left", "jaco", 250), ("cartpole_swingup", "cartpole", 1000)):
        base[task] = _exorl(task, domain, length)
    for env in ("halfcheetah", "hopper", "walker2d"):
        for dataset in ("medium", "medium-replay", "medium-expert"):
            config = _d4rl(env, dataset)
            base[config.name] = config
    presets = dict(base)
    for name, config in base.items():
        presets[f"{name}_tiny"] = _tiny(config)
    presets["tiny"] = presets["default_tiny"]
    return presets


PRESETS = _presets()


def get_preset(name: str) -> ExperimentConfig:
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"experiment preset {name!r} is unknown{hint} Known presets: {sorted(PRESETS)}")
    return PRESETS[name]


def parse_args(argv=None, *, description: str = "") -> tuple[ExperimentConfig, dict]:
    """``--preset NAME`` picks the base config; every other flag overrides one of its fields (tyro).

    Returns:
      (config, extra flags of the calling command that are not config fields, e.g. ``force``).
    """
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    name = "default"
    if "--preset" in argv:
        i = argv.index("--preset")
        if i + 1 >= len(argv):
            raise ValueError("--preset needs a name")
        name = argv[i + 1]
        del argv[i:i + 2]
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    config = tyro.cli(ExperimentConfig, args=argv, default=get_preset(name), description=description)
    return config, {"force": force, "preset": name}
