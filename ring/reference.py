"""Dense attention: the oracle every fast path is tested against, and the baseline it is timed against."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ring.checks import check_attention_inputs, check_window


def reference_attention(q, k, v, *, causal: bool = True, segment_ids=None, window: int | None = None):
    """Softmax attention computed densely, in float32 or wider.

    ``softmax(q k^T / sqrt(head_dim) + mask) v`` with the full [seq, seq] score matrix materialised, so its
    memory is O(seq^2): use it for tests and short sequences only.

    Args:
      q: [batch, seq, q_heads, head_dim].
      k, v: [batch, seq, kv_heads, head_dim]; ``q_heads`` a multiple of ``kv_heads`` (grouped-query).
      causal: token i attends to tokens j <= i.
      segment_ids: optional int [batch, seq]; tokens attend only within their own segment.
      window: sliding window (needs ``causal``): token i attends to tokens j with i - window < j <= i.

    Returns:
      [batch, seq, q_heads, head_dim] in q's dtype.
    """
    check_attention_inputs(q, k, v, segment_ids)
    check_window(window, causal)
    batch, seq, q_heads, head_dim = q.shape
    kv_heads = k.shape[2]
    dtype = jnp.promote_types(q.dtype, jnp.float32)
    qg = q.astype(dtype).reshape(batch, seq, kv_heads, q_heads // kv_heads, head_dim)
    scores = jnp.einsum(
        "bqhgd,bkhd->bhgqk", qg, k.astype(dtype), precision=jax.lax.Precision.HIGHEST
    ) / jnp.sqrt(jnp.asarray(head_dim, dtype))
    mask = jnp.ones((batch, seq, seq), bool)
    if causal:
        mask &= jnp.tril(jnp.ones((seq, seq), bool))[None]
    if window is not None:
        mask &= jnp.triu(jnp.ones((seq, seq), bool), 1 - window)[None]
    if segment_ids is not None:
        mask &= segment_ids[:, :, None] == segment_ids[:, None, :]
    scores = jnp.where(mask[:, None, None], scores, -jnp.inf)
    weights = jax.nn.softmax(scores, axis=-1)
    out = jnp.einsum(
        "bhgqk,bkhd->bqhgd", weights, v.astype(dtype), precision=jax.lax.Precision.HIGHEST
    )
    return out.reshape(batch, seq, q_heads, head_dim).astype(q.dtype)
