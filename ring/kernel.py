"""Blockwise attention of one query block against one key/value block, forward and backward.

This is the step the ring repeats: the local queries against whichever K/V block the device holds now.
Both passes loop over chunks (``query_chunk_size`` x ``key_chunk_size``) so that no more than one chunk of
scores exists at a time. Each chunk pair takes one of three branches: SKIP when the mask empties it (no
FLOPs), FULL when every pair may attend (no masking work), MASKED otherwise (the causal diagonal, segment
boundaries).

Inputs stay in the caller's sequence-major layout (no copy of a whole block is made); each chunk is
grouped and turned heads-major as it is sliced, and the float32 accumulators are heads-major, so every
chunk matmul is a plain batched dot (grouped-query attention keeps query heads grouped by their K/V head,
and a query chunk's groups and positions merge into one row dimension ``n = (g, q)`` against the chunk's
keys):

    q, do:         [batch, q_len, q_heads, head_dim]  (q_heads = kv_heads * groups)
    k, v:          [batch, k_len, kv_heads, head_dim]
    o:             [batch, kv_heads, groups, q_len, head_dim]   (float32 accumulator)
    dq:            [batch, kv_heads, groups, head_dim, q_len]   (float32, transposed: see block_backward)
    dk, dv:        [batch, kv_heads, k_len, head_dim]           (float32 accumulators)
    m, l, lse:     [batch, kv_heads, groups, q_len]             (row statistics, float32)
    pos:       int32 [len]                           (global token positions)
    seg:       int [batch, len] or None              (segment ids)

With ``head_chunk`` the loops run once per group of that many K/V heads (with their query heads), so a
chunk pair's scores hold one group's heads, not all of them; the slices stay chunk-sized either way.

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
SKIP, MASKED, FULL = 0, 1, 2


class SoftmaxState(NamedTuple):
    """Online-softmax accumulators of one query block (float32)."""

    o: jax.Array  # [b, h, g, q, d], unnormalised output
    m: jax.Array  # [b, h, g, q], running max of the scores
    l: jax.Array  # [b, h, g, q], running sum of exp(score - m)


def init_state(q, kv_heads: int) -> SoftmaxState:
    """Empty state for queries q [b, q_len, hq, d] attending to ``kv_heads`` K/V heads."""
    batch, q_len, q_heads, head_dim = q.shape
    stats = (batch, kv_heads, q_heads // kv_heads, q_len)
    return SoftmaxState(o=jnp.zeros(stats + (head_dim,), F32), m=jnp.full(stats, -jnp.inf, F32),
                        l=jnp.zeros(stats, F32))


def finalize(state: SoftmaxState, dtype):
    """Normalised output [b, h, g, q, d] in ``dtype`` and the natural-log ``lse`` [b, h, g, q]."""
    empty = state.l == 0  # a row that no key may attend to: output 0, lse -inf
    l_safe = jnp.where(empty, 1.0, state.l)
    out = state.o / l_safe[..., None]
    lse = jnp.where(empty, -jnp.inf, state.m + jnp.log(l_safe))
    return out.astype(dtype), lse


def _mask(q_pos, k_pos, q_seg, k_seg, causal: bool, window: int | None = None):
    """Boolean [batch or 1, q_len, k_len]: which (query, key) pairs may attend."""
    mask = jnp.ones((1, q_pos.shape[0], k_pos.shape[0]), bool)
    if causal:
        mask &= (q_pos[:, None] >= k_pos[None, :])[None]
    if window is not None:  # sliding window (causal): i - window < j
        mask &= (q_pos[:, None] - k_pos[None, :] < window)[None]
    if q_seg is not None:
        mask &= q_seg[:, :, None] == k_seg[:, None, :]
    return mask


def position_case(q_pos, k_pos, causal: bool, window: int | None = None):
    """SKIP, MASKED or FULL for a pair of position sets, from their ranges alone (four scalar reductions).

    Exact for contiguous runs of positions, conservative otherwise: SKIP and FULL are only returned when
    they hold for every pair, so whatever lies between is computed with the exact mask. ``window`` (with
    ``causal``) keeps keys j of a query i with i - window < j <= i.
    """
    if not causal:
        return jnp.int32(FULL)
    q_lo, q_hi, k_lo, k_hi = jnp.min(q_pos), jnp.max(q_pos), jnp.min(k_pos), jnp.max(k_pos)
    any_valid, all_valid = q_hi >= k_lo, q_lo >= k_hi
    if window is not None:
        any_valid &= q_lo - k_hi < window
        all_valid &= q_hi - k_lo < window
    return jnp.where(all_valid, FULL, jnp.where(any_valid, MASKED, SKIP)).astype(jnp.int32)


def chunk_case(q_pos, k_pos, q_seg, k_seg, causal: bool, window: int | None = None):
    """How a chunk pair is computed: SKIP (mask empty), MASKED, or FULL (no masking needed).

    Without segment ids the case follows from positions alone (:func:`position_case`) and the causal
    mask is built only inside the MASKED branch; with them the mask is built here, once.

    Returns:
      (int32 case, ``mask()``: the boolean [batch or 1, q_len, k_len] of pairs that may attend).
    """
    if q_seg is None:
        mask = None
        case = position_case(q_pos, k_pos, causal, window)
    else:
        mask = _mask(q_pos, k_pos, q_seg, k_seg, causal, window)
        case = jnp.where(jnp.all(mask), FULL, jnp.where(jnp.any(mask), MASKED, SKIP)).astype(jnp.int32)
    return case, lambda: _mask(q_pos, k_pos, None, None, causal, window) if mask is None else mask


def window_reach(q_pos, k_pos, k_chunk: int, window: int):
    """The key chunks ``[lo, hi)`` of a K/V block that a run of queries can reach under a sliding window
    (causal), from increasing positions (every layout's are): chunks ending at or before
    ``min(q_pos) - window`` and chunks starting after ``max(q_pos)`` hold no key any query attends to.
    Chunk loops over ``[lo, hi)`` alone cost O(window) per query chunk, not O(block)."""
    firsts, lasts = k_pos[::k_chunk], k_pos[k_chunk - 1::k_chunk]
    lo = jnp.searchsorted(lasts, q_pos[0] - window, side="right").astype(jnp.int32)
    hi = jnp.searchsorted(firsts, q_pos[-1], side="right").astype(jnp.int32)
    return lo, hi


def query_reach(q_pos, k_pos, q_chunk: int, window: int):
    """The query chunks ``[lo, hi)`` of a query block that can reach a run of keys under a sliding window
    (causal): chunks ending before ``min(k_pos)`` and chunks starting at or after ``max(k_pos) + window``
    hold no query that attends to them."""
    firsts, lasts = q_pos[::q_chunk], q_pos[q_chunk - 1::q_chunk]
    lo = jnp.searchsorted(lasts, k_pos[0], side="left").astype(jnp.int32)
    hi = jnp.searchsorted(firsts, k_pos[-1] + window, side="left").astype(jnp.int32)
    return lo, hi


def block_may_attend(q_pos, k_pos, causal: bool, window: int | None = None):
    """False when a causal (or sliding-window) mask empties the whole block pair, judged from positions."""
    return position_case(q_pos, k_pos, causal, window) != SKIP


def _switch(case, branch, operand):
    """``lax.switch`` over (skip, masked, full); ``branch(masked: bool)`` builds a compute function."""
    return lax.switch(case, [lambda x: x, branch(True), branch(False)], operand)


def _dot(spec, a, b):
    """einsum in full float32 for float32 operands; low-precision operands accumulate in float32."""
    if a.dtype == F32 and b.dtype == F32:
        return jnp.einsum(spec, a, b, precision=lax.Precision.HIGHEST)
    return jnp.einsum(spec, a, b, preferred_element_type=F32)


def _row_mask(mask, groups: int, key_major: bool = False):
    """A chunk's mask [B, q, k] against scores in rows [b, h, n, k], n = (g, q), broadcast over heads and
    repeated over groups: [B, 1, n, k], or [B, 1, k, n] when ``key_major``."""
    batch, q_len, k_len = mask.shape
    rows = jnp.broadcast_to(mask[:, None], (batch, groups, q_len, k_len)).reshape(batch, 1, groups * q_len, k_len)
    return jnp.swapaxes(rows, 2, 3) if key_major else rows


def _slice(x, start, size, axis):
    return x if x is None else lax.dynamic_slice_in_dim(x, start, size, axis)


def _part(x, at: dict):
    """The part of ``x`` at ``{axis: (start, size)}``, whole along every other axis."""
    starts, sizes = [0] * x.ndim, list(x.shape)
    for axis, (start, size) in at.items():
        starts[axis], sizes[axis] = start, size
    return lax.dynamic_slice(x, starts, sizes)


def _put(x, part, at: dict):
    """``x`` with ``part`` written at ``{axis: start}``."""
    starts = [0] * x.ndim
    for axis, start in at.items():
        starts[axis] = start
    return lax.dynamic_update_slice(x, part, starts)


def _q_rows(x, start, size, kv_heads, head, heads):
    """Chunk of a sequence-major query-like array [b, len, hq, d], the query heads of K/V heads
    ``[head, head + heads)``, grouped by K/V head and heads-major, each head's groups and positions merged
    into rows: [b, heads, n, d], n = (g, size). The chunk is grouped, not the block: JAX 0.10's XLA gave a
    grouped block a layout of its own, and with it a copy of q and do in every backward ring step."""
    groups = x.shape[2] // kv_heads
    chunk = _part(x, {1: (start, size), 2: (head * groups, heads * groups)})
    batch, _, _, head_dim = chunk.shape
    grouped = jnp.moveaxis(chunk.reshape(batch, size, heads, groups, head_dim), 1, 3)
    return grouped.reshape(batch, heads, groups * size, head_dim)


def _kv_chunk(x, start, size, head, heads):
    """Chunk [b, size, heads, d] of a sequence-major key/value array from K/V head ``head`` on,
    heads-major: [b, heads, size, d]."""
    return jnp.moveaxis(_part(x, {1: (start, size), 2: (head, heads)}), 1, 2)


def _head_passes(kv_heads: int, head_chunk: int | None, one_pass, carry):
    """``one_pass(head, carry)`` for every group of ``head_chunk`` K/V heads (all at once when None): a
    chunk pair's scores then hold only that many heads."""
    heads = kv_heads if head_chunk is None else head_chunk
    if heads == kv_heads:
        return one_pass(0, carry)
    return lax.fori_loop(0, kv_heads // heads, lambda i, c: one_pass(i * heads, c), carry)


def block_forward(state, q, k, v, q_pos, k_pos, q_seg, k_seg, *, causal, q_chunk, k_chunk, scale,
                  float32_logits=True, window=None, head_chunk=None):
    """Folds one K/V block into the online-softmax state of the query block.

    Args:
      state: SoftmaxState of the query block.
      q: [b, q_len, hq, d].
      k, v: [b, k_len, h, d].
      q_pos, k_pos: int32 global positions [q_len], [k_len].
      q_seg, k_seg: segment ids [b, q_len], [b, k_len], or both None.
      causal: mask keys after the query.
      q_chunk, k_chunk: chunk sizes dividing q_len and k_len.
      window: with ``causal``, a sliding window: query i attends to keys j with i - window < j <= i.
      scale: score scale, 1/sqrt(head_dim), applied to each query chunk (no scaled copy of q is kept).
      float32_logits: compute scores from float32 copies of q and k.
      head_chunk: K/V heads scored together (a divisor of kv_heads; None: all of them).

    Returns:
      The updated SoftmaxState.
    """
    q_len, k_len = q.shape[1], k.shape[1]
    batch, _, q_heads, head_dim = q.shape
    kv_heads = k.shape[2]
    groups, logit_dtype = q_heads // kv_heads, F32 if float32_logits else q.dtype
    rows = groups * q_chunk  # a query chunk's rows, its heads' groups merged: n = (g, q)
    heads = kv_heads if head_chunk is None else head_chunk

    def query_chunk(qi, state, head):
        qs = qi * q_chunk
        q_c = _q_rows(q, qs, q_chunk, kv_heads, head, heads).astype(logit_dtype) * jnp.asarray(scale, logit_dtype)
        qp_c, qseg_c = _slice(q_pos, qs, q_chunk, 0), _slice(q_seg, qs, q_chunk, 1)
        # The chunk's state in rows: o [b, heads, n, d], m and l [b, heads, n].
        at = {1: (head, heads), 3: (qs, q_chunk)}
        chunk_state = SoftmaxState(*(_part(x, at).reshape((batch, heads, rows) + x.shape[4:]) for x in state))

        def key_chunk(ki, cs):
            ks = ki * k_chunk
            kp_c, kseg_c = _slice(k_pos, ks, k_chunk, 0), _slice(k_seg, ks, k_chunk, 1)
            case, chunk_mask = chunk_case(qp_c, kp_c, qseg_c, kseg_c, causal, window)

            def attend(masked):
                def run(cs):
                    s = _dot("bhnd,bhkd->bhnk", q_c, _kv_chunk(k, ks, k_chunk, head, heads).astype(logit_dtype))
                    if masked:
                        s = jnp.where(_row_mask(chunk_mask(), groups), s, -jnp.inf)
                    m_new = jnp.maximum(cs.m, jnp.max(s, axis=-1))
                    # A masked row may have seen no key yet (max -inf): shift by 0 so exp gives 0, not NaN.
                    m_safe = jnp.where(jnp.isneginf(m_new), 0.0, m_new) if masked else m_new
                    p = jnp.exp(s - m_safe[..., None])
                    alpha = jnp.exp(cs.m - m_safe)
                    pv = _dot("bhnk,bhkd->bhnd", p.astype(v.dtype), _kv_chunk(v, ks, k_chunk, head, heads))
                    return SoftmaxState(cs.o * alpha[..., None] + pv, m_new, cs.l * alpha + jnp.sum(p, axis=-1))

                return run

            return _switch(case, attend, cs)

        # With a window only the key chunks within its reach are visited (a loop of traced bounds).
        lo, hi = (0, k_len // k_chunk) if window is None else window_reach(qp_c, k_pos, k_chunk, window)
        cs = lax.fori_loop(lo, hi, key_chunk, chunk_state)
        cs = (c.reshape((batch, heads, groups, q_chunk) + x.shape[4:]) for x, c in zip(state, cs))  # rows -> (g, q)
        return SoftmaxState(*(_put(x, c, {1: head, 3: qs}) for x, c in zip(state, cs)))

    return _head_passes(kv_heads, head_chunk,
                        lambda head, state: lax.fori_loop(0, q_len // q_chunk,
                                                          lambda qi, st: query_chunk(qi, st, head), state), state)


def block_backward(grads, q, k, v, do, lse, delta, q_pos, k_pos, q_seg, k_seg, *, causal, q_chunk,
                   k_chunk, scale, window=None, head_chunk=None):
    """Adds one K/V block's share of the attention gradients (FlashAttention-2 backward).

    Scores are computed key-major, ``[k, (g, q)]``, so that each of the five chunk matmuls takes its
    operands as XLA's CPU dot kernels want them: only [.., d] chunks are ever transposed, never a
    [k, q] tile. dq is accumulated transposed for the same reason.

    Args:
      grads: (dq [b, h, g, d, q_len], dk [b, h, k_len, d], dv [b, h, k_len, d]) float32 accumulators;
        dq is the query block's, dk/dv belong to this K/V block.
      q: [b, q_len, hq, d]; k, v: [b, k_len, h, d].
      do: output cotangent [b, q_len, hq, d].
      lse, delta: [b, h, g, q_len] float32, log-sum-exp and rowsum(do * out) over the whole sequence.
      scale: the score scale, 1/sqrt(head_dim).
      window, head_chunk: as in :func:`block_forward`.

    Returns:
      The updated (dq, dk, dv).
    """
    q_len, k_len, kv_heads = q.shape[1], k.shape[1], k.shape[2]
    batch, _, q_heads, head_dim = q.shape
    groups = q_heads // kv_heads
    rows = groups * q_chunk  # a query chunk's rows, its heads' groups merged: n = (g, q)
    heads = kv_heads if head_chunk is None else head_chunk
    lse = jnp.where(jnp.isneginf(lse), 0.0, lse)  # rows with no keys: every p below is 0 anyway

    def key_chunk(ki, grads, head):
        def stat_row(x, qs):
            """A row statistic [b, h, g, q_len] of the chunk's rows, as [b, heads, 1, n] against key-major
            scores."""
            return _part(x, {1: (head, heads), 3: (qs, q_chunk)}).reshape(batch, heads, 1, rows)

        dq, dk, dv = grads
        ks = ki * k_chunk
        k_c = _kv_chunk(k, ks, k_chunk, head, heads).astype(F32)
        v_c = _kv_chunk(v, ks, k_chunk, head, heads).astype(F32)
        kp_c, kseg_c = _slice(k_pos, ks, k_chunk, 0), _slice(k_seg, ks, k_chunk, 1)

        def query_chunk(qi, carry):
            dq, dk_c, dv_c = carry
            qs = qi * q_chunk
            qp_c, qseg_c = _slice(q_pos, qs, q_chunk, 0), _slice(q_seg, qs, q_chunk, 1)
            case, chunk_mask = chunk_case(qp_c, kp_c, qseg_c, kseg_c, causal, window)

            def attend(masked):
                def run(chunk_grads):
                    dq_c, dk_c, dv_c = chunk_grads
                    q_c = _q_rows(q, qs, q_chunk, kv_heads, head, heads).astype(F32) * scale
                    do_c = _q_rows(do, qs, q_chunk, kv_heads, head, heads).astype(F32)
                    p = jnp.exp(_dot("bhkd,bhnd->bhkn", k_c, q_c) - stat_row(lse, qs))  # [b, h, k, n]
                    if masked:
                        p = jnp.where(_row_mask(chunk_mask(), groups, key_major=True), p, 0.0)
                    dv_c = dv_c + _dot("bhkn,bhnd->bhkd", p, do_c)
                    ds = p * (_dot("bhkd,bhnd->bhkn", v_c, do_c) - stat_row(delta, qs))
                    dk_c = dk_c + _dot("bhkn,bhnd->bhkd", ds, q_c)
                    dq_part = _dot("bhkd,bhkn->bhdn", k_c, ds).reshape(batch, heads, head_dim, groups, q_chunk)
                    return dq_c + scale * jnp.moveaxis(dq_part, 3, 2), dk_c, dv_c

                return run

            # Only chunk-sized values pass through the branches: a branch's results are fresh buffers, and
            # the whole dq there would be copied at every chunk pair.
            dq_at = {1: (head, heads), 4: (qs, q_chunk)}
            dq_c, dk_c, dv_c = _switch(case, attend, (_part(dq, dq_at), dk_c, dv_c))
            return _put(dq, dq_c, {1: head, 4: qs}), dk_c, dv_c

        kv_at = {1: (head, heads), 2: (ks, k_chunk)}
        carry = (dq, _part(dk, kv_at), _part(dv, kv_at))
        lo, hi = (0, q_len // q_chunk) if window is None else query_reach(q_pos, kp_c, q_chunk, window)
        dq, dk_c, dv_c = lax.fori_loop(lo, hi, query_chunk, carry)
        return dq, _put(dk, dk_c, {1: head, 2: ks}), _put(dv, dv_c, {1: head, 2: ks})

    return _head_passes(kv_heads, head_chunk,
                        lambda head, grads: lax.fori_loop(0, k_len // k_chunk,
                                                          lambda ki, g: key_chunk(ki, g, head), grads), grads)
