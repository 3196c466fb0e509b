"""A pre-norm transformer stack whose attention is injected: dense, blockwise, or ring.

Training calls ``model(x, segment_ids)``. Decoding calls ``model(x_new, cache=cache, positions=positions)``
with a KV cache from :func:`init_cache` and gets ``(y_new, cache)``: the new tokens' keys and values are
written into the cache at ``positions`` and attended over with ``cached_attention_fn`` (dense, or sharded
over the ring axis with an exact log-sum-exp merge; :mod:`ring.decode`).

The stack adds no positional information: callers embed positions (the agent uses timesteps and
trajectory indices). Feed-forward layers run blockwise (:func:`ring.blockwise_feedforward`), and each layer
can be rematerialised, so a layer's activation memory is O(block) in sequence length when attention is
blockwise or ring.

Parameter names are stable for sharding rules: ``layers_{i}/attention/{query,key,value,out}/kernel`` and
``layers_{i}/mlp/{wi,wo}`` (or ``layers/...`` with a leading layer axis when scanned).
"""

from __future__ import annotations

import functools
from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ring.checks import check_impl, check_window
from ring.decode import cache_length, cached_attention, write_cache
from ring.feedforward import blockwise_feedforward
from ring.reference import reference_attention
from ring.ring_attention import blockwise_attention
from ring.sharded import sharded_attention
from ring.strategy import check_strategy

# (q, k, v, segment_ids) -> out, all [batch, seq, heads, head_dim]; layers with a sliding window call it
# with window=W as well (the functions of make_attention take it).
AttentionFn = Callable[..., jax.Array]

