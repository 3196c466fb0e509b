"""Benchmark: the context-parallel strategies side by side (ring, all-gather K/V, Ulysses), the rule of
``strategy="auto"``, and the sliding window against full causal attention.

Causal self-attention, float32, tokens already in the zigzag layout (as a model holds them), on N simulated
CPU devices (default 8): forward+backward wall time and per-device temp bytes from XLA's compiled memory
analysis (deterministic), for per-device blocks of 64 to 8,192 tokens at GQA ratios 1 and 4 (q_heads /
kv_heads). Every strategy of one (block, ratio) cell is compiled first and then timed in turns, so load on
a shared machine falls on all alike. Then the rule: which strategy ``"auto"`` picks in each cell under
``--memory-budget-mib``, its time against the cell's best, and its memory against the budget. Then the
sliding window at ``seq / 8`` against full causal attention, per strategy, at ``--window-blocks``: full
causal at ``--chunk`` and at the window's own chunk (an eighth of the window), the window in the zigzag
layout (every hop kept) and the contiguous one (the ring stops after the hops the window reaches). Then the
hybrid (Ulysses within groups of devices, the ring across the groups) beside the others at
``--hybrid-blocks``, with 8 query heads and with the agent's 2 (which Ulysses over 8 devices refuses).

    python -m experiments.bench.ring_strategies                     # the README's table
    python -m experiments.bench.ring_strategies --quick             # blocks 64, 512, 2048; one repeat
    python -m experiments.bench.ring_strategies --blocks 256 1024 --ratios 4 --no-window
    python -m experiments.bench.ring_strategies --rows-from a.json b.json   # tables of earlier runs, merged

On CPU the collectives are synchronous copies between device threads that share the cores: times show the
work each strategy does (block steps, copies, loop overhead), not communication overlap.
"""

from __future__ import annotations

import argparse
import functools
import json
from pathlib import Path

from experiments.bench import harness

NAME = "ring_strategies"
STRATEGIES = ("ring", "allgather", "ulysses")
TINY = dict(blocks=[16], ratios=[4], q_heads=8, head_dim=8, chunk=16, repeats=1, window_blocks=[16],
            hybrid_blocks=[16])
QUICK = dict(blocks=[64, 512, 2048], repeats=1, window_blocks=[1024])  # about 5 minutes on 2 cores


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--blocks", type=int, nargs="+", default=[64, 256, 512, 1024, 2048, 4096, 8192],
                   help="per-device blocks (tokens); the sequence is devices x block")
    p.add_argument("--ratios", type=int, nargs="+", default=[1, 4], help="GQA ratios q_heads / kv_heads")
    p.add_argument("--q-heads", type=int, default=8, help="query heads (Ulysses needs a multiple of the devices)")
    p.add_argument("--head-dim", type=int, default=32)
    p.add_argument("--chunk", type=int, default=512, help="query and key chunk size of every strategy")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up; the median is kept")
    p.add_argument("--long-block", type=int, default=2048,
                   help="blocks above this are timed once without warm-up (compiled ahead of time, minutes a call)")
    p.add_argument("--memory-budget-mib", type=float, default=256.0,
                   help="per-device budget under which the auto rule is evaluated")
    p.add_argument("--window-blocks", type=int, nargs="+", default=[1024, 4096],
                   help="per-device blocks at which the window seq/8 is measured against full causal")
    p.add_argument("--no-window", action="store_true", help="skip the sliding-window measurement")
    p.add_argument("--hybrid-blocks", type=int, nargs="*", default=[256, 1024],
                   help="per-device blocks at which the hybrid is measured beside the others (none: skip)")
    p.add_argument("--hybrid-groups", type=int, nargs="+", default=[2, 4],
                   help="the hybrid's rings of groups: 2 groups of 4 devices, 4 groups of 2")
    p.add_argument("--quick", action="store_true", help=f"a short run: {QUICK}")
    p.add_argument("--rows-from", type=Path, nargs="+", default=None,
                   help="measure nothing: merge the rows of these earlier outputs (a later file's cells replace "
                        "an earlier one's) and evaluate the auto rule on them under --memory-budget-mib")
    return p


def _merged(paths):
    """(rows, window rows) of earlier outputs, one row per cell, later files first."""
    cells = {}
    for path in paths:
        result = json.loads(Path(path).read_text())
        for section in ("rows", "window"):
            for row in result.get(section, []):
                key = (row["strategy"], row["block"], row["ratio"], row["window"], row.get("layout"), row.get("chunk"))
                cells[(section, *key)] = row
    return tuple([row for key, row in cells.items() if key[0] == section] for section in ("rows", "window"))


