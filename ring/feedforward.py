"""Blockwise feed-forward (BPT): apply a position-wise function chunk by chunk along the sequence."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax


def blockwise_feedforward(fn, x, chunk_size: int, *, remat: bool = True):
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

    Returns:
      [batch, seq, ...] as ``fn(x)``.
    """
    batch, seq = x.shape[:2]
    if chunk_size <= 0:
        raise ValueError(f"chunk_size={chunk_size} must be positive")
    if chunk_size >= seq:
        return fn(x)
    body = jax.checkpoint(fn) if remat else fn
    whole = seq - seq % chunk_size
    chunks = x[:, :whole].reshape(batch, whole // chunk_size, chunk_size, *x.shape[2:]).swapaxes(0, 1)
    out = lax.map(body, chunks)
    out = out.swapaxes(0, 1).reshape(batch, whole, *out.shape[3:])
    if whole == seq:
        return out
    return jnp.concatenate([out, body(x[:, whole:])], axis=1)
