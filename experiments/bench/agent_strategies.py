"""Benchmark: the agent's own train step on each context-parallel strategy (ModelConfig.strategy).

For each preset cell, the train step exactly as ``experiments.train`` builds it, with ring attention over
all ``--devices`` simulated devices and each strategy: per-device temp memory (XLA's memory analysis,
deterministic) and the median time of a step (noisy on shared cores: compare within a cell).

    python -m experiments.bench.agent_strategies        # nav_hidden k = 32 (640 tokens), dark_room_long (5,120)
"""

from __future__ import annotations

from experiments.bench import harness

NAME = "agent_strategies"
STRATEGIES = ("ring", "allgather", "ulysses", "auto")
# name -> (preset, overrides): the in-context cells whose contexts the ring holds.
CELLS = {
    "nav_hidden_k32": ("nav_hidden", {"sampler": {"num_trajectories": 32, "max_steps": 640, "batch_size": 8},
                                      "model": {"max_trajectories": 32, "query_chunk_size": 40,
                                                "key_chunk_size": 40, "ffn_chunk_size": 40}}),
    "dark_room_long": ("dark_room_long", {}),
}


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--repeats", type=int, default=3)
    return p


def measure(config, devices, repeats: int) -> dict:
    """Per-device temp memory and median step time of ``config``'s train step on ``devices``."""
    from experiments.bench.preset_memory import timed_step

    temp_bytes, call = timed_step(config, devices)
    seconds = harness.median_seconds(call, repeats)
    return {"temp_bytes": temp_bytes, "step_seconds": seconds,
            "tokens": config.sampler.batch_size * config.sampler.max_steps * config.model.tokens_per_step}


def main(argv=None) -> dict:
    run = harness.start(NAME, _parser(), argv, tiny=dict(cells=["dark_room_long"], strategies=["ring", "allgather"],
                                                          repeats=1))
    from experiments.presets import get_preset

    rows = []
    for cell in run.args.cells:
        preset, overrides = CELLS[cell]
        base = get_preset(f"{preset}_tiny" if run.args.tiny else preset).replace(**overrides)
        base = base.replace(model={"attention": "ring"}, train={"mesh": "sp=-1"})
        for strategy in run.args.strategies:
            try:
                row = measure(base.replace(model={"strategy": strategy}), run.devices, run.args.repeats)
            except ValueError as error:  # e.g. Ulysses with fewer heads than devices: the strategy's own refusal
                rows.append({"cell": cell, "strategy": strategy, "refused": str(error)})
                print(f"{cell:16s} {strategy:10s} refused: {error}", flush=True)
                continue
            rows.append({"cell": cell, "strategy": strategy, **row})
            print(f"{cell:16s} {strategy:10s} {row['tokens']:7d} tokens a batch  {row['step_seconds'] * 1e3:8.1f} ms"
                  f"  {row['temp_bytes'] / 2**20:7.1f} MiB temp per device", flush=True)
    return run.write(rows=rows)


if __name__ == "__main__":
    main()
