"""Blockwise feed-forward (BPT): apply a position-wise function chunk by chunk along the sequence."""

from __future__ import annotations

import jax
from jax import lax


def blockwise_feedforward(fn, x, chunk_size: int, *, remat: bool = True):
    """``fn(x)`` computed over ``chunk_size``-token chunks of the sequence (axis 1), one at a time.

    The feed-forward's wide hidden activation [batch, seq, 4 * dim] never exists for the whole sequence:
    only for one chunk (Ring Attention paper, section 3). With ``remat`` the backward pass recomputes each
    chunk's hidden activation instead of saving it, so training memory is O(chunk) too.

    Args:
      fn: position-wise function [batch, chunk, ...] -> [batch, chunk, ...] (may close over parameters).
      x: [batch, seq, ...].
      chunk_size: tokens per chunk; must divide seq. A chunk of seq or more means one call.
      remat: recompute each chunk in the backward pass.

    Returns:
      [batch, seq, ...] as ``fn(x)``.
    """
    batch, seq = x.shape[:2]
    if chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be positive")
    if chunk_size >= seq:
        return fn(x)
    if seq % chunk_size:
        raise ValueError(f"chunk_size={chunk_size} must divide the sequence length {seq}")
    body = jax.checkpoint(fn) if remat else fn
    chunks = x.reshape(batch, seq // chunk_size, chunk_size, *x.shape[2:]).swapaxes(0, 1)
    out = lax.map(body, chunks)
    return out.swapaxes(0, 1).reshape(batch, seq, *out.shape[3:])
