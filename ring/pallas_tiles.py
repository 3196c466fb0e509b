"""How the Pallas ring step is tiled: tile sizes and launch settings, what Triton can run, and per-tile
loop bounds from global token positions (all decided outside the kernels, in Python or a few XLA ops).

Masks are built from positions, never from tile indices: zigzag and striped blocks hold non-contiguous
tokens. :func:`tile_bounds` summarises each tile's position range and turns it into loop bounds per tile:
which tiles are FULL (every pair attends: no mask work), MASKED (the causal diagonal, a sliding window's
far edge; every tile when segment ids are given) or SKIPPED (the mask empties it: never visited). Ring
positions increase within a block, so these are at most five contiguous runs (skipped, masked, full,
masked, skipped) and each program runs at most three loops, the unmasked one without any ``where``. The
bounds are exact for any positions: a run is FULL only when every tile in it is, and anything else
between the first and the last tile to visit is computed masked.
"""

from __future__ import annotations

import dataclasses
import math

import jax.numpy as jnp

DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)
# Triton needs power-of-two tensors of at least 16 rows/columns for a tensor-core dot.
MIN_GPU_TILE = 16


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes (tokens) and Triton launch settings of the three kernels.

    Attributes:
      block_q, block_k: forward: queries per program, keys per loop iteration.
      dkdv_k, dkdv_q: dK/dV kernel: keys per program, queries per loop iteration.
      dq_q, dq_k: dQ kernel: queries per program, keys per loop iteration.
      num_warps, num_stages: forward launch settings; bwd_warps, bwd_stages those of both backward kernels.
    """

    block_q: int
    block_k: int
    dkdv_k: int
    dkdv_q: int
    dq_q: int
    dq_k: int
    num_warps: int
    num_stages: int
    bwd_warps: int
    bwd_stages: int

    def sizes(self) -> dict[str, int]:
        return {name: size for name, size in dataclasses.asdict(self).items() if "warps" not in name
                and "stages" not in name}


def default_tiles(head_dim: int, q_len: int, k_len: int, *, max_q: int | None = None,
                  max_k: int | None = None) -> Tiles:
    """Tiles per head_dim for H100/H200 in bfloat16, shrunk to divide the block and respect the caps.

    head_dim 128: a 128 x 64 forward tile on 8 warps keeps the [128, 128] float32 accumulator and a [128, 64]
    score tile in registers. The backward programs hold two float32 accumulators (dk and dv, or dq and the
    score tile), so they use 64 x 64. head_dim <= 64 halves the accumulators: 4 warps, and the backward
    programs keep 128 rows while streaming 32 (the FlashAttention-2 Triton split).

    Args:
      head_dim: the attention head size.
      q_len, k_len: block lengths the tiles must divide.
      max_q, max_k: caps on the query and key tiles (the ring's chunk sizes).
    """
    q_room = q_len if max_q is None else math.gcd(q_len, max_q)
    k_room = k_len if max_k is None else math.gcd(k_len, max_k)
    fit_q, fit_k = (lambda t: math.gcd(q_room, t)), (lambda t: math.gcd(k_room, t))  # largest 2^i dividing
    if head_dim > 64:
        return Tiles(block_q=fit_q(128), block_k=fit_k(64), dkdv_k=fit_k(64), dkdv_q=fit_q(64), dq_q=fit_q(64),
                     dq_k=fit_k(64), num_warps=8, num_stages=3, bwd_warps=8, bwd_stages=2)
    return Tiles(block_q=fit_q(128), block_k=fit_k(64), dkdv_k=fit_k(128), dkdv_q=fit_q(32), dq_q=fit_q(128),
                 dq_k=fit_k(32), num_warps=4, num_stages=3, bwd_warps=4, bwd_stages=3)


def check_supported(q, k, tiles: Tiles, *, interpret: bool) -> str | None:
    """Why the kernels cannot run these inputs (a message naming the value), or None when they can.

    The interpreter runs any shape; compiled Triton wants a power-of-two head_dim and tiles of >= 16.
    """
    if q.dtype not in DTYPES or k.dtype != q.dtype:
        return f"the Pallas kernel supports float32, bfloat16 and float16 inputs, got q {q.dtype}, k {k.dtype}"
    if interpret:
        return None
    head_dim = q.shape[-1]
    if head_dim < MIN_GPU_TILE or head_dim & (head_dim - 1):
        return f"the Pallas GPU kernel needs a power-of-two head_dim >= {MIN_GPU_TILE}, got {head_dim}"
    small = {name: size for name, size in tiles.sizes().items() if size < MIN_GPU_TILE}
    if small:
        return (f"the Pallas GPU kernel needs tiles of at least {MIN_GPU_TILE} tokens, got {small}: the block "
                f"length {q.shape[1]} and the chunk sizes must be multiples of {MIN_GPU_TILE}")
    return None


def compiler_params(num_warps: int, num_stages: int):
    """Triton launch settings; the class was renamed (TritonCompilerParams -> CompilerParams)."""
    from jax.experimental.pallas import triton as plgpu

    cls = getattr(plgpu, "CompilerParams", None) or getattr(plgpu, "TritonCompilerParams")
    return cls(num_warps=num_warps, num_stages=num_stages)


def _tile_ranges(pos, tile: int):
    tiles = pos.reshape(-1, tile)
    return jnp.min(tiles, axis=1), jnp.max(tiles, axis=1)


def tile_bounds(q_pos, k_pos, tq: int, tk: int, *, causal: bool, segments: bool, window: int | None = None):
    """Loop bounds of both loop directions for query tiles of ``tq`` and key tiles of ``tk``.

    ``window`` (with ``causal``): a sliding window, query i attending to keys j with i - window < j <= i.

    Returns:
      int32 [nq, 4]: per query tile ``(lo, full_lo, full_hi, hi)`` over the key tiles: [lo, full_lo)
        masked, [full_lo, full_hi) unmasked, [full_hi, hi) masked, the rest skipped.
      int32 [nk, 4]: the same per key tile, over the query tiles.
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
    if window is not None:
        may &= q_lo[:, None] - k_hi[None, :] < window
        full &= q_hi[:, None] - k_lo[None, :] < window
    return _runs(may, full), _runs(may.T, full.T)


def _runs(may, full):
    """Per row: ``(lo, full_lo, full_hi, hi)``, the first and one past the last column that some pair of
    may attend to, and within them the first run of columns where every pair does."""
    n = may.shape[1]
    idx = jnp.arange(n, dtype=jnp.int32)[None, :]
    lo = jnp.min(jnp.where(may, idx, n), axis=1)
    hi = jnp.maximum(jnp.max(jnp.where(may, idx + 1, 0), axis=1), lo)  # nothing to visit: lo = hi = n
    full_lo = jnp.min(jnp.where(full, idx, hi[:, None]), axis=1)  # no full column: the run is empty at hi
    full_hi = jnp.sum(jnp.cumprod(full | (idx < full_lo[:, None]), axis=1), axis=1)  # the run's end
    return jnp.stack([lo, full_lo, full_hi, hi], axis=1).astype(jnp.int32)


def query_tile_order(num_tiles: int, causal: bool):
    """Grid index -> query tile. Causal rows get longer with position, so the last tiles launch first and
    the short ones fill the tail of the grid."""
    if not causal:
        return lambda i: i
    return lambda i: num_tiles - 1 - i
