"""Ring attention: the per-device function that runs inside ``shard_map`` (Liu, Zaharia, Abbeel 2023).

Every device keeps its query block; the K/V blocks (with their segment ids) travel around the ring by
``lax.ppermute``, one hop per step, and each step folds the visiting block into the local online softmax
(:mod:`ring.kernel`). After ``n`` steps every query has seen every key.

The custom VJP saves only the local q, k, v, output and log-sum-exp (O(block) per device). Its backward
sends the K/V blocks around the ring once more, now together with float32 dk/dv accumulators: each device
adds its queries' share to the visiting block's accumulators, and the n-th hop brings every accumulator
home. dq never leaves the device. Both loops run n uniform steps of n hops (in the forward the last hop is
spare), so XLA compiles the block kernel once and memory is the same for every ring size.

With ``axis_name=None`` the same code is a ring of one device, which is :func:`blockwise_attention`.

``impl`` picks the per-step block compute and nothing else: "xla" is :mod:`ring.kernel` (chunk loops
compiled by XLA), "pallas" the fused kernels of :mod:`ring.pallas_kernel`. With "pallas" each forward step
returns a float32 partial output and its log-sum-exp, merged exactly into the running pair
(:func:`ring.pallas_kernel.merge`), and each backward step returns float32 dq, dk, dv that are added to
the accumulators; a ring of one device is a single kernel call in each pass, with no merge and no loop.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
from jax import lax

from ring import kernel
from ring.checks import check_attention_inputs, check_chunk, check_impl
from ring.layouts import check_layout, global_positions


@dataclasses.dataclass(frozen=True)
class _Ring:
    """Static description of one ring-attention call."""

    axis_name: str | None
    causal: bool
    layout: str
    q_chunk: int
    k_chunk: int
    float32_logits: bool
    impl: str = "xla"
    tiles: object = None  # ring.pallas_tiles.Tiles when impl == "pallas"
    interpret: bool = False  # run the Pallas kernels through the interpreter (no GPU)

    def size(self) -> int:
        return 1 if self.axis_name is None else lax.axis_size(self.axis_name)

    def index(self):
        return jnp.int32(0) if self.axis_name is None else lax.axis_index(self.axis_name)

    def positions(self, device, block: int):
        return global_positions(device, block, self.size(), self.layout)

    def shift(self, tree):
        """Sends ``tree`` one hop along the ring: device i -> i + 1."""
        n = self.size()
        if n == 1:
            return tree
        perm = [(i, (i + 1) % n) for i in range(n)]
        return lax.ppermute(tree, self.axis_name, perm)

    def varying_like(self, tree, like):
        """Gives loop carries created here the device-varying type of ``like``, as ``check_vma=True`` wants.

        Inside ``shard_map`` an input varies over every mesh axis that shards it (the ring axis, and a
        batch axis when there is one); a fresh zero does not, and loop carries must match exactly.
        """
        if self.axis_name is None:
            return tree
        axes = _varying_axes(like) or (self.axis_name,)
        return jax.tree.map(lambda x: lax.pcast(x, axes, to="varying"), tree)


def _varying_axes(x) -> tuple[str, ...]:
    """Mesh axes over which ``x`` varies inside ``shard_map`` (the attribute moved between JAX versions)."""
    aval = jax.typeof(x)
    manual = getattr(aval, "manual_axis_type", None)
    axes = manual.varying if manual is not None else getattr(aval, "vma", ())
    return tuple(sorted(axes))


def _grouped(q, kv_heads):
    """[b, s, hq, d] -> [b, s, hkv, g, d]: query heads grouped by their K/V head (a free reshape)."""
    batch, seq, q_heads, head_dim = q.shape
    return q.reshape(batch, seq, kv_heads, q_heads // kv_heads, head_dim)


def _seq_major(x, shape):
    """Heads-major [b, hkv, g, s, d] accumulator -> [b, s, hq, d]."""
    return jnp.moveaxis(x, 3, 1).reshape(shape)


def _ring_forward(cfg: _Ring, q, k, v, segment_ids):
    """Returns the output [b, s, hq, d] and lse [b, hkv, g, s] of the local query block
    (lse [b, hq, s] with impl="pallas")."""
    if cfg.impl == "pallas":
        return _pallas_forward(cfg, q, k, v, segment_ids)
    batch, block, q_heads, head_dim = q.shape
    n, me = cfg.size(), cfg.index()
    qg = _grouped(q, k.shape[2])
    q_pos = cfg.positions(me, block)
    fold = functools.partial(kernel.block_forward, causal=cfg.causal, q_chunk=cfg.q_chunk, k_chunk=cfg.k_chunk,
                             scale=1.0 / math.sqrt(head_dim), float32_logits=cfg.float32_logits)

    def step(i, carry):
        state, kv = carry
        incoming = cfg.shift(kv)  # issued before the compute that does not depend on it
        k_blk, v_blk, seg_blk = kv
        k_pos = cfg.positions((me - i) % n, block)
        state = lax.cond(kernel.block_may_attend(q_pos, k_pos, cfg.causal),
                         lambda s: fold(s, qg, k_blk, v_blk, q_pos, k_pos, segment_ids, seg_blk),
                         lambda s: s, state)
        return state, incoming

    # n steps and n hops: the last hop (the blocks going home) is spare, but it keeps the loop uniform,
    # so XLA compiles one copy of the kernel and the same steady-state memory for every ring size.
    state, _ = lax.fori_loop(0, n, step, (cfg.varying_like(kernel.init_state(qg), q), (k, v, segment_ids)))
    out, lse = kernel.finalize(state, q.dtype)
    return _seq_major(out, q.shape), lse


def _ring_backward(cfg: _Ring, q, k, v, segment_ids, out, lse, dout):
    """Returns dq, dk, dv of the local blocks, in the inputs' dtypes."""
    if cfg.impl == "pallas":
        return _pallas_backward(cfg, q, k, v, segment_ids, out, lse, dout)
    batch, block, q_heads, head_dim = q.shape
    kv_heads = k.shape[2]
    n, me = cfg.size(), cfg.index()
    qg, dog = _grouped(q, kv_heads), _grouped(dout, kv_heads)
    # rowsum(do * out), heads-major [b, h, g, s] like the saved lse.
    delta = jnp.moveaxis(jnp.sum(dog.astype(jnp.float32) * _grouped(out, kv_heads).astype(jnp.float32), -1), 1, 3)
    q_pos = cfg.positions(me, block)
    add = functools.partial(kernel.block_backward, causal=cfg.causal, q_chunk=cfg.q_chunk, k_chunk=cfg.k_chunk,
                            scale=1.0 / math.sqrt(head_dim))

    def step(i, carry):
        dq, kv, dkv = carry
        incoming_kv = cfg.shift(kv)
        k_blk, v_blk, seg_blk = kv
        k_pos = cfg.positions((me - i) % n, block)
        dq, dk, dv = lax.cond(
            kernel.block_may_attend(q_pos, k_pos, cfg.causal),
            lambda g: add(g, qg, k_blk, v_blk, dog, lse, delta, q_pos, k_pos, segment_ids, seg_blk),
            lambda g: g, (dq, *dkv))
        return dq, incoming_kv, cfg.shift((dk, dv))

    # After n hops every dk/dv accumulator is back on the device that owns its K/V block.
    kv_shape = (batch, kv_heads, block, head_dim)  # heads-major float32 accumulators
    zeros = cfg.varying_like((kernel.init_state(qg).o, jnp.zeros(kv_shape, jnp.float32),
                              jnp.zeros(kv_shape, jnp.float32)), q)
    dq, _, (dk, dv) = lax.fori_loop(0, n, step, (zeros[0], (k, v, segment_ids), zeros[1:]))
    return (_seq_major(dq, q.shape).astype(q.dtype), jnp.moveaxis(dk, 2, 1).astype(k.dtype),
            jnp.moveaxis(dv, 2, 1).astype(v.dtype))