def attention(mesh, strategy, chunk, window=None, layout="zigzag", groups=None):
    """(attention on global arrays, the sequence's sharding); ``groups``: the hybrid, with the mesh's
    devices as ``groups`` rings of Ulysses groups ("sp" across, "up" within)."""
    import numpy as np
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    from ring import sharded_attention

    extra = {}
    if groups is not None:
        mesh = Mesh(np.asarray(mesh.devices).reshape(groups, -1), ("sp", "up"))
        extra = dict(ulysses_axis="up")
    fn = functools.partial(sharded_attention, mesh=mesh, layout=layout, natural_order=False, strategy=strategy,
                           query_chunk_size=chunk, key_chunk_size=chunk, window=window, **extra)
    return fn, NamedSharding(mesh, P(None, ("sp", "up") if groups is not None else "sp"))


def compile_grad(fn, q_shape, kv_shape, sharding):
    """Forward+backward of ``sum(fn(q, k, v))`` on float32 inputs, compiled: (the compiled program, its
    input avals)."""
    import jax
    import jax.numpy as jnp

    program = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2)))
    avals = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=sharding) for s in (q_shape, kv_shape, kv_shape)]
    return program.lower(*avals).compile(), avals


def _compiled(fn, q_shape, kv_shape, sharding):
    """The compiled forward+backward of ``sum(fn(q, k, v))``, its per-device temp bytes, and a call on
    random inputs."""
    import jax
    import numpy as np

    compiled, avals = compile_grad(fn, q_shape, kv_shape, sharding)
    rng = np.random.default_rng(0)
    args = [jax.device_put(rng.standard_normal(a.shape, np.float32), sharding) for a in avals]
    return int(compiled.memory_analysis().temp_size_in_bytes), functools.partial(compiled, *args)


def _timed(args, mesh, block, variants):
    """Compiles every variant (a row's settings: strategy, layout, chunk, window) at one per-device block
    and times them in turns; returns the rows with their seconds and per-device temp bytes."""
    calls = {}
    for i, row in enumerate(variants):
        fn, sharding = attention(mesh, row["strategy"], row["chunk"], row["window"], row["layout"],
                                  row.get("groups"))
        q_heads = row.get("q_heads", args.q_heads)
        q_shape, kv_shape = ((1, row["seq"], heads, args.head_dim) for heads in (q_heads, row["kv_heads"]))
        row["fwd+bwd_temp_bytes"], calls[i] = _compiled(fn, q_shape, kv_shape, sharding)
    long = block > args.long_block
    seconds = harness.time_round_robin(calls, 1 if long else args.repeats, warmup=0 if long else 1)
    for i, row in enumerate(variants):
        row["fwd+bwd_seconds"] = seconds[i]
        window = "full" if row["window"] is None else f"W={row['window']}"
        print(f"{_name(row):11s} heads={row.get('q_heads', args.q_heads)}/{row['kv_heads']} block={block:5d} "
              f"{row['layout']:10s} chunk={row['chunk']:4d} {window:8s} fwd+bwd {row['fwd+bwd_seconds']:8.3f}s  "
              f"temp/device {row['fwd+bwd_temp_bytes'] / 2**20:8.1f} MiB", flush=True)
    return variants


def _name(row) -> str:
    return row["strategy"] if "groups" not in row else f"hybrid {row['groups']}x{row['within']}"


def _row(n, block, ratio, args, strategy, *, layout="zigzag", chunk=None, window=None):
    return {"strategy": strategy, "block": block, "seq": n * block, "ratio": ratio,
            "kv_heads": args.q_heads // ratio, "layout": layout,
            "chunk": min(args.chunk, block) if chunk is None else chunk, "window": window}


