"""Benchmark: ring attention (each layout) against the official `ringattention` package and dense attention.

Causal self-attention, float32, on N simulated CPU devices (default 8): wall time of the forward and of
forward+backward, and per-device temp bytes from XLA's compiled memory analysis (deterministic). Prints a
table and writes JSON.

    python -m experiments.bench.ring_attention                       # 8K, 16K, 32K tokens
    python -m experiments.bench.ring_attention --seqs 8192 --repeats 1 --out bench_results/ring.json

The official package (``pip install 'ringrl[bench]'``) imports ``jax.lib.xla_bridge``, which current JAX no
longer has; a one-line alias is installed before its import. It is called inside ``shard_map`` with
``check_vma=False`` and the same chunk sizes. It only has the contiguous layout. Tokens are handed to every
ring implementation already in its layout (as a model holds them), so the figures are the kernels' own.
Dense attention runs on one device, and only where its compiled temp memory fits ``--dense-budget-gib``.
On CPU the ring's collective-permutes are synchronous: times show compute, not compute/communication
overlap, which needs a GPU or TPU.
"""

from __future__ import annotations

import argparse
import functools
import sys

from experiments.bench import harness

NAME = "ring_attention"
TINY = dict(seqs=[256], heads=2, head_dim=16, chunk=16, repeats=1)


def _parser():
    p = harness.parser(NAME, __doc__, devices=8)
    p.add_argument("--seqs", type=int, nargs="+", default=[8192, 16384, 32768], help="global sequence lengths")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--chunk", type=int, default=512, help="query and key chunk size for every implementation")
    p.add_argument("--repeats", type=int, default=3, help="timed rounds after one warm-up; the median is kept")
    p.add_argument("--dense-budget-gib", type=float, default=4.0, help="skip dense attention above this temp size")
    p.add_argument("--no-official", action="store_true", help="skip the official ringattention package")
    return p


def _official_ring_attention():
    """The PyPI package's JAX ring attention, or None with the reason when it cannot be imported."""
    import types

    import jax
    import jax.extend

    if not hasattr(jax.lib, "xla_bridge"):  # removed from JAX; the package still reads it at import
        jax.lib.xla_bridge = types.SimpleNamespace(get_backend=jax.extend.backend.get_backend)
    try:
        import ringattention
    except ImportError as err:
        return None, f"ringattention not importable ({err}); install with pip install 'ringrl[bench]'"
    return ringattention.ringattention_jax, None


def _implementations(args, mesh, official):
    """Name -> attention function of global q, k, v; ``official`` is the package's function or None."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import PartitionSpec as P

    from ring import reference_attention, sharded_attention

    impls = {}
    for layout in ("contiguous", "striped", "zigzag"):
        impls[f"ours/{layout}"] = functools.partial(
            sharded_attention, mesh=mesh, layout=layout, query_chunk_size=args.chunk,
            key_chunk_size=args.chunk, natural_order=False)
    if official is not None:
        kwargs = dict(causal_block_size=1, deterministic=True, dropout_rng=None, attn_pdrop=0.0,
                      query_chunk_size=args.chunk, key_chunk_size=args.chunk,
                      policy=jax.checkpoint_policies.nothing_saveable, dtype=jnp.float32, precision=None,
                      prevent_cse=True)
        spec = P(None, "sp")
        impls["official/contiguous"] = jax.shard_map(
            lambda q, k, v: official(q, k, v, None, None, None, "sp", True, kwargs),
            mesh=mesh, in_specs=(spec,) * 3, out_specs=spec, check_vma=False)
    impls["dense/1 device"] = functools.partial(reference_attention, causal=True)
    return impls


def _compile(fn, shape, sharding):
    """Compiled forward and forward+backward programs, their per-device temp bytes, and inputs."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def loss(q, k, v):
        return jnp.sum(fn(q, k, v))

    aval = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=sharding)
    rng = np.random.default_rng(0)
    args = [jax.device_put(rng.standard_normal(shape, np.float32), sharding) for _ in range(3)]
    programs, row = {}, {}
    for name, program in (("fwd", jax.jit(fn)), ("fwd+bwd", jax.jit(jax.grad(loss, argnums=(0, 1, 2))))):
        compiled = program.lower(aval, aval, aval).compile()
        row[f"{name}_temp_bytes"] = int(compiled.memory_analysis().temp_size_in_bytes)
        programs[name] = functools.partial(compiled, *args)
    return programs, row


