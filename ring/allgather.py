"""All-gather K/V attention: the per-device function of the "allgather" context-parallel strategy.

Instead of passing K/V blocks around the ring in ``n`` steps, every device gathers the K/V heads of the
whole sequence in one collective (only the K/V heads: with grouped-query attention they are a fraction
of the queries), puts them in natural token order, and attends with its own query block in one block
step (:mod:`ring.block_step`, the same step the ring repeats). This is MaxText's default context
parallelism and Llama 3's.

Memory per device: the gathered K/V, O(seq * kv_heads * head_dim), plus the block step's O(chunk^2)
scores; never O(seq^2). The custom VJP saves only the local blocks (O(block)): the backward gathers K/V
again, adds every query's share of dK/dV for the whole sequence (float32), and a reduce-scatter
(``psum_scatter``) sums those over the devices and hands each device its own block's. dq stays local.

Causal masks and the sliding window come from global positions: the local queries' from the layout
(:func:`ring.global_positions`), the gathered keys' are 0..seq-1, so chunk pairs the mask empties are
skipped as in the ring, and with a window only the chunks within reach are computed.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax

from ring.checks import check_attention_inputs
from ring.layouts import check_layout, from_layout, global_positions, to_layout
from ring.ring_attention import block_step

F32 = jnp.float32


@dataclasses.dataclass(frozen=True)
class _Gather:
    """Static description of one all-gather attention call."""

    axis_name: str
    layout: str  # of the local query block
    kv_layout: str  # of the local K/V block (gathered K/V are put in natural order)
    step: object  # ring.block_step.XlaStep or PallasStep

    def size(self) -> int:
        return lax.axis_size(self.axis_name)

    def gather(self, *blocks):
        """Local blocks [b, block, ...] -> the whole sequence [b, seq, ...] in natural order (None stays)."""
        def full(x):
            x = lax.all_gather(x, self.axis_name, axis=1, tiled=True)
            return from_layout(x, self.size(), self.kv_layout, axis=1)

        return tuple(None if x is None else full(x) for x in blocks)

    def scatter(self, dx, dtype):
        """Float32 gradients of the whole sequence [b, seq, ...] -> this device's block, summed over devices."""
        dx = to_layout(dx, self.size(), self.kv_layout, axis=1)
        return lax.psum_scatter(dx, self.axis_name, scatter_dimension=1, tiled=True).astype(dtype)

    def positions(self, block: int):
        """Global positions of the local queries [block] and of the gathered keys [seq]."""
        n = self.size()
        q_pos = global_positions(lax.axis_index(self.axis_name), block, n, self.layout)
        return q_pos, jnp.arange(n * block, dtype=jnp.int32)


def _forward(cfg: _Gather, q, k, v, q_seg, kv_seg):
    k_all, v_all, seg_all = cfg.gather(k, v, kv_seg)
    q_pos, k_pos = cfg.positions(q.shape[1])
    return cfg.step.result(cfg.step.forward(None, q, k_all, v_all, q_pos, k_pos, q_seg, seg_all), q)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _allgather_attention(cfg: _Gather, q, k, v, q_seg, kv_seg):
    return _forward(cfg, q, k, v, q_seg, kv_seg)[0]


def _allgather_fwd(cfg, q, k, v, q_seg, kv_seg):
    out, lse = _forward(cfg, q, k, v, q_seg, kv_seg)
    return out, (q, k, v, q_seg, kv_seg, out, lse)


def _allgather_bwd(cfg, residuals, dout):
    q, k, v, q_seg, kv_seg, out, lse = residuals
    step = cfg.step
    k_all, v_all, seg_all = cfg.gather(k, v, kv_seg)
    q_pos, k_pos = cfg.positions(q.shape[1])
    stats = step.stats(q, out, lse, dout, k.shape[2])
    grads = step.backward(None, q, k_all, v_all, dout, stats, q_pos, k_pos, q_seg, seg_all)
    f32 = jax.ShapeDtypeStruct(k_all.shape, F32)  # keep dK/dV float32 through the reduce-scatter
    dq, dk, dv = step.grads_result(grads, q, f32, f32)
    return dq, cfg.scatter(dk, k.dtype), cfg.scatter(dv, v.dtype), None, None


_allgather_attention.defvjp(_allgather_fwd, _allgather_bwd)


def allgather_attention(q, k, v, *, axis_name: str, causal: bool = True, layout: str = "zigzag",
                        kv_layout: str | None = None, segment_ids=None, kv_segment_ids=None,
                        query_chunk_size: int = 512, key_chunk_size: int = 512, float32_logits: bool = True,
                        impl: str | None = None, window: int | None = None):
    """Exact attention of the local queries over K/V gathered from every device of ``axis_name``.

    Call it inside ``jax.shard_map`` with the sequence sharded over ``axis_name``; same contract as
    :func:`ring.ring_attention`, and memory per device O(seq * kv_heads * head_dim) for the gathered K/V
    (O(block) for everything else, scores included).

    Args:
      q: local queries [batch, block, q_heads, head_dim], placed by ``layout``.
      k, v: local keys/values [batch, block, kv_heads, head_dim], placed by ``kv_layout``.
      axis_name: the mesh axis that shards the sequence.
      causal, float32_logits, impl, window: as in :func:`ring.ring_attention`.
      layout: "contiguous", "striped" or "zigzag": the global tokens of the local queries.
      kv_layout: the global tokens of the local K/V blocks; None: ``layout``. A caller holding tokens in
        natural order permutes only its queries ("contiguous" here): the K/V are gathered whole anyway.
      segment_ids: optional int [batch, block], the local queries' segment ids (``layout``).
      kv_segment_ids: the local K/V blocks' segment ids (``kv_layout``); None: ``segment_ids``, which
        then needs ``kv_layout == layout``.
      query_chunk_size: query chunk, clipped to the block (zigzag: to half of it, so that no chunk spans
        both of the block's pieces and the causal mask can skip whole chunk pairs).
      key_chunk_size: key chunk of the gathered sequence, clipped to the block (so that it divides it).

    Returns:
      Local attention output [batch, block, q_heads, head_dim] in q's dtype.
    """
    check_attention_inputs(q, k, v, segment_ids)
    check_layout(layout)
    kv_layout = layout if kv_layout is None else kv_layout
    check_layout(kv_layout)
    if kv_segment_ids is None and segment_ids is not None:
        if kv_layout != layout:
            raise ValueError(f"kv_layout={kv_layout!r} differs from layout={layout!r}: pass kv_segment_ids too")
        kv_segment_ids = segment_ids
    if (segment_ids is None) != (kv_segment_ids is None):
        raise ValueError("segment_ids and kv_segment_ids must be given together")
    block = q.shape[1]
    if "zigzag" in (layout, kv_layout) and block % 2:
        raise ValueError(f"layout='zigzag' needs an even per-device block, got {block} tokens")
    if layout == "zigzag" and block > 1:  # a query chunk within one of the two halves: causal skipping works
        query_chunk_size = min(query_chunk_size, block // 2)
    step = block_step(q, k, causal, query_chunk_size, key_chunk_size, float32_logits, impl, window,
                      k_len=block)
    return _allgather_attention(_Gather(axis_name, layout, kv_layout, step), q, k, v, segment_ids, kv_segment_ids)
