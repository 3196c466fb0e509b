"""Benchmark: the Agentic Transformer's train step and decoding against context length.

1. Train-step time and per-device temp memory (XLA's compiled memory analysis) of a preset against the
   number of trajectories in context, for dense attention and blockwise attention on one device and ring
   attention over all simulated devices.
2. The largest context (trajectories, tokens) whose train step fits a per-device memory budget with
   each, to within 10% (doubling, then bisection on compiled memory): the Ring Attention paper's Table 3
   in miniature. ``ring_over_blockwise`` is ring's largest context over blockwise's.
3. Decoding cost per environment step against context length: KV cache against full recomputation.

    python -m experiments.bench.agent_context                 # small preset, 256-step trajectories, 8 devices
    python -m experiments.bench.agent_context --budget-gib 2 --skip-decode --timed-trajectories 1

The search (2) measures memory, not time: it compiles each probed context and never runs it.
"""

from __future__ import annotations

from collections.abc import Callable

from experiments.bench import harness

NAME = "agent_context"
TINY = dict(preset="tiny", episode_length=16, timed_trajectories=[1], max_trajectories=1,
            decode_contexts=[1], repeats=1)
KINDS = ("reference", "blockwise", "ring")


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--preset", default="small")
    p.add_argument("--token-layout", default="fused", choices=["fused", "interleaved"])
    p.add_argument("--episode-length", type=int, default=256, help="steps per trajectory")
    p.add_argument("--obs-dim", type=int, default=5)
    p.add_argument("--act-dim", type=int, default=1)
    p.add_argument("--attention", nargs="+", default=list(KINDS), choices=KINDS, help="attention kinds measured")
    p.add_argument("--timed-trajectories", type=int, nargs="*", default=[1, 2, 4, 8],
                   help="contexts whose train step is timed (none: search only)")
    p.add_argument("--budget-gib", type=float, default=2.0, help="per-device temp memory of the search")
    p.add_argument("--max-trajectories", type=int, default=4096, help="stop the search here")
    p.add_argument("--search-precision", type=float, default=0.1,
                   help="the largest context is found to within this fraction (doubling, then bisection)")
    p.add_argument("--decode-contexts", type=int, nargs="+", default=[1, 2, 4, 8], help="trajectories of context")
    p.add_argument("--skip-decode", action="store_true", help="skip the decoding timings")
    p.add_argument("--repeats", type=int, default=3)
    return p


def agent_batch(k: int, episode_length: int, obs_dim: int, act_dim: int, shardings: dict | None = None) -> dict:
    """A random batch of one context of ``k`` trajectories (placed on ``shardings`` when given)."""
    import jax
    import numpy as np

    steps = k * episode_length
    rng = np.random.default_rng(0)
    batch = {
        "observations": rng.standard_normal((1, steps, obs_dim), np.float32),
        "actions": rng.uniform(-1, 1, (1, steps, act_dim)).astype(np.float32),
        "rewards": rng.random((1, steps), np.float32),
        "returns_to_go": rng.random((1, steps), np.float32) * 100,
        "prev_actions": rng.uniform(-1, 1, (1, steps, act_dim)).astype(np.float32),
        "prev_rewards": rng.random((1, steps), np.float32),
        "timesteps": np.tile(np.arange(episode_length, dtype=np.int32), k)[None],
        "trajectory_index": np.repeat(np.arange(k, dtype=np.int32), episode_length)[None],
        "loss_mask": np.ones((1, steps), bool),
    }
    batch["labels"] = batch["actions"]
    return batch if shardings is None else {key: jax.device_put(v, shardings[key]) for key, v in batch.items()}


