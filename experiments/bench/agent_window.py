"""Benchmark: the agent's train step with windowed layers against full attention (ModelConfig.window).

For each in-context cell, the train step exactly as ``experiments.train`` builds it, once with every layer
attending to the whole context and once per windowed variant (local attention over the last ``window``
tokens in some layers, the whole context in the others): per-device temp memory (XLA's memory analysis,
deterministic) and the median step time, every variant of a cell compiled first and then timed in turns,
so load on a shared machine falls on all alike.

- ``dark_room``: the main job's step as it trains (240 tokens a context, one device, blockwise), with a
  window of 40 tokens (the last 2 episodes);
- ``dark_room_long``: 5,120 tokens a context on the ring over every device, with a window of 640 tokens
  (32 episodes) in the zigzag layout (every hop kept, the compute of unreached ones skipped) and the
  contiguous one (the ring stops after the 2 hops the window reaches), beside full attention in each.

    python -m experiments.bench.agent_window
"""

from __future__ import annotations

from experiments.bench import harness

NAME = "agent_window"
# cell -> (preset, devices (None: all), config overrides, window, {variant: (windowed layers, overrides)})
CELLS = {
    "dark_room": ("dark_room", 1, {}, 40, {
        "full": ((), {}),
        "window in layer 0": ((0,), {}),
        "window in both layers": ((0, 1), {}),
    }),
    "dark_room_long": ("dark_room_long", None, {}, 640, {
        "full": ((), {}),
        "window in layer 0": ((0,), {}),
        "full, contiguous": ((), {"layout": "contiguous"}),
        "window in layer 0, contiguous": ((0,), {"layout": "contiguous"}),
        "window in both layers, contiguous": ((0, 1), {"layout": "contiguous"}),
    }),
}
TINY = dict(cells=["dark_room_long"], repeats=1)


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--cells", nargs="+", default=list(CELLS), choices=list(CELLS))
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up; the median is kept")
    return p


def _variant(base, window: int, layers: tuple[int, ...], overrides: dict):
    model = {**overrides, "window": window if layers else None, "windowed_layers": layers}
    return base.replace(model=model)


def main(argv=None) -> dict:
    run = harness.start(NAME, _parser(), argv, tiny=TINY)
    import jax

    from experiments.bench.preset_memory import timed_step
    from experiments.presets import get_preset

    rows = []
    for cell in run.args.cells:
        preset, count, overrides, window, variants = CELLS[cell]
        base = get_preset(f"{preset}_tiny" if run.args.tiny else preset).replace(**overrides)
        if run.args.tiny:
            window = max(1, window // 8)
        devices = run.devices if count is None else run.devices[:count]
        calls, cell_rows = {}, {}
        for name, (layers, model_overrides) in variants.items():
            config = _variant(base, window, layers, model_overrides)
            temp_bytes, calls[name] = timed_step(config, devices)
            cell_rows[name] = {"cell": cell, "variant": name, "window": window if layers else None,
                               "windowed_layers": list(layers), "layout": config.model.layout,
                               "attention": config.model.attention, "devices": len(devices),
                               "tokens": config.sampler.batch_size * config.sampler.max_steps,
                               "temp_bytes": temp_bytes}
        seconds = harness.time_round_robin(calls, run.args.repeats)
        full = seconds["full"]
        for name, row in cell_rows.items():
            row.update(step_seconds=seconds[name], time_over_full=seconds[name] / full)
            rows.append(row)
            print(f"{cell:15s} {name:34s} {row['step_seconds'] * 1e3:8.1f} ms a step "
                  f"({row['time_over_full']:.2f}x full)  {row['temp_bytes'] / 2**20:7.1f} MiB temp per device",
                  flush=True)
        jax.clear_caches()
    return run.write(rows=rows)


if __name__ == "__main__":
    main()
