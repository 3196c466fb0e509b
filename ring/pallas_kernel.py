"""Fused Pallas kernels for one ring step: a query block against one K/V block, forward and backward.

The XLA path (:mod:`ring.kernel`) loops over chunks with ``lax.fori_loop`` and ``lax.switch``; here the same
step is one ``pallas_call`` per pass (Triton on GPU, ``interpret=True`` anywhere else, so CPU tests run the
very same kernel bodies). Layouts are the ring's own, so nothing is transposed or copied around a call:

    q, do, out, dq:  [batch, q_len, q_heads, head_dim]     (sequence-major, as the ring holds them)
    k, v, dk, dv:    [batch, k_len, kv_heads, head_dim]
    lse, delta:      float32 [batch, q_heads, q_len]       (natural log; heads-major, so a tile is contiguous)
    q_pos, k_pos:    int32 [q_len], [k_len]                (global token positions, ring.global_positions)
    q_seg, k_seg:    int [batch, q_len], [batch, k_len], or None

Forward (:func:`forward`): the grid is (q_len / block_q, batch, q_heads); each program keeps one query tile
and runs the online softmax (Milakov & Gimelshein 2018; Ring Attention paper section 3) over the key tiles
of the block, then writes the tile's *normalised* partial output and its log-sum-exp. Two such partials over
disjoint key sets merge exactly (:func:`merge`):

    lse = logaddexp(lse_a, lse_b),   out = exp(lse_a - lse) * out_a + exp(lse_b - lse) * out_b,

which is the softmax over the union, since exp(lse_x - lse) is the share of the total mass that x holds.
In a ring the partials stay float32, so merging n of them adds only float32 rounding.

Backward (FlashAttention-2, Dao 2023, algorithm 2): with the *global* ``lse`` and ``delta = rowsum(do *
out)`` of the whole ring, the probabilities of any (query, key) tile are recomputed as exp(s - lse), so
every block's share of the gradient is independent of the others. :func:`backward` runs two kernels: one
program per key tile accumulates dk, dv over the query tiles (and over the query heads of a K/V group, so
grouped-query attention needs no atomics), one program per query tile accumulates dq over the key tiles.

Masks come from global positions, the sliding window and segment ids; which tiles each program visits, and which of them
need a mask at all, is decided outside the kernels (:mod:`ring.pallas_tiles`): fully masked tiles are
never visited, fully visible ones are computed without any mask work.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

from ring.pallas_tiles import Tiles, compiler_params, query_tile_order, tile_bounds

F32 = jnp.float32
# Scores are kept in base-2 units inside the kernels: exp2 is one hardware instruction on GPUs, while exp
# lowers to a longer libdevice routine. lse enters and leaves in natural log.
LOG2E = math.log2(math.e)
LN2 = math.log(2.0)


def _out_struct(shape, dtype, like):
    """An output shape that varies over the same mesh axes as ``like``, as ``shard_map(check_vma=True)``
    requires of a ``pallas_call`` inside it (the attribute was ``vma`` before ``manual_axis_type``)."""
    aval = jax.typeof(like)
    for field in ("manual_axis_type", "vma"):
        value = getattr(aval, field, None)
        if value is not None:
            try:
                return jax.ShapeDtypeStruct(shape, dtype, **{field: value})
            except TypeError:  # this JAX names the field differently
                continue
    return jax.ShapeDtypeStruct(shape, dtype)


def _dot(a, b, contract=(1, 0)):
    """A 2-D dot accumulating in float32; float32 operands get full precision (no TF32)."""
    precision = lax.Precision.HIGHEST if a.dtype == F32 else None
    return lax.dot_general(a, b, (((contract[0],), (contract[1],)), ((), ())), precision=precision,
                           preferred_element_type=F32)


def _tile_mask(q_pos, k_pos, q_seg, k_seg, causal: bool, window: int | None):
    """Boolean [tq, tk]: which pairs of a tile may attend (causal by global position, within the sliding
    window, equal segments)."""
    mask = None
    if causal:
        mask = q_pos[:, None] >= k_pos[None, :]
    if window is not None:
        mask &= q_pos[:, None] - k_pos[None, :] < window
    if q_seg is not None:
        same = q_seg[:, None] == k_seg[None, :]
        mask = same if mask is None else mask & same
    return mask


# ---------------------------------------------------------------------------------------------------------
# Forward.


def _loops(bounds_ref, body, masked: bool, carry):
    """The three runs of a program's loop (:func:`ring.pallas_tiles.tile_bounds`): masked, unmasked,
    masked."""
    lo, full_lo, full_hi, hi = bounds_ref[0], bounds_ref[1], bounds_ref[2], bounds_ref[3]
    carry = lax.fori_loop(lo, full_lo, body(masked), carry)
    carry = lax.fori_loop(full_lo, full_hi, body(False), carry)
    return lax.fori_loop(full_hi, hi, body(masked), carry)


def _forward_kernel(*refs, causal, scale, block_k, has_seg, window):  # scale: of the scores, times log2(e)
    if has_seg:
        q_ref, k_ref, v_ref, qpos_ref, kpos_ref, bounds_ref, qseg_ref, kseg_ref, o_ref, lse_ref = refs
        q_seg = qseg_ref[...]
    else:
        q_ref, k_ref, v_ref, qpos_ref, kpos_ref, bounds_ref, o_ref, lse_ref = refs
        q_seg = None
    q = q_ref[...]  # [tq, d]
    q_pos = qpos_ref[...]
    tq, head_dim = q.shape

    def body(masked):
        def run(j, carry):
            o, m, l = carry
            keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
            s = _dot(q, k_ref[keys, :], (1, 1)) * scale  # [tq, tk] float32, base 2
            if masked:
                mask = _tile_mask(q_pos, kpos_ref[keys], q_seg, kseg_ref[keys] if has_seg else None, causal, window)
                s = jnp.where(mask, s, -jnp.inf)
            m_new = jnp.maximum(m, jnp.max(s, axis=1))
            # A row may have met no key yet (max -inf): shift it by 0 so that exp gives 0, not NaN.
            m_safe = jnp.where(m_new == -jnp.inf, 0.0, m_new) if masked else m_new
            p = jnp.exp2(s - m_safe[:, None])
            alpha = jnp.exp2(m - m_safe)
            v = v_ref[keys, :]
            o = o * alpha[:, None] + _dot(p.astype(v.dtype), v)
            return o, m_new, l * alpha + jnp.sum(p, axis=1)

        return run

    carry = (jnp.zeros((tq, head_dim), F32), jnp.full((tq,), -jnp.inf, F32), jnp.zeros((tq,), F32))
    o, m, l = _loops(bounds_ref, body, causal or has_seg, carry)
    empty = l == 0.0  # a query that no key of this block may attend to: output 0, lse -inf
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (o / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, -jnp.inf, m * LN2 + jnp.log(l_safe))


def forward(q, k, v, q_pos, k_pos, q_seg=None, k_seg=None, *, causal: bool, scale: float, tiles: Tiles,
            out_dtype=None, interpret: bool = False, window: int | None = None):
    """One query block against one K/V block: the normalised partial output and its log-sum-exp.

    Args:
      q: [b, q_len, q_heads, d]; k, v: [b, k_len, kv_heads, d], q_heads a multiple of kv_heads.
      q_pos, k_pos: int32 global positions [q_len], [k_len].
      q_seg, k_seg: segment ids [b, q_len], [b, k_len], or both None.
      causal: mask keys at later global positions than the query.
      scale: the score scale, 1/sqrt(d).
      tiles: from :func:`ring.pallas_tiles.default_tiles`; block_q, block_k must divide q_len, k_len.
      out_dtype: dtype of the partial output (q's by default; float32 to merge partials exactly).
      interpret: run the kernel through the Pallas interpreter (any backend) instead of Triton.
      window: with ``causal``, a sliding window: query i attends to keys j with i - window < j <= i; tiles
        wholly outside it are not visited.

    Returns:
      out [b, q_len, q_heads, d] and float32 lse [b, q_heads, q_len]; rows with no key: 0 and -inf.
    """
    batch, q_len, q_heads, head_dim = q.shape
    k_len, kv_heads = k.shape[1], k.shape[2]
    groups = q_heads // kv_heads
    tq, tk = tiles.block_q, tiles.block_k
    has_seg = q_seg is not None
    q_bounds, _ = tile_bounds(q_pos, k_pos, tq, tk, causal=causal, segments=has_seg, window=window)
    order = query_tile_order(q_len // tq, causal)
    grid = (q_len // tq, batch, q_heads)  # the first axis varies fastest on launch: a head's tiles run together
    in_specs = [
        pl.BlockSpec((None, tq, None, head_dim), lambda i, b, h: (b, order(i), h, 0)),
        pl.BlockSpec((None, k_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0)),
        pl.BlockSpec((None, k_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0)),
        pl.BlockSpec((tq,), lambda i, b, h: (order(i),)),
        pl.BlockSpec((k_len,), lambda i, b, h: (0,)),
        pl.BlockSpec((None, 4), lambda i, b, h: (order(i), 0)),
    ]
    args = [q, k, v, q_pos.astype(jnp.int32), k_pos.astype(jnp.int32), q_bounds]
    if has_seg:
        in_specs += [pl.BlockSpec((None, tq), lambda i, b, h: (b, order(i))),
                     pl.BlockSpec((None, k_len), lambda i, b, h: (b, 0))]
        args += [q_seg, k_seg]
    kernel = functools.partial(_forward_kernel, causal=causal, scale=scale * LOG2E, block_k=tk, has_seg=has_seg,
                               window=window)
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=[pl.BlockSpec((None, tq, None, head_dim), lambda i, b, h: (b, order(i), h, 0)),
                   pl.BlockSpec((None, None, tq), lambda i, b, h: (b, h, order(i)))],
        out_shape=[_out_struct(q.shape, out_dtype or q.dtype, q), _out_struct((batch, q_heads, q_len), F32, q)],
        compiler_params=None if interpret else compiler_params(tiles.num_warps, tiles.num_stages),
        interpret=interpret,
        name="ring_step_forward",
    )(*args)


def merge(out_a, lse_a, out_b, lse_b):
    """Exact merge of two partials over disjoint key sets (see the module docstring).

    Args:
      out_a, out_b: float32 [b, s, h, d] normalised partial outputs.
      lse_a, lse_b: float32 [b, h, s]; -inf where a part saw no key.

    Returns:
      (out, lse) of the union, same shapes.
    """
    lse = jnp.logaddexp(lse_a, lse_b)
    shift = jnp.where(lse == -jnp.inf, 0.0, lse)  # neither part saw a key: both weights 0

    def weight(part_lse):
        return jnp.moveaxis(jnp.exp(part_lse - shift), 2, 1)[..., None]  # [b, s, h, 1]

    return out_a * weight(lse_a) + out_b * weight(lse_b), lse


# ---------------------------------------------------------------------------------------------------------
# Backward.


def _dkdv_kernel(*refs, causal, scale, block_q, groups, has_seg, window):
    if has_seg:
        (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qpos_ref, kpos_ref, bounds_ref, qseg_ref, kseg_ref,
         dk_ref, dv_ref) = refs
        k_seg = kseg_ref[...]
    else:
        q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qpos_ref, kpos_ref, bounds_ref, dk_ref, dv_ref = refs
        k_seg = None
    k, v = k_ref[...], v_ref[...]  # [tk, d]
    k_pos = kpos_ref[...]

    def head(g, carry):
        def body(masked):
            def run(i, carry):
                dk, dv = carry
                rows = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
                q, do = q_ref[rows, g, :], do_ref[rows, g, :]  # [tq, d]
                lse = lse_ref[g, rows][:, None] * LOG2E
                p = jnp.exp2(_dot(q, k, (1, 1)) * (scale * LOG2E) - lse)  # [tq, tk]
                if masked:
                    mask = _tile_mask(qpos_ref[rows], k_pos, qseg_ref[rows] if has_seg else None, k_seg, causal,
                                      window)
                    p = jnp.where(mask, p, 0.0)
                dv = dv + _dot(p.astype(do.dtype), do, (0, 0))
                ds = p * (_dot(do, v, (1, 1)) - delta_ref[g, rows][:, None])
                return dk + _dot(ds.astype(q.dtype), q, (0, 0)), dv

            return run

        return _loops(bounds_ref, body, causal or has_seg, carry)

    zeros = jnp.zeros(k.shape, F32)
    dk, dv = lax.fori_loop(0, groups, head, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, causal, scale, block_k, has_seg, window):
    if has_seg:
        (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qpos_ref, kpos_ref, bounds_ref, qseg_ref, kseg_ref,
         dq_ref) = refs
        q_seg = qseg_ref[...]
    else:
        q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qpos_ref, kpos_ref, bounds_ref, dq_ref = refs
        q_seg = None
    q, do = q_ref[...], do_ref[...]  # [tq, d]
    lse, delta, q_pos = lse_ref[...][:, None] * LOG2E, delta_ref[...][:, None], qpos_ref[...]

    def body(masked):
        def run(j, dq):
            keys = pl.ds(pl.multiple_of(j * block_k, block_k), block_k)
            k, v = k_ref[keys, :], v_ref[keys, :]
            p = jnp.exp2(_dot(q, k, (1, 1)) * (scale * LOG2E) - lse)
            if masked:
                mask = _tile_mask(q_pos, kpos_ref[keys], q_seg, kseg_ref[keys] if has_seg else None, causal, window)
                p = jnp.where(mask, p, 0.0)
            ds = p * (_dot(do, v, (1, 1)) - delta)
            return dq + _dot(ds.astype(k.dtype), k)

        return run

    dq = _loops(bounds_ref, body, causal or has_seg, jnp.zeros(q.shape, F32))
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def backward(q, k, v, do, lse, delta, q_pos, k_pos, q_seg=None, k_seg=None, *, causal: bool, scale: float,
             tiles: Tiles, dq_dtype=F32, dkv_dtype=F32, interpret: bool = False, window: int | None = None):
    """This K/V block's share of the attention gradients, from the ring's global statistics.

    Args:
      q, do: [b, q_len, q_heads, d]; k, v: [b, k_len, kv_heads, d].
      lse: float32 [b, q_heads, q_len], the log-sum-exp over *all* keys of the ring; rows with no key must
        hold a finite value (their probabilities are masked to 0 anyway).
      delta: float32 [b, q_heads, q_len], rowsum(do * out) with the ring's final output.
      q_pos, k_pos, q_seg, k_seg, causal, scale, interpret, window: as in :func:`forward`.
      tiles: from :func:`ring.pallas_tiles.default_tiles`; the dkdv_* and dq_* tiles must divide the blocks.
      dq_dtype, dkv_dtype: output dtypes (float32 for accumulation over a ring).

    Returns:
      dq [b, q_len, q_heads, d], dk and dv [b, k_len, kv_heads, d].
    """
    batch, q_len, q_heads, head_dim = q.shape
    k_len, kv_heads = k.shape[1], k.shape[2]
    groups = q_heads // kv_heads
    has_seg = q_seg is not None
    q_pos, k_pos = q_pos.astype(jnp.int32), k_pos.astype(jnp.int32)
    params = None if interpret else compiler_params(tiles.bwd_warps, tiles.bwd_stages)

    # dK, dV: one program per (batch, K/V head, key tile); the group's query heads are looped inside.
    tq, tk = tiles.dkdv_q, tiles.dkdv_k
    _, k_bounds = tile_bounds(q_pos, k_pos, tq, tk, causal=causal, segments=has_seg, window=window)
    whole_q = pl.BlockSpec((None, q_len, groups, head_dim), lambda j, b, h: (b, 0, h, 0))
    whole_stat = pl.BlockSpec((None, groups, q_len), lambda j, b, h: (b, h, 0))
    key_tile = pl.BlockSpec((None, tk, None, head_dim), lambda j, b, h: (b, j, h, 0))
    in_specs = [whole_q, key_tile, key_tile, whole_q, whole_stat, whole_stat,
                pl.BlockSpec((q_len,), lambda j, b, h: (0,)), pl.BlockSpec((tk,), lambda j, b, h: (j,)),
                pl.BlockSpec((None, 4), lambda j, b, h: (j, 0))]
    args = [q, k, v, do, lse, delta, q_pos, k_pos, k_bounds]
    if has_seg:
        in_specs += [pl.BlockSpec((None, q_len), lambda j, b, h: (b, 0)),
                     pl.BlockSpec((None, tk), lambda j, b, h: (b, j))]
        args += [q_seg, k_seg]
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, causal=causal, scale=scale, block_q=tq, groups=groups, has_seg=has_seg,
                          window=window),
        grid=(k_len // tk, batch, kv_heads),
        in_specs=in_specs,
        out_specs=[key_tile, key_tile],
        out_shape=[_out_struct(k.shape, dkv_dtype, q)] * 2,
        compiler_params=params,
        interpret=interpret,
        name="ring_step_dkdv",
    )(*args)

    # dQ: one program per (batch, query head, query tile), looping over the key tiles.
    tq, tk = tiles.dq_q, tiles.dq_k
    q_bounds, _ = tile_bounds(q_pos, k_pos, tq, tk, causal=causal, segments=has_seg, window=window)
    order = query_tile_order(q_len // tq, causal)
    query_tile = pl.BlockSpec((None, tq, None, head_dim), lambda i, b, h: (b, order(i), h, 0))
    whole_k = pl.BlockSpec((None, k_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0))
    stat_tile = pl.BlockSpec((None, None, tq), lambda i, b, h: (b, h, order(i)))
    in_specs = [query_tile, whole_k, whole_k, query_tile, stat_tile, stat_tile,
                pl.BlockSpec((tq,), lambda i, b, h: (order(i),)), pl.BlockSpec((k_len,), lambda i, b, h: (0,)),
                pl.BlockSpec((None, 4), lambda i, b, h: (order(i), 0))]
    args = [q, k, v, do, lse, delta, q_pos, k_pos, q_bounds]
    if has_seg:
        in_specs += [pl.BlockSpec((None, tq), lambda i, b, h: (b, order(i))),
                     pl.BlockSpec((None, k_len), lambda i, b, h: (b, 0))]
        args += [q_seg, k_seg]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, causal=causal, scale=scale, block_k=tk, has_seg=has_seg, window=window),
        grid=(q_len // tq, batch, q_heads),
        in_specs=in_specs,
        out_specs=query_tile,
        out_shape=_out_struct(q.shape, dq_dtype, q),
        compiler_params=params,
        interpret=interpret,
        name="ring_step_dq",
    )(*args)
    return dq, dk, dv
