"""The block step: what the ring loop asks of a block compute, and its two implementations.

The ring (:mod:`ring.ring_attention`) owns everything that travels or accumulates: the K/V blocks and
their dk/dv accumulators going round, dq, the custom VJP, the skipping of blocks a causal mask empties.
A step only computes the local query block against the one K/V block the device holds now:

- forward: ``forward(acc, q, k, v, q_pos, k_pos, q_seg, k_seg) -> acc`` folds the block into ``acc``,
  which stands for the partial output and log-sum-exp of every key seen so far; ``acc=None`` means
  none yet. ``result(acc, dtype)`` gives the output [b, s, hq, d] and the log-sum-exp. Two partials over
  disjoint keys combine exactly (online softmax, or :func:`ring.pallas_kernel.merge`), so the order in
  which blocks arrive does not matter.
- backward (FlashAttention-2): ``stats(q, out, lse, dout)`` computes once the global statistics
  (log-sum-exp and ``delta = rowsum(do * out)``); ``backward(grads, q, k, v, do, stats, ...) -> grads``
  adds this K/V block's dq, dk, dv, which depend on no other block; ``grads_result`` returns them in the
  inputs' dtypes.

Accumulators are float32 and laid out as each step computes fastest: :class:`XlaStep` keeps them
heads-major (every chunk matmul is then a plain batched dot), :class:`PallasStep` sequence-major (the
kernels' tiles). The ring only creates them (``forward_init``, ``grads_init``) and carries them.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ring import kernel

F32 = jnp.float32


def match_varying(tree, like):
    """Gives arrays created inside ``shard_map`` the device-varying type of ``like``.

    Under ``check_vma=True`` an input varies over every mesh axis that shards it (the ring axis, and a
    batch axis when there is one); a fresh zero does not, and loop carries and branches must match
    exactly. Outside ``shard_map`` (or with the check off) ``like`` varies over nothing: a no-op.
    """
    aval = jax.typeof(like)
    manual = getattr(aval, "manual_axis_type", None)  # the attribute moved between JAX versions
    axes = tuple(sorted(manual.varying if manual is not None else getattr(aval, "vma", ())))
    if not axes:
        return tree
    return jax.tree.map(lambda x: lax.pcast(x, axes, to="varying"), tree)


def zeros_after(tree, after):
    """Zeros like every array of ``tree`` that XLA can only compute once ``after`` exists.

    A constant fill has no inputs, so XLA may schedule it at the very start of the program and hold it
    through everything before its use: the backward's accumulators through the whole forward pass. These
    are filled from ``x - x`` of one finite element of ``after``, which XLA does not fold to a constant
    (float ``x - x`` is NaN for an infinite x), and they vary over the mesh axes that ``after`` varies over.
    """
    first = after.reshape(-1)[0].astype(F32)
    first = jnp.where(jnp.isfinite(first), first, 0.0)
    zero = first - first
    return jax.tree.map(lambda x: jnp.full_like(x, zero), tree)


def _grouped(x, kv_heads):
    """[b, s, hq, d] -> [b, s, hkv, g, d]: query heads grouped by their K/V head (a free reshape)."""
    batch, seq, q_heads, head_dim = x.shape
    return x.reshape(batch, seq, kv_heads, q_heads // kv_heads, head_dim)


def _seq_major(x, shape):
    """Heads-major [b, hkv, g, s, d] -> [b, s, hq, d]."""
    return jnp.moveaxis(x, 3, 1).reshape(shape)


@dataclasses.dataclass(frozen=True)
class XlaStep:
    """Chunk loops compiled by XLA (:mod:`ring.kernel`); online-softmax state as the forward accumulator."""

    causal: bool
    q_chunk: int
    k_chunk: int
    float32_logits: bool = True
    window: int | None = None  # sliding window (causal only): keys j of query i with i - window < j <= i
    head_chunk: int | None = None  # K/V heads scored together (None: all; ring.ring_attention.head_chunk)

    def _static(self, q):
        return dict(causal=self.causal, q_chunk=self.q_chunk, k_chunk=self.k_chunk,
                    scale=1.0 / math.sqrt(q.shape[-1]), window=self.window, head_chunk=self.head_chunk)

    def forward_init(self, q, kv_heads):
        return kernel.init_state(q, kv_heads)

    def forward(self, acc, q, k, v, q_pos, k_pos, q_seg, k_seg):
        acc = match_varying(kernel.init_state(q, k.shape[2]), q) if acc is None else acc
        return kernel.block_forward(acc, q, k, v, q_pos, k_pos, q_seg, k_seg, **self._static(q),
                                    float32_logits=self.float32_logits)

    def result(self, acc, q):
        out, lse = kernel.finalize(acc, q.dtype)  # lse heads-major [b, hkv, g, s]
        return _seq_major(out, q.shape), lse

    def stats(self, q, out, lse, dout, kv_heads):
        # rowsum(do * out), heads-major [b, hkv, g, s] like the saved lse.
        delta = jnp.sum(_grouped(dout, kv_heads).astype(F32) * _grouped(out, kv_heads).astype(F32), -1)
        return jnp.where(jnp.isneginf(lse), 0.0, lse), jnp.moveaxis(delta, 1, 3)

    def grads_init(self, q, k):
        batch, block, kv_heads, head_dim = k.shape
        kv_shape = (batch, kv_heads, block, head_dim)
        dq_shape = (batch, kv_heads, q.shape[2] // kv_heads, head_dim, q.shape[1])  # transposed, as the kernel adds it
        return jnp.zeros(dq_shape, F32), jnp.zeros(kv_shape, F32), jnp.zeros(kv_shape, F32)

    def backward(self, grads, q, k, v, dout, stats, q_pos, k_pos, q_seg, k_seg):
        grads = zeros_after(self.grads_init(q, k), stats[0]) if grads is None else grads
        return kernel.block_backward(grads, q, k, v, dout, *stats, q_pos, k_pos, q_seg, k_seg, **self._static(q))

    def grads_result(self, grads, q, k, v):
        dq, dk, dv = grads
        return (jnp.moveaxis(dq, 4, 1).reshape(q.shape).astype(q.dtype), jnp.moveaxis(dk, 2, 1).astype(k.dtype),
                jnp.moveaxis(dv, 2, 1).astype(v.dtype))


@dataclasses.dataclass(frozen=True)
class PallasStep:
    """One fused kernel per step and pass (:mod:`ring.pallas_kernel`): the forward returns a float32
    partial output and its log-sum-exp, merged exactly into the accumulator; the backward's dq, dk, dv
    parts are added to theirs."""

    causal: bool
    tiles: object  # ring.pallas_tiles.Tiles
    interpret: bool = False
    window: int | None = None  # sliding window (causal only), as XlaStep's

    def _kernels(self, q):
        from ring import pallas_kernel

        static = dict(causal=self.causal, scale=1.0 / math.sqrt(q.shape[-1]), tiles=self.tiles,
                      interpret=self.interpret, window=self.window)
        return (functools.partial(pallas_kernel.forward, **static), functools.partial(pallas_kernel.backward, **static),
                pallas_kernel.merge)

    def forward_init(self, q, kv_heads):
        batch, block, q_heads, _ = q.shape
        return jnp.zeros(q.shape, F32), jnp.full((batch, q_heads, block), -jnp.inf, F32)

    def forward(self, acc, q, k, v, q_pos, k_pos, q_seg, k_seg):
        forward, _, merge = self._kernels(q)
        part = forward(q, k, v, q_pos, k_pos, q_seg, k_seg, out_dtype=F32)
        return part if acc is None else merge(*acc, *part)

    def result(self, acc, q):
        out, lse = acc  # lse [b, hq, s]
        return out.astype(q.dtype), lse

    def stats(self, q, out, lse, dout, kv_heads):
        # A finite lse for rows that no key attends to: every probability of such a row is masked to 0.
        delta = jnp.moveaxis(jnp.sum(dout.astype(F32) * out.astype(F32), -1), 1, 2)
        return jnp.where(jnp.isneginf(lse), 0.0, lse), delta

    def grads_init(self, q, k):
        return tuple(jnp.zeros(x.shape, F32) for x in (q, k, k))

    def backward(self, grads, q, k, v, dout, stats, q_pos, k_pos, q_seg, k_seg):
        _, backward, _ = self._kernels(q)
        parts = backward(q, k, v, dout, *stats, q_pos, k_pos, q_seg, k_seg)
        return parts if grads is None else tuple(g + p for g, p in zip(grads, parts))

    def grads_result(self, grads, q, k, v):
        return tuple(g.astype(x.dtype) for g, x in zip(grads, (q, k, v)))
