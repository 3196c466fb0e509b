"""Presets by name: each one's description is the command that runs it.

Every preset has a ``<name>_tiny`` sibling that runs in seconds on a laptop CPU; ``tiny`` is
``cartpole_sac_tiny``. ``DEFAULT_PRESET`` is what a command without ``--preset`` runs: the main job.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from agent.config import OptimConfig, preset as model_preset
from datasets import SamplerConfig
from experiments.config import DataConfig, EvalConfig, ExperimentConfig, TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A named config, the command that runs it, and reference lines measured for it elsewhere.

    Attributes:
      references: ``(label, return)`` pairs the main job prints beside its own per-trial returns: other
        methods measured with the same code, data and compute, the label saying where (results folder, seeds).
    """

    config: ExperimentConfig
    command: str
    references: tuple[tuple[str, float], ...] = ()


def _tiny(config: ExperimentConfig) -> ExperimentConfig:
    """The laptop-sized sibling: a few steps of a tiny model on a short context."""
    if config.data.make != "none":  # generated data: a few short histories of its own
        config = config.replace(data={"root": f"{config.data.root}_tiny", "histories": 4, "episodes_per_history": 4})
    return config.replace(name=f"{config.name}_tiny",
                          sampler={"num_trajectories": 2, "max_steps": 512 if config.data.task.startswith("cartpole")
                                   else 64, "batch_size": 2, "prefetch": 1},
                          # Ring attention over however many devices there are (one on a laptop, 8 in the tests).
                          model=model_preset("tiny", max_timestep=config.model.max_timestep, max_trajectories=16,
                                             attention="ring", action_head=config.model.action_head,
                                             use_returns=config.model.use_returns,
                                             return_scale=config.model.return_scale),
                          optim={"total_steps": 20, "warmup_steps": 2},
                          train={"steps": 20, "checkpoint_every": 10, "log_every": 5, "mesh": "sp=-1"},
                          eval={"num_envs": 2, "num_trials": 2})


def _exorl(task: str, domain: str, episode_length: int) -> ExperimentConfig:
    """The paper's Table 5 setting on a user's ExoRL download (proto data, relabelled, 1000-step episodes)."""
    return ExperimentConfig(
        name=task,
        data=DataConfig(format="exorl", root=str(Path("~/exorl").expanduser()), domain=domain, algo="proto",
                        task=task, relabel=True, action_repeat=1,
                        download_hint=f"Download ExoRL's {domain}/proto buffer, from the ExoRL repository's download "
                                      f"script, laid out as <root>/{domain}/proto/buffer/*.npz"),
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
    return ExperimentConfig().replace(
        name="walker_mix",
        data=DataConfig(root="runs/data/walker_walk_sac_mix", domain="walker", algo="sac", task="walker_walk",
                        action_repeat=2,
                        download_hint="Make it with experiments.collect: the command is in experiments/data/README.md"),
        sampler={"max_steps": 2048},
        model={"max_timestep": 512})


def _hidden(name: str, task: str, domain: str, episode_length: int, histories: int, *, trials: int,
            action_repeat: int = 1, num_envs: int = 256, batch_size: int = 16, steps: int = 3000,
            return_scale: float = 0.1, chunk: int | None = None) -> ExperimentConfig:
    """In-context RL on a hidden-task family: histories of a systematic searcher (distinct guesses until a
    trial is rewarded, then back to the found goal), chains drawn within one history, a mixture head
    sampled when acting, and evaluation over ``trials`` trials on tasks drawn per environment.
    ``episode_length`` counts agent steps (after the action repeat); ``return_scale`` brings the best
    return to about 1.5; ``chunk`` (attention and feed-forward) must divide the context's tokens."""
    chunks = {} if chunk is None else dict(query_chunk_size=chunk, key_chunk_size=chunk, ffn_chunk_size=chunk)
    return ExperimentConfig(
        name=name,
        data=DataConfig(format="exorl", root=f"runs/data/{name}", domain=domain, algo="searcher", task=task,
                        action_repeat=action_repeat, make="searcher", histories=histories,
                        episodes_per_history=trials),
        sampler=SamplerConfig(num_trajectories=trials, max_steps=trials * episode_length, batch_size=batch_size,
                              group_by="history", prefetch=2),
        model=model_preset("small", embed_dim=64, num_heads=2, num_kv_heads=2, remat_policy="none",
                           max_timestep=episode_length, max_trajectories=32, action_head="mixture",
                           num_components=8, return_scale=return_scale, **chunks),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=100, total_steps=steps, clip_norm=1.0),
        train=TrainConfig(steps=steps, checkpoint_every=500),
        eval=EvalConfig(num_envs=num_envs, num_trials=trials, sample=True, random_floor=True),
    )