def _hybrid_cell(args, mesh, n, block):
    """The hybrid (Ulysses within groups, the ring across them) beside the ring, all-gather and Ulysses,
    timed in turns: at ``--q-heads`` with GQA 4, and at 2 query and 2 K/V heads (the agent presets'),
    where Ulysses over every device is refused and only groups of 2 devices can split the heads."""
    variants = []
    for q_heads, kv_heads in ((args.q_heads, args.q_heads // 4), (2, 2)):
        for strategy in STRATEGIES:
            if strategy == "ulysses" and q_heads % n:
                continue
            variants.append({**_row(n, block, q_heads // kv_heads, args, strategy), "q_heads": q_heads,
                             "kv_heads": kv_heads})
        for groups in args.hybrid_groups:
            if q_heads % (n // groups) == 0 and (kv_heads % (n // groups) == 0 or (n // groups) % kv_heads == 0):
                variants.append({**_row(n, block, q_heads // kv_heads, args, "hybrid"), "q_heads": q_heads,
                                 "kv_heads": kv_heads, "groups": groups, "within": n // groups})
    return _timed(args, mesh, block, variants)


def _hybrid_table(rows):
    lines = ["| block | heads (q/kv) | " + " | ".join(["strategy", "s", "MiB", "/ ring"]) + " |",
             "|---|---|---|---|---|---|"]
    for block, q_heads in dict.fromkeys((r["block"], r["q_heads"]) for r in rows):
        cell = [r for r in rows if (r["block"], r["q_heads"]) == (block, q_heads)]
        ring = next(r for r in cell if r["strategy"] == "ring")["fwd+bwd_seconds"]
        for r in cell:
            lines.append(f"| {block} | {q_heads}/{r['kv_heads']} | {_name(r)} | {r['fwd+bwd_seconds']:.3f} | "
                         f"{r['fwd+bwd_temp_bytes'] / 2**20:.1f} | {r['fwd+bwd_seconds'] / ring:.2f}x |")
    return "\n".join(lines)


def _cell(args, mesh, n, block, ratio):
    """Every strategy at one per-device block and GQA ratio: full causal, zigzag, ``--chunk``."""
    return _timed(args, mesh, block, [_row(n, block, ratio, args, s) for s in STRATEGIES])


def _window_cell(args, mesh, n, block, ratio):
    """The window W = seq / 8 against full causal attention, per strategy, timed in turns: full causal at
    ``--chunk`` and at the window's chunk (``ring.ring_attention.window_chunk``: an eighth of W), both
    zigzag; the window zigzag (every hop kept) and contiguous (the ring stops after W / block + 1 hops)."""
    from ring.ring_attention import window_chunk

    window = n * block // 8
    chunk = min(args.chunk, block)
    small = window_chunk(chunk, window)
    variants = []
    for strategy in STRATEGIES:
        variants += [_row(n, block, ratio, args, strategy, chunk=c) for c in sorted({chunk, small}, reverse=True)]
        variants += [_row(n, block, ratio, args, strategy, layout=layout, chunk=small, window=window)
                     for layout in ("zigzag", "contiguous")]
    return _timed(args, mesh, block, variants)


def _auto(args, rows, n):
    """What ``strategy="auto"`` picks in every cell, against the cell's best time and the memory budget."""
    from ring import choose_strategy
    from ring.strategy import Shapes

    budget = int(args.memory_budget_mib * 2**20)
    verdicts = []
    cells = sorted({(r["block"], r["ratio"]) for r in rows})
    for block, ratio in cells:
        cell = {r["strategy"]: r for r in rows if (r["block"], r["ratio"]) == (block, ratio)}
        shapes = Shapes(batch=1, block=block, q_heads=args.q_heads, kv_heads=args.q_heads // ratio,
                        head_dim=args.head_dim, num_devices=n,
                        query_chunk=args.chunk, key_chunk=args.chunk)
        choice = choose_strategy(shapes, memory_budget=budget)
        best = min(cell.values(), key=lambda r: r["fwd+bwd_seconds"])
        fitting = [r for r in cell.values() if r["fwd+bwd_temp_bytes"] <= budget]
        best_fitting = min(fitting, key=lambda r: r["fwd+bwd_seconds"]) if fitting else None
        verdicts.append({
            "block": block, "ratio": ratio, "auto": choice, "best": best["strategy"],
            "best_within_budget": best_fitting and best_fitting["strategy"],
            "auto_over_best": cell[choice]["fwd+bwd_seconds"] / best["fwd+bwd_seconds"],
            "auto_over_best_within_budget": best_fitting and
            cell[choice]["fwd+bwd_seconds"] / best_fitting["fwd+bwd_seconds"],
            "best_over_ring": best["fwd+bwd_seconds"] / cell["ring"]["fwd+bwd_seconds"],
            "auto_within_budget": cell[choice]["fwd+bwd_temp_bytes"] <= budget,
            "ring_within_budget": cell["ring"]["fwd+bwd_temp_bytes"] <= budget,
        })
    return verdicts


def main(argv=None):
    run = harness.start(NAME, _parser(), argv, tiny=TINY)
    if run.args.quick and not run.args.tiny:
        run.args = argparse.Namespace(**{**vars(run.args), **QUICK})
    args, mesh, n = run.args, run.mesh(), len(run.devices)
    if args.rows_from:
        rows, window_rows = _merged(args.rows_from)
        auto = _auto(args, rows, n)
        print(_table(rows, auto) + "\n\n" + _window_table(window_rows))
        return run.write(rows=rows, auto=auto, window=window_rows, window_over_full=_window_ratios(window_rows),
                         rows_from=[str(p) for p in args.rows_from])
    rows = []
    for block in args.blocks:
        for ratio in args.ratios:
            rows += _cell(args, mesh, n, block, ratio)
            run.write(rows=rows)
    auto = _auto(args, rows, n)
    window_rows = []
    if not args.no_window:
        for block in args.window_blocks:
            window_rows += _window_cell(args, mesh, n, block, args.ratios[-1])
            run.write(rows=rows, auto=auto, window=window_rows)
    hybrid_rows = []
    for block in args.hybrid_blocks:
        hybrid_rows += _hybrid_cell(args, mesh, n, block)
        run.write(rows=rows, auto=auto, window=window_rows, hybrid=hybrid_rows)
    print("\n" + _table(rows, auto) + "\n\n" + _window_table(window_rows) + "\n\n" + _hybrid_table(hybrid_rows))
    return run.write(rows=rows, auto=auto, window=window_rows, window_over_full=_window_ratios(window_rows),
                     hybrid=hybrid_rows)


def _table(rows, auto):
    """Markdown: one line per (block, ratio), every strategy's time and memory, auto's pick."""
    picks = {(a["block"], a["ratio"]): a for a in auto}
    head = " | ".join(f"{s} s | {s} MiB" for s in STRATEGIES)
    lines = [f"| block | ratio | {head} | best / ring | auto | auto / best |",
             "|---|---|" + "---|---|" * len(STRATEGIES) + "---|---|---|"]
    for (block, ratio), pick in picks.items():
        cell = {r["strategy"]: r for r in rows if (r["block"], r["ratio"]) == (block, ratio)}
        values = " | ".join(f"{cell[s]['fwd+bwd_seconds']:.3f} | {cell[s]['fwd+bwd_temp_bytes'] / 2**20:.1f}"
                            for s in STRATEGIES)
        lines.append(f"| {block} | {ratio} | {values} | {pick['best_over_ring']:.2f}x | {pick['auto']} | "
                     f"{pick['auto_over_best']:.2f}x |")
    return "\n".join(lines)


def _window_ratios(window_rows):
    """Per strategy and block: the window's time over full causal attention's at the same chunk and layout
    (zigzag), and the best window's (either layout) over the best full causal's (either chunk)."""
    verdicts = []
    for strategy, block in dict.fromkeys((r["strategy"], r["block"]) for r in window_rows):
        cell = [r for r in window_rows if (r["strategy"], r["block"]) == (strategy, block)]
        full = [r for r in cell if r["window"] is None]
        windowed = [r for r in cell if r["window"] is not None]
        if not full or not windowed:
            continue
        same = next((f for f in full if f.get("chunk") == windowed[0].get("chunk")
                     and f.get("layout", "zigzag") == "zigzag"), full[0])
        zigzag = next((w for w in windowed if w.get("layout", "zigzag") == "zigzag"), windowed[0])
        best_full = min(full, key=lambda r: r["fwd+bwd_seconds"])
        best_window = min(windowed, key=lambda r: r["fwd+bwd_seconds"])
        verdicts.append({
            "strategy": strategy, "block": block, "window": zigzag["window"], "chunk": zigzag.get("chunk"),
            "full_seconds": same["fwd+bwd_seconds"], "window_seconds": zigzag["fwd+bwd_seconds"],
            "time_over_full": zigzag["fwd+bwd_seconds"] / same["fwd+bwd_seconds"],
            "best_full": {"chunk": best_full.get("chunk"), "seconds": best_full["fwd+bwd_seconds"]},
            "best_window": {"layout": best_window.get("layout", "zigzag"), "seconds": best_window["fwd+bwd_seconds"]},
            "best_over_best_full": best_window["fwd+bwd_seconds"] / best_full["fwd+bwd_seconds"],
        })
    return verdicts


def _window_table(window_rows):
    lines = ["| strategy | block | window (chunk) | full causal s | window s (zigzag) | window / full | "
             "best window / best full |", "|---|---|---|---|---|---|---|"]
    for v in _window_ratios(window_rows):
        lines.append(f"| {v['strategy']} | {v['block']} | {v['window']} ({v['chunk']}) | {v['full_seconds']:.3f} | "
                     f"{v['window_seconds']:.3f} | {v['time_over_full']:.2f}x | {v['best_over_best_full']:.2f}x "
                     f"({v['best_window']['layout']} vs chunk {v['best_full']['chunk']}) |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
