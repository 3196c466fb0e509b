"""Benchmark: the per-device memory of a preset's own train step, on the ring and on one device.

XLA's compiled memory analysis (deterministic; nothing runs) of the train step exactly as
``experiments.train`` builds it for a preset, three ways:

1. ``ring``: the preset's context, ring attention over all ``--devices`` simulated devices;
2. ``one_device_eighth``: 1/N of the context (k / N episodes) with blockwise attention on one device;
3. ``one_device_full``: the whole context with blockwise attention on one device.

The ring holds N times the context of one device in about the same memory when (1) ≈ (2).

    python -m experiments.bench.preset_memory --preset dark_room_long     # 5,120 tokens over 8 devices
"""

from __future__ import annotations

from experiments.bench import harness

NAME = "preset_memory"


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--preset", default="dark_room_long")
    return p


def compiled_step(config, devices):
    """``config``'s train step as ``experiments.train`` builds it, on ``devices``, with a batch of zeros.

    Returns:
      (jitted step, placed state, placed batch).
    """
    import jax
    import numpy as np

    import envs
    from agent.model import AgenticTransformer
    from agent.train import batch_shardings, make_train_step
    from datasets import NormStats
    from experiments import model as model_lib
    from experiments.run import DataSummary
    from ring import make_mesh

    spec = envs.task_spec(config.data.task)
    data = DataSummary(obs_dim=spec.obs_dim, action_dim=spec.action_dim, longest_episode=spec.episode_length,
                       episodes=1, median_return=0.0, max_return=1.0, mean_return=0.0, discrete=spec.discrete)
    mean, std = NormStats(np.zeros(spec.obs_dim, np.float32), np.ones(spec.obs_dim, np.float32)).as_tuples()
    mesh = make_mesh(config.train.mesh, devices)
    model = AgenticTransformer(config.model, action_dim=model_lib.action_size(config, data), obs_mean=mean,
                               obs_std=std, mesh=mesh if config.model.attention == "ring" else None)
    step, placed = make_train_step(model, config.optim, model_lib.initial_state(config, model, data), mesh)
    example = model_lib.example_inputs(config, data)
    example["loss_mask"] = np.ones(example["timesteps"].shape, bool)
    example["labels"] = example["actions"]
    shardings = batch_shardings(mesh, model.batch_axes, model.sequence_axis)
    return step, placed, {k: jax.device_put(v, shardings[k]) for k, v in example.items()}


def timed_step(config, devices):
    """``config``'s train step on ``devices``, compiled once: (its per-device temp bytes, a call that runs one
    step on the batch of zeros, advancing the state, and returns the loss), for benchmarks that time it."""
    step, state, batch = compiled_step(config, devices)
    compiled = step.lower(state, batch).compile()
    holder = {"state": state}

    def call():
        holder["state"], metrics = compiled(holder["state"], batch)
        return metrics["loss"]

    return int(compiled.memory_analysis().temp_size_in_bytes), call


def step_memory(config, devices) -> dict:
    """Per-device bytes of the compiled train step of ``config`` on ``devices`` (temp, arguments, outputs)."""
    step, state, batch = compiled_step(config, devices)
    analysis = step.lower(state, batch).compile().memory_analysis()
    return {"temp_bytes": int(analysis.temp_size_in_bytes), "argument_bytes": int(analysis.argument_size_in_bytes),
            "output_bytes": int(analysis.output_size_in_bytes),
            "tokens": config.sampler.max_steps * config.model.tokens_per_step, "devices": len(devices)}


def main(argv=None) -> dict:
    run = harness.start(NAME, _parser(), argv, tiny=dict(preset="dark_room_long_tiny"))
    from experiments.presets import get_preset

    config = get_preset(run.args.preset)
    n = len(run.devices)
    ring = config.replace(model={"attention": "ring"}, train={"mesh": "sp=-1"})
    # One device holds 1/n of the context (of the episodes, where they divide), with the same chunks.
    short = config.replace(sampler={"num_trajectories": max(config.sampler.num_trajectories // n, 1),
                                    "max_steps": config.sampler.max_steps // n},
                           model={"attention": "blockwise"}, train={"mesh": "dp=-1"})
    whole = config.replace(model={"attention": "blockwise"}, train={"mesh": "dp=-1"})
    rows = {"ring": step_memory(ring, run.devices), "one_device_eighth": step_memory(short, run.devices[:1]),
            "one_device_full": step_memory(whole, run.devices[:1])}
    mib = 2**20
    print(f"{run.args.preset}: train step per device (XLA memory analysis; {n} simulated devices)")
    print("| setting | tokens | devices | temp MiB | arguments MiB |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['tokens']} | {row['devices']} | {row['temp_bytes'] / mib:.1f} | "
              f"{row['argument_bytes'] / mib:.1f} |")
    ratio = rows["ring"]["temp_bytes"] / rows["one_device_eighth"]["temp_bytes"]
    print(f"ring at {rows['ring']['tokens']} tokens over one device at {rows['one_device_eighth']['tokens']}: "
          f"{ratio:.2f}x temp memory per device")
    return run.write(memory=rows, ring_over_one_device_eighth=ratio)


if __name__ == "__main__":
    main()
