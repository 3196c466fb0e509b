"""Ulysses attention: the per-device function of the "ulysses" context-parallel strategy (DeepSpeed-Ulysses,
Jacobs et al. 2023).

One all-to-all turns the sequence-sharded q, k, v [b, block, heads, d] into head-sharded ones
[b, seq, heads / n, d]: every device then holds the whole sequence for its share of the heads and runs
blockwise attention over it (:func:`ring.blockwise_attention`: the same block step and custom VJP as the
ring, O(chunk^2) scores), and a second all-to-all brings the output back to the sequence sharding. The
backward is the transpose: the same two all-to-alls the other way round around blockwise attention's.

Every device computes the full sequence for heads / n heads, so causal work is balanced whatever the
layout, and per-device memory is O(block) like the ring's (the head-sharded arrays hold as many elements
as the sequence-sharded ones). It needs the query heads to divide by the devices; K/V heads that do not,
but divide the devices themselves (grouped-query attention with fewer K/V heads than devices), are
repeated so that every device receives the one K/V head of its query heads.

The hybrid (``ring_axis``): the sequence is sharded over two mesh axes, groups of devices along
``ring_axis`` and devices within a group along ``axis_name``. The all-to-all within a group gives every
device its group's whole block for its share of the heads, and ring attention over ``ring_axis`` (the
same :func:`ring.ring_attention`, in place of the blockwise attention above) runs on those group blocks:
the all-to-alls stay inside a group, the ring crosses groups, and the heads need only divide by a group.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import lax

from ring.checks import check_attention_inputs, check_chunk
from ring.layouts import check_layout, from_layout, to_layout
from ring.ring_attention import blockwise_attention, ring_attention


def check_ulysses_heads(q_heads: int, kv_heads: int, num_devices: int, axis_name: str = "sp", *,
                        strategy: str = "ulysses") -> None:
    """Raises ValueError unless Ulysses can split the heads over ``num_devices`` devices (``strategy``:
    "hybrid" for the groups of the hybrid, along its ``ulysses_axis``)."""
    where = f"axis_name={axis_name!r}" if strategy == "ulysses" else f"ulysses_axis={axis_name!r}"
    advice = ("use strategy='ring' or 'allgather'" if strategy == "ulysses"
              else "use smaller groups (more groups along the ring)")
    if q_heads % num_devices:
        raise ValueError(f"strategy={strategy!r} needs q_heads={q_heads} divisible by the {num_devices} devices "
                         f"of {where}; {advice}")
    if kv_heads % num_devices and num_devices % kv_heads:
        raise ValueError(f"strategy={strategy!r} needs kv_heads={kv_heads} to divide, or be divisible by, the "
                         f"{num_devices} devices of {where} (q_heads={q_heads}); {advice}")


def sequence_chunk(chunk: int, seq: int) -> int:
    """A chunk size for a whole sequence of ``seq`` tokens: ``chunk`` clipped to it, or the largest
    divisor of ``seq`` that divides the clipped chunk."""
    chunk = min(chunk, seq)
    return chunk if seq % chunk == 0 else math.gcd(chunk, seq)


def ulysses_attention(q, k, v, *, axis_name: str, causal: bool = True, layout: str = "contiguous",
                      segment_ids=None, query_chunk_size: int = 512, key_chunk_size: int = 512,
                      float32_logits: bool = True, impl: str | None = None, window: int | None = None,
                      ring_axis: str | None = None, ring_layout: str = "zigzag"):
    """Exact attention over a sequence sharded over ``axis_name``, computed head-sharded.

    Call it inside ``jax.shard_map``; same contract as :func:`ring.ring_attention`.

    Args:
      q: local queries [batch, block, q_heads, head_dim]; q_heads divisible by the devices.
      k, v: local keys/values [batch, block, kv_heads, head_dim]; kv_heads divides, or is divisible by,
        the devices.
      axis_name: the mesh axis that shards the sequence.
      layout: the global tokens of the local blocks ("contiguous" for natural order); the layout balances
        nothing here, it only says where each token lies.
      segment_ids: optional int [batch, block].
      causal, float32_logits, impl, window: as in :func:`ring.ring_attention`.
      query_chunk_size, key_chunk_size: chunk sizes over the whole sequence (checked against the block as
        in the ring, then clipped to the sequence).
      ring_axis: the hybrid (module docstring): the mesh axis along which groups of ``axis_name`` devices
        form a ring; the global tokens are in ``ring_layout`` over the groups' blocks and contiguous over
        the devices of a group (``layout`` must then be "contiguous").

    Returns:
      Local attention output [batch, block, q_heads, head_dim] in q's dtype.
    """
    check_attention_inputs(q, k, v, segment_ids)
    check_layout(layout)
    _, block, q_heads, _ = q.shape
    kv_heads, n = k.shape[2], lax.axis_size(axis_name)
    check_ulysses_heads(q_heads, kv_heads, n, axis_name)
    check_chunk("query_chunk_size", min(query_chunk_size, block), block)
    check_chunk("key_chunk_size", min(key_chunk_size, block), block)
    if kv_heads % n:  # fewer K/V heads than devices: device j needs K/V head j * kv_heads // n
        k, v = (jnp.repeat(x, n // kv_heads, axis=2) for x in (k, v))

    def to_heads(x):  # [b, block, h, d] -> [b, seq, h / n, d], natural order
        return from_layout(lax.all_to_all(x, axis_name, 2, 1, tiled=True), n, layout, axis=1)

    seg = None
    if segment_ids is not None:
        seg = from_layout(lax.all_gather(segment_ids, axis_name, axis=1, tiled=True), n, layout, axis=1)
    seq = n * block  # the whole sequence, or the group's block in the hybrid
    chunks = dict(query_chunk_size=sequence_chunk(query_chunk_size, seq),
                  key_chunk_size=sequence_chunk(key_chunk_size, seq), float32_logits=float32_logits, impl=impl,
                  window=window, causal=causal, segment_ids=seg)
    if ring_axis is None:
        out = blockwise_attention(to_heads(q), to_heads(k), to_heads(v), **chunks)
    else:
        if layout != "contiguous":
            raise ValueError(f"the hybrid keeps a group's tokens contiguous over {axis_name!r}; got layout={layout!r} "
                             f"(the ring's layout over the groups is ring_layout={ring_layout!r})")
        out = ring_attention(to_heads(q), to_heads(k), to_heads(v), axis_name=ring_axis, layout=ring_layout,
                             **chunks)
    return lax.all_to_all(to_layout(out, n, layout, axis=1), axis_name, 1, 2, tiled=True)
