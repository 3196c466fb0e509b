"""Benchmark: the fused Pallas ring step on one GPU, against cuDNN and against the XLA step.

1. Attention throughput, causal, bfloat16, batch 1, sequence 4K-64K: forward and forward+backward TFLOP/s
   of our Pallas kernel (``blockwise_attention(impl="pallas")``: a ring of one device, so one kernel per
   pass), of our XLA step (``impl="xla"``) and of ``jax.nn.dot_product_attention(implementation="cudnn")``.
   FLOPs are counted as in the FlashAttention papers: forward 4 * batch * q_heads * seq^2 * head_dim (two
   matmuls), backward 2.5x the forward (five matmuls, recomputation not counted), and **causal counts half
   of dense**. Targets: the kernel reaches >= 0.8x cuDNN's forward+backward throughput at 16K.
2. The overhead of ``sharded_attention`` on a one-device mesh (shard_map, layout, ring loop) over the
   kernel alone, forward and forward+backward. Target: <= 10%.
3. A tile sweep at ``--sweep-seq`` (16K): the kernels called directly with a few tile sizes and launch
   settings around ``ring.pallas_tiles.default_tiles``, forward and forward+backward, to retune those
   defaults on a new card.
4. The largest Agentic Transformer context (preset "350m", ring attention with the Pallas step on a
   one-device mesh) whose train step runs on the card: trajectories doubled until out of memory, then
   bisected.

    python -m experiments.bench_pallas --out runs/bench_pallas
    python -m experiments.bench_pallas --allow-cpu --out /tmp/bench_pallas_smoke   # tiny, interpreter

Prints tables and writes ``bench_pallas.json`` into ``--out`` after every section. Without a GPU it stops
with a message, unless ``--allow-cpu`` asks for the tiny smoke run (the kernels run in the Pallas
interpreter, cuDNN is replaced by ``dot_product_attention``'s XLA implementation; numbers mean nothing).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

KEYS = ("observations", "actions", "rewards", "returns_to_go", "prev_actions", "prev_rewards", "timesteps",
        "trajectory_index", "loss_mask")


def _parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/bench_pallas"), help="folder for bench_pallas.json")
    p.add_argument("--seqs", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    p.add_argument("--head-dims", type=int, nargs="+", default=[128, 64])
    p.add_argument("--heads", type=int, default=16, help="query heads")
    p.add_argument("--kv-heads", type=int, default=None, help="K/V heads (default: --heads)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (median)")
    p.add_argument("--xla-chunk", type=int, default=512, help="chunk size of the XLA step")
    p.add_argument("--sweep-seq", type=int, default=16384, help="sequence of the tile sweep (0: no sweep)")
    p.add_argument("--skip-agent", action="store_true", help="skip the largest-context search")
    p.add_argument("--agent-preset", default="350m")
    p.add_argument("--episode-length", type=int, default=1024, help="steps (tokens) per trajectory")
    p.add_argument("--agent-max", type=int, default=1024, help="stop doubling at this many trajectories")
    p.add_argument("--bisect-steps", type=int, default=4)
    p.add_argument("--allow-cpu", action="store_true",
                   help="without a GPU: a tiny smoke run through the Pallas interpreter (sizes overridden)")
    return p.parse_args(argv)


def _smoke_sizes(args):
    """Sizes the interpreter finishes in about a minute on two CPU cores."""
    return argparse.Namespace(**{
        **vars(args), "seqs": [64, 128], "head_dims": [16], "heads": 2, "kv_heads": 1, "repeats": 1, "sweep_seq": 64,
        "xla_chunk": 32, "agent_preset": "tiny", "episode_length": 16, "agent_max": 4, "bisect_steps": 1})


# --------------------------------------------------------------------------------------------------------
# Timing.


def _median_seconds(fn, *args, repeats: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile and warm up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _fwd_and_train(attention):
    """Jitted forward, and jitted forward+backward (the VJP of every input)."""
    import jax

    def fwd_bwd(q, k, v, dout):
        out, vjp = jax.vjp(attention, q, k, v)
        return out, vjp(dout)

    return jax.jit(attention), jax.jit(fwd_bwd)


def causal_flops(batch, heads, seq, head_dim, *, backward: bool) -> float:
    """FLOPs of causal attention: half of dense; forward+backward is 3.5x the forward."""
    forward = 4.0 * batch * heads * seq * seq * head_dim / 2
    return forward * (3.5 if backward else 1.0)


def _attention_fns(gpu: bool, xla_chunk: int):
    import jax

    from ring import blockwise_attention

    def pallas(q, k, v):
        return blockwise_attention(q, k, v, causal=True, impl="pallas")

    def xla(q, k, v):
        return blockwise_attention(q, k, v, causal=True, impl="xla", query_chunk_size=xla_chunk,
                                   key_chunk_size=xla_chunk)

    def cudnn(q, k, v):
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="cudnn" if gpu else None)

    return {"pallas": pallas, "cudnn" if gpu else "jax.nn (xla, no GPU)": cudnn, "xla": xla}


def _inputs(args, seq, head_dim):
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(seq + head_dim), 4)
    kv_heads = args.kv_heads or args.heads
    q_shape, kv_shape = (args.batch, seq, args.heads, head_dim), (args.batch, seq, kv_heads, head_dim)
    return tuple(jax.random.normal(key, shape, jnp.bfloat16)
                 for key, shape in zip(keys, (q_shape, kv_shape, kv_shape, q_shape)))


def _measure(name, attention, q, k, v, dout, repeats):
    """(forward seconds, forward+backward seconds), or the error that stopped them."""
    fwd, train = _fwd_and_train(attention)
    try:
        return _median_seconds(fwd, q, k, v, repeats=repeats), _median_seconds(train, q, k, v, dout, repeats=repeats)
    except Exception as err:  # noqa: BLE001 - a backend that cannot run this shape is reported, not fatal
        if _is_oom(err) or "cudnn" in name or "cuDNN" in str(err):
            return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        raise


def attention_rows(args, gpu: bool):
    fns = _attention_fns(gpu, args.xla_chunk)
    rows = []
    print(f"\n{'seq':>6} {'d':>4} {'impl':>22} {'fwd ms':>9} {'fwd TF/s':>9} {'f+b ms':>9} {'f+b TF/s':>9}")
    for head_dim in args.head_dims:
        for seq in args.seqs:
            q, k, v, dout = _inputs(args, seq, head_dim)
            for name, fn in fns.items():
                row = {"seq": seq, "head_dim": head_dim, "impl": name, "batch": args.batch, "heads": args.heads,
                       "kv_heads": args.kv_heads or args.heads}
                measured = _measure(name, fn, q, k, v, dout, args.repeats)
                if isinstance(measured, str):
                    row["error"] = measured
                    print(f"{seq:6d} {head_dim:4d} {name:>22}   {measured}", flush=True)
                else:
                    fwd_s, train_s = measured
                    row |= {"fwd_seconds": fwd_s, "fwd_bwd_seconds": train_s,
                            "fwd_tflops": causal_flops(args.batch, args.heads, seq, head_dim, backward=False)
                            / fwd_s / 1e12,
                            "fwd_bwd_tflops": causal_flops(args.batch, args.heads, seq, head_dim, backward=True)
                            / train_s / 1e12}
                    print(f"{seq:6d} {head_dim:4d} {name:>22} {fwd_s * 1e3:9.3f} {row['fwd_tflops']:9.1f} "
                          f"{train_s * 1e3:9.3f} {row['fwd_bwd_tflops']:9.1f}", flush=True)
                rows.append(row)
            del q, k, v, dout
            gc.collect()
    return rows


def ratios(rows, baseline: str):
    """Pallas throughput over ``baseline``'s, per (seq, head_dim), forward and forward+backward."""
    table = {(r["seq"], r["head_dim"], r["impl"]): r for r in rows if "error" not in r}
    out = []
    for (seq, head_dim, impl), row in sorted(table.items()):
        base = table.get((seq, head_dim, baseline))
        if impl == "pallas" and base is not None:
            out.append({"seq": seq, "head_dim": head_dim, "vs": baseline,
                        "fwd": row["fwd_tflops"] / base["fwd_tflops"],
                        "fwd_bwd": row["fwd_bwd_tflops"] / base["fwd_bwd_tflops"]})
    return out


