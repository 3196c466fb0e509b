"""Global-array entry points: attention over a sequence sharded on a mesh axis (the ring, all-gather K/V or
Ulysses: :mod:`ring.strategy`), and layout changes, wrapped in ``jax.shard_map``.

Everything that moves tokens between devices happens inside the ``shard_map``, with collectives of one
block at a time (:func:`ring.layouts.to_layout_local`), so that per-device memory stays O(block) whatever
the layout; XLA's sharding propagation is asked to permute a sharded sequence only where no per-device
permutation applies (a block the layout cannot split, and the hybrid strategy in natural order).

Heads can be sharded too (tensor parallelism): with ``head_axis``, every device of that mesh axis
computes its share of the query heads, and only the K/V heads those need.
"""

from __future__ import annotations

import functools

import jax
from jax import lax
from jax.sharding import Mesh, PartitionSpec as P

from ring.allgather import allgather_attention
from ring.checks import check_attention_inputs, check_impl, check_window
from ring.layouts import check_divisible, from_layout, local_relayout_supported, to_layout, to_layout_local
from ring.ring_attention import ring_attention
from ring.strategy import Shapes, check_strategy, choose_strategy
from ring.ulysses import check_ulysses_heads, ulysses_attention


def _axis_size(mesh: Mesh, name: str, argument: str) -> int:
    if name not in mesh.shape:
        raise ValueError(f"{argument}={name!r} is not an axis of the mesh {dict(mesh.shape)}")
    return mesh.shape[name]


def _shards(mesh: Mesh, spec) -> int:
    """Devices that a PartitionSpec entry (None, a name or a tuple of names) splits a dimension over."""
    names = () if spec is None else (spec if isinstance(spec, tuple) else (spec,))
    shards = 1
    for name in names:
        shards *= mesh.shape[name]
    return shards


def batch_spec(mesh: Mesh, batch_axis, batch: int):
    """The PartitionSpec entry of a batch split over ``batch_axis`` (a name, a tuple of names or None)."""
    axes = () if batch_axis is None else (batch_axis if isinstance(batch_axis, tuple) else (batch_axis,))
    for name in axes:
        _axis_size(mesh, name, "batch_axis")
    shards = _shards(mesh, axes)
    if batch % shards:
        raise ValueError(f"batch={batch} must be divisible by the {shards} devices of {axes}")
    return (axes if len(axes) != 1 else axes[0]) or None


def _head_plan(mesh: Mesh, head_axis, q_heads: int, kv_heads: int):
    """(q head spec, K/V head spec, pick one K/V head per device?) for heads split over ``head_axis``."""
    if head_axis is None or _axis_size(mesh, head_axis, "head_axis") == 1:
        return None, None, False
    size = mesh.shape[head_axis]
    if q_heads % size:
        raise ValueError(f"q_heads={q_heads} must be divisible by the {size} devices of head_axis={head_axis!r}")
    if kv_heads % size == 0:
        return head_axis, head_axis, False
    # Fewer K/V heads than devices (grouped-query attention): K/V stay whole, each device picks the one
    # K/V head of its query heads, which needs every device's query heads inside one group.
    local, groups = q_heads // size, q_heads // kv_heads
    if groups % local:
        raise ValueError(f"head_axis={head_axis!r}: {size} devices split q_heads={q_heads} so that a device's "
                         f"query heads span several of the kv_heads={kv_heads} groups")
    return head_axis, None, True