def _grid(name: str, task: str, domain: str, episode_length: int, histories: int, *, trials: int,
          make: str = "searcher", method: str = "ad", steps: int = 3000, eps_min: float = 0.0) -> ExperimentConfig:
    """In-context RL on a hidden-task grid (Dark Room, Key-to-Door): ``histories`` learning histories of
    ``trials`` episodes (``make``), one token per step, a categorical head acting greedily (its most likely
    action: the searcher's data is 10% random actions, which sampling would imitate), evaluated over
    ``trials`` trials on the held-out tasks. ``method="ad"`` reads a history in its own order without
    returns (Algorithm Distillation); ``"at"`` sorts a history's episodes by return and conditions on the
    best (the chain of hindsight)."""
    ad = method == "ad"
    return ExperimentConfig(
        name=name,
        data=DataConfig(format="exorl", root=f"runs/data/{name}_{make}", domain=domain, algo=make, task=task,
                        action_repeat=1, make=make, histories=histories, episodes_per_history=trials,
                        eps_min=eps_min),
        sampler=SamplerConfig(num_trajectories=trials, max_steps=trials * episode_length, batch_size=16,
                              group_by="history", order="history" if ad else "return", prefetch=2),
        model=model_preset("small", embed_dim=64, num_heads=2, num_kv_heads=2, remat_policy="none",
                           max_timestep=episode_length, max_trajectories=32, action_head="categorical",
                           use_returns=not ad, return_scale=1.0 / episode_length, query_chunk_size=episode_length * 4,
                           key_chunk_size=episode_length * 4, ffn_chunk_size=episode_length * 4),
        optim=OptimConfig(learning_rate=1e-3, warmup_steps=100, total_steps=steps, clip_norm=1.0),
        train=TrainConfig(steps=steps, checkpoint_every=500),
        eval=EvalConfig(num_envs=64, num_trials=trials, sample=False, random_floor=True),
    )


