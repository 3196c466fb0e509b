"""Benchmark: the Agentic Transformer's train step and decoding against context length.

1. Train-step time and per-device temp memory (XLA's compiled memory analysis) of a preset against the
   number of trajectories in context, for dense attention and blockwise attention on one device and ring
   attention over all simulated devices.
2. The largest context (trajectories, tokens) whose train step fits a per-device memory budget with
   each, to within 10% (doubling, then bisection on compiled memory): the Ring Attention paper's Table 3
   in miniature.
3. Decoding cost per environment step against context length: KV cache against full recomputation.

    python -m experiments.bench_agent                 # small preset, 250-step trajectories, 8 devices
    python -m experiments.bench_agent --budget-gib 2 --out bench_results/bench_agent.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--token-layout", default="fused", choices=["fused", "interleaved"])
    p.add_argument("--episode-length", type=int, default=256, help="steps per trajectory")
    p.add_argument("--obs-dim", type=int, default=5)
    p.add_argument("--act-dim", type=int, default=1)
    p.add_argument("--devices", type=int, default=8)
    p.add_argument("--timed-trajectories", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--budget-gib", type=float, default=2.0)
    p.add_argument("--max-trajectories", type=int, default=4096, help="stop the search here")
    p.add_argument("--search-precision", type=float, default=0.1,
                   help="the largest context is found to within this fraction (doubling, then bisection)")
    p.add_argument("--decode-contexts", type=int, nargs="+", default=[1, 2, 4, 8], help="trajectories of context")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("bench_results/bench_agent.json"))
    return p.parse_args(argv)


def _inputs(k, args, sharding=None):
    import jax
    import numpy as np

    steps = k * args.episode_length
    rng = np.random.default_rng(0)
    batch = {
        "observations": rng.standard_normal((1, steps, args.obs_dim), np.float32),
        "actions": rng.uniform(-1, 1, (1, steps, args.act_dim)).astype(np.float32),
        "rewards": rng.random((1, steps), np.float32),
        "returns_to_go": rng.random((1, steps), np.float32) * 100,
        "prev_actions": rng.uniform(-1, 1, (1, steps, args.act_dim)).astype(np.float32),
        "prev_rewards": rng.random((1, steps), np.float32),
        "timesteps": np.tile(np.arange(args.episode_length, dtype=np.int32), k)[None],
        "trajectory_index": np.repeat(np.arange(k, dtype=np.int32), args.episode_length)[None],
        "loss_mask": np.ones((1, steps), bool),
    }
    return batch if sharding is None else {key: jax.device_put(v, sharding[key]) for key, v in batch.items()}


def _setup(kind, args, mesh):
    """(model, optim, a function k -> (jitted step, state, batch)) for one attention kind."""
    import jax

    from agent.config import preset
    from agent.model import AgenticTransformer
    from agent.train import OptimConfig, batch_shardings, init_state, make_train_step, train_step

    cfg = preset(args.preset, token_layout=args.token_layout, attention=kind,
                 max_trajectories=args.max_trajectories, max_timestep=max(args.episode_length, 1))
    optim = OptimConfig()
    if kind == "ring":
        model = AgenticTransformer(cfg, action_dim=args.act_dim, mesh=mesh)
    else:
        model = AgenticTransformer(cfg, action_dim=args.act_dim)
    state = init_state(model, optim, _inputs(1, args), 0)

    def build(k):
        fresh = jax.tree.map(lambda x: x.copy(), state)  # every step donates its state
        if kind == "ring":
            step, placed = make_train_step(model, optim, fresh, mesh)
            return step, placed, _inputs(k, args, batch_shardings(mesh))
        one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        placed = jax.device_put(fresh, one)
        step = jax.jit(lambda s, b: train_step(s, b, model=model, optim=optim), donate_argnums=(0,))
        return step, placed, _inputs(k, args, {key: one for key in _inputs(1, args)})

    return model, build


def _temp_gib(step, state, batch):
    return step.lower(state, batch).compile().memory_analysis().temp_size_in_bytes / 2**30


def _train_rows(args, mesh):
    import jax

    rows, largest = [], {}
    for kind in ("reference", "blockwise", "ring"):
        model, build = _setup(kind, args, mesh)
        tokens_per_step = model.config.tokens_per_step
        for k in args.timed_trajectories:
            step, state, batch = build(k)
            temp = _temp_gib(step, state, batch)
            state, metrics = step(state, batch)  # compile + warm up
            jax.block_until_ready(metrics)
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                state, metrics = step(state, batch)
                jax.block_until_ready(metrics)
                times.append(time.perf_counter() - start)
            tokens = k * args.episode_length * tokens_per_step
            row = {"attention": kind, "trajectories": k, "tokens": tokens, "step_seconds": statistics.median(times),
                   "tokens_per_second": tokens / statistics.median(times), "temp_gib_per_device": temp}
            rows.append(row)
            print(f"train {kind:9s} k={k:5d} tokens={tokens:8d}  {row['step_seconds']:7.3f} s/step  "
                  f"{row['tokens_per_second']:9.0f} tok/s  temp {temp:7.3f} GiB/device", flush=True)
        fits, capped = _largest_fitting(lambda k: _temp_gib(*build(k)), args.budget_gib, args.max_trajectories,
                                        args.search_precision)
        largest[kind] = None if fits is None else {"trajectories": fits[0], "tokens": fits[0] * args.episode_length
                                                   * tokens_per_step, "temp_gib_per_device": fits[1],
                                                   "capped_by_search": capped}
        print(f"largest context under {args.budget_gib} GiB/device with {kind}: {largest[kind]}", flush=True)
    return rows, largest


def _largest_fitting(temp_gib, budget_gib: float, limit: int, precision: float):
    """The largest trajectory count whose train step fits ``budget_gib``, to within ``precision``.

    Doubles from 1 until the budget is exceeded, then bisects between the last fit and the first miss
    until they are within a factor ``1 + precision``. Compiled memory grows with the context, so the
    fitting counts form a prefix.

    Returns:
      ((trajectories, temp GiB) of the largest fit found, or None; whether ``limit`` stopped the search).
    """
    fits, k = None, 1
    while k <= limit:
        temp = temp_gib(k)
        if temp > budget_gib:
            break
        fits, k = (k, temp), k * 2
    if k > limit:
        return fits, True
    low, high = (0 if fits is None else fits[0]), k
    while low == 0 or high > low * (1 + precision):
        mid = (low + high) // 2
        if mid == low:
            break
        temp = temp_gib(mid)
        if temp > budget_gib:
            high = mid
        else:
            fits, low = (mid, temp), mid
    return fits, False


def _decode_rows(args):
    import jax
    import numpy as np

    from agent.config import preset
    from agent.model import AgenticTransformer
    from agent.policy import InContextPolicy
    from agent.train import OptimConfig, init_state

    cfg = preset(args.preset, token_layout=args.token_layout, attention="reference",
                 max_trajectories=max(args.decode_contexts) + 1, max_timestep=args.episode_length)
    model = AgenticTransformer(cfg, action_dim=args.act_dim)
    params = init_state(model, OptimConfig(), _inputs(1, args), 0).params
    rows = []
    for k in args.decode_contexts:
        row = {"trajectories_in_context": k, "tokens": k * args.episode_length * cfg.tokens_per_step}
        # KV cache: one decoding call at a context of k trajectories (the cache is filled up to there).
        policy = InContextPolicy(model, params, num_envs=1, obs_dim=args.obs_dim, episode_length=args.episode_length,
                                 num_trials=k + 1, target_return=100.0)
        policy.start_trial()
        obs = np.zeros((1, args.obs_dim), np.float32)
        policy.observe(policy.act(obs), np.zeros(1))  # compiles the first-step shape
        policy.lengths[:] = row["tokens"]
        times = []
        for _ in range(args.repeats + 1):  # the first call compiles the steady-state shape
            start = time.perf_counter()
            action = jax.block_until_ready(policy.act(obs))
            times.append(time.perf_counter() - start)
            policy.observe(action, np.zeros(1))
        row["cached_seconds"] = statistics.median(times[1:])
        # Full recomputation of the same context (compiled once for this length, then timed).
        inputs = {key: value[:, : k * args.episode_length] for key, value in _inputs(k, args).items()
                  if key != "loss_mask"}
        jax.block_until_ready(policy._full(params, inputs))
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            jax.block_until_ready(policy._full(params, inputs))
            times.append(time.perf_counter() - start)
        row["recompute_seconds"] = statistics.median(times)
        rows.append(row)
        print(f"decode context={row['tokens']:8d} tokens  cached {row['cached_seconds'] * 1e3:8.2f} ms/step  "
              f"recompute {row['recompute_seconds'] * 1e3:8.2f} ms/step", flush=True)
    return rows


def main(argv=None):
    args = _parse(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                               + f" --xla_force_host_platform_device_count={args.devices}")
    import jax

    from ring import make_mesh

    mesh = make_mesh("sp=-1", jax.devices()[: args.devices])
    train, largest = _train_rows(args, mesh)
    decode = _decode_rows(args)
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "device": f"{args.devices} simulated CPU devices on {os.cpu_count()} cores", "jax": jax.__version__,
              "train": train, "largest_context": largest, "decode": decode}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(args.out)
    print(f"\nwrote {args.out}")
    return result


if __name__ == "__main__":
    main()
