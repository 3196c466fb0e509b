"""Training on your own file: presets that inherit nothing task-specific, the evaluation task taken from the
data where it says so, and a refusal to run another preset's task settings on other data.

    python -m experiments.train --preset d4rl_file --data.root my.hdf5 --data.task Hopper-v4
    python -m experiments.train --preset minari_file --data.root ~/.minari/datasets/mujoco/hopper/medium-v0

A Minari dataset names its environment (``metadata.json``'s ``env_spec``), so ``data.task`` is taken from
it; a D4RL file does not, so it is asked for. Any gymnasium MuJoCo id is a task (``envs.task_spec``).
"""

from __future__ import annotations

import dataclasses
import sys

from agent.config import OptimConfig, preset as model_preset
from datasets import SamplerConfig
from experiments.config import DataConfig, EvalConfig, ExperimentConfig, TrainConfig

FROM_DATA = "from_data"  # data.task of the own-data presets: the task the data names (Minari), else asked for
# The fields a preset fills in for its own task and data: wrong for someone else's file.
TASK_FIELDS = ("data.task", "data.action_repeat", "data.domain", "data.algo", "data.relabel", "data.make",
               "data.observe_task", "data.labels", "data.download_hint", "eval.target_return")


def own_data_config(format: str) -> ExperimentConfig:
    """The ``<format>_file`` preset: Decision-Transformer-style training on a user's D4RL file or Minari dataset
    (one episode a context, 20-step windows), with no task, action repeat 1, no relabelling, no making."""
    return ExperimentConfig(
        name=f"{format}_file",
        data=DataConfig(format=format, root="", domain="", algo="", task=FROM_DATA, action_repeat=1),
        sampler=SamplerConfig(num_trajectories=1, max_steps=20, window="random", batch_size=64, prefetch=2),
        model=model_preset("paper", max_timestep=1000, max_trajectories=4, return_scale=1e-3),
        optim=OptimConfig(learning_rate=1e-4, warmup_steps=10_000, total_steps=100_000),
        train=TrainConfig(steps=100_000, checkpoint_every=5000, eval_every=10_000),
        eval=EvalConfig(num_envs=10, num_trials=1, context_steps=20),
    )


def _field(config: ExperimentConfig, dotted: str):
    section, name = dotted.split(".")
    return getattr(getattr(config, section), name)


def inherited_task_fields(preset: ExperimentConfig, config: ExperimentConfig) -> list[str]:
    """``"field=value"`` for every task-specific field ``config`` keeps from ``preset`` (left as the preset set
    it) where the preset set it for its own task (other than the neutral own-data preset's value), when
    ``config``'s data is other data than the preset's (another ``data.format`` or ``data.root``); [] otherwise."""
    if (config.data.format, config.data.root) == (preset.data.format, preset.data.root):
        return []
    neutral = own_data_config(config.data.format)
    return [f"{name}={_field(config, name)!r}" for name in TASK_FIELDS
            if _field(config, name) == _field(preset, name) != _field(neutral, name)]


def check_inherited(preset_name: str, preset: ExperimentConfig, config: ExperimentConfig) -> None:
    """Refuses other data (``data.format`` changed) run under another preset's task settings, naming each one
    inherited; warns where only ``data.root`` changed (a preset's own data may lie elsewhere).

    Raises:
      ValueError: naming every inherited field and the own-data presets.
    """
    inherited = inherited_task_fields(preset, config)
    if not inherited:
        return
    what = (f"--data.format {config.data.format} --data.root {config.data.root or '<unset>'} is other data than "
            f"preset {preset_name!r}'s, which still sets {', '.join(inherited)} for its own task")
    fix = (f"use --preset {config.data.format}_file (nothing task-specific), or set each of these on the "
           "command line")
    if config.data.format != preset.data.format:
        raise ValueError(f"{what}; {fix}")
    print(f"WARNING: {what}; if that is not the preset's own data, {fix}", file=sys.stderr)


def resolve_task(config: ExperimentConfig) -> ExperimentConfig:
    """``config`` with ``data.task`` = ``FROM_DATA`` replaced by the task its data names (a Minari dataset's
    ``env_spec``); ``config`` itself otherwise.

    Raises:
      ValueError: naming data.root or data.task where the data names no task, or one that ``envs`` lacks.
    """
    data = config.data
    if data.task != FROM_DATA:
        return config
    if not data.root:
        raise ValueError(f"data.root: preset {config.name!r} reads your own data; pass --data.root (a D4RL .hdf5 "
                         "file or a Minari dataset's directory or id)")
    found = None
    if data.format == "minari":
        from datasets import minari

        found = minari.env_id(data.root)
    if found is None:
        where = "its metadata.json records no env_spec" if data.format == "minari" else "a D4RL file names none"
        raise ValueError(f"data.task: the data at {data.root} names no task ({where}); pass --data.task, e.g. "
                         "hopper-v4 or any gymnasium MuJoCo id such as Ant-v4")
    import envs

    try:
        task = envs.canonical_name(found)
    except ValueError as error:
        raise ValueError(f"data.task: the data at {data.root} was collected in {found!r}, which is not a task "
                         f"here ({error}); pass --data.task") from None
    return dataclasses.replace(config, data=dataclasses.replace(data, task=task))
