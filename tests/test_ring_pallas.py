"""The fused Pallas ring step (ring/pallas_kernel.py), run through the Pallas interpreter on CPU.

The kernels are the ones Triton compiles on GPU; here ``interpret=True`` evaluates the same bodies, so
values, gradients, masks, tile skipping and the exact merge are all checked against float64 references.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from agent.config import preset
from agent.model import AgenticTransformer
from ring import blockwise_attention, global_positions, make_mesh, ring_attention, sharded_attention
from ring import pallas_kernel, pallas_tiles
from ring.transformer import make_attention
from tests.oracle import attention_and_grads, random_inputs

F32_OUT, F32_GRAD, BF16 = 1e-5, 1e-4, 2.5e-2


def _mesh(n):
    return make_mesh("sp=-1", jax.devices()[:n])


def _max_err(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)))


def _block_reference(q, k, v, dout, q_pos, k_pos, q_seg, k_seg, causal):
    """float64 attention of one query block over one key block with explicit positions, as if these were
    all the keys: out, lse [b, h, q] (-inf for a query with no key), and the gradients of <out, dout>."""
    q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
    kv_heads, groups = k.shape[2], q.shape[2] // k.shape[2]
    k, v = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    scale = 1 / np.sqrt(q.shape[-1])
    mask = np.ones((q.shape[0], 1, q.shape[1], k.shape[1]), bool)
    if causal:
        mask &= (np.asarray(q_pos)[:, None] >= np.asarray(k_pos)[None, :])[None, None]
    if q_seg is not None:
        mask &= (np.asarray(q_seg)[:, :, None] == np.asarray(k_seg)[:, None, :])[:, None]
    s = np.where(mask, np.einsum("bqhd,bkhd->bhqk", q, k) * scale, -np.inf)
    top = np.max(s, axis=-1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    p = np.exp(s - top)
    total = p.sum(-1, keepdims=True)
    with np.errstate(divide="ignore"):
        lse = (np.log(total) + top)[..., 0]
    p = p / np.where(total == 0, 1.0, total)
    out = np.einsum("bhqk,bkhd->bqhd", p, v)
    dp = np.einsum("bqhd,bkhd->bhqk", dout, v)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = np.einsum("bhqk,bkhd->bqhd", ds, k) * scale
    fold = lambda x: x.reshape(*x.shape[:2], kv_heads, groups, -1).sum(3)  # noqa: E731
    dk = fold(np.einsum("bhqk,bqhd->bkhd", ds, q) * scale)
    dv = fold(np.einsum("bhqk,bqhd->bkhd", p, dout))
    return out, lse, dq, dk, dv


def _run_forward(q, k, v, q_pos, k_pos, seg_q, seg_k, *, causal, tiles, out_dtype=None):
    return pallas_kernel.forward(q, k, v, jnp.asarray(q_pos), jnp.asarray(k_pos),
                                 None if seg_q is None else jnp.asarray(seg_q),
                                 None if seg_k is None else jnp.asarray(seg_k),
                                 causal=causal, scale=1.0 / np.sqrt(q.shape[-1]), tiles=tiles,
                                 out_dtype=out_dtype, interpret=True)


# --------------------------------------------------------------------------------------------------------
# The kernel on one block pair.


def _positions(kind):
    """(q_pos, k_pos) of a 16-token query block and a 16-token key block of a 32-token sequence."""
    if kind == "tiles-shuffled":
        # Not monotone: tiles of a block out of order, so a masked or skipped key tile comes before a fully
        # visible one. The loop bounds must stay exact for any positions, not only the layouts'.
        q_pos = np.concatenate([np.arange(28, 32), np.arange(20, 24), np.arange(24, 28), np.arange(16, 20)])
        return q_pos.astype(np.int32), np.concatenate([np.arange(20, 28), np.arange(0, 8)]).astype(np.int32)
    return global_positions(1, 16, 2, kind), global_positions(0, 16, 2, kind)


@pytest.mark.parametrize("positions,causal,segments", [
    ("zigzag", True, False), ("striped", True, True), ("zigzag", False, True),
    ("tiles-shuffled", True, False), ("tiles-shuffled", True, True)])
def test_block_pair_matches_float64(positions, causal, segments):
    # A query block against another device's K/V block: non-contiguous global positions, GQA (4 on 2 heads),
    # tiles of 4 queries x 8 keys inside 16-token blocks.
    q, k, v, dout, seg = random_inputs(3, 2, 32, 4, 2, 8, segments=segments)
    q_pos, k_pos = _positions(positions)
    q, dout, seg_q = q[:, :16], dout[:, :16], None if seg is None else seg[:, :16]
    k, v, seg_k = k[:, 16:], v[:, 16:], None if seg is None else seg[:, 16:]
    tiles = pallas_tiles.default_tiles(8, 16, 16, max_q=4, max_k=8)
    assert tiles.sizes() == dict(block_q=4, block_k=8, dkdv_k=8, dkdv_q=4, dq_q=4, dq_k=8)
    out, lse = _run_forward(q, k, v, q_pos, k_pos, seg_q, seg_k, causal=causal, tiles=tiles)
    want = _block_reference(q, k, v, dout, q_pos, k_pos, seg_q, seg_k, causal)
    assert _max_err(out, want[0]) <= F32_OUT
    empty = np.isneginf(want[1])
    assert np.array_equal(np.isneginf(np.asarray(lse)), empty)  # no key: lse -inf and output 0
    assert np.all(np.asarray(out).transpose(0, 2, 1, 3)[empty] == 0)
    assert np.max(np.abs(np.asarray(lse, np.float64)[~empty] - want[1][~empty])) <= F32_OUT

    # The backward from these statistics (as the ring passes them: finite lse, delta from the output).
    delta = jnp.moveaxis(jnp.sum(dout * out, axis=-1), 1, 2)
    grads = pallas_kernel.backward(
        q, k, v, dout, jnp.where(jnp.isneginf(lse), 0.0, lse), delta, jnp.asarray(q_pos), jnp.asarray(k_pos),
        None if seg_q is None else jnp.asarray(seg_q), None if seg_k is None else jnp.asarray(seg_k),
        causal=causal, scale=1 / np.sqrt(8), tiles=tiles, interpret=True)
    errors = [_max_err(g, w) for g, w in zip(grads, want[2:])]
    assert max(errors) <= F32_GRAD, errors


def test_merged_partials_equal_the_softmax_over_their_union():
    # Two K/V blocks (a zigzag ring of 2 seen from device 0), each a float32 partial; merged by lse.
    q, k, v, _, seg = random_inputs(4, 1, 32, 2, 2, 16, segments=True)
    q_pos = global_positions(0, 16, 2, "zigzag")
    tiles = pallas_tiles.default_tiles(16, 16, 16, max_q=8, max_k=8)
    parts = []
    for device in (0, 1):
        k_pos = global_positions(device, 16, 2, "zigzag")
        keys = slice(16 * device, 16 * device + 16)
        parts.append(_run_forward(q[:, :16], k[:, keys], v[:, keys], q_pos, k_pos, seg[:, :16], seg[:, keys],
                                  causal=True, tiles=tiles, out_dtype=jnp.float32))
    out, lse = pallas_kernel.merge(*parts[0], *parts[1])
    all_pos = np.concatenate([q_pos, global_positions(1, 16, 2, "zigzag")])
    want_out, want_lse = _block_reference(q[:, :16], k, v, q[:, :16], q_pos, all_pos, seg[:, :16], seg, True)[:2]
    assert _max_err(out, want_out) <= F32_OUT
    assert _max_err(lse, want_lse) <= F32_OUT


def _check_runs(bounds, any_vis, all_vis):
    """Per row of ``any_vis`` / ``all_vis`` [rows, tiles]: tiles outside [lo, hi) are empty, the first and
    last visited ones are not, and the unmasked run [full_lo, full_hi) is entirely visible and whole."""
    tiles = any_vis.shape[1]
    for row, (lo, full_lo, full_hi, hi) in enumerate(bounds):
        assert lo <= full_lo <= full_hi <= hi <= tiles or lo == hi == tiles
        assert not any_vis[row, :lo].any() and not any_vis[row, hi:].any()
        assert lo == tiles or (any_vis[row, lo] and any_vis[row, hi - 1])  # no empty tile at either end
        assert all_vis[row, full_lo:full_hi].all()
        if full_hi < hi:
            assert not all_vis[row, full_hi]  # the run is not cut short
        if all_vis[row].any():
            assert full_lo == np.argmax(all_vis[row])  # the first full tile starts the run


@pytest.mark.parametrize("window", [None, 5, 20])
@pytest.mark.parametrize("layout", ["contiguous", "striped", "zigzag"])
def test_tile_bounds_visit_exactly_the_non_empty_tiles(layout, window):
    # Brute force over every (query tile, key tile) pair of every device pair of a ring of 4: tiles outside
    # the loop ranges are empty under the causal mask (and the sliding window), tiles in the unmasked runs
    # are entirely visible.
    n, block, tq, tk = 4, 16, 4, 2
    for me in range(n):
        for other in range(n):
            q_pos, k_pos = global_positions(me, block, n, layout), global_positions(other, block, n, layout)
            visible = q_pos[:, None] >= k_pos[None, :]
            if window is not None:
                visible &= q_pos[:, None] - k_pos[None, :] < window
            tile_vis = visible.reshape(block // tq, tq, block // tk, tk).transpose(0, 2, 1, 3)
            any_vis, all_vis = tile_vis.any(axis=(2, 3)), tile_vis.all(axis=(2, 3))
            q_bounds, k_bounds = (np.asarray(b) for b in pallas_tiles.tile_bounds(
                jnp.asarray(q_pos), jnp.asarray(k_pos), tq, tk, causal=True, segments=False, window=window))
            _check_runs(q_bounds, any_vis, all_vis)
            _check_runs(k_bounds, any_vis.T, all_vis.T)
            if window is None and layout == "contiguous":  # causal alone: no masked run before a full one
                lo, full_lo, _, hi = q_bounds.T
                assert ((lo == full_lo) | (full_lo == hi)).all()


def test_tile_bounds_without_causal_mask():
    pos = jnp.arange(8, dtype=jnp.int32)
    q_bounds, k_bounds = pallas_tiles.tile_bounds(pos, pos, 4, 2, causal=False, segments=False)
    assert np.array_equal(q_bounds, [[0, 0, 4, 4]] * 2) and np.array_equal(k_bounds, [[0, 0, 2, 2]] * 4)
    # Segment ids: nothing is skipped by position, and every visited tile is masked.
    q_bounds, k_bounds = pallas_tiles.tile_bounds(pos, pos, 4, 2, causal=False, segments=True)
    assert np.array_equal(q_bounds, [[0, 4, 4, 4]] * 2) and np.array_equal(k_bounds, [[0, 2, 2, 2]] * 4)


# --------------------------------------------------------------------------------------------------------
# Ring attention with the Pallas step, against the float64 oracle.


def _sharded_value_and_grads(q, k, v, dout, seg, *, mesh, **kwargs):
    def f(q, k, v):
        return sharded_attention(q, k, v, mesh=mesh, segment_ids=seg, impl="pallas", **kwargs)

    out, vjp = jax.vjp(jax.jit(f), q, k, v)
    return (out, *vjp(dout))


def _assert_close(results, expected, out_tol, grad_tol):
    errors = {name: _max_err(g, w) for name, g, w in zip(("out", "dq", "dk", "dv"), results, expected)}
    assert errors["out"] <= out_tol, errors
    assert max(errors["dq"], errors["dk"], errors["dv"]) <= grad_tol, errors


@pytest.mark.parametrize(
    "layout,num_devices,causal,segments,window",
    [("contiguous", 1, True, True, None), ("striped", 1, False, False, None), ("zigzag", 1, True, False, None),
     ("contiguous", 4, True, True, None), ("striped", 4, True, True, None), ("zigzag", 4, True, True, None),
     ("contiguous", 2, True, False, None), ("striped", 2, False, False, None), ("zigzag", 8, False, True, None),
     # The sliding window: tiles it empties skipped, its far edge masked.
     ("contiguous", 4, True, True, 10), ("zigzag", 2, True, True, 7), ("striped", 1, True, True, 20),
     ("zigzag", 4, True, True, 40)],
)
def test_ring_pallas_matches_float64_oracle(layout, num_devices, causal, segments, window):
    # GQA (8 query heads on 2 K/V heads); tiles (the chunk sizes cap them) smaller than the local block.
    from tests.test_ring_strategies import _oracle

    q, k, v, dout, seg = random_inputs(20 + num_devices + (window or 0), 2, 64, 8, 2, 16, segments=segments)
    expected = _oracle(q, k, v, dout, causal=causal, segment_ids=seg, window=window)
    block = 64 // num_devices
    results = _sharded_value_and_grads(q, k, v, dout, seg, mesh=_mesh(num_devices), causal=causal, layout=layout,
                                       window=window, query_chunk_size=max(block // 4, 1),
                                       key_chunk_size=max(block // 2, 1))
    _assert_close(results, expected, F32_OUT, F32_GRAD)


@pytest.mark.parametrize("head_dim", [64, 128])
def test_blockwise_pallas_head_dims(head_dim):
    q, k, v, dout, seg = random_inputs(head_dim, 1, 32, 2, 1, head_dim, segments=True)
    expected = attention_and_grads(q, k, v, dout, causal=True, segment_ids=seg)

    def f(q, k, v):
        return blockwise_attention(q, k, v, segment_ids=seg, impl="pallas", query_chunk_size=16, key_chunk_size=8)

    out, vjp = jax.vjp(jax.jit(f), q, k, v)
    _assert_close((out, *vjp(dout)), expected, F32_OUT, F32_GRAD)


def test_ring_pallas_bfloat16():
    q, k, v, dout, seg = random_inputs(5, 1, 64, 4, 2, 32, segments=True)
    q, k, v, dout = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, dout))
    expected = attention_and_grads(*(np.asarray(x, np.float64) for x in (q, k, v, dout)), segment_ids=seg)
    results = _sharded_value_and_grads(q, k, v, dout, seg, mesh=_mesh(4), layout="zigzag",
                                       query_chunk_size=8, key_chunk_size=4)
    assert all(r.dtype == jnp.bfloat16 for r in results)
    for name, got, want in zip(("out", "dq", "dk", "dv"), results, expected):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=BF16, rtol=BF16, err_msg=name)


def test_ring_attention_in_own_shard_map():
    # The per-device entry point inside a caller's shard_map (the interpreter needs check_vma=False).
    from jax.sharding import PartitionSpec as P

    mesh = _mesh(2)
    q, k, v, _, _ = random_inputs(8, 1, 32, 2, 2, 8)
    run = jax.shard_map(lambda q, k, v: ring_attention(q, k, v, axis_name="sp", layout="contiguous", impl="pallas"),
                        mesh=mesh, in_specs=(P(None, "sp"),) * 3, out_specs=P(None, "sp"), check_vma=False)
    expected = attention_and_grads(q, k, v, q, causal=True)[0]
    assert _max_err(jax.jit(run)(q, k, v), expected) <= F32_OUT


def _abstract_gpu_mesh(n):
    """The project's mesh axes without devices, on an abstract Hopper card: what the Triton lowering
    reads its target from when no GPU is attached (JAX 0.12 refuses to lower Triton otherwise)."""
    from jax.sharding import AbstractDevice, AbstractMesh, AxisType

    device = AbstractDevice(device_kind="NVIDIA H100", num_cores=132, platform="gpu")
    return AbstractMesh((1, 1, 1, n), ("dp", "fsdp", "tp", "sp"), axis_types=(AxisType.Auto,) * 4,
                        abstract_device=device)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32])
def test_kernels_lower_to_triton_for_gpu(monkeypatch, dtype):
    # Without a GPU the compiled path can still be lowered: exporting for CUDA runs the Pallas -> Triton
    # lowering (power-of-two tiles, supported primitives) of the forward and both backward kernels, here
    # through a ring of 4 (the step inside lax.cond and the ring loop) and a ring of one, under shard_map's
    # varying-axes check (on only when the kernels are compiled). The mesh is abstract, with a GPU as its
    # device, so that the lowering has a target on any host.
    from jax import export

    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    checks = [export.DisabledSafetyCheck.custom_call("__gpu$xla.gpu.triton")]
    q = jax.ShapeDtypeStruct((1, 512, 4, 128), dtype)
    kv = jax.ShapeDtypeStruct((1, 512, 2, 128), dtype)
    seg = jax.ShapeDtypeStruct((1, 512), jnp.int32)
    for n, window in ((1, None), (4, None), (4, 640)):
        mesh = _abstract_gpu_mesh(n)

        def train(q, k, v, seg, dout):
            out, vjp = jax.vjp(lambda q, k, v: sharded_attention(q, k, v, mesh=mesh, segment_ids=seg, window=window),
                               q, k, v)
            return out, vjp(dout)

        with jax.sharding.use_abstract_mesh(mesh):
            module = export.export(jax.jit(train), platforms=["cuda"], disabled_checks=checks)(q, kv, kv, seg, q)
        assert module.mlir_module().count("__gpu$xla.gpu.triton") == 3  # forward, dK/dV, dQ


# --------------------------------------------------------------------------------------------------------
# The impl switch.


def _uses_pallas(fn, *args):
    return "pallas_call" in str(jax.make_jaxpr(fn)(*args))


def test_impl_rejects_unknown_values():
    q, k, v, _, _ = random_inputs(0, 1, 16, 2, 2, 8)
    calls = [
        lambda: ring_attention(q, k, v, axis_name="sp", impl="triton"),
        lambda: blockwise_attention(q, k, v, impl="triton"),
        lambda: sharded_attention(q, k, v, mesh=_mesh(2), impl="triton"),
        lambda: make_attention("reference", impl="triton"),
    ]
    for call in calls:
        with pytest.raises(ValueError, match="impl='triton'"):
            call()


def test_impl_defaults_by_backend(monkeypatch):
    q, k, v, _, _ = random_inputs(0, 1, 32, 2, 2, 16)
    on_cpu = lambda impl: _uses_pallas(lambda q, k, v: blockwise_attention(q, k, v, impl=impl), q, k, v)  # noqa: E731
    assert not on_cpu(None) and not on_cpu("xla") and on_cpu("pallas")
    # On a GPU the default is the compiled kernel (traced only here: nothing is lowered to Triton) ...
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert _uses_pallas(lambda q, k, v: blockwise_attention(q, k, v), q, k, v)
    # ... except for shapes Triton cannot tile, where the default falls back and an explicit "pallas" says why.
    small, _, _, _, _ = random_inputs(0, 1, 32, 2, 2, 8)
    assert not _uses_pallas(lambda q: blockwise_attention(q, q, q), small)
    with pytest.raises(ValueError, match="head_dim >= 16, got 8"):
        blockwise_attention(small, small, small, impl="pallas")
    with pytest.raises(ValueError, match="tiles of at least 16"):
        blockwise_attention(q, k, v, impl="pallas", query_chunk_size=8)


def test_impl_reaches_the_model_through_make_attention_and_config():
    q, k, v, _, seg = random_inputs(9, 1, 32, 2, 1, 8, segments=True)
    fn = make_attention("ring", mesh=_mesh(2), layout="striped", impl="pallas", query_chunk_size=8)
    expected = attention_and_grads(q, k, v, q, causal=True, segment_ids=seg)[0]
    assert _max_err(jax.jit(fn)(q, k, v, seg), expected) <= F32_OUT
    assert _uses_pallas(make_attention("blockwise", impl="pallas"), q, k, v)

    inputs = {"observations": jnp.zeros((1, 8, 3)), "actions": jnp.zeros((1, 8, 1)), "rewards": jnp.zeros((1, 8)),
              "returns_to_go": jnp.zeros((1, 8)), "prev_actions": jnp.zeros((1, 8, 1)),
              "prev_rewards": jnp.zeros((1, 8)), "timesteps": jnp.zeros((1, 8), jnp.int32),
              "trajectory_index": jnp.zeros((1, 8), jnp.int32)}
    for impl, want in (("pallas", True), ("xla", False)):
        model = AgenticTransformer(preset("tiny", attention_impl=impl), action_dim=1)
        assert _uses_pallas(lambda x: model.init(jax.random.key(0), x), inputs) == want


@pytest.mark.gpu
@pytest.mark.parametrize("head_dim", [64, 128])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_compiled_kernel_on_gpu_matches_float64_oracle(head_dim, dtype):
    # `pytest -m gpu` on a CUDA machine: the Triton-compiled kernels (no interpreter) at tile-sized shapes.
    assert jax.default_backend() == "gpu", "the gpu marker needs a CUDA device (jax.default_backend() == 'gpu')"
    q, k, v, dout, seg = random_inputs(head_dim + 1, 2, 256, 8, 2, head_dim, segments=True)
    q, k, v, dout = (jnp.asarray(x, dtype) for x in (q, k, v, dout))
    expected = attention_and_grads(*(np.asarray(x, np.float64) for x in (q, k, v, dout)), causal=True,
                                   segment_ids=seg)

    def f(q, k, v):
        return blockwise_attention(q, k, v, segment_ids=seg, impl="pallas")

    out, vjp = jax.vjp(jax.jit(f), q, k, v)
    results = (out, *vjp(dout))
    if dtype == jnp.float32:
        _assert_close(results, expected, F32_OUT, F32_GRAD)
    else:
        for name, got, want in zip(("out", "dq", "dk", "dv"), results, expected):
            np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=BF16, rtol=BF16, err_msg=name)
