"""Benchmark of batched environment stepping: synchronous `envs.BatchEnv` against a process pool.

    python -m experiments.bench.env_stepping --out bench_results/env_stepping.json

For cartpole_swingup and walker_walk with 1, 8 and 32 environments, measures environment steps per
second (all environments together) under uniform random actions, stepped
- "sync": in this process, one environment after another (`envs.make_batch`, what `envs` ships);
- "pool": split over `--workers` worker processes, each stepping its share in lockstep, with
  observations sent back through pipes (the candidate a process pool would be).
Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np

import envs
from experiments.bench import harness

NAME = "env_stepping"
TINY = dict(tasks=["cartpole_swingup"], sizes=[1, 2], steps=5, workers=2)


def _worker(connection, name: str, seeds: list[int]) -> None:
    """Owns a sub-batch: answers ("reset",) and ("step", actions) with observations and rewards."""
    batch = envs.BatchEnv([envs.make(name, seed=s) for s in seeds])
    while True:
        command, payload = connection.recv()
        if command == "reset":
            connection.send(batch.reset())
        elif command == "step":
            step = batch.step(payload)
            connection.send((step.observation, step.reward, step.done))
        else:
            connection.close()
            return


class ProcessPoolBatch:
    """N environments split over worker processes, stepped in lockstep (the measured alternative)."""

    def __init__(self, name: str, num_envs: int, seed: int, workers: int):
        seeds = envs.batch.env_seeds(seed, num_envs)
        shares = [s.tolist() for s in np.array_split(np.array(seeds), min(workers, num_envs))]
        context = mp.get_context("spawn")
        self._connections, self._processes, self._bounds = [], [], []
        start = 0
        for share in shares:
            parent, child = context.Pipe()
            process = context.Process(target=_worker, args=(child, name, share), daemon=True)
            process.start()
            self._connections.append(parent)
            self._processes.append(process)
            self._bounds.append((start, start + len(share)))
            start += len(share)

    def reset(self) -> np.ndarray:
        for connection in self._connections:
            connection.send(("reset", None))
        return np.concatenate([c.recv() for c in self._connections])

    def step(self, actions: np.ndarray):
        for connection, (lo, hi) in zip(self._connections, self._bounds):
            connection.send(("step", actions[lo:hi]))
        parts = [c.recv() for c in self._connections]
        return tuple(np.concatenate(p) for p in zip(*parts))

    def close(self) -> None:
        for connection in self._connections:
            connection.send(("close", None))
        for process in self._processes:
            process.join(timeout=10)


def measure(batch, num_envs: int, action_dim: int, steps: int, seed: int) -> float:
    """Environment steps per second over `steps` batched steps (reset excluded, no episode ends)."""
    rng = np.random.default_rng(seed)
    actions = rng.uniform(-1, 1, (steps, num_envs, action_dim)).astype(np.float32)
    batch.reset()
    batch.step(actions[0])  # warm-up
    start = time.perf_counter()
    for t in range(1, steps):
        batch.step(actions[t])
    return num_envs * (steps - 1) / (time.perf_counter() - start)


def run(tasks, sizes, steps: int, workers: int, seed: int) -> list[dict]:
    rows = []
    for name in tasks:
        action_dim = envs.task_spec(name).action_dim
        for num_envs in sizes:
            sync = envs.make_batch(name, num_envs, seed=seed)
            sync_rate = measure(sync, num_envs, action_dim, steps, seed)
            sync.close()
            pool = ProcessPoolBatch(name, num_envs, seed, workers)
            try:
                pool_rate = measure(pool, num_envs, action_dim, steps, seed)
            finally:
                pool.close()
            rows.append({"task": name, "num_envs": num_envs, "sync_steps_per_s": sync_rate,
                         "pool_steps_per_s": pool_rate, "pool_over_sync": pool_rate / sync_rate})
    return rows


def format_table(rows: list[dict]) -> str:
    lines = [f"{'task':<18} {'envs':>4} {'sync steps/s':>13} {'pool steps/s':>13} {'pool/sync':>9}"]
    for r in rows:
        lines.append(f"{r['task']:<18} {r['num_envs']:>4} {r['sync_steps_per_s']:>13.0f} "
                     f"{r['pool_steps_per_s']:>13.0f} {r['pool_over_sync']:>9.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = harness.parser(NAME, __doc__)
    p.add_argument("--tasks", nargs="+", default=["cartpole_swingup", "walker_walk"])
    p.add_argument("--sizes", type=int, nargs="+", default=[1, 8, 32], help="environments per batch")
    p.add_argument("--steps", type=int, default=200, help="batched steps per measurement (< 1000)")
    p.add_argument("--workers", type=int, default=2, help="processes of the pool variant")
    p.add_argument("--seed", type=int, default=0)
    bench = harness.start(NAME, p, argv, tiny=TINY, uses_jax=False)
    args = bench.args
    if not 2 <= args.steps < 1000:
        p.error("--steps must be in [2, 1000) so that no episode ends during a measurement")
    if args.workers < 1:
        p.error("--workers must be positive")
    # Nothing is rendered: spare dm_control its OpenGL set-up (workers inherit this).
    os.environ.setdefault("MUJOCO_GL", "disable")
    rows = run(args.tasks, args.sizes, args.steps, args.workers, args.seed)
    print(format_table(rows))
    return bench.write(rows=rows)


if __name__ == "__main__":
    main()
