"""Ring attention: the per-device function that runs inside ``shard_map`` (Liu, Zaharia, Abbeel 2023).

Every device keeps its query block; the K/V blocks (with their segment ids) travel around the ring by
``lax.ppermute``, one hop per step, and each step folds the visiting block into the local online softmax
(:mod:`ring.kernel`). After ``n`` steps every query has seen every key.

The custom VJP saves only the local q, k, v, output and log-sum-exp (O(block) per device). Its backward
sends one side of every block pair around the ring once more, with its float32 gradient accumulators,
while the other side stays and accumulates at home: the K/V blocks with dk/dv (each device adds its
queries' share to the visiting block's accumulators), or, where they are fewer bytes, the query blocks
with do, their statistics and dq (without grouped-query attention: q, do and dq are three blocks' worth
against k, v, dk and dv's four). Either way the n-th hop brings every travelling accumulator home. Both
loops run n uniform steps of n hops (in the forward the last hop is spare), so XLA compiles the block
kernel once and memory is the same for every ring size.

With ``axis_name=None`` the same code is a ring of one device, which is :func:`blockwise_attention`.

``impl`` picks the block step (:mod:`ring.block_step`) and nothing else: "xla" is :mod:`ring.kernel`
(chunk loops compiled by XLA), "pallas" the fused kernels of :mod:`ring.pallas_kernel`. The ring loop
below (communication, custom VJP, accumulators, skipping of blocks the causal mask empties) is the same
for both; a ring of one device is a single step in each pass, with no loop.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ring import kernel
from ring.block_step import PallasStep, XlaStep, match_varying, zeros_after
from ring.checks import check_attention_inputs, check_chunk, check_impl, check_window
from ring.layouts import check_layout, global_positions


@dataclasses.dataclass(frozen=True)
class _Ring:
    """Static description of one ring-attention call."""

    axis_name: str | None
    causal: bool
    layout: str
    step: object  # the block compute: ring.block_step.XlaStep or PallasStep
    window: int | None = None  # sliding window (causal): hops no query reaches are neither run nor waited for

    def size(self) -> int:
        return 1 if self.axis_name is None else lax.axis_size(self.axis_name)

    def index(self):
        return jnp.int32(0) if self.axis_name is None else lax.axis_index(self.axis_name)

    def positions(self, device, block: int):
        return global_positions(device, block, self.size(), self.layout)

    def hops(self, block: int) -> int:
        return ring_hops(self.size(), block, self.layout, self.window)

    def may_attend(self, q_pos, k_pos):
        return kernel.block_may_attend(q_pos, k_pos, self.causal, self.window)

    def shift(self, tree, hops: int = 1):
        """Sends ``tree`` ``hops`` hops along the ring: device i -> i + hops (backwards when negative)."""
        n = self.size()
        if n == 1 or hops % n == 0:
            return tree
        perm = [(i, (i + hops) % n) for i in range(n)]
        return lax.ppermute(tree, self.axis_name, perm)

    def varying_like(self, tree, like):
        """Gives loop carries created here the device-varying type of ``like`` (see :func:`match_varying`)."""
        return tree if self.axis_name is None else match_varying(tree, like)


def ring_hops(num_devices: int, block: int, layout: str, window: int | None) -> int:
    """Ring steps that can matter: all ``num_devices`` without a window; with one, up to the last step at
    which some device's queries reach the visiting K/V block (a static count, from the layout's positions).

    Step i brings device d the block of device d - i. Contiguous: about ``window / block + 1`` steps;
    zigzag and striped spread every device's tokens over the sequence, so they keep all of them (and skip
    the compute of the steps no query of the device reaches).
    """
    if window is None:
        return num_devices

    def reaches(step, device):  # some query i with a key j of the visiting block, i - window < j <= i
        q_pos = global_positions(device, block, num_devices, layout)
        k_pos = global_positions((device - step) % num_devices, block, num_devices, layout)
        upto = np.searchsorted(k_pos, q_pos, side="right")  # keys <= i
        return bool(np.any(upto > np.searchsorted(k_pos, q_pos - window, side="right")))  # ... > i - window

    return 1 + max(i for i in range(num_devices) if any(reaches(i, d) for d in range(num_devices)))


def _ring_forward(cfg: _Ring, q, k, v, segment_ids):
    """Returns the output [b, s, hq, d] and the step's log-sum-exp of the local query block."""
    step, block = cfg.step, q.shape[1]
    n, me = cfg.size(), cfg.index()
    q_pos = cfg.positions(me, block)
    if n == 1:  # a ring of one: one block step, no loop and no merge
        return step.result(step.forward(None, q, k, v, q_pos, q_pos, segment_ids, segment_ids), q)

    def body(i, carry):
        acc, kv = carry
        incoming = cfg.shift(kv)  # issued before the compute that does not depend on it
        k_blk, v_blk, seg_blk = kv
        k_pos = cfg.positions((me - i) % n, block)
        acc = lax.cond(cfg.may_attend(q_pos, k_pos),
                       lambda a: step.forward(a, q, k_blk, v_blk, q_pos, k_pos, segment_ids, seg_blk),
                       lambda a: a, acc)
        return acc, incoming

    # n steps and n hops: the last hop (the blocks going home) is spare, but it keeps the loop uniform,
    # so XLA compiles one copy of the step and the same steady-state memory for every ring size. A
    # sliding window stops after the last hop that any device's queries reach.
    init = cfg.varying_like(step.forward_init(q, k.shape[2]), q)
    acc, _ = lax.fori_loop(0, cfg.hops(block), body, (init, (k, v, segment_ids)))
    return step.result(acc, q)