def largest_fitting(fits: Callable[[int], bool], limit: int, precision: float):
    """The largest trajectory count ``k`` for which ``fits(k)``, to within ``precision``.

    Doubles from 1 until ``fits`` fails, then bisects between the last fit and the first miss until they
    are within a factor ``1 + precision``. Memory grows with the context, so the fitting counts form a
    prefix.

    Returns:
      (largest fitting k or None, first failing k or None when ``limit`` stopped the search).
    """
    if precision <= 0:
        raise ValueError(f"precision must be positive, got {precision}")
    low, k = None, 1
    while k <= limit:
        if not fits(k):
            break
        low, k = k, k * 2
    if k > limit:
        return low, None
    high = k
    while (low or 0) + 1 < high and (low is None or high > low * (1 + precision)):
        mid = ((low or 0) + high) // 2
        if fits(mid):
            low = mid
        else:
            high = mid
    return low, high


def _model(kind, args, mesh=None):
    from agent.config import preset
    from agent.model import AgenticTransformer

    cfg = preset(args.preset, token_layout=args.token_layout, attention=kind,
                 max_trajectories=max(args.max_trajectories, max(args.decode_contexts) + 1),
                 max_timestep=max(args.episode_length, 1))
    return AgenticTransformer(cfg, action_dim=args.act_dim, **({"mesh": mesh} if kind == "ring" else {}))


def host_state(model, episode_length: int, obs_dim: int, act_dim: int):
    """Initial train state, kept on the host: every step donates its device copy, and each trial places a
    fresh one (:func:`device_state`). The attention kind adds no parameters, so one state serves every kind."""
    import jax

    from agent.train import OptimConfig, init_state

    example = agent_batch(1, episode_length, obs_dim, act_dim)
    state = jax.jit(lambda example: init_state(model, OptimConfig(), example, 0))(example)  # eager init is slower
    return jax.device_get(state.replace(key=jax.random.key_data(state.key)))  # a key travels as its raw data


def device_state(host):
    """A train state from :func:`host_state`, ready to be placed."""
    import jax

    return host.replace(key=jax.random.wrap_key_data(host.key))


def _builder(kind, args, mesh, state):
    """A function k -> (jitted step, its state, a batch of k trajectories) for one attention kind."""
    import jax

    from agent.train import OptimConfig, batch_shardings, make_train_step, train_step

    model, optim = _model(kind, args, mesh), OptimConfig()

    def build(k):
        fresh = device_state(state)
        if kind == "ring":
            step, placed = make_train_step(model, optim, fresh, mesh)
            shardings = batch_shardings(mesh)
        else:
            one = jax.sharding.SingleDeviceSharding(mesh.devices.flat[0])
            placed = jax.device_put(fresh, one)
            step = jax.jit(lambda s, b: train_step(s, b, model=model, optim=optim), donate_argnums=(0,))
            shardings = {key: one for key in agent_batch(1, 1, 1, 1)}
        return step, placed, agent_batch(k, args.episode_length, args.obs_dim, args.act_dim, shardings)

    return model, build


def _compile(step, state, batch):
    """The compiled step (it donates its state, like the jitted one) and its per-device temp GiB."""
    compiled = step.lower(state, batch).compile()
    return compiled, compiled.memory_analysis().temp_size_in_bytes / 2**30


def time_train_step(step, state, batch, repeats):
    """Median seconds of a train step that donates its state (each call feeds the next its new state)."""
    holder = {"state": state}

    def call():
        holder["state"], metrics = step(holder["state"], batch)
        return metrics

    return harness.median_seconds(call, repeats)


