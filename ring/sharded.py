"""Global-array entry point: ring attention over a mesh axis, wrapped in ``jax.shard_map``."""

from __future__ import annotations

import functools

import jax
from jax.sharding import Mesh, PartitionSpec as P

from ring.checks import check_attention_inputs, check_impl
from ring.layouts import check_divisible, from_layout, to_layout
from ring.ring_attention import ring_attention


def sharded_attention(q, k, v, *, mesh: Mesh, axis_name: str = "sp", batch_axis=None, causal: bool = True,
                      layout: str = "zigzag", segment_ids=None, query_chunk_size: int = 512,
                      key_chunk_size: int = 512, float32_logits: bool = True, natural_order: bool = True,
                      impl: str | None = None):
    """Exact attention on global arrays whose sequence is sharded over ``mesh.shape[axis_name]`` devices.

    Jit-able and differentiable. Heads and head_dim stay whole on every device; the batch is split over
    ``batch_axis`` (a mesh axis name or tuple of names) when given, otherwise replicated.

    Args:
      q: [batch, seq, q_heads, head_dim]; k, v: [batch, seq, kv_heads, head_dim].
      mesh: the device mesh; ``axis_name`` is the ring.
      batch_axis: mesh axis (or axes) that shards the batch, or None.
      causal, layout, segment_ids, query_chunk_size, key_chunk_size, float32_logits: as in
        :func:`ring.ring_attention`.
      natural_order: inputs and output are in natural token order, and this function permutes them into
        ``layout`` and back. Pass False when the caller already holds its tokens in the layout (a model
        that permutes once at its input), which saves two permutations per call.
      impl: "pallas", "xla" or None (default by backend), as in :func:`ring.ring_attention`.

    Returns:
      [batch, seq, q_heads, head_dim], in the same token order as the inputs.
    """
    check_attention_inputs(q, k, v, segment_ids)
    check_impl(impl)
    if axis_name not in mesh.shape:
        raise ValueError(f"axis_name={axis_name!r} is not an axis of the mesh {dict(mesh.shape)}")
    n = mesh.shape[axis_name]
    check_divisible(q.shape[1], n, layout)
    batch_axes = () if batch_axis is None else (batch_axis if isinstance(batch_axis, tuple) else (batch_axis,))
    batch_shards = 1
    for name in batch_axes:
        if name not in mesh.shape:
            raise ValueError(f"batch_axis {name!r} is not an axis of the mesh {dict(mesh.shape)}")
        batch_shards *= mesh.shape[name]
    if q.shape[0] % batch_shards:
        raise ValueError(f"batch={q.shape[0]} must be divisible by the {batch_shards} devices of {batch_axes}")

    spec_b = batch_axes if len(batch_axes) != 1 else batch_axes[0]
    spec_b = spec_b or None
    qkv_spec, seg_spec = P(spec_b, axis_name, None, None), P(spec_b, axis_name)
    kernel = functools.partial(
        ring_attention, axis_name=axis_name, causal=causal, layout=layout,
        query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size, float32_logits=float32_logits,
        impl=impl,
    )
    # The Pallas interpreter (impl="pallas" off GPU) evaluates a kernel on device-varying blocks with
    # device-invariant grid indices, which shard_map's varying-axes check rejects; only then is it off.
    check_vma = not (impl == "pallas" and jax.default_backend() != "gpu")
    if segment_ids is None:
        run = jax.shard_map(lambda q, k, v: kernel(q, k, v), mesh=mesh,
                            in_specs=(qkv_spec,) * 3, out_specs=qkv_spec, check_vma=check_vma)
        args = (q, k, v)
    else:
        run = jax.shard_map(lambda q, k, v, s: kernel(q, k, v, segment_ids=s), mesh=mesh,
                            in_specs=(qkv_spec,) * 3 + (seg_spec,), out_specs=qkv_spec, check_vma=check_vma)
        args = (q, k, v, segment_ids)
    permute = natural_order and n > 1  # on one device every layout is the identity: no copies
    if permute:
        args = tuple(to_layout(x, n, layout, axis=1) for x in args)
    out = run(*args)
    return from_layout(out, n, layout, axis=1) if permute else out
