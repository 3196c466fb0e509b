"""Benchmark of the datasets package: reading a large ExoRL buffer and sampling long contexts.

    python -m experiments.bench.data_loading --out bench_results/data_loading.json

Writes a synthetic ExoRL-format dataset with the package's writer (default 1000 files x 1000 steps, walker
sizes: observation 24, action 6, physics 18) into a temporary directory, then measures

- the time to read it back with ``datasets.exorl.load`` and the peak traced memory of that read
  (``tracemalloc``, second read) against the size of the loaded arrays: one copy of the data is the goal;
- the context sampler's throughput in contexts per second for chains of k = 8 and 32 whole episodes.
"""

from __future__ import annotations

import resource
import shutil
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from datasets import ContextSampler, SamplerConfig, exorl
from datasets.synthetic import random_trajectory
from experiments.bench import harness

NAME = "data_loading"
TINY = dict(episodes=8, steps=50, ks=[2], batch_size=2, sampler_seconds=0.2)


def write_dataset(root: Path, episodes: int, steps: int, obs_dim: int, act_dim: int, state_dim: int) -> float:
    """Write ``episodes`` files of ``steps`` steps, one trajectory in memory at a time. Returns seconds."""
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for index in range(episodes):
        trajectory = random_trajectory(rng, steps, obs_dim, act_dim, state_dim, source=f"bench {index}")
        exorl.save(root, "walker", "bench", [trajectory], first_index=index)
    return time.perf_counter() - start


def measure_load(root: Path) -> dict:
    start = time.perf_counter()
    trajectories = exorl.load(root, "walker", "bench")
    seconds = time.perf_counter() - start
    steps = sum(len(t) for t in trajectories)
    del trajectories
    tracemalloc.start()
    try:
        trajectories = exorl.load(root, "walker", "bench")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    data = sum(array.base.nbytes if array.base is not None else array.nbytes
               for t in trajectories for array in (t.observations, t.actions, t.rewards, t.physics))
    return {"episodes": len(trajectories), "steps": steps, "load_s": seconds,
            "steps_per_s": steps / seconds, "data_mib": data / 2**20, "peak_traced_mib": peak / 2**20,
            "peak_over_data": peak / data, "trajectories": trajectories}


def measure_sampler(trajectories, k: int, batch_size: int, seconds: float) -> dict:
    steps = max(len(t) for t in trajectories)
    config = SamplerConfig(num_trajectories=k, max_steps=k * steps, batch_size=batch_size)
    sampler = ContextSampler(trajectories, config)
    rng = np.random.default_rng(0)
    sampler.sample_batch(rng)  # warm-up
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        sampler.sample_batch(rng)
        batches += 1
    elapsed = time.perf_counter() - start
    with sampler.prefetch(k) as prefetched:
        next(prefetched)
        prefetched_batches, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            next(prefetched)
            prefetched_batches += 1
        prefetched_elapsed = time.perf_counter() - start
    return {"k": k, "max_steps": k * steps, "batch_size": batch_size,
            "contexts_per_s": batches * batch_size / elapsed,
            "steps_per_s": batches * batch_size * k * steps / elapsed,
            "prefetched_contexts_per_s": prefetched_batches * batch_size / prefetched_elapsed}


def main(argv=None) -> dict:
    p = harness.parser(NAME, __doc__)
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--obs-dim", type=int, default=24)
    p.add_argument("--act-dim", type=int, default=6)
    p.add_argument("--state-dim", type=int, default=18)
    p.add_argument("--ks", type=int, nargs="+", default=[8, 32])
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--sampler-seconds", type=float, default=3.0)
    run = harness.start(NAME, p, argv, tiny=TINY, uses_jax=False)
    args = run.args

    root = Path(tempfile.mkdtemp(prefix="bench_datasets_"))
    try:
        write_s = write_dataset(root, args.episodes, args.steps, args.obs_dim, args.act_dim, args.state_dim)
        files_mib = sum(p.stat().st_size for p in root.rglob("*.npz")) / 2**20
        load = measure_load(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    trajectories = load.pop("trajectories")
    samplers = [measure_sampler(trajectories, k, args.batch_size, args.sampler_seconds) for k in args.ks]
    results = {
        "dataset": {"episodes": args.episodes, "steps": args.steps, "obs_dim": args.obs_dim,
                    "act_dim": args.act_dim, "state_dim": args.state_dim, "write_s": write_s,
                    "files_mib": files_mib},
        "load": load,
        "sampler": samplers,
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(f"dataset: {args.episodes} files x {args.steps} steps, obs {args.obs_dim} / act {args.act_dim} / "
          f"physics {args.state_dim}; written in {write_s:.1f} s ({files_mib:.0f} MiB on disk)")
    print("| measure | value |\n|---|---|")
    print(f"| load time | {load['load_s']:.2f} s ({load['steps_per_s'] / 1e6:.2f} M steps/s) |")
    print(f"| loaded arrays | {load['data_mib']:.0f} MiB |")
    print(f"| peak traced memory while loading | {load['peak_traced_mib']:.0f} MiB "
          f"({load['peak_over_data']:.3f} x data) |")
    print(f"| process max RSS | {results['max_rss_mib']:.0f} MiB |")
    for row in samplers:
        print(f"| sampler k={row['k']} ({row['max_steps']} steps, batch {row['batch_size']}) | "
              f"{row['contexts_per_s']:.1f} contexts/s ({row['steps_per_s'] / 1e6:.2f} M steps/s); "
              f"prefetched {row['prefetched_contexts_per_s']:.1f} contexts/s |")
    return run.write(**results)


if __name__ == "__main__":
    main()