REMAT_POLICIES = {
    "none": None,
    "nothing_saveable": jax.checkpoint_policies.nothing_saveable,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def make_attention(kind: str, *, causal: bool = True, mesh=None, axis_name: str = "sp", batch_axis=None,
                   layout: str = "zigzag", natural_order: bool = True, query_chunk_size: int = 512,
                   key_chunk_size: int = 512, impl: str | None = None, head_axis: str | None = None,
                   strategy: str = "ring", window: int | None = None,
                   memory_budget: int | None = None, ulysses_axis: str | None = None) -> AttentionFn:
    """An attention function ``fn(q, k, v, segment_ids=None, window=window)`` for :class:`Transformer`.

    Args:
      kind: "reference" (dense), "blockwise" (one device, O(chunk) memory) or "ring" (sequence sharded
        over ``mesh`` axis ``axis_name``; the other arguments as in :func:`ring.sharded_attention`).
      impl: block compute of "blockwise" and "ring": "pallas", "xla" or None (pallas on GPU, else xla);
        checked but unused by "reference".
      head_axis: "ring" only: the mesh axis that shards the heads (tensor parallelism), or None.
      strategy, memory_budget, ulysses_axis: "ring" only: the context-parallel strategy ("ring",
        "allgather", "ulysses", "hybrid" or "auto"), the per-device budget of "auto" and the hybrid's axis
        within a group, as in :func:`ring.sharded_attention`.
      window: the default sliding window of every call (causal only; None: full attention). A call's own
        ``window=`` overrides it (:class:`Transformer` passes its per-layer ``windows``).
    """
    check_impl(impl)
    check_strategy(strategy)
    check_window(window, causal)
    default_window = window
    if kind == "reference":
        return lambda q, k, v, segment_ids=None, window=default_window: reference_attention(
            q, k, v, causal=causal, segment_ids=segment_ids, window=window)
    if kind == "blockwise":
        return lambda q, k, v, segment_ids=None, window=default_window: blockwise_attention(
            q, k, v, causal=causal, segment_ids=segment_ids,
            query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size, impl=impl, window=window)
    if kind == "ring":
        if mesh is None:
            raise ValueError("make_attention('ring') needs mesh=")
        return lambda q, k, v, segment_ids=None, window=default_window: sharded_attention(
            q, k, v, mesh=mesh, axis_name=axis_name, batch_axis=batch_axis, causal=causal, layout=layout,
            segment_ids=segment_ids, query_chunk_size=query_chunk_size, key_chunk_size=key_chunk_size,
            natural_order=natural_order, impl=impl, head_axis=head_axis, strategy=strategy, window=window,
            memory_budget=memory_budget, ulysses_axis=ulysses_axis)
    raise ValueError(f"attention kind={kind!r} is unknown; expected 'reference', 'blockwise' or 'ring'")


class Attention(nn.Module):
    """Multi-head (grouped-query) self-attention with an injected attention function."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    attention_fn: AttentionFn
    dtype: jnp.dtype = jnp.float32
    cached_attention_fn: Callable = cached_attention
    window: int | None = None  # sliding window of this layer (None: full causal attention)

    @nn.compact
    def __call__(self, x, segment_ids=None, cache=None, positions=None):
        """Returns the output, or ``(output, (k_cache, v_cache))`` when decoding with ``cache``."""
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={self.num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        dense = functools.partial(nn.DenseGeneral, axis=-1, dtype=self.dtype, use_bias=False)
        q = dense((self.num_heads, self.head_dim), name="query")(x)
        k = dense((self.num_kv_heads, self.head_dim), name="key")(x)
        v = dense((self.num_kv_heads, self.head_dim), name="value")(x)
        windowed = {} if self.window is None else {"window": self.window}  # injected functions may lack it
        if cache is None:
            out = self.attention_fn(q, k, v, segment_ids, **windowed)
        else:
            k_cache, v_cache = (write_cache(c, new, positions[:, 0]) for c, new in zip(cache, (k, v)))
            out = self.cached_attention_fn(q, k_cache, v_cache, positions, **windowed)
            cache = (k_cache, v_cache)
        out = nn.DenseGeneral(x.shape[-1], axis=(-2, -1), dtype=self.dtype, use_bias=False, name="out")(out)
        return out if cache is None else (out, cache)


class FeedForward(nn.Module):
    """Two-layer MLP applied blockwise along the sequence."""

    hidden_dim: int
    chunk_size: int
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32
    seq_shards: int = 1  # devices sharing the sequence: chunks are cut within each device's block

    @nn.compact
    def __call__(self, x):
        dim = x.shape[-1]
        init = nn.initializers.lecun_normal()
        wi = self.param("wi", init, (dim, self.hidden_dim))
        bi = self.param("bi", nn.initializers.zeros, (self.hidden_dim,))
        wo = self.param("wo", init, (self.hidden_dim, dim))
        bo = self.param("bo", nn.initializers.zeros, (dim,))
        act = {"gelu": nn.gelu, "relu": nn.relu, "silu": nn.silu}.get(self.activation)
        if act is None:
            raise ValueError(f"activation={self.activation!r} is unknown; expected gelu, relu or silu")

        def mlp(x_chunk):
            h = act(x_chunk.astype(self.dtype) @ wi.astype(self.dtype) + bi.astype(self.dtype))
            return h @ wo.astype(self.dtype) + bo.astype(self.dtype)

        return blockwise_feedforward(mlp, x, self.chunk_size, seq_shards=self.seq_shards)


class TransformerBlock(nn.Module):
    """Pre-norm block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    attention_fn: AttentionFn
    ffn_chunk_size: int = 512
    activation: str = "gelu"
    dtype: jnp.dtype = jnp.float32
    cached_attention_fn: Callable = cached_attention
    seq_shards: int = 1
    window: int | None = None

    @nn.compact
    def __call__(self, x, segment_ids=None, cache=None, positions=None):
        """Returns x, or ``(x, cache)`` when decoding with this layer's ``cache``."""
        h = nn.LayerNorm(dtype=self.dtype, name="attention_norm")(x)
        attn = Attention(self.num_heads, self.num_kv_heads, self.head_dim, self.attention_fn, self.dtype,
                         self.cached_attention_fn, self.window, name="attention")(h, segment_ids, cache, positions)
        if cache is not None:
            attn, cache = attn
        x = x + attn
        h = nn.LayerNorm(dtype=self.dtype, name="mlp_norm")(x)
        x = x + FeedForward(self.mlp_dim, self.ffn_chunk_size, self.activation, self.dtype, self.seq_shards,
                            name="mlp")(h)
        return x if cache is None else (x, cache)


class _ScanBlock(TransformerBlock):
    """A block with the ``(carry, x) -> (carry, y)`` signature that ``nn.scan`` wants; the layer's
    cache (when decoding) is the scanned input and output."""

    def __call__(self, x, cache, segment_ids=None, positions=None):
        if cache is None:
            return super().__call__(x, segment_ids), None
        return super().__call__(x, segment_ids, cache, positions)


class Transformer(nn.Module):
    """``num_layers`` blocks and a final LayerNorm over embeddings [batch, seq, dim].

    Attributes:
      remat_policy: a key of ``REMAT_POLICIES``; "none" saves every activation, "nothing_saveable"
        recomputes each layer in the backward pass.
      scan_layers: run the layers under ``nn.scan`` (one compiled layer, parameters with a leading
        layer axis) instead of unrolling them.
      seq_shards: devices the sequence is sharded over in training (the ring's size), so that the
        blockwise feed-forward cuts its chunks within each device's block (:func:`ring.blockwise_feedforward`).
      windows: the sliding window of each layer (None: full causal attention), e.g. ``(256, 256, None)``
        for local attention in the first two layers of three; empty: every layer full. Scanned layers
        share one window. Training and decoding alike pass it to the attention function as ``window=``.
    """

    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    mlp_dim: int
    attention_fn: AttentionFn
    ffn_chunk_size: int = 512
    activation: str = "gelu"
    remat_policy: str = "nothing_saveable"
    scan_layers: bool = False
    dtype: jnp.dtype = jnp.float32
    cached_attention_fn: Callable = cached_attention
    seq_shards: int = 1
    windows: tuple[int | None, ...] = ()

    def layer_windows(self) -> tuple[int | None, ...]:
        """The window of every layer, checked against ``num_layers`` and ``scan_layers``."""
        windows = tuple(self.windows) or (None,) * self.num_layers
        if len(windows) != self.num_layers:
            raise ValueError(f"windows={self.windows} must give one window per layer (num_layers={self.num_layers})")
        for window in windows:
            check_window(window, causal=True)
        if self.scan_layers and len(set(windows)) > 1:
            raise ValueError(f"windows={self.windows}: scanned layers share one window; use scan_layers=False")
        return windows

    @nn.compact
    def __call__(self, x, segment_ids=None, cache=None, positions=None):
        """Args:
          x: [batch, seq, dim] embeddings (the new tokens when decoding).
          segment_ids: optional int [batch, seq] (training only).
          cache: from :func:`init_cache`, to decode: the new tokens attend over the tokens the cache holds
            (everything written so far; a windowed layer's last window); at most ``init_cache``'s
            ``max_new`` tokens a call.
          positions: int32 [batch, new] positions of the new tokens in their row's stream, consecutive
            (with ``cache``); a cache of L slots holds position p in slot p mod L.

        Returns:
          [batch, seq, dim], or ``(that, cache)`` when decoding.
        """
        if self.remat_policy not in REMAT_POLICIES:
            raise ValueError(f"remat_policy={self.remat_policy!r} is unknown; expected one of {list(REMAT_POLICIES)}")
        block_args = dict(num_heads=self.num_heads, num_kv_heads=self.num_kv_heads, head_dim=self.head_dim,
                          mlp_dim=self.mlp_dim, attention_fn=self.attention_fn, ffn_chunk_size=self.ffn_chunk_size,
                          activation=self.activation, dtype=self.dtype, cached_attention_fn=self.cached_attention_fn,
                          seq_shards=1 if cache is not None else self.seq_shards)
        policy = REMAT_POLICIES[self.remat_policy]
        decoding = cache is not None
        windows = self.layer_windows()
        if self.scan_layers:
            block_args["window"] = windows[0]
            block = _ScanBlock
            if self.remat_policy != "none" and not decoding:
                block = nn.remat(block, policy=policy, prevent_cse=False)
            scanned = nn.scan(block, variable_axes={"params": 0}, split_rngs={"params": True},
                              in_axes=(0, nn.broadcast, nn.broadcast), length=self.num_layers)
            x, cache = scanned(**block_args, name="layers")(x, cache, segment_ids, positions)
        else:
            remat = self.remat_policy != "none" and not decoding  # nothing to save for a backward pass
            block = nn.remat(TransformerBlock, policy=policy) if remat else TransformerBlock
            new_cache = []
            for i in range(self.num_layers):
                layer = block(**block_args, window=windows[i], name=f"layers_{i}")
                if decoding:
                    x, layer_cache = layer(x, segment_ids, cache[i], positions)
                    new_cache.append(layer_cache)
                else:
                    x = layer(x, segment_ids)
            cache = tuple(new_cache) if decoding else None
        x = nn.LayerNorm(dtype=self.dtype, name="final_norm")(x)
        return (x, cache) if decoding else x


def init_cache(model: Transformer, batch: int, max_len: int, dtype=jnp.float32, *, max_new: int | None = None,
               shards: int = 1):
    """An empty KV cache for ``model`` decoding streams of up to ``max_len`` tokens, ``max_new`` a call:
    per layer (k, v) [batch, slots, kv_heads, head_dim], with ``max_len`` slots for full attention and
    :func:`ring.decode.cache_length` (the window and the new tokens, a multiple of ``shards``) for a layer
    with a sliding window.

    Stacked with a leading layer axis when the model scans its layers. Place it with ``jax.device_put``
    on a sharding that splits the slots over the ring axis (``shards`` devices) to decode with a sharded
    cache. ``max_new`` is required when a layer has a window (its cache is sized by it); decoding then
    feeds at most ``max_new`` tokens a call.
    """
    windows = model.layer_windows()
    if max_new is None:
        if any(window is not None for window in windows):
            raise ValueError(f"init_cache needs max_new= (the most tokens a decoding call feeds) for the "
                             f"windowed layers of windows={model.windows}")
        max_new = 1
    if max_len % shards:
        raise ValueError(f"max_len={max_len} must be divisible by shards={shards}")

    def layer(window):
        shape = (batch, cache_length(max_len, window, max_new, shards), model.num_kv_heads, model.head_dim)
        return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)

    if model.scan_layers:
        return tuple(jnp.broadcast_to(x, (model.num_layers,) + x.shape) for x in layer(windows[0]))
    return tuple(layer(window) for window in windows)