def sharded_overhead_rows(args):
    """sharded_attention on a one-device mesh against the kernel alone (blockwise_attention, same kernel)."""
    import jax

    from ring import blockwise_attention, make_mesh, sharded_attention

    mesh = make_mesh("sp=-1", jax.devices()[:1])
    kernel = lambda q, k, v: blockwise_attention(q, k, v, causal=True, impl="pallas")  # noqa: E731
    ring = lambda q, k, v: sharded_attention(q, k, v, mesh=mesh, causal=True, impl="pallas")  # noqa: E731
    rows = []
    print(f"\n{'seq':>6} {'d':>4} {'kernel f+b ms':>14} {'sharded f+b ms':>15} {'fwd overhead':>13} {'f+b overhead':>13}")
    for head_dim in args.head_dims:
        for seq in args.seqs:
            q, k, v, dout = _inputs(args, seq, head_dim)
            measured = [_measure("pallas", fn, q, k, v, dout, args.repeats) for fn in (kernel, ring)]
            if any(isinstance(m, str) for m in measured):
                rows.append({"seq": seq, "head_dim": head_dim, "error": [m for m in measured if isinstance(m, str)]})
                print(f"{seq:6d} {head_dim:4d}   {rows[-1]['error']}", flush=True)
                continue
            (k_fwd, k_train), (r_fwd, r_train) = measured
            row = {"seq": seq, "head_dim": head_dim, "kernel_fwd_seconds": k_fwd, "kernel_fwd_bwd_seconds": k_train,
                   "sharded_fwd_seconds": r_fwd, "sharded_fwd_bwd_seconds": r_train,
                   "fwd_overhead": r_fwd / k_fwd - 1, "fwd_bwd_overhead": r_train / k_train - 1}
            rows.append(row)
            print(f"{seq:6d} {head_dim:4d} {k_train * 1e3:14.3f} {r_train * 1e3:15.3f} "
                  f"{row['fwd_overhead']:12.1%} {row['fwd_bwd_overhead']:12.1%}", flush=True)
            del q, k, v, dout
            gc.collect()
    return rows


