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

Masks are built from positions, never from tile indices: zigzag and striped blocks hold non-contiguous
tokens. Outside the kernel a few XLA ops summarise each tile's position range and turn it into loop bounds
per tile (:func:`_bounds`): which tiles are FULL (every pair attends: no mask work), MASKED (the causal
diagonal, any tile when segment ids are given) or SKIPPED (the causal mask empties it: not visited at all).
Ring positions increase within a block, so these are three contiguous runs and each program runs at most
two loops, the unmasked one without any ``where``. The bounds are exact for any positions: a run is
called FULL only when every tile in it is.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

F32 = jnp.float32
# Scores are kept in base-2 units inside the kernels: exp2 is one hardware instruction on GPUs, while exp
# lowers to a longer libdevice routine. lse enters and leaves in natural log.
LOG2E = math.log2(math.e)
LN2 = math.log(2.0)
DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
# Triton needs power-of-two tensors of at least 16 rows/columns for a tensor-core dot.
MIN_GPU_TILE = 16


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes and Triton launch settings of the three kernels.

    Attributes:
      block_q, block_k: forward tile (queries per program, keys per loop iteration).
      bwd_q, bwd_k: backward tiles (the dK/dV kernel keeps a key tile of ``bwd_k`` and loops over query
        tiles of ``bwd_q``; the dQ kernel the other way round).
      num_warps, num_stages: forward launch settings; bwd_warps, bwd_stages the backward's.
    """

    block_q: int
    block_k: int
    bwd_q: int
    bwd_k: int
    num_warps: int
    num_stages: int
    bwd_warps: int
    bwd_stages: int


def default_tiles(head_dim: int, q_len: int, k_len: int, *, max_q: int | None = None,
                  max_k: int | None = None) -> Tiles:
    """Tiles tuned per head_dim (H100/H200, bf16), shrunk to divide the block and the caps.

    head_dim 128: a 128 x 64 forward tile on 8 warps keeps the [128, 128] float32 accumulator and a [128, 64]
    score tile in registers; head_dim <= 64 fits 128 x 64 on 4 warps with a deeper pipeline. The backward
    holds two accumulators (dk, dv) per program, so it uses 64 x 64 tiles.

    Args:
      head_dim: the attention head size.
      q_len, k_len: block lengths the tiles must divide.
      max_q, max_k: caps on the query and key tiles (the ring's chunk sizes); tiles never exceed them.
    """
    big = head_dim > 64
    fit_q = functools.partial(_fit, q_len if max_q is None else math.gcd(q_len, max_q))
    fit_k = functools.partial(_fit, k_len if max_k is None else math.gcd(k_len, max_k))
    return Tiles(block_q=fit_q(128), block_k=fit_k(64), bwd_q=fit_q(64), bwd_k=fit_k(64),
                 num_warps=8 if big else 4, num_stages=3 if big else 3,
                 bwd_warps=8 if big else 4, bwd_stages=2 if big else 3)


def _fit(length: int, target: int) -> int:
    """The largest power-of-two divisor of ``length`` that is at most ``target`` (a power of two)."""
    return math.gcd(length, target)


def check_supported(q, k, tiles: Tiles, *, interpret: bool) -> str | None:
    """Why the kernels cannot run these inputs (a message naming the value), or None when they can.

    Interpret mode runs anything; compiled Triton wants power-of-two head_dim and tiles of at least 16.
    """
    if q.dtype not in DTYPES or k.dtype != q.dtype:
        return f"the Pallas kernel supports float32, bfloat16 and float16 inputs, got q {q.dtype}, k {k.dtype}"
    if interpret:
        return None
    head_dim = q.shape[-1]
    if head_dim < MIN_GPU_TILE or head_dim & (head_dim - 1):
        return f"the Pallas GPU kernel needs a power-of-two head_dim >= {MIN_GPU_TILE}, got {head_dim}"
    small = {name: size for name, size in dataclasses.asdict(tiles).items()
             if name.startswith(("block", "bwd_q", "bwd_k")) and size < MIN_GPU_TILE}
    if small:
        return (f"the Pallas GPU kernel needs tiles of at least {MIN_GPU_TILE} tokens, got {small}: the block "
                f"length {q.shape[1]} and the chunk sizes must be multiples of {MIN_GPU_TILE}")
    return None


def _compiler_params(num_warps: int, num_stages: int):
    """Triton launch settings; the class was renamed (TritonCompilerParams -> CompilerParams)."""
    from jax.experimental.pallas import triton as plgpu

    cls = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams")
    return cls(num_warps=num_warps, num_stages=num_stages)


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


def _tile_mask(q_pos, k_pos, q_seg, k_seg, causal: bool):
    """Boolean [tq, tk]: which pairs of a tile may attend (causal by global position, equal segments)."""
    mask = None
    if causal:
        mask = q_pos[:, None] >= k_pos[None, :]
    if q_seg is not None:
        same = q_seg[:, None] == k_seg[None, :]
        mask = same if mask is None else mask & same
    return mask


# ---------------------------------------------------------------------------------------------------------
# Loop bounds per tile (XLA, outside the kernels).


def _tile_ranges(pos, tile: int):
    tiles = pos.reshape(-1, tile)
    return jnp.min(tiles, axis=1), jnp.max(tiles, axis=1)


def _bounds(q_pos, k_pos, tq: int, tk: int, *, causal: bool, segments: bool):
    """Per query tile ``[full_end, end]`` (key tiles [0, full_end) unmasked, [full_end, end) masked) and per
    key tile ``[start, full_start]`` (query tiles [start, full_start) masked, [full_start, nq) unmasked).

    Returns:
      int32 [nq, 2] for the query-tile loops and int32 [nk, 2] for the key-tile loops.
    """
    q_lo, q_hi = _tile_ranges(q_pos, tq)
    k_lo, k_hi = _tile_ranges(k_pos, tk)
    nq, nk = q_lo.shape[0], k_lo.shape[0]
    if causal:
        may = k_lo[None, :] <= q_hi[:, None]  # [nq, nk]: some pair attends
        full = (k_hi[None, :] <= q_lo[:, None]) & (not segments)
    else:
        may = jnp.ones((nq, nk), bool)
        full = jnp.full((nq, nk), not segments)
    k_idx, q_idx = jnp.arange(nk, dtype=jnp.int32), jnp.arange(nq, dtype=jnp.int32)
    end = jnp.max(jnp.where(may, k_idx[None, :] + 1, 0), axis=1)  # one past the last tile to visit
    full_end = jnp.minimum(jnp.sum(jnp.cumprod(full, axis=1), axis=1), end)  # leading run of full tiles
    start = jnp.min(jnp.where(may, q_idx[:, None], nq), axis=0)  # first query tile to visit
    trailing = jnp.sum(jnp.cumprod(full[::-1], axis=0), axis=0)  # trailing run of full tiles
    full_start = jnp.maximum(nq - trailing, start)
    return (jnp.stack([full_end, end], axis=1).astype(jnp.int32),
            jnp.stack([start, full_start], axis=1).astype(jnp.int32))


def _query_tile_order(num_tiles: int, causal: bool):
    """Grid index -> query tile. Causal rows get longer with position, so the last tiles launch first and
    the short ones fill the tail of the grid."""
    if not causal:
        return lambda i: i
    return lambda i: num_tiles - 1 - i


# ---------------------------------------------------------------------------------------------------------
# Forward.


def _forward_kernel(*refs, causal, scale, block_k, has_seg):  # scale: of the scores, times log2(e)
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
                mask = _tile_mask(q_pos, kpos_ref[keys], q_seg, kseg_ref[keys] if has_seg else None, causal)
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
    full_end, end = bounds_ref[0], bounds_ref[1]
    carry = lax.fori_loop(0, full_end, body(False), carry)
    o, m, l = lax.fori_loop(full_end, end, body(causal or has_seg), carry)
    empty = l == 0.0  # a query that no key of this block may attend to: output 0, lse -inf
    l_safe = jnp.where(empty, 1.0, l)
    o_ref[...] = (o / l_safe[:, None]).astype(o_ref.dtype)
    lse_ref[...] = jnp.where(empty, -jnp.inf, m * LN2 + jnp.log(l_safe))


def forward(q, k, v, q_pos, k_pos, q_seg=None, k_seg=None, *, causal: bool, scale: float, tiles: Tiles,
            out_dtype=None, interpret: bool = False):
    """One query block against one K/V block: the normalised partial output and its log-sum-exp.

    Args:
      q: [b, q_len, q_heads, d]; k, v: [b, k_len, kv_heads, d], q_heads a multiple of kv_heads.
      q_pos, k_pos: int32 global positions [q_len], [k_len].
      q_seg, k_seg: segment ids [b, q_len], [b, k_len], or both None.
      causal: mask keys at later global positions than the query.
      scale: the score scale, 1/sqrt(d).
      tiles: from :func:`default_tiles`; block_q, block_k must divide q_len, k_len.
      out_dtype: dtype of the partial output (q's by default; float32 to merge partials exactly).
      interpret: run the kernel through the Pallas interpreter (any backend) instead of Triton.

    Returns:
      out [b, q_len, q_heads, d] and float32 lse [b, q_heads, q_len]; rows with no key: 0 and -inf.
    """
    batch, q_len, q_heads, head_dim = q.shape
    k_len, kv_heads = k.shape[1], k.shape[2]
    groups = q_heads // kv_heads
    tq, tk = tiles.block_q, tiles.block_k
    has_seg = q_seg is not None
    q_bounds, _ = _bounds(q_pos, k_pos, tq, tk, causal=causal, segments=has_seg)
    order = _query_tile_order(q_len // tq, causal)
    grid = (q_len // tq, batch, q_heads)  # the first axis varies fastest on launch: a head's tiles run together
    in_specs = [
        pl.BlockSpec((None, tq, None, head_dim), lambda i, b, h: (b, order(i), h, 0)),
        pl.BlockSpec((None, k_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0)),
        pl.BlockSpec((None, k_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0)),
        pl.BlockSpec((tq,), lambda i, b, h: (order(i),)),
        pl.BlockSpec((k_len,), lambda i, b, h: (0,)),
        pl.BlockSpec((None, 2), lambda i, b, h: (order(i), 0)),
    ]
    args = [q, k, v, q_pos.astype(jnp.int32), k_pos.astype(jnp.int32), q_bounds]
    if has_seg:
        in_specs += [pl.BlockSpec((None, tq), lambda i, b, h: (b, order(i))),
                     pl.BlockSpec((None, k_len), lambda i, b, h: (b, 0))]
        args += [q_seg, k_seg]
    kernel = functools.partial(_forward_kernel, causal=causal, scale=scale * LOG2E, block_k=tk, has_seg=has_seg)
    return pl.pallas_call(
        kernel,
        grid=grid,
        in_specs=in_specs,
        out_specs=[pl.BlockSpec((None, tq, None, head_dim), lambda i, b, h: (b, order(i), h, 0)),
                   pl.BlockSpec((None, None, tq), lambda i, b, h: (b, h, order(i)))],
        out_shape=[_out_struct(q.shape, out_dtype or q.dtype, q), _out_struct((batch, q_heads, q_len), F32, q)],
        compiler_params=None if interpret else _compiler_params(tiles.num_warps, tiles.num_stages),
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


def _dkdv_kernel(*refs, causal, scale, block_q, groups, has_seg):
    if has_seg:
        (q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qpos_ref, kpos_ref, bounds_ref, qseg_ref, kseg_ref,
         dk_ref, dv_ref) = refs
        k_seg = kseg_ref[...]
    else:
        q_ref, k_ref, v_ref, do_ref, lse_ref, delta_ref, qpos_ref, kpos_ref, bounds_ref, dk_ref, dv_ref = refs
        k_seg = None
    k, v = k_ref[...], v_ref[...]  # [tk, d]
    k_pos = kpos_ref[...]
    start, full_start = bounds_ref[0], bounds_ref[1]
    nq = q_ref.shape[0] // block_q

    def head(g, carry):
        def body(masked):
            def run(i, carry):
                dk, dv = carry
                rows = pl.ds(pl.multiple_of(i * block_q, block_q), block_q)
                q, do = q_ref[rows, g, :], do_ref[rows, g, :]  # [tq, d]
                lse = lse_ref[g, rows][:, None] * LOG2E
                p = jnp.exp2(_dot(q, k, (1, 1)) * (scale * LOG2E) - lse)  # [tq, tk]
                if masked:
                    mask = _tile_mask(qpos_ref[rows], k_pos, qseg_ref[rows] if has_seg else None, k_seg, causal)
                    p = jnp.where(mask, p, 0.0)
                dv = dv + _dot(p.astype(do.dtype), do, (0, 0))
                ds = p * (_dot(do, v, (1, 1)) - delta_ref[g, rows][:, None])
                return dk + _dot(ds.astype(q.dtype), q, (0, 0)), dv

            return run

        carry = lax.fori_loop(start, full_start, body(causal or has_seg), carry)
        return lax.fori_loop(full_start, nq, body(False), carry)

    zeros = jnp.zeros(k.shape, F32)
    dk, dv = lax.fori_loop(0, groups, head, (zeros, zeros))
    dk_ref[...] = (dk * scale).astype(dk_ref.dtype)
    dv_ref[...] = dv.astype(dv_ref.dtype)


def _dq_kernel(*refs, causal, scale, block_k, has_seg):
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
                mask = _tile_mask(q_pos, kpos_ref[keys], q_seg, kseg_ref[keys] if has_seg else None, causal)
                p = jnp.where(mask, p, 0.0)
            ds = p * (_dot(do, v, (1, 1)) - delta)
            return dq + _dot(ds.astype(k.dtype), k)

        return run

    full_end, end = bounds_ref[0], bounds_ref[1]
    dq = lax.fori_loop(0, full_end, body(False), jnp.zeros(q.shape, F32))
    dq = lax.fori_loop(full_end, end, body(causal or has_seg), dq)
    dq_ref[...] = (dq * scale).astype(dq_ref.dtype)


def backward(q, k, v, do, lse, delta, q_pos, k_pos, q_seg=None, k_seg=None, *, causal: bool, scale: float,
             tiles: Tiles, dq_dtype=F32, dkv_dtype=F32, interpret: bool = False):
    """This K/V block's share of the attention gradients, from the ring's global statistics.

    Args:
      q, do: [b, q_len, q_heads, d]; k, v: [b, k_len, kv_heads, d].
      lse: float32 [b, q_heads, q_len], the log-sum-exp over *all* keys of the ring; rows with no key must
        hold a finite value (their probabilities are masked to 0 anyway).
      delta: float32 [b, q_heads, q_len], rowsum(do * out) with the ring's final output.
      q_pos, k_pos, q_seg, k_seg, causal, scale, interpret: as in :func:`forward`.
      tiles: from :func:`default_tiles`; bwd_q, bwd_k must divide q_len, k_len.
      dq_dtype, dkv_dtype: output dtypes (float32 for accumulation over a ring).

    Returns:
      dq [b, q_len, q_heads, d], dk and dv [b, k_len, kv_heads, d].
    """
    batch, q_len, q_heads, head_dim = q.shape
    k_len, kv_heads = k.shape[1], k.shape[2]
    groups = q_heads // kv_heads
    tq, tk = tiles.bwd_q, tiles.bwd_k
    has_seg = q_seg is not None
    q_bounds, k_bounds = _bounds(q_pos, k_pos, tq, tk, causal=causal, segments=has_seg)
    q_pos, k_pos = q_pos.astype(jnp.int32), k_pos.astype(jnp.int32)
    params = None if interpret else _compiler_params(tiles.bwd_warps, tiles.bwd_stages)

    # dK, dV: one program per (batch, K/V head, key tile); the group's query heads are looped inside.
    whole_q = pl.BlockSpec((None, q_len, groups, head_dim), lambda j, b, h: (b, 0, h, 0))
    whole_stat = pl.BlockSpec((None, groups, q_len), lambda j, b, h: (b, h, 0))
    key_tile = pl.BlockSpec((None, tk, None, head_dim), lambda j, b, h: (b, j, h, 0))
    in_specs = [whole_q, key_tile, key_tile, whole_q, whole_stat, whole_stat,
                pl.BlockSpec((q_len,), lambda j, b, h: (0,)), pl.BlockSpec((tk,), lambda j, b, h: (j,)),
                pl.BlockSpec((None, 2), lambda j, b, h: (j, 0))]
    args = [q, k, v, do, lse, delta, q_pos, k_pos, k_bounds]
    if has_seg:
        in_specs += [pl.BlockSpec((None, q_len), lambda j, b, h: (b, 0)),
                     pl.BlockSpec((None, tk), lambda j, b, h: (b, j))]
        args += [q_seg, k_seg]
    dk, dv = pl.pallas_call(
        functools.partial(_dkdv_kernel, causal=causal, scale=scale, block_q=tq, groups=groups, has_seg=has_seg),
        grid=(k_len // tk, batch, kv_heads),
        in_specs=in_specs,
        out_specs=[key_tile, key_tile],
        out_shape=[_out_struct(k.shape, dkv_dtype, q)] * 2,
        compiler_params=params,
        interpret=interpret,
        name="ring_step_dkdv",
    )(*args)

    # dQ: one program per (batch, query head, query tile), looping over the key tiles.
    order = _query_tile_order(q_len // tq, causal)
    query_tile = pl.BlockSpec((None, tq, None, head_dim), lambda i, b, h: (b, order(i), h, 0))
    whole_k = pl.BlockSpec((None, k_len, None, head_dim), lambda i, b, h: (b, 0, h // groups, 0))
    stat_tile = pl.BlockSpec((None, None, tq), lambda i, b, h: (b, h, order(i)))
    in_specs = [query_tile, whole_k, whole_k, query_tile, stat_tile, stat_tile,
                pl.BlockSpec((tq,), lambda i, b, h: (order(i),)), pl.BlockSpec((k_len,), lambda i, b, h: (0,)),
                pl.BlockSpec((None, 2), lambda i, b, h: (order(i), 0))]
    args = [q, k, v, do, lse, delta, q_pos, k_pos, q_bounds]
    if has_seg:
        in_specs += [pl.BlockSpec((None, tq), lambda i, b, h: (b, order(i))),
                     pl.BlockSpec((None, k_len), lambda i, b, h: (b, 0))]
        args += [q_seg, k_seg]
    dq = pl.pallas_call(
        functools.partial(_dq_kernel, causal=causal, scale=scale, block_k=tk, has_seg=has_seg),
        grid=(q_len // tq, batch, q_heads),
        in_specs=in_specs,
        out_specs=query_tile,
        out_shape=_out_struct(q.shape, dq_dtype, q),
        compiler_params=params,
        interpret=interpret,
        name="ring_step_dq",
    )(*args)
    return dq, dk, dv