def _ring_backward(cfg: _Ring, q, k, v, segment_ids, out, lse, dout):
    """Returns dq, dk, dv of the local blocks, in the inputs' dtypes."""
    step, block = cfg.step, q.shape[1]
    n, me = cfg.size(), cfg.index()
    q_pos = cfg.positions(me, block)
    stats = step.stats(q, out, lse, dout, k.shape[2])  # global statistics, computed once
    if n == 1:
        grads = step.backward(None, q, k, v, dout, stats, q_pos, q_pos, segment_ids, segment_ids)
        return step.grads_result(grads, q, k, v)
    # Step i pairs the queries of device d with the K/V block of device d - i, whichever side travels, so
    # the hops that matter (a window's) are the same for both.
    hops = cfg.hops(block)
    dq, dk, dv = zeros_after(step.grads_init(q, k), stats[0])
    if queries_travel(q, k):
        def body(i, carry):  # device me holds the queries of device me + i: they travel backwards
            visiting, dq, dkv = carry
            incoming = cfg.shift(visiting, -1)
            q_blk, do_blk, stats_blk, seg_blk = visiting
            vis_pos = cfg.positions((me + i) % n, block)
            dq, dk, dv = lax.cond(
                cfg.may_attend(vis_pos, q_pos),
                lambda g: step.backward(g, q_blk, k, v, do_blk, stats_blk, vis_pos, q_pos, seg_blk, segment_ids),
                lambda g: g, (dq, *dkv))
            return incoming, cfg.shift(dq, -1), (dk, dv)

        _, dq, (dk, dv) = lax.fori_loop(0, hops, body, ((q, dout, stats, segment_ids), dq, (dk, dv)))
        dq = cfg.shift(dq, hops)  # a window's shorter loop leaves dq that many devices back
    else:
        def body(i, carry):  # device me holds the K/V block of device me - i
            dq, kv, dkv = carry
            incoming = cfg.shift(kv)
            k_blk, v_blk, seg_blk = kv
            vis_pos = cfg.positions((me - i) % n, block)
            dq, dk, dv = lax.cond(
                cfg.may_attend(q_pos, vis_pos),
                lambda g: step.backward(g, q, k_blk, v_blk, dout, stats, q_pos, vis_pos, segment_ids, seg_blk),
                lambda g: g, (dq, *dkv))
            return dq, incoming, cfg.shift((dk, dv))

        dq, _, (dk, dv) = lax.fori_loop(0, hops, body, (dq, (k, v, segment_ids), (dk, dv)))
        dk, dv = cfg.shift((dk, dv), -hops)
    return step.grads_result((dq, dk, dv), q, k, v)