# --------------------------------------------------------------------------------------------------------
# Tile sweep.


def kernel_attention(tiles, *, interpret: bool):
    """Causal attention from the Pallas kernels alone, with the given tiles (a ring of one, no wrappers)."""
    import jax
    import jax.numpy as jnp

    from ring import pallas_kernel

    def stats(q):
        return jnp.arange(q.shape[1], dtype=jnp.int32), 1.0 / q.shape[-1] ** 0.5

    @jax.custom_vjp
    def attention(q, k, v):
        return forward(q, k, v)[0]

    def forward(q, k, v):
        pos, scale = stats(q)
        out, lse = pallas_kernel.forward(q, k, v, pos, pos, causal=True, scale=scale, tiles=tiles,
                                         interpret=interpret)
        return out, (q, k, v, out, lse)

    def backward(res, dout):
        q, k, v, out, lse = res
        pos, scale = stats(q)
        delta = jnp.moveaxis(jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), -1), 1, 2)
        return pallas_kernel.backward(q, k, v, dout, lse, delta, pos, pos, causal=True, scale=scale, tiles=tiles,
                                      dq_dtype=q.dtype, dkv_dtype=k.dtype, interpret=interpret)

    attention.defvjp(forward, backward)
    return attention


def _candidates(head_dim: int, seq: int):
    """The default tiles and variations of the forward and of the backward settings around them."""
    import dataclasses

    from ring.pallas_tiles import default_tiles

    base = default_tiles(head_dim, seq, seq)
    fwd = [dict(block_q=128, block_k=128, num_warps=8, num_stages=2), dict(block_q=128, block_k=64, num_warps=4),
           dict(block_q=64, block_k=64, num_warps=4, num_stages=3), dict(block_q=128, block_k=32, num_warps=4,
                                                                         num_stages=4)]
    bwd = [dict(dkdv_k=64, dkdv_q=64, dq_q=64, dq_k=64, bwd_warps=8, bwd_stages=2),
           dict(dkdv_k=64, dkdv_q=64, dq_q=64, dq_k=64, bwd_warps=4, bwd_stages=3),
           dict(dkdv_k=128, dkdv_q=32, dq_q=128, dq_k=32, bwd_warps=4, bwd_stages=3),
           dict(dkdv_k=128, dkdv_q=64, dq_q=128, dq_k=64, bwd_warps=8, bwd_stages=2),
           dict(dkdv_k=64, dkdv_q=32, dq_q=64, dq_k=32, bwd_warps=4, bwd_stages=4)]
    fit = lambda t: {k: (min(v, seq) if not k.endswith(("warps", "stages")) else v) for k, v in t.items()}  # noqa: E731
    seen, out = set(), [base]
    for change in fwd + bwd:
        tiles = dataclasses.replace(base, **fit(change))
        if tiles not in seen and tiles != base:
            seen.add(tiles)
            out.append(tiles)
    return out