def sharded_attention(q, k, v, *, mesh: Mesh, axis_name: str = "sp", batch_axis=None, causal: bool = True,
                      layout: str = "zigzag", segment_ids=None, query_chunk_size: int = 512,
                      key_chunk_size: int = 512, float32_logits: bool = True, natural_order: bool = True,
                      impl: str | None = None, head_axis: str | None = None, strategy: str = "ring",
                      window: int | None = None, memory_budget: int | None = None,
                      ulysses_axis: str | None = None):
    """Exact attention on global arrays whose sequence is sharded over ``mesh.shape[axis_name]`` devices.

    Jit-able and differentiable. The batch is split over ``batch_axis`` (a mesh axis name or tuple of
    names) when given, otherwise replicated; heads over ``head_axis`` when given, otherwise whole.

    Args:
      q: [batch, seq, q_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim].
      mesh: the device mesh; ``axis_name`` is the ring.
      batch_axis: mesh axis (or axes) that shards the batch, or None.
      causal, layout, segment_ids, query_chunk_size, key_chunk_size, float32_logits: as in
        :func:`ring.ring_attention`.
      natural_order: inputs and output are in natural token order, and each device permutes its block into
        ``layout`` and back inside the ``shard_map`` (O(block) memory). Pass False when the caller already
        holds its tokens in the layout (a model that permutes once at its input).
      impl: "pallas", "xla" or None (default by backend), as in :func:`ring.ring_attention`.
      head_axis: mesh axis that shards the query heads (tensor parallelism), or None. K/V heads are sharded
        too when they divide by it; otherwise they stay whole and each device uses the one K/V head of its
        query heads (q_heads / devices must then divide the group size q_heads / kv_heads).
      strategy: how the sequence axis is parallelised (:mod:`ring.strategy`): "ring" (K/V blocks travel
        the ring; O(block) memory), "allgather" (:func:`ring.allgather_attention`: K/V heads gathered in
        one collective; O(seq * kv_heads) memory), "ulysses" (:func:`ring.ulysses_attention`: all-to-all to
        head-sharded and back; q_heads must divide by the devices), "hybrid" (Ulysses within groups of
        devices along ``ulysses_axis``, the ring across the groups along ``axis_name``) or "auto"
        (:func:`ring.choose_strategy`, under ``memory_budget``; it picks one of the first three).
      window: sliding-window attention (causal only): query i attends to keys j with i - window < j <= i;
        every strategy skips the chunk pairs (and the ring the hops) that no query reaches.
      memory_budget: per-device bytes that ``strategy="auto"`` must stay within (None: no limit).
      ulysses_axis: ``strategy="hybrid"`` only: the mesh axis of the devices within a group. The sequence
        is split over (``axis_name``, ``ulysses_axis``), groups major: ``layout`` places the tokens over the
        ring of groups, and a group's block lies contiguously over its devices; q_heads (and kv_heads, as
        for Ulysses) must divide by the group's devices. In natural order, XLA permutes the global arrays
        (not per device, as for the other strategies).

    Returns:
      [batch, seq, q_heads, head_dim], in the same token order as the inputs.
    """
    check_attention_inputs(q, k, v, segment_ids)
    check_impl(impl)
    check_window(window, causal)
    check_strategy(strategy)
    n = _axis_size(mesh, axis_name, "axis_name")
    seq = q.shape[1]
    check_divisible(seq, n, layout)
    hybrid = strategy == "hybrid"
    if hybrid != (ulysses_axis is not None):
        raise ValueError(f"ulysses_axis={ulysses_axis!r} goes with strategy='hybrid' and only with it "
                         f"(strategy={strategy!r})")
    group = _axis_size(mesh, ulysses_axis, "ulysses_axis") if hybrid else 1
    if hybrid and (ulysses_axis == axis_name or seq % (n * group)):
        raise ValueError(f"strategy='hybrid' needs ulysses_axis={ulysses_axis!r} other than axis_name="
                         f"{axis_name!r} and seq={seq} divisible by their {n} x {group} devices")
    spec_b = batch_spec(mesh, batch_axis, q.shape[0])
    q_head_spec, kv_head_spec, pick_kv = _head_plan(mesh, head_axis, q.shape[2], k.shape[2])
    seq_spec = (axis_name, ulysses_axis) if hybrid else axis_name
    q_spec, kv_spec = P(spec_b, seq_spec, q_head_spec, None), P(spec_b, seq_spec, kv_head_spec, None)
    seg_spec = P(spec_b, seq_spec)
    # The heads and batch one device attends with, as the strategies see them.
    tp = 1 if q_head_spec is None else mesh.shape[head_axis]
    shapes = Shapes(batch=q.shape[0] // _shards(mesh, spec_b), block=seq // n, q_heads=q.shape[2] // tp,
                    kv_heads=1 if pick_kv else k.shape[2] // (tp if kv_head_spec else 1), head_dim=q.shape[3],
                    num_devices=n, query_chunk=query_chunk_size, key_chunk=key_chunk_size)
    if strategy == "auto":
        strategy = choose_strategy(shapes, memory_budget=memory_budget)
    elif strategy == "ulysses":
        check_ulysses_heads(shapes.q_heads, shapes.kv_heads, n, axis_name)
    elif hybrid:
        check_ulysses_heads(shapes.q_heads, shapes.kv_heads, group, ulysses_axis, strategy="hybrid")
    permute = natural_order and n > 1  # on one device every layout is the identity: no copies
    if strategy == "ulysses":  # every device attends over the whole sequence: the layout balances nothing
        layout, permute = layout if n > 1 and not natural_order else "contiguous", False
    # Zigzag moves half blocks with collective permutes inside the shard_map, striped one all-to-all. Left to
    # XLA, the striped permutation of the global arrays held several blocks per device at 8 devices (1.47x the
    # in-layout call's memory in a model's train step, where the local all-to-all costs nothing).
    local = permute and not hybrid and local_relayout_supported(seq, n, layout)
    kv_natural = local and strategy == "allgather"  # K/V are gathered whole: natural order needs no permute
    common = dict(axis_name=axis_name, causal=causal, query_chunk_size=query_chunk_size,
                  key_chunk_size=key_chunk_size, float32_logits=float32_logits, impl=impl, window=window)

    def kernel(q, k, v, q_seg, kv_seg):
        if strategy == "allgather":
            return allgather_attention(q, k, v, layout=layout, kv_layout="contiguous" if kv_natural else layout,
                                       segment_ids=q_seg, kv_segment_ids=kv_seg, **common)
        if hybrid:
            return ulysses_attention(q, k, v, segment_ids=q_seg, **{**common, "axis_name": ulysses_axis},
                                     layout="contiguous", ring_axis=axis_name, ring_layout=layout)
        attend = ring_attention if strategy == "ring" else ulysses_attention
        return attend(q, k, v, layout=layout, segment_ids=q_seg, **common)

    def per_device(q, k, v, segment_ids=None):
        relayout = functools.partial(to_layout_local, axis_name=axis_name, num_devices=n, layout=layout)
        q_seg = kv_seg = segment_ids
        if local:
            q = relayout(q)
            q_seg = None if segment_ids is None else relayout(segment_ids)
            if not kv_natural:
                k, v, kv_seg = relayout(k), relayout(v), q_seg
        if pick_kv:
            head = lax.axis_index(head_axis) * q.shape[2] // groups  # q.shape[2]: this device's query heads
            k, v = (lax.dynamic_slice_in_dim(x, head, 1, axis=2) for x in (k, v))
        out = kernel(q, k, v, q_seg, kv_seg)
        return relayout(out, inverse=True) if local else out

    groups = q.shape[2] // k.shape[2]
    # The Pallas interpreter (impl="pallas" off GPU) evaluates a kernel on device-varying blocks with
    # device-invariant grid indices, which shard_map's varying-axes check rejects; only then is it off.
    check_vma = not (impl == "pallas" and jax.default_backend() != "gpu")
    args = (q, k, v) if segment_ids is None else (q, k, v, segment_ids)
    in_specs = (q_spec, kv_spec, kv_spec, seg_spec)[:len(args)]
    run = jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=q_spec, check_vma=check_vma)
    if permute and not local:  # a block the layout cannot split per device: XLA permutes the global arrays
        args = tuple(to_layout(x, n, layout, axis=1) for x in args)
        return from_layout(run(*args), n, layout, axis=1)
    return run(*args)


def sharded_to_layout(x, *, mesh: Mesh, layout: str, axis_name: str = "sp", batch_axis=None,
                      inverse: bool = False):
    """:func:`ring.to_layout` (``inverse``: :func:`ring.from_layout`) of a global array [batch, seq, ...]
    sharded over ``axis_name`` along the sequence, done per device with O(block) memory.

    The result keeps the input's sharding: batch over ``batch_axis``, sequence over ``axis_name``, the
    other dimensions whole.
    """
    n = _axis_size(mesh, axis_name, "axis_name")
    seq = x.shape[1]
    check_divisible(seq, n, layout, name="x.shape[1]")
    if n == 1:
        return x
    if not local_relayout_supported(seq, n, layout):
        return (from_layout if inverse else to_layout)(x, n, layout, axis=1)
    spec = P(batch_spec(mesh, batch_axis, x.shape[0]), axis_name)
    run = jax.shard_map(
        lambda x: to_layout_local(x, axis_name, n, layout, inverse=inverse), mesh=mesh, in_specs=spec,
        out_specs=spec)
    return run(x)