def _build() -> dict[str, Preset]:
    train = "python -m experiments.train --preset"
    base = {
        "cartpole_sac": Preset(ExperimentConfig().replace(name="cartpole_sac"),
                               f"{train} cartpole_sac   (the built-in cartpole_swingup SAC learning history)"),
        "walker_mix": Preset(_walker_mix(), f"{train} walker_mix   (after collecting it: experiments/data/README.md)"),
        "nav_hidden": Preset(_hidden("nav_hidden", "point_nav_hidden_heldout", "point_nav", 20, 600, trials=12),
                             f"{train} nav_hidden   (2-D point, hidden goals on a semicircle, evaluated on "
                             "held-out ones; makes its data)"),
        # The maze's 1,000 simulator steps held 10 at a time: 100-step episodes, 8 trials (4 targets to
        # search, then exploit) in 800 tokens (4 chunks of 200), 8 contexts a batch (1.7x the tokens of
        # nav_hidden's 16 x 240); returns reach about 840 (rewards summed over the repeat); dm_control steps
        # one environment at a time, hence 64 of them.
        "maze_hidden": Preset(_hidden("maze_hidden", "point_mass_maze_reach_hidden", "point_mass_maze", 100, 200,
                                      trials=8, action_repeat=10, num_envs=64, batch_size=8, steps=1500,
                                      return_scale=0.002, chunk=200),
                              f"{train} maze_hidden   (one of the maze's four targets hidden; makes its data)"),
    }
    base["dark_room"] = Preset(_grid("dark_room", "dark_room_hidden_heldout", "dark_room", 20, 650, trials=12),
                               f"{train} dark_room   (the main job: Dark Room, AD on searcher histories, "
                               "evaluated on the 16 held-out goals; makes its data)",
                               # experiments/results/icrl_benchmarks: each trial alone, the same environments.
                               references=(("DT, same data and compute (icrl_benchmarks, seed 0)", 1.125),
                                           ("BC-10%, same data and compute (icrl_benchmarks, seed 0)", 0.0)))
    base["key_to_door"] = Preset(_grid("key_to_door", "dark_key_to_door_hidden_heldout", "dark_key_to_door", 50, 1000,
                                       trials=8),
                                 f"{train} key_to_door   (Dark Key-to-Door, 50 held-out pairs; searcher, AD)")
    # ADε's recipe: the optimal policy with random actions at a rate annealed from 1 to 0.45 over 90% of each
    # history; at 0.45 the best policy in the data earns 45% of the oracle's return (7.46 of 16.58). At 0.4
    # it earns 8.56, and twice that (ADε's claim) would be above the oracle.
    base["dark_room_ad_eps"] = Preset(_grid("dark_room_ad_eps", "dark_room_hidden_heldout", "dark_room", 20, 650,
                                            trials=12, make="ad_eps", eps_min=0.45),
                                      f"{train} dark_room_ad_eps   (Dark Room on ADε's noise-annealed histories, AD)")
    # A context that needs the ring: AD over whole Q-learning histories of 256 Dark Room episodes (5,120
    # tokens, one per step), sharded over every device; 16 pieces of 320 tokens in the zigzag layout.
    long = _grid("dark_room_long", "dark_room_hidden_heldout", "dark_room", 20, 128, trials=256, make="q_learning",
                 steps=600)
    base["dark_room_long"] = Preset(
        long.replace(sampler={"batch_size": 2},
                     model={"attention": "ring", "query_chunk_size": 320, "key_chunk_size": 320,
                            "ffn_chunk_size": 320, "max_trajectories": 256},
                     train={"mesh": "sp=-1", "checkpoint_every": 200},
                     # A learning history explores as its learner did: sampled, as AD acts (greedy scored 0.00).
                     eval={"num_envs": 16, "sample": True}),
        f"{train} dark_room_long   (AD over 256-episode Q-learning histories: 5,120 tokens on the ring)")
    # The maze from task-agnostic exploration relabelled for each of its four targets (ExoRL's recipe):
    # chains of one target's copies, sorted by return, as the searcher preset's otherwise.
    maze = base["maze_hidden"].config
    base["maze_explore"] = Preset(
        maze.replace(name="maze_explore",
                     data={"root": "runs/data/maze_explore", "algo": "explorer_per_task", "make": "explorer_per_task"},
                     sampler={"group_by": "task"}),
        f"{train} maze_explore   (maze exploration relabelled for every target; makes its data)")
    for task, domain, length in (("walker_stand", "walker", 1000), ("walker_run", "walker", 1000),
                                 ("walker_walk", "walker", 1000), ("cheetah_run", "cheetah", 1000),
                                 ("jaco_reach_top_left", "jaco", 250), ("cartpole_swingup", "cartpole", 1000)):
        base[task] = Preset(_exorl(task, domain, length), f"{train} {task} --data.root ~/exorl")
    for env in ("halfcheetah", "hopper", "walker2d"):
        for dataset in ("medium", "medium-replay", "medium-expert"):
            config = _d4rl(env, dataset)
            base[config.name] = Preset(config, f"{train} {config.name} --data.root "
                                               f"~/.d4rl/datasets/{env}_{dataset}-v2.hdf5")
    # Your own file (experiments/own_data.py): nothing task-specific; the task from the data or --data.task.
    from experiments.own_data import own_data_config

    base["d4rl_file"] = Preset(own_data_config("d4rl"), f"{train} d4rl_file --data.root my.hdf5 --data.task Ant-v4")
    base["minari_file"] = Preset(own_data_config("minari"), f"{train} minari_file --data.root <dataset directory>   "
                                                            "(its task from its env_spec)")
    presets = dict(base)
    for name, preset in base.items():
        presets[f"{name}_tiny"] = Preset(_tiny(preset.config), f"{train} {name}_tiny   (seconds)")
    presets["tiny"] = Preset(presets["cartpole_sac_tiny"].config, f"{train} tiny   (cartpole_sac_tiny: seconds)")
    return presets


PRESETS: dict[str, Preset] = _build()
DEFAULT_PRESET = "dark_room"


def get_preset(name: str) -> ExperimentConfig:
    """The config of preset ``name``; an unknown name lists the close ones and every known one."""
    if name not in PRESETS:
        import difflib

        close = difflib.get_close_matches(name, PRESETS, n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise ValueError(f"experiment preset {name!r} is unknown{hint or '.'} Known presets: {sorted(PRESETS)}")
    return PRESETS[name].config
