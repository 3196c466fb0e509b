"""Benchmark: the fused Pallas ring step on one GPU, against cuDNN and against the XLA step.

1. Attention throughput, causal, bfloat16, batch 1, sequence 4K-64K: forward and forward+backward TFLOP/s
   of our Pallas kernel (``blockwise_attention(impl="pallas")``: a ring of one device, so one kernel per
   pass), of our XLA step (``impl="xla"``) and of ``jax.nn.dot_product_attention(implementation="cudnn")``.
   FLOPs are counted as in the FlashAttention papers: forward 4 * batch * q_heads * seq^2 * head_dim (two
   matmuls), backward 2.5x the forward (five matmuls, recomputation not counted), and **causal counts half
   of dense**. Targets: the kernel reaches >= 0.8x cuDNN's forward+backward throughput at 16K.
2. The overhead of ``sharded_attention`` on a one-device mesh (shard_map, layout, ring loop) over the
   kernel alone, forward and forward+backward. Target: <= 10%.
3. A tile sweep at ``--sweep-seq`` (16K) around ``ring.pallas_tiles.default_tiles``
   (:mod:`experiments.bench.pallas_sweep`), to retune those defaults on a new card.
4. The largest Agentic Transformer context (preset "350m", ring attention with the Pallas step on a
   one-device mesh) whose train step runs on the card: trajectories doubled until out of memory, then
   bisected (:func:`experiments.bench.agent_context.largest_fitting`).

    python -m experiments.bench.pallas --out runs/bench_pallas.json
    python -m experiments.bench.pallas --allow-cpu --out /tmp/pallas_smoke.json   # tiny, interpreter

Prints tables and writes ``--out`` (JSON) after every section. Without a GPU it stops with a message,
unless ``--allow-cpu`` asks for the smoke run at ``--tiny`` sizes (the kernels run in the Pallas interpreter,
cuDNN is replaced by ``dot_product_attention``'s XLA implementation; numbers mean nothing).
"""

from __future__ import annotations

import gc

from experiments.bench import harness
from experiments.bench.attention_timing import causal_flops, inputs, is_oom, measure
from experiments.bench.pallas_sweep import tile_sweep_rows

NAME = "pallas"
# Sizes the interpreter finishes quickly on two CPU cores.
TINY = dict(seqs=[64], head_dims=[16], heads=2, kv_heads=1, repeats=1, sweep_seq=64, sweep_max=2, xla_chunk=32,
            agent_preset="tiny", episode_length=16, agent_max=1)
OBS_DIM, ACT_DIM = 17, 6  # the agent's sizes in the largest-context search (HalfCheetah's)


