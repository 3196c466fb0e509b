"""The Pallas kernels' tile sweep, a section of :mod:`experiments.bench.pallas`.

At ``--sweep-seq`` (16K) the kernels are called directly (a ring of one, no wrappers) with a few tile
sizes and launch settings around ``ring.pallas_tiles.default_tiles``, forward and forward+backward, to
retune those defaults on a new card.
"""

from __future__ import annotations

import gc

from experiments.bench.attention_timing import causal_flops, inputs, measure


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
        q, k, v, dout = inputs(args, args.sweep_seq, head_dim)
        for tiles in _candidates(head_dim, args.sweep_seq)[: args.sweep_max]:
            row = {"seq": args.sweep_seq, "head_dim": head_dim, "tiles": dataclasses.asdict(tiles)}
            measured = measure("pallas", kernel_attention(tiles, interpret=not gpu), q, k, v, dout, args.repeats)
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