def _dense_temp_bytes(fn, shape):
    import jax
    import jax.numpy as jnp

    aval = jax.ShapeDtypeStruct(shape, jnp.float32, sharding=jax.sharding.SingleDeviceSharding(jax.devices()[0]))
    grad = jax.jit(jax.grad(lambda q, k, v: jnp.sum(fn(q, k, v)), argnums=(0, 1, 2)))
    return grad.lower(aval, aval, aval).compile().memory_analysis().temp_size_in_bytes


def _rows_at(args, run, mesh, official, seq):
    """Rows of every implementation at one sequence length."""
    from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

    # Every implementation gets the same chunks; the official package needs them within the block.
    chunk = min(args.chunk, seq // len(run.devices))
    impls = _implementations(argparse.Namespace(**{**vars(args), "chunk": chunk}), mesh, official)
    shape = (1, seq, args.heads, args.head_dim)
    skipped, calls, rows = [], {}, {}
    for name, fn in impls.items():
        if name.startswith("dense"):
            dense_temp = _dense_temp_bytes(fn, shape)
            if dense_temp > args.dense_budget_gib * 2**30:
                skipped.append({"impl": name, "seq": seq, "skipped": f"needs {dense_temp / 2**30:.1f} GiB temp",
                                "fwd+bwd_temp_bytes": int(dense_temp)})
                print(f"{name:22s} seq={seq:6d}  skipped: needs {dense_temp / 2**30:.1f} GiB", flush=True)
                continue
            sharding = SingleDeviceSharding(run.devices[0])
        else:
            sharding = NamedSharding(mesh, P(None, "sp"))
        programs, row = _compile(fn, shape, sharding)
        calls |= {(name, prog): call for prog, call in programs.items()}
        rows[name] = {"impl": name, "seq": seq, "chunk": chunk, **row}
    # Ring implementations take turns; dense apart, after them: its gigabytes of scores would otherwise
    # evict and re-fault memory for whichever program follows it in a round.
    for dense in (False, True):
        group = {key: call for key, call in calls.items() if key[0].startswith("dense") == dense}
        if group:
            for (name, prog), seconds in harness.time_round_robin(group, args.repeats).items():
                rows[name][f"{prog}_seconds"] = seconds
    for row in rows.values():
        print(f"{row['impl']:22s} seq={seq:6d}  fwd {row['fwd_seconds']:7.3f}s  fwd+bwd {row['fwd+bwd_seconds']:7.3f}s"
              f"  temp/device {row['fwd+bwd_temp_bytes'] / 2**20:8.1f} MiB", flush=True)
    return [*rows.values(), *skipped]


def main(argv=None):
    run = harness.start(NAME, _parser(), argv, tiny=TINY)
    mesh = run.mesh()
    official, why = (None, "--no-official") if run.args.no_official else _official_ring_attention()
    if official is None:
        print(f"note: official package skipped: {why}", file=sys.stderr)
    rows = []
    for seq in run.args.seqs:
        rows += _rows_at(run.args, run, mesh, official, seq)
    print("\n" + _table(rows))
    return run.write(official_skipped=why, rows=rows)


def _table(rows):
    """Markdown table, with ratios against the official package at the same sequence length."""
    official = {r["seq"]: r for r in rows if r["impl"] == "official/contiguous" and "skipped" not in r}
    lines = ["| impl | seq | fwd s | fwd+bwd s | fwd temp MiB | fwd+bwd temp MiB | time vs official | temp vs official |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['impl']} | {r['seq']} | - | - | - | {r['fwd+bwd_temp_bytes'] / 2**20:.0f} (not run) | - | - |")
            continue
        ref = official.get(r["seq"])
        t_ratio = f"{r['fwd+bwd_seconds'] / ref['fwd+bwd_seconds']:.2f}x" if ref else "-"
        m_ratio = f"{r['fwd+bwd_temp_bytes'] / ref['fwd+bwd_temp_bytes']:.2f}x" if ref else "-"
        lines.append(f"| {r['impl']} | {r['seq']} | {r['fwd_seconds']:.3f} | {r['fwd+bwd_seconds']:.3f} | "
                     f"{r['fwd_temp_bytes'] / 2**20:.1f} | {r['fwd+bwd_temp_bytes'] / 2**20:.1f} | {t_ratio} | {m_ratio} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