def _train_rows(args, mesh, state):
    rows, largest = [], {}
    for kind in args.attention:
        model, build = _builder(kind, args, mesh, state)
        tokens_per_trajectory = args.episode_length * model.config.tokens_per_step
        probes = {}  # trajectories -> temp GiB per device
        for k in args.timed_trajectories:
            step, placed, batch = build(k)
            compiled, temp = _compile(step, placed, batch)
            probes[k] = temp
            seconds = time_train_step(compiled, placed, batch, args.repeats)
            tokens = k * tokens_per_trajectory
            row = {"attention": kind, "trajectories": k, "tokens": tokens, "step_seconds": seconds,
                   "tokens_per_second": tokens / seconds, "temp_gib_per_device": temp}
            rows.append(row)
            print(f"train {kind:9s} k={k:5d} tokens={tokens:8d}  {seconds:7.3f} s/step  "
                  f"{row['tokens_per_second']:9.0f} tok/s  temp {temp:7.3f} GiB/device", flush=True)

        def fits(k):
            if k not in probes:
                probes[k] = _compile(*build(k))[1]
            print(f"  search {kind:9s} k={k:5d}  temp {probes[k]:8.3f} GiB/device", flush=True)
            return probes[k] <= args.budget_gib

        low, high = largest_fitting(fits, args.max_trajectories, args.search_precision)
        largest[kind] = {"trajectories": low, "tokens": None if low is None else low * tokens_per_trajectory,
                         "temp_gib_per_device": probes.get(low), "first_failing_trajectories": high,
                         "capped_by_search": high is None, "probes": dict(sorted(probes.items()))}
        print(f"largest context under {args.budget_gib} GiB/device with {kind}: {largest[kind]['tokens']} tokens "
              f"({low} trajectories)", flush=True)
    return rows, largest


def _ratio(largest, over, under):
    a, b = largest.get(over, {}).get("tokens"), largest.get(under, {}).get("tokens")
    return None if not a or not b else a / b


def _decode_rows(args, params):
    import jax
    import numpy as np

    from agent.policy import InContextPolicy

    model = _model("reference", args)
    rows = []
    for k in args.decode_contexts:
        row = {"trajectories_in_context": k, "tokens": k * args.episode_length * model.config.tokens_per_step}
        # KV cache: one decoding call at a context of k trajectories (the cache is filled up to there).
        policy = InContextPolicy(model, params, num_envs=1, obs_dim=args.obs_dim, episode_length=args.episode_length,
                                 num_trials=k + 1, target_return=100.0)
        policy.start_trial()
        obs = np.zeros((1, args.obs_dim), np.float32)
        policy.observe(policy.act(obs), np.zeros(1))  # compiles the first-step shape
        policy.lengths[:] = row["tokens"]
        # The warm-up call compiles the steady-state shape; each action is fed back untimed.
        row["cached_seconds"] = harness.median_seconds(lambda: policy.act(obs), args.repeats,
                                                       after=lambda action: policy.observe(action, np.zeros(1)))
        # Full recomputation of the same context (compiled once for this length, then timed).
        inputs = {key: value[:, : k * args.episode_length]
                  for key, value in agent_batch(k, args.episode_length, args.obs_dim, args.act_dim).items()
                  if key != "loss_mask"}
        key, last = jax.random.key(0), k * args.episode_length - 1
        row["recompute_seconds"] = harness.median_seconds(lambda: policy._full(params, inputs, last, key),
                                                          args.repeats)
        rows.append(row)
        print(f"decode context={row['tokens']:8d} tokens  cached {row['cached_seconds'] * 1e3:8.2f} ms/step  "
              f"recompute {row['recompute_seconds'] * 1e3:8.2f} ms/step", flush=True)
    return rows


def main(argv=None):
    run = harness.start(NAME, _parser(), argv, tiny=TINY)
    args = run.args
    state = host_state(_model("reference", args), args.episode_length, args.obs_dim, args.act_dim)
    train, largest = _train_rows(run.args, run.mesh(), state)
    sections = {"train": train, "largest_context": largest,
                "ring_over_blockwise": _ratio(largest, "ring", "blockwise")}
    if sections["ring_over_blockwise"] is not None:
        print(f"ring's largest context over blockwise's: {sections['ring_over_blockwise']:.2f}x "
              f"({len(run.devices)} devices against one)")
    run.write(**sections)
    if not run.args.skip_decode:
        sections["decode"] = _decode_rows(run.args, state.params)
    return run.write(**sections)


if __name__ == "__main__":
    main()