def _pallas_step(cfg: _Ring, head_dim: int):
    from ring import pallas_kernel

    static = dict(causal=cfg.causal, scale=1.0 / math.sqrt(head_dim), tiles=cfg.tiles, interpret=cfg.interpret)
    return (functools.partial(pallas_kernel.forward, **static), functools.partial(pallas_kernel.backward, **static),
            pallas_kernel.merge)


def _pallas_forward(cfg: _Ring, q, k, v, segment_ids):
    """The ring loop of :func:`_ring_forward` with the fused kernel as the step: (out, lse [b, hq, s])."""
    batch, block, q_heads, head_dim = q.shape
    n, me = cfg.size(), cfg.index()
    q_pos = cfg.positions(me, block)
    forward, _, merge = _pallas_step(cfg, head_dim)
    if n == 1:
        return forward(q, k, v, q_pos, q_pos, segment_ids, segment_ids)

    def step(i, carry):
        state, kv = carry
        incoming = cfg.shift(kv)
        k_blk, v_blk, seg_blk = kv
        k_pos = cfg.positions((me - i) % n, block)
        state = lax.cond(kernel.block_may_attend(q_pos, k_pos, cfg.causal),
                         lambda s: merge(*s, *forward(q, k_blk, v_blk, q_pos, k_pos, segment_ids, seg_blk,
                                                      out_dtype=jnp.float32)),
                         lambda s: s, state)
        return state, incoming

    empty = (jnp.zeros(q.shape, jnp.float32), jnp.full((batch, q_heads, block), -jnp.inf, jnp.float32))
    (out, lse), _ = lax.fori_loop(0, n, step, (cfg.varying_like(empty, q), (k, v, segment_ids)))
    return out.astype(q.dtype), lse


