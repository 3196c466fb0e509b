"""Blockwise attention of one query block against one key/value block, forward and backward.

This is the step the ring repeats: the local queries against whichever K/V block the device holds now.
Both passes loop over chunks (``query_chunk_size`` x ``key_chunk_size``) so that no more than one chunk of
scores exists at a time, and a chunk pair that the mask empties entirely is skipped by ``lax.cond``: it
costs no FLOPs.

Shapes inside this module (grouped-query attention keeps query heads grouped by their K/V head):

    q, o, do:  [batch, q_len, kv_heads, groups, head_dim]
    k, v:      [batch, k_len, kv_heads, head_dim]
    m, l, lse: [batch, kv_heads, groups, q_len]     (row statistics, float32)
    pos:       int32 [len]                           (global token positions)
    seg:       int [batch, len] or None              (segment ids)

Forward keeps the online-softmax state (running max ``m``, running denominator ``l``, unnormalised output
``o``; Ring Attention paper, section 3 / Milakov & Gimelshein 2018). Backward is FlashAttention-2's: with the
final log-sum-exp ``lse`` and ``delta = rowsum(do * out)`` of the *whole* sequence, every chunk pair's
probabilities and gradients are recomputed exactly and independently, so the ring only has to add them up.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

F32 = jnp.float32


class SoftmaxState(NamedTuple):
    """Online-softmax accumulators of one query block (float32)."""

    o: jax.Array  # [b, q, h, g, d], unnormalised output
    m: jax.Array  # [b, h, g, q], running max of the scores
    l: jax.Array  # [b, h, g, q], running sum of exp(score - m)


def init_state(q) -> SoftmaxState:
    batch, q_len, kv_heads, groups, _ = q.shape
    stats_shape = (batch, kv_heads, groups, q_len)
    return SoftmaxState(
        o=jnp.zeros(q.shape, F32),
        m=jnp.full(stats_shape, -jnp.inf, F32),
        l=jnp.zeros(stats_shape, F32),
    )


def finalize(state: SoftmaxState, dtype):
    """Normalised output [b, q, h, g, d] in ``dtype`` and the natural-log ``lse`` [b, h, g, q]."""
    empty = state.l == 0  # a row that no key may attend to: output 0, lse -inf
    l_safe = jnp.where(empty, 1.0, state.l)
    out = state.o / jnp.moveaxis(l_safe, -1, 1)[..., None]
    lse = jnp.where(empty, -jnp.inf, state.m + jnp.log(l_safe))
    return out.astype(dtype), lse


def _mask(q_pos, k_pos, q_seg, k_seg, causal: bool):
    """Boolean [batch or 1, q_len, k_len]: which (query, key) pairs may attend."""
    mask = jnp.ones((1, q_pos.shape[0], k_pos.shape[0]), bool)
    if causal:
        mask &= (q_pos[:, None] >= k_pos[None, :])[None]
    if q_seg is not None:
        mask &= q_seg[:, :, None] == k_seg[:, None, :]
    return mask


def block_may_attend(q_pos, k_pos, causal: bool):
    """False when a causal mask empties the whole block pair, judged from positions alone."""
    if not causal:
        return jnp.bool_(True)
    return jnp.max(q_pos) >= jnp.min(k_pos)


def _precision(dtype):
    return lax.Precision.HIGHEST if dtype == F32 else lax.Precision.DEFAULT


def _scores(q, k, precision):
    return jnp.einsum("bqhgd,bkhd->bhgqk", q, k, precision=precision, preferred_element_type=F32)


def _slice(x, start, size, axis):
    return x if x is None else lax.dynamic_slice_in_dim(x, start, size, axis)


def block_forward(state, q, k, v, q_pos, k_pos, q_seg, k_seg, *, causal, q_chunk, k_chunk, scale,
                  float32_logits=True):
    """Folds one K/V block into the online-softmax state of the query block.

    Args:
      state: SoftmaxState of the query block.
      q: [b, q_len, h, g, d].
      k, v: [b, k_len, h, d].
      q_pos, k_pos: int32 global positions [q_len], [k_len].
      q_seg, k_seg: segment ids [b, q_len], [b, k_len], or both None.
      causal: mask keys after the query.
      q_chunk, k_chunk: chunk sizes dividing q_len and k_len.
      scale: score scale, 1/sqrt(head_dim), applied to each query chunk (no scaled copy of q is kept).
      float32_logits: compute scores from float32 copies of q and k.

    Returns:
      The updated SoftmaxState.
    """
    q_len, k_len = q.shape[1], k.shape[1]
    logit_dtype = F32 if float32_logits else q.dtype
    precision = _precision(logit_dtype)

    def query_chunk(qi, state):
        qs = qi * q_chunk
        q_c = _slice(q, qs, q_chunk, 1).astype(logit_dtype) * jnp.asarray(scale, logit_dtype)
        qp_c, qseg_c = _slice(q_pos, qs, q_chunk, 0), _slice(q_seg, qs, q_chunk, 1)
        chunk_state = SoftmaxState(
            _slice(state.o, qs, q_chunk, 1), _slice(state.m, qs, q_chunk, 3), _slice(state.l, qs, q_chunk, 3)
        )

        def key_chunk(ki, cs):
            ks = ki * k_chunk
            kp_c, kseg_c = _slice(k_pos, ks, k_chunk, 0), _slice(k_seg, ks, k_chunk, 1)
            mask = _mask(qp_c, kp_c, qseg_c, kseg_c, causal)

            def attend(cs):
                k_c = _slice(k, ks, k_chunk, 1).astype(logit_dtype)
                v_c = _slice(v, ks, k_chunk, 1)
                s = jnp.where(mask[:, None, None], _scores(q_c, k_c, precision), -jnp.inf)
                m_new = jnp.maximum(cs.m, jnp.max(s, axis=-1))
                m_safe = jnp.where(jnp.isneginf(m_new), 0.0, m_new)
                p = jnp.exp(s - m_safe[..., None])
                alpha = jnp.exp(cs.m - m_safe)
                pv = jnp.einsum("bhgqk,bkhd->bqhgd", p.astype(v.dtype), v_c,
                                precision=_precision(v.dtype), preferred_element_type=F32)
                o = cs.o * jnp.moveaxis(alpha, -1, 1)[..., None] + pv
                return SoftmaxState(o, m_new, cs.l * alpha + jnp.sum(p, axis=-1))

            return lax.cond(jnp.any(mask), attend, lambda cs: cs, cs)

        cs = lax.fori_loop(0, k_len // k_chunk, key_chunk, chunk_state)
        return SoftmaxState(
            lax.dynamic_update_slice_in_dim(state.o, cs.o, qs, 1),
            lax.dynamic_update_slice_in_dim(state.m, cs.m, qs, 3),
            lax.dynamic_update_slice_in_dim(state.l, cs.l, qs, 3),
        )

    return lax.fori_loop(0, q_len // q_chunk, query_chunk, state)


def block_backward(grads, q, k, v, do, lse, delta, q_pos, k_pos, q_seg, k_seg, *, causal, q_chunk,
                   k_chunk, scale):
    """Adds one K/V block's share of the attention gradients (FlashAttention-2 backward).

    Args:
      grads: (dq [b, q_len, h, g, d], dk [b, k_len, h, d], dv [b, k_len, h, d]) float32 accumulators;
        dq is the query block's, dk/dv belong to this K/V block.
      q: [b, q_len, h, g, d]; k, v: [b, k_len, h, d].
      do: output cotangent [b, q_len, h, g, d].
      lse, delta: [b, h, g, q_len] float32, log-sum-exp and rowsum(do * out) over the whole sequence.
      scale: the score scale, 1/sqrt(head_dim).

    Returns:
      The updated (dq, dk, dv).
    """
    q_len, k_len = q.shape[1], k.shape[1]
    lse = jnp.where(jnp.isneginf(lse), 0.0, lse)  # rows with no keys: every p below is 0 anyway
    hi = lax.Precision.HIGHEST

    def key_chunk(ki, grads):
        dq, dk, dv = grads
        ks = ki * k_chunk
        k_c, v_c = _slice(k, ks, k_chunk, 1).astype(F32), _slice(v, ks, k_chunk, 1).astype(F32)
        kp_c, kseg_c = _slice(k_pos, ks, k_chunk, 0), _slice(k_seg, ks, k_chunk, 1)

        def query_chunk(qi, carry):
            dq, dk_c, dv_c = carry
            qs = qi * q_chunk
            qp_c, qseg_c = _slice(q_pos, qs, q_chunk, 0), _slice(q_seg, qs, q_chunk, 1)
            mask = _mask(qp_c, kp_c, qseg_c, kseg_c, causal)

            def attend(carry):
                dq, dk_c, dv_c = carry
                q_c = _slice(q, qs, q_chunk, 1).astype(F32) * scale
                do_c = _slice(do, qs, q_chunk, 1).astype(F32)
                s = _scores(q_c, k_c, hi)
                p = jnp.where(mask[:, None, None], jnp.exp(s - _slice(lse, qs, q_chunk, 3)[..., None]), 0.0)
                dv_c = dv_c + jnp.einsum("bhgqk,bqhgd->bkhd", p, do_c, precision=hi)
                dp = jnp.einsum("bqhgd,bkhd->bhgqk", do_c, v_c, precision=hi)
                ds = p * (dp - _slice(delta, qs, q_chunk, 3)[..., None])
                dq_c = _slice(dq, qs, q_chunk, 1) + scale * jnp.einsum("bhgqk,bkhd->bqhgd", ds, k_c, precision=hi)
                dk_c = dk_c + jnp.einsum("bhgqk,bqhgd->bkhd", ds, q_c, precision=hi)
                return lax.dynamic_update_slice_in_dim(dq, dq_c, qs, 1), dk_c, dv_c

            return lax.cond(jnp.any(mask), attend, lambda c: c, (dq, dk_c, dv_c))

        carry = (dq, _slice(dk, ks, k_chunk, 1), _slice(dv, ks, k_chunk, 1))
        dq, dk_c, dv_c = lax.fori_loop(0, q_len // q_chunk, query_chunk, carry)
        dk = lax.dynamic_update_slice_in_dim(dk, dk_c, ks, 1)
        dv = lax.dynamic_update_slice_in_dim(dv, dv_c, ks, 1)
        return dq, dk, dv

    return lax.fori_loop(0, k_len // k_chunk, key_chunk, grads)