def _parser():
    p = harness.parser(NAME, __doc__)
    p.add_argument("--seqs", type=int, nargs="+", default=[4096, 8192, 16384, 32768, 65536])
    p.add_argument("--head-dims", type=int, nargs="+", default=[128, 64])
    p.add_argument("--heads", type=int, default=16, help="query heads")
    p.add_argument("--kv-heads", type=int, default=None, help="K/V heads (default: --heads)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=10, help="timed calls per measurement (median)")
    p.add_argument("--xla-chunk", type=int, default=512, help="chunk size of the XLA step")
    p.add_argument("--sweep-seq", type=int, default=16384, help="sequence of the tile sweep (0: no sweep)")
    p.add_argument("--sweep-max", type=int, default=None, help="at most this many tilings, the default first")
    p.add_argument("--skip-agent", action="store_true", help="skip the largest-context search")
    p.add_argument("--agent-preset", default="350m")
    p.add_argument("--episode-length", type=int, default=1024, help="steps (tokens) per trajectory")
    p.add_argument("--agent-max", type=int, default=1024, help="stop doubling at this many trajectories")
    p.add_argument("--search-precision", type=float, default=0.1,
                   help="bisect until the largest fit and the first miss are within this fraction")
    p.add_argument("--allow-cpu", action="store_true",
                   help="without a GPU: the --tiny smoke run through the Pallas interpreter")
    return p


# --------------------------------------------------------------------------------------------------------
# Timing.


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


def attention_rows(args, gpu: bool):
    fns = _attention_fns(gpu, args.xla_chunk)
    rows = []
    print(f"\n{'seq':>6} {'d':>4} {'impl':>22} {'fwd ms':>9} {'fwd TF/s':>9} {'f+b ms':>9} {'f+b TF/s':>9}")
    for head_dim in args.head_dims:
        for seq in args.seqs:
            q, k, v, dout = inputs(args, seq, head_dim)
            for name, fn in fns.items():
                row = {"seq": seq, "head_dim": head_dim, "impl": name, "batch": args.batch, "heads": args.heads,
                       "kv_heads": args.kv_heads or args.heads}
                measured = measure(name, fn, q, k, v, dout, args.repeats)
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
            q, k, v, dout = inputs(args, seq, head_dim)
            measured = [measure("pallas", fn, q, k, v, dout, args.repeats) for fn in (kernel, ring)]
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
# Largest Agentic Transformer context.


def largest_agent_context(args, gpu: bool):
    """Doubling then bisection on trajectories in context until the train step no longer fits.

    Off GPU (the smoke run) the model uses the XLA step: the search is what is smoke-tested, and a train
    step through the Pallas interpreter takes minutes to compile.
    """
    import jax

    from agent.config import preset
    from agent.model import AgenticTransformer
    from agent.train import OptimConfig, batch_shardings, make_train_step
    from experiments.bench.agent_context import (agent_batch, device_state, host_state, largest_fitting,
                                                 time_train_step)
    from ring import make_mesh

    base = preset(args.agent_preset)
    cfg = preset(args.agent_preset, attention="ring",
                 attention_impl="pallas" if gpu else "xla", max_trajectories=args.agent_max,
                 max_timestep=max(base.max_timestep, args.episode_length))
    mesh = make_mesh("sp=-1", jax.devices()[:1])
    model = AgenticTransformer(cfg, action_dim=ACT_DIM, mesh=mesh)
    optim = OptimConfig()
    host = host_state(model, args.episode_length, OBS_DIM, ACT_DIM)
    tokens_per_trajectory = args.episode_length * cfg.tokens_per_step
    trials = []

    def fits(k):
        step = batch = state = None
        try:
            step, state = make_train_step(model, optim, device_state(host), mesh)
            batch = agent_batch(k, args.episode_length, OBS_DIM, ACT_DIM, batch_shardings(mesh))
            seconds = time_train_step(step, state, batch, repeats=1)  # the warm-up compiles
            stats = jax.devices()[0].memory_stats() or {}
            trial = {"trajectories": k, "tokens": k * tokens_per_trajectory, "fits": True, "step_seconds": seconds,
                     "tokens_per_second": k * tokens_per_trajectory / seconds,
                     "peak_bytes_in_use": stats.get("peak_bytes_in_use")}
        except Exception as err:  # noqa: BLE001 - only out-of-memory is an answer; anything else is raised
            if not is_oom(err):
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

    lo, hi = largest_fitting(fits, args.agent_max, args.search_precision)
    return {"preset": args.agent_preset, "episode_length": args.episode_length,
            "largest_trajectories": lo, "largest_tokens": None if lo is None else lo * tokens_per_trajectory,
            "first_failing_trajectories": hi, "capped_by_search": hi is None, "trials": trials}


# --------------------------------------------------------------------------------------------------------


def main(argv=None):
    import jax

    run = harness.start(NAME, _parser(), argv, tiny=TINY)
    gpu = jax.default_backend() == "gpu"
    if not gpu and not run.args.allow_cpu:
        raise SystemExit(f"bench pallas needs a GPU, but JAX's default backend is {jax.default_backend()!r} "
                         f"(devices: {jax.devices()}). Install jax[cuda12] on a CUDA machine, or pass --allow-cpu "
                         "for a tiny smoke run through the Pallas interpreter.")
    if not gpu:
        run.args = harness.tiny_args(run.args, TINY)
    args, sections = run.args, {"flops": "causal = half of dense; forward 4*b*h*s^2*d/2, forward+backward 3.5x "
                                         "forward; bf16"}
    sections["attention"] = attention_rows(args, gpu)
    sections["pallas_vs_cudnn"] = ratios(sections["attention"], "cudnn" if gpu else "jax.nn (xla, no GPU)")
    sections["pallas_vs_xla"] = ratios(sections["attention"], "xla")
    print()
    for r in sections["pallas_vs_cudnn"]:
        print(f"pallas / {r['vs']}: seq {r['seq']:6d} d {r['head_dim']:3d}  fwd {r['fwd']:.2f}x  "
              f"fwd+bwd {r['fwd_bwd']:.2f}x" + ("   (target >= 0.8x at 16K)" if r["seq"] == 16384 else ""))
    run.write(**sections)
    sections["sharded_overhead"] = sharded_overhead_rows(args)
    run.write(**sections)
    sections["tile_sweep"] = tile_sweep_rows(args, gpu)
    run.write(**sections)
    if not args.skip_agent:
        sections["agent_largest_context"] = found = largest_agent_context(args, gpu)
        print(f"largest {args.agent_preset} context on one {run.machine['device_kind']}: "
              f"{found['largest_tokens']} tokens ({found['largest_trajectories']} trajectories)")
    return run.write(**sections)


if __name__ == "__main__":
    main()