def _pallas_backward(cfg: _Ring, q, k, v, segment_ids, out, lse, dout):
    """The ring loop of :func:`_ring_backward` with the fused kernels as the step."""
    batch, block, q_heads, head_dim = q.shape
    n, me = cfg.size(), cfg.index()
    q_pos = cfg.positions(me, block)
    _, backward, _ = _pallas_step(cfg, head_dim)
    # Global statistics, computed once: rowsum(do * out) heads-major like lse, and a finite lse for rows
    # that no key attends to (every probability of such a row is masked to 0 in the kernels).
    delta = jnp.moveaxis(jnp.sum(dout.astype(jnp.float32) * out.astype(jnp.float32), -1), 1, 2)
    lse = jnp.where(jnp.isneginf(lse), 0.0, lse)
    if n == 1:
        return backward(q, k, v, dout, lse, delta, q_pos, q_pos, segment_ids, segment_ids,
                        dq_dtype=q.dtype, dkv_dtype=k.dtype)

    def step(i, carry):
        dq, kv, dkv = carry
        incoming_kv = cfg.shift(kv)
        k_blk, v_blk, seg_blk = kv
        k_pos = cfg.positions((me - i) % n, block)

        def add(grads):
            parts = backward(q, k_blk, v_blk, dout, lse, delta, q_pos, k_pos, segment_ids, seg_blk)
            return tuple(g + p for g, p in zip(grads, parts))

        dq, dk, dv = lax.cond(kernel.block_may_attend(q_pos, k_pos, cfg.causal), add, lambda g: g, (dq, *dkv))
        return dq, incoming_kv, cfg.shift((dk, dv))

    zeros = cfg.varying_like(tuple(jnp.zeros(x.shape, jnp.float32) for x in (q, k, v)), q)
    dq, _, (dk, dv) = lax.fori_loop(0, n, step, (zeros[0], (k, v, segment_ids), zeros[1:]))
    return dq.astype(q.dtype), dk.astype(k.dtype), dv.astype(v.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _ring_attention(cfg: _Ring, q, k, v, segment_ids):
    return _ring_forward(cfg, q, k, v, segment_ids)[0]


def _ring_attention_fwd(cfg, q, k, v, segment_ids):
    out, lse = _ring_forward(cfg, q, k, v, segment_ids)
    return out, (q, k, v, segment_ids, out, lse)


def _ring_attention_bwd(cfg, residuals, dout):
    q, k, v, segment_ids, out, lse = residuals
    dq, dk, dv = _ring_backward(cfg, q, k, v, segment_ids, out, lse, dout)
    return dq, dk, dv, None


_ring_attention.defvjp(_ring_attention_fwd, _ring_attention_bwd)


def ring_attention(q, k, v, *, axis_name, causal: bool = True, layout: str = "zigzag", segment_ids=None,
                   query_chunk_size: int = 512, key_chunk_size: int = 512, float32_logits: bool = True,
                   impl: str | None = None):
    """Exact softmax attention over a sequence sharded around the ring axis ``axis_name``.

    Call it inside ``jax.shard_map`` with the sequence dimension sharded over ``axis_name`` and the tokens
    placed by ``layout`` (see :mod:`ring.layouts`). Memory per device is O(block) in forward and backward.
    Off GPU, ``impl="pallas"`` runs the Pallas interpreter, which fails shard_map's varying-axes check:
    there the ``shard_map`` needs ``check_vma=False`` (:func:`ring.sharded_attention` does this itself).

    Args:
      q: local queries [batch, block, q_heads, head_dim].
      k, v: local keys/values [batch, block, kv_heads, head_dim]; q_heads % kv_heads == 0.
      axis_name: the mesh axis that forms the ring.
      causal: mask by global token position.
      layout: "contiguous", "striped" or "zigzag": how global tokens were assigned to devices.
      segment_ids: optional int [batch, block]; attention stays within equal ids.
      query_chunk_size, key_chunk_size: chunk sizes of the blockwise loops (clipped to the block).
      float32_logits: compute scores in float32 even for low-precision inputs (the Pallas kernel always
        does).
      impl: the per-step block compute: "xla" (:mod:`ring.kernel`), "pallas" (:mod:`ring.pallas_kernel`;
        compiled with Triton on GPU, run by the Pallas interpreter on other backends) or None: "pallas"
        when ``jax.default_backend() == "gpu"`` and the kernel supports the shapes, else "xla". With
        "pallas" the chunk sizes cap the kernel's tiles.

    Returns:
      Local attention output [batch, block, q_heads, head_dim] in q's dtype.
    """
    cfg = _make_config(q, k, v, segment_ids, axis_name, causal, layout, query_chunk_size, key_chunk_size,
                       float32_logits, impl)
    return _ring_attention(cfg, q, k, v, segment_ids)


def blockwise_attention(q, k, v, *, causal: bool = True, segment_ids=None, query_chunk_size: int = 512,
                        key_chunk_size: int = 512, float32_logits: bool = True, impl: str | None = None):
    """Memory-efficient exact attention on one device (a ring of one; Rabe & Staats, BPT).

    Same arguments as :func:`ring.reference_attention` plus chunk sizes and ``impl`` (as in
    :func:`ring_attention`); memory is O(chunk^2), not O(seq^2), in forward and backward.
    """
    cfg = _make_config(q, k, v, segment_ids, None, causal, "contiguous", query_chunk_size, key_chunk_size,
                       float32_logits, impl)
    return _ring_attention(cfg, q, k, v, segment_ids)


def _make_config(q, k, v, segment_ids, axis_name, causal, layout, query_chunk_size, key_chunk_size,
                 float32_logits, impl=None) -> _Ring:
    check_attention_inputs(q, k, v, segment_ids)
    check_layout(layout)
    check_impl(impl)
    block = q.shape[1]
    if layout == "zigzag" and axis_name is not None and block % 2:
        raise ValueError(f"layout='zigzag' needs an even per-device block, got {block} tokens")
    q_chunk, k_chunk = min(query_chunk_size, block), min(key_chunk_size, block)
    check_chunk("query_chunk_size", q_chunk, block)
    check_chunk("key_chunk_size", k_chunk, block)
    cfg = _Ring(axis_name, bool(causal), layout, q_chunk, k_chunk, bool(float32_logits))
    gpu = jax.default_backend() == "gpu"
    if impl == "xla" or (impl is None and not gpu):
        return cfg
    from ring import pallas_tiles

    tiles = pallas_tiles.default_tiles(q.shape[3], block, block, max_q=q_chunk, max_k=k_chunk)
    unsupported = pallas_tiles.check_supported(q, k, tiles, interpret=not gpu)
    if unsupported is not None:
        if impl is None:  # the default falls back to the XLA step where the kernel cannot run
            return cfg
        raise ValueError(f"impl='pallas': {unsupported}")
    return dataclasses.replace(cfg, impl="pallas", tiles=tiles, interpret=not gpu)