def tile_sweep_rows(args, gpu: bool):
    import dataclasses

    rows = []
    if not args.sweep_seq:
        return rows
    print(f"\ntile sweep at seq {args.sweep_seq} (default first)")
    for head_dim in args.head_dims:
        q, k, v, dout = _inputs(args, args.sweep_seq, head_dim)
        for tiles in _candidates(head_dim, args.sweep_seq):
            row = {"seq": args.sweep_seq, "head_dim": head_dim, "tiles": dataclasses.asdict(tiles)}
            measured = _measure("pallas", kernel_attention(tiles, interpret=not gpu), q, k, v, dout, args.repeats)
            if isinstance(measured, str):
                row["error"] = measured
            else:
                row |= {"fwd_tflops": causal_flops(args.batch, args.heads, args.sweep_seq, head_dim, backward=False)
                        / measured[0] / 1e12,
                        "fwd_bwd_tflops": causal_flops(args.batch, args.heads, args.sweep_seq, head_dim,
                                                       backward=True) / measured[1] / 1e12}
            rows.append(row)
            text = row.get("error") or f"fwd {row['fwd_tflops']:7.1f} TF/s  fwd+bwd {row['fwd_bwd_tflops']:7.1f} TF/s"
            print(f"  d {head_dim:3d} {tiles}: {text}", flush=True)
        del q, k, v, dout
        gc.collect()
    return rows


# --------------------------------------------------------------------------------------------------------
# Largest Agentic Transformer context.


def _is_oom(err: Exception) -> bool:
    text = str(err)
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))


