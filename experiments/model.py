"""From a config and what a run keeps of its data to the model, its mesh and a fresh TrainState."""

from __future__ import annotations

import numpy as np

from agent.tokens import STEP_KEYS
from datasets import NormStats
from experiments.config import ExperimentConfig


def check_fits(config: ExperimentConfig, mesh, data) -> None:
    """Errors that name the field to change, before anything is compiled."""
    batch_devices = mesh.shape["dp"] * mesh.shape["fsdp"]
    if config.sampler.batch_size % batch_devices:
        raise ValueError(f"sampler.batch_size={config.sampler.batch_size} must divide over the {batch_devices} "
                         f"devices of dp x fsdp in train.mesh={config.train.mesh!r}")
    ring = mesh.shape["sp"] if config.model.attention == "ring" else 1
    steps = config.sampler.max_steps
    if config.model.fitting_steps(steps, ring) != steps:
        raise ValueError(f"a context of {steps * config.model.tokens_per_step} tokens does not divide over sp={ring} "
                         f"(layout {config.model.layout!r}) into attention chunks of {config.model.query_chunk_size}; "
                         f"sampler.max_steps={config.model.fitting_steps(steps, ring)} would")
    if data.longest_episode > config.model.max_timestep:
        raise ValueError(f"episodes of {data.longest_episode} steps exceed model.max_timestep={config.model.max_timestep}")


def action_size(config: ExperimentConfig, data) -> int:
    """What the model's ``action_dim`` is: the action vector's size, or for discrete actions the number of
    choices of the evaluation task (``envs.TaskSpec.num_actions``), with the categorical head."""
    import envs

    discrete = getattr(data, "discrete", False)
    categorical = config.model.action_head == "categorical"
    if discrete != categorical:
        raise ValueError(f"model.action_head={config.model.action_head!r} does not fit the data's "
                         f"{'discrete' if discrete else 'continuous'} actions: discrete actions need "
                         "'categorical', continuous ones 'tanh', 'gaussian' or 'mixture'")
    if not discrete:
        return data.action_dim
    spec = envs.task_spec(config.data.task)
    if not spec.discrete:
        raise ValueError(f"data.task={config.data.task!r} has continuous actions but the data's are discrete")
    return spec.num_actions


def build_model(config: ExperimentConfig, data, stats: NormStats):
    """The AgenticTransformer (with the dataset's observation statistics) and the mesh.

    Args:
      config: the run's config.
      data: ``experiments.run.DataSummary``.
      stats: the observation statistics.

    Returns:
      (model, mesh).
    """
    from agent.model import AgenticTransformer
    from ring import make_mesh

    mesh = make_mesh(config.train.mesh)
    check_fits(config, mesh, data)
    if stats.obs_mean.shape != (data.obs_dim,):
        raise ValueError(f"normalisation statistics of size {stats.obs_mean.shape[0]} do not match observations "
                         f"of size {data.obs_dim}")
    mean, std = stats.as_tuples()
    model = AgenticTransformer(config.model, action_dim=action_size(config, data), obs_mean=mean, obs_std=std,
                               mesh=mesh if config.model.attention == "ring" else None)
    return model, mesh


def example_inputs(config: ExperimentConfig, data) -> dict:
    """Zeros of a batch's shapes (initialisation reads only shapes)."""
    b, s = config.sampler.batch_size, config.sampler.max_steps
    action = (b, s) if getattr(data, "discrete", False) else (b, s, data.action_dim)
    shapes = {"observations": (b, s, data.obs_dim), "actions": action, "rewards": (b, s),
              "returns_to_go": (b, s), "prev_actions": action, "prev_rewards": (b, s),
              "timesteps": (b, s), "trajectory_index": (b, s)}
    ints = ("timesteps", "trajectory_index") + (("actions", "prev_actions") if len(action) == 2 else ())
    return {k: np.zeros(shapes[k], np.int32 if k in ints else np.float32) for k in STEP_KEYS}


def initial_state(config: ExperimentConfig, model, data):
    """A fresh TrainState from ``train.seed``."""
    from agent.train import init_state

    return init_state(model, config.optim, example_inputs(config, data), config.train.seed)
