"""Attention of a few new tokens over a KV cache, optionally sharded over the ring axis.

A cache of ``L`` slots is a ring buffer: token ``j`` of a row's stream lives in slot ``j mod L``. New
queries at positions ``p`` attend to the tokens ``j <= p`` the cache holds (causal), so one decoding step
costs O(cache), not O(context^2). A cache at least as long as the stream is the plain case (slot ``j``
holds token ``j``; slots beyond the last written token are never read, so a reused cache needs no
clearing); a layer with a sliding window of ``W`` tokens needs only ``W + t - 1`` slots when it decodes
``t`` tokens a call (:func:`cache_length`), whatever the length of the stream.

When the cache is sharded along its length over ``axis_name``, every device attends over its share and
returns the partial result with its log-sum-exp; the shares are merged exactly (tree-attention style):

    m = max_i lse_i,   out = sum_i exp(lse_i - m) * out_i / sum_i exp(lse_i - m)

with one ``pmax`` and two ``psum`` over the axis, instead of sending the cache around the ring.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import PartitionSpec as P

from ring.checks import check_window


def cache_length(max_len: int, window: int | None, max_new: int = 1, shards: int = 1) -> int:
    """Slots a layer's cache needs for streams of up to ``max_len`` tokens decoded ``max_new`` at a time:
    ``max_len`` for full attention; with a ``window``, the last ``window`` tokens of the oldest new query
    and the new tokens after it, ``window + max_new - 1``, rounded up to a multiple of ``shards`` (the
    devices its slots are split over), when that is shorter. A call that feeds more than ``max_new``
    tokens to such a cache would overwrite keys its oldest queries need."""
    if window is None:
        return max_len
    return min(max_len, -(-(window + max_new - 1) // shards) * shards)


def write_cache(cache, new, start):
    """Writes ``new`` [b, t, h, d] into ``cache`` [b, L, h, d] at the tokens ``start`` .. ``start + t - 1``
    of each row (``start`` int32 [b]): slots ``(start + i) mod L``."""
    length, t = cache.shape[1], new.shape[1]
    if t > length:
        raise ValueError(f"{t} new tokens do not fit a cache of {length} slots")
    slots = (start[:, None] + jnp.arange(t, dtype=start.dtype)[None]) % length
    return jax.vmap(lambda c, x, s: c.at[s].set(x, unique_indices=True))(cache, new.astype(cache.dtype), slots)


def slot_positions(slots, last, length):
    """The token each of ``slots`` holds in a ring buffer of ``length`` slots whose newest token is ``last``
    ([b]): ``last - ((last - slot) mod length)``; negative for slots not written yet. Returns [b, slots]."""
    return last[:, None] - (last[:, None] - slots[None, :]) % length


def _partial_attention(q, k_cache, v_cache, q_positions, slot_offset, window=None, total_length=None):
    """Unnormalised softmax pieces of q over one cache shard (slots ``slot_offset`` onwards of a ring
    buffer of ``total_length`` slots, default this shard's length).

    Returns:
      out [b, t, hq, d] (normalised within the shard) and lse [b, t, hq] (natural log; -inf where the
      shard has no visible slot).
    """
    batch, t_new, q_heads, head_dim = q.shape
    length, kv_heads = k_cache.shape[1], k_cache.shape[2]
    groups = q_heads // kv_heads
    qg = q.astype(jnp.float32).reshape(batch, t_new, kv_heads, groups, head_dim) / math.sqrt(head_dim)
    scores = jnp.einsum("bthgd,blhd->bhgtl", qg, k_cache.astype(jnp.float32), precision=lax.Precision.HIGHEST)
    held = slot_positions(slot_offset + jnp.arange(length), q_positions[:, -1],
                          length if total_length is None else total_length)[:, None, :]  # [b, 1, L]
    visible = (held >= 0) & (held <= q_positions[:, :, None])  # [b, t, L]
    if window is not None:  # sliding window: tokens j > p - window
        visible &= held > q_positions[:, :, None] - window
    scores = jnp.where(visible[:, None, None], scores, -jnp.inf)
    m = jnp.max(scores, axis=-1)
    m_safe = jnp.where(jnp.isneginf(m), 0.0, m)
    p = jnp.exp(scores - m_safe[..., None])
    l = jnp.sum(p, axis=-1)
    out = jnp.einsum("bhgtl,blhd->bthgd", p, v_cache.astype(jnp.float32), precision=lax.Precision.HIGHEST)
    l_t = jnp.moveaxis(l, -1, 1)[..., None]  # [b, t, h, g, 1]
    out = out / jnp.where(l_t == 0, 1.0, l_t)
    lse = jnp.where(l == 0, -jnp.inf, m_safe + jnp.log(jnp.where(l == 0, 1.0, l)))
    return out.reshape(batch, t_new, q_heads, head_dim), jnp.moveaxis(lse, -1, 1).reshape(batch, t_new, q_heads)


def cached_attention(q, k_cache, v_cache, q_positions, *, mesh=None, axis_name: str = "sp", batch_axis=None,
                     window: int | None = None):
    """New queries attending over a KV cache (causal by position).

    Args:
      q: [batch, t_new, q_heads, head_dim], the new tokens' queries.
      k_cache, v_cache: [batch, slots, kv_heads, head_dim], with the new tokens already written
        (:func:`write_cache`): a ring buffer, token j in slot j mod slots.
      q_positions: int32 [batch, t_new], each new token's position in its row's stream, consecutive; the
        last is the newest token the cache holds.
      mesh: when given, the cache is sharded along its slots over ``axis_name`` (and the batch over
        ``batch_axis``); partial results are merged exactly by log-sum-exp.
      window: sliding window: a query at position p attends to tokens j with p - window < j <= p; the
        cache then needs only :func:`cache_length` slots.

    Returns:
      [batch, t_new, q_heads, head_dim] in q's dtype.
    """
    if q.shape[2] % k_cache.shape[2]:
        raise ValueError(f"q_heads={q.shape[2]} must be a multiple of kv_heads={k_cache.shape[2]}")
    if q_positions.shape != q.shape[:2]:
        raise ValueError(f"q_positions must have shape {q.shape[:2]}, got {q_positions.shape}")
    check_window(window, causal=True)
    if mesh is None:
        return _partial_attention(q, k_cache, v_cache, q_positions, 0, window)[0].astype(q.dtype)
    n = mesh.shape[axis_name]
    if k_cache.shape[1] % n:
        raise ValueError(f"cache length {k_cache.shape[1]} must be divisible by the {n} devices of {axis_name!r}")
    shard_len = k_cache.shape[1] // n
    b = batch_axis

    def local(q, k_cache, v_cache, q_positions):
        offset = lax.axis_index(axis_name) * shard_len
        out, lse = _partial_attention(q, k_cache, v_cache, q_positions, offset, window, shard_len * n)
        m = lax.pmax(lse, axis_name)
        m = jnp.where(jnp.isneginf(m), 0.0, m)
        weight = jnp.exp(lse - m)  # 0 for shards that see no slot
        num = lax.psum(out * weight[..., None], axis_name)
        den = lax.psum(weight, axis_name)[..., None]
        return (num / jnp.where(den == 0, 1.0, den)).astype(q.dtype)

    run = jax.shard_map(local, mesh=mesh, in_specs=(P(b), P(b, axis_name), P(b, axis_name), P(b)), out_specs=P(b))
    return run(q, k_cache, v_cache, q_positions)


def make_cached_attention(mesh=None, axis_name: str = "sp", batch_axis=None):
    """``fn(q, k_cache, v_cache, q_positions)`` for the transformer's decoding path."""
    return functools.partial(cached_attention, mesh=mesh, axis_name=axis_name, batch_axis=batch_axis)