def queries_travel(q, k) -> bool:
    """Whether the backward sends the query side round the ring (q, do and a float32 dq) rather than the
    K/V side (k, v and float32 dk, dv): whichever is fewer bytes a hop. Without grouped-query attention
    the queries are (12 against 16 blocks of a float32 head each; at 8,192 tokens a device, 8 heads, before
    the head groups: 60.9 against 68.4 MiB a device); with K/V heads shared by 2 or more query heads the
    K/V side is."""
    def nbytes(x, dtype=None):
        return x.size * jnp.dtype(dtype or x.dtype).itemsize

    return 2 * nbytes(q) + nbytes(q, jnp.float32) < 2 * nbytes(k) + 2 * nbytes(k, jnp.float32)


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
                   impl: str | None = None, window: int | None = None):
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
      window: sliding-window attention (needs ``causal``): query i attends to keys j with
        i - window < j <= i. Chunk pairs and ring hops that no query reaches are skipped, and the ring stops
        after the last hop any device needs (contiguous: about window / block + 1 hops); the chunk sizes
        are halved down to about window / 8 (:func:`window_chunk`); both block steps skip what it masks.

    Returns:
      Local attention output [batch, block, q_heads, head_dim] in q's dtype.
    """
    cfg = _make_config(q, k, v, segment_ids, axis_name, causal, layout, query_chunk_size, key_chunk_size,
                       float32_logits, impl, window)
    return _ring_attention(cfg, q, k, v, segment_ids)


def blockwise_attention(q, k, v, *, causal: bool = True, segment_ids=None, query_chunk_size: int = 512,
                        key_chunk_size: int = 512, float32_logits: bool = True, impl: str | None = None,
                        window: int | None = None):
    """Memory-efficient exact attention on one device (a ring of one; Rabe & Staats, BPT).

    Same arguments as :func:`ring.reference_attention` plus chunk sizes, ``impl`` and ``window`` (as in
    :func:`ring_attention`); memory is O(chunk^2), not O(seq^2), in forward and backward.
    """
    cfg = _make_config(q, k, v, segment_ids, None, causal, "contiguous", query_chunk_size, key_chunk_size,
                       float32_logits, impl, window)
    return _ring_attention(cfg, q, k, v, segment_ids)


def block_step(q, k, causal, query_chunk_size, key_chunk_size, float32_logits, impl, window,
               q_len: int | None = None, k_len: int | None = None):
    """The block compute (:mod:`ring.block_step`) for query blocks of ``q_len`` and K/V blocks of ``k_len``
    tokens (default: q's and k's lengths), with the chunk sizes clipped to them; ``impl`` and ``window`` as
    in :func:`ring_attention`."""
    check_impl(impl)
    check_window(window, causal)
    window = None if window is None else int(window)
    q_len, k_len = q.shape[1] if q_len is None else q_len, k.shape[1] if k_len is None else k_len
    q_chunk, k_chunk = min(query_chunk_size, q_len), min(key_chunk_size, k_len)
    check_chunk("query_chunk_size", q_chunk, q_len)
    check_chunk("key_chunk_size", k_chunk, k_len)
    q_chunk, k_chunk = window_chunk(q_chunk, window), window_chunk(k_chunk, window)
    kv_heads = k.shape[2]
    per = head_chunk(kv_heads, q.shape[2] // kv_heads, q_chunk, k_chunk)
    xla = XlaStep(bool(causal), q_chunk, k_chunk, bool(float32_logits), window, per)
    gpu = jax.default_backend() == "gpu"
    if impl == "xla" or (impl is None and not gpu):
        return xla
    from ring import pallas_tiles

    tiles = pallas_tiles.default_tiles(q.shape[3], q_len, k_len, max_q=q_chunk, max_k=k_chunk)
    unsupported = pallas_tiles.check_supported(q, k, tiles, interpret=not gpu)
    if unsupported is not None:
        if impl is None:  # the default falls back to the XLA step where the kernel cannot run
            return xla
        raise ValueError(f"impl='pallas': {unsupported}")
    return PallasStep(bool(causal), tiles, interpret=not gpu, window=window)


SCORE_TILE = 512 * 512  # the most scores one chunk pair of the XLA step holds at once, over its heads


def head_chunk(kv_heads: int, groups: int, q_chunk: int, k_chunk: int) -> int:
    """How many K/V heads (each with its ``groups`` query heads) the XLA step scores together: the most
    that divide ``kv_heads`` with at most :data:`SCORE_TILE` scores a chunk pair, and at least one. A
    pair's scores exist several times over in the backward (probabilities, their gradient), so with 8
    heads of 512 x 512-token chunks they were the largest temporaries of the ring; scored one head at a
    time they cost what a Ulysses device's do (``experiments.bench.ring_strategies``, 8,192 tokens a
    device, 8 heads: 68.4 MiB a device before, 36.8 MiB with the query side travelling too, against
    Ulysses' 48.8; at 1,024 tokens also 0.75x the time). Small chunks keep all heads in one pass."""
    per = kv_heads
    while per > 1 and (kv_heads % per or per * groups * q_chunk * k_chunk > SCORE_TILE):
        per -= 1
    return per


def window_chunk(chunk: int, window: int | None) -> int:
    """The chunk size a sliding window runs with: ``chunk`` halved while it is above both ``window / 8``
    and 64 tokens and even, so it still divides the block (96 becomes 48). A chunk pair that the window's
    edge cuts through costs a whole pair, so with chunks of the window's size about a third of the pairs
    computed are mostly masked; at an eighth of it they are a small fraction. The block step's chunk loops
    visit only the chunks within the window's reach (:func:`ring.kernel.window_reach`), so smaller chunks
    add no loop over the rest (``experiments.bench.ring_strategies``: at 1,024 tokens a device and W =
    seq / 8 the window took 0.43x full causal attention's time with 512-token chunks and every chunk pair
    visited, 0.30x with both changes). Without a window, ``chunk`` as given."""
    if window is None:
        return chunk
    while chunk > max(window // 8, 64) and chunk % 2 == 0:
        chunk //= 2
    return chunk


def _make_config(q, k, v, segment_ids, axis_name, causal, layout, query_chunk_size, key_chunk_size,
                 float32_logits, impl=None, window=None) -> _Ring:
    check_attention_inputs(q, k, v, segment_ids)
    check_layout(layout)
    block = q.shape[1]
    if layout == "zigzag" and axis_name is not None and block % 2:
        raise ValueError(f"layout='zigzag' needs an even per-device block, got {block} tokens")
    step = block_step(q, k, causal, query_chunk_size, key_chunk_size, float32_logits, impl, window)
    return _Ring(axis_name, bool(causal), layout, step, window)
