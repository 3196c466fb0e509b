"""Blockwise feed-forward (BPT): apply a position-wise function chunk by chunk along the sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def blockwise_feedforward(fn, x, chunk_size: int, *, remat: bool = True, seq_shards: int = 1):
    """``fn(x)`` computed over ``chunk_size``-token chunks of the sequence (axis 1), one at a time.

    The feed-forward's wide hidden activation [batch, seq, 4 * dim] never exists for the whole sequence:
    only for one chunk (Ring Attention paper, section 3). With ``remat`` the backward pass recomputes each
    chunk's hidden activation instead of saving it, so training memory is O(chunk) too.

    Args:
      fn: position-wise function [batch, chunk, ...] -> [batch, chunk, ...] (may close over parameters).
      x: [batch, seq, ...].
      chunk_size: tokens per chunk. A chunk of seq or more means one call; when it does not divide seq,
        the last ``seq % chunk_size`` tokens form one shorter chunk.
      remat: recompute each chunk in the backward pass.
      seq_shards: the number of devices the sequence is sharded over (contiguous blocks). Each step then
        takes one chunk from every device's block, so the loop runs over an unsharded axis and every
        device works on its own tokens; a loop over chunks of the global sequence would make XLA gather
        the whole sequence on every device. The chunk is cut to the largest divisor of the block.

    Returns:
      [batch, seq, ...] as ``fn(x)``.
    """
    batch, seq = x.shape[:2]
    if chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be positive")
    if chunk_size >= seq:
        return fn(x)
    body = jax.checkpoint(fn) if remat else fn
    if seq_shards > 1:
        return _per_device_blocks(body, x, chunk_size, seq_shards)
    whole = seq - seq % chunk_size
    chunks = x[:, :whole].reshape(batch, whole // chunk_size, chunk_size, *x.shape[2:]).swapaxes(0, 1)
    out = lax.map(body, chunks)
    out = out.swapaxes(0, 1).reshape(batch, whole, *out.shape[3:])
    if whole == seq:
        return out
    return jnp.concatenate([out, body(x[:, whole:])], axis=1)


def _per_device_blocks(body, x, chunk_size: int, shards: int):
    """[batch, shards * iters * chunk, ...] -> loop over ``iters`` of [batch, shards * chunk, ...] pieces."""
    batch, seq, rest = x.shape[0], x.shape[1], x.shape[2:]
    if seq % shards:
        raise ValueError(f"seq_shards={shards} must divide the sequence length {seq}")
    block = seq // shards
    chunk = max(c for c in range(1, min(chunk_size, block) + 1) if block % c == 0)
    iters = block // chunk
    pieces = jnp.moveaxis(x.reshape(batch, shards, iters, chunk, *rest), 2, 0)
    out = lax.map(lambda p: body(p.reshape(batch, shards * chunk, *rest)).reshape(batch, shards, chunk, -1), pieces)
    return jnp.moveaxis(out, 0, 2).reshape(batch, seq, *out.shape[4:])