def _agent_batch(k, episode_length, obs_dim=17, act_dim=6):
    import numpy as np

    steps = k * episode_length
    rng = np.random.default_rng(0)
    return {
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


def largest_agent_context(args):
    """Doubling then bisection on trajectories in context until the train step no longer fits."""
    import jax

    from agent.config import preset
    from agent.model import AgenticTransformer
    from agent.train import OptimConfig, batch_shardings, init_state, make_train_step
    from ring import make_mesh

    base = preset(args.agent_preset)
    cfg = preset(args.agent_preset, attention="ring", attention_impl="pallas", max_trajectories=args.agent_max,
                 max_timestep=max(base.max_timestep, args.episode_length))
    mesh = make_mesh("sp=-1", jax.devices()[:1])
    model = AgenticTransformer(cfg, action_dim=6, mesh=mesh)
    optim = OptimConfig()
    state = init_state(model, optim, _agent_batch(1, args.episode_length), 0)
    # Kept on the host (each trial donates its device copy); the RNG key travels as its raw data.
    host_state = jax.device_get(state.replace(key=jax.random.key_data(state.key)))
    del state
    tokens_per_trajectory = args.episode_length * cfg.tokens_per_step
    trials = []

    def fits(k):
        step = batch = state = None
        try:
            fresh = host_state.replace(key=jax.random.wrap_key_data(host_state.key))
            step, state = make_train_step(model, optim, fresh, mesh)
            sharding = batch_shardings(mesh)
            batch = {key: jax.device_put(x, sharding[key]) for key, x in _agent_batch(k, args.episode_length).items()}
            state, metrics = step(state, batch)  # compile and first step
            jax.block_until_ready(metrics)
            start = time.perf_counter()
            state, metrics = step(state, batch)
            jax.block_until_ready(metrics)
            seconds = time.perf_counter() - start
            stats = jax.devices()[0].memory_stats() or {}
            trial = {"trajectories": k, "tokens": k * tokens_per_trajectory, "fits": True, "step_seconds": seconds,
                     "tokens_per_second": k * tokens_per_trajectory / seconds,
                     "peak_bytes_in_use": stats.get("peak_bytes_in_use")}
        except Exception as err:  # noqa: BLE001 - only out-of-memory is an answer; anything else is raised
            if not _is_oom(err):
                raise
            trial = {"trajectories": k, "tokens": k * tokens_per_trajectory, "fits": False,
                     "error": str(err).splitlines()[0][:200]}
        finally:
            del step, batch, state
            gc.collect()
            jax.clear_caches()
        trials.append(trial)
        print(f"agent {args.agent_preset} k={k:5d} tokens={trial['tokens']:9d}  "
              + (f"fits, {trial['step_seconds']:.3f} s/step" if trial["fits"] else "out of memory"), flush=True)
        return trial["fits"]

    lo, hi, k = None, None, 1
    while k <= args.agent_max:
        if not fits(k):
            hi = k
            break
        lo, k = k, 2 * k
    for _ in range(args.bisect_steps if lo is not None and hi is not None else 0):
        if hi - lo <= 1:
            break
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return {"preset": args.agent_preset, "episode_length": args.episode_length,
            "largest_trajectories": lo, "largest_tokens": None if lo is None else lo * tokens_per_trajectory,
            "first_failing_trajectories": hi, "capped_by_search": hi is None, "trials": trials}


# --------------------------------------------------------------------------------------------------------


def _write(out_dir: Path, result: dict) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "bench_pallas.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2, default=str))
    tmp.replace(path)
    return path


def main(argv=None):
    args = _parse(argv)
    import jax

    gpu = jax.default_backend() == "gpu"
    if not gpu and not args.allow_cpu:
        raise SystemExit(f"bench_pallas needs a GPU, but JAX's default backend is {jax.default_backend()!r} "
                         f"(devices: {jax.devices()}). Install jax[cuda12] on a CUDA machine, or pass --allow-cpu "
                         "for a tiny smoke run through the Pallas interpreter.")
    if not gpu:
        args = _smoke_sizes(args)
    result = {"config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "device": jax.devices()[0].device_kind, "backend": jax.default_backend(), "jax": jax.__version__,
              "flops": "causal = half of dense; forward 4*b*h*s^2*d/2, forward+backward 3.5x forward; bf16"}
    result["attention"] = attention_rows(args, gpu)
    result["pallas_vs_cudnn"] = ratios(result["attention"], "cudnn" if gpu else "jax.nn (xla, no GPU)")
    result["pallas_vs_xla"] = ratios(result["attention"], "xla")
    print()
    for r in result["pallas_vs_cudnn"]:
        print(f"pallas / {r['vs']}: seq {r['seq']:6d} d {r['head_dim']:3d}  fwd {r['fwd']:.2f}x  "
              f"fwd+bwd {r['fwd_bwd']:.2f}x" + ("   (target >= 0.8x at 16K)" if r["seq"] == 16384 else ""))
    path = _write(args.out, result)
    result["sharded_overhead"] = sharded_overhead_rows(args)
    path = _write(args.out, result)
    result["tile_sweep"] = tile_sweep_rows(args, gpu)
    path = _write(args.out, result)
    if not args.skip_agent:
        result["agent_largest_context"] = largest_agent_context(args)
        print(f"largest {args.agent_preset} context on one {result['device']}: "
              f"{result['agent_largest_context']['largest_tokens']} tokens "
              f"({result['agent_largest_context']['largest_trajectories']} trajectories)")
        path = _write(args.out, result)
    print(f"\nwrote {path}")
    return result


if __name__ == "__main__":
    main()
