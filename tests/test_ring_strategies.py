"""The context-parallel strategies (all-gather K/V, Ulysses) and the sliding window against the float64 oracle.

Held-out style, as tests/test_ring_exactness.py: random shapes, GQA ratios, segment ids, every layout and
2, 4 and 8 simulated devices, values and gradients. The sliding-window oracle is the same float64 oracle
with its mask narrowed to i - window < j.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ring import choose_strategy, make_mesh, reference_attention, sharded_attention
from ring.layouts import layout_permutation
from ring.ring_attention import block_step, head_chunk, queries_travel, ring_hops, window_chunk
from ring.strategy import Shapes, temp_bytes
from ring.transformer import Transformer, make_attention
from tests import oracle
from tests.oracle import random_inputs

LAYOUTS = ("contiguous", "striped", "zigzag")
F32_OUT, F32_GRAD, BF16 = 1e-5, 1e-4, 2.5e-2


def _oracle(q, k, v, dout, *, causal=True, segment_ids=None, window=None):
    """tests.oracle.attention_and_grads, with the sliding window added to its mask when given."""
    if window is None:
        return oracle.attention_and_grads(q, k, v, dout, causal=causal, segment_ids=segment_ids)
    full_mask = oracle._mask

    def windowed(seq, causal, segment_ids, batch):
        pos = np.arange(seq)
        return full_mask(seq, causal, segment_ids, batch) & (pos[:, None] - pos[None, :] < window)[None, None]

    oracle._mask = windowed
    try:
        return oracle.attention_and_grads(q, k, v, dout, causal=causal, segment_ids=segment_ids)
    finally:
        oracle._mask = full_mask


def _mesh(n, spec="sp=-1"):
    return make_mesh(spec, jax.devices()[:n])


def _check(inputs, *, mesh, causal=True, window=None, perm=None, **kwargs):
    """Values and gradients of sharded_attention against the oracle. ``perm``: the inputs are in a layout's
    order, ``natural[:, perm]`` (natural_order=False), and the oracle's results are permuted alike."""
    q, k, v, dout, seg = inputs
    natural = inputs if perm is None else tuple(None if x is None else x[:, np.argsort(perm)] for x in inputs)
    expected = _oracle(*natural[:4], causal=causal, segment_ids=natural[4], window=window)
    fn = jax.jit(lambda q, k, v: sharded_attention(q, k, v, mesh=mesh, segment_ids=seg, causal=causal,
                                                   window=window, **kwargs))
    out, vjp = jax.vjp(fn, q, k, v)
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *vjp(dout)), expected):
        err = float(np.max(np.abs(np.asarray(got, np.float64) - (want if perm is None else want[:, perm]))))
        assert err <= (F32_OUT if name == "out" else F32_GRAD), (name, err, kwargs)


@pytest.mark.parametrize("strategy", ["allgather", "ulysses"])
@pytest.mark.parametrize("num_devices", [2, 4, 8])
def test_strategy_matches_float64_oracle(strategy, num_devices):
    # GQA 8 query heads on 2 K/V heads: at 4 and 8 devices Ulysses repeats the K/V heads to one per device.
    # One layout per device count, causal with segments; chunks smaller than the block.
    layout = LAYOUTS[num_devices.bit_length() - 2]
    inputs = random_inputs(num_devices, 2, 128, 8, 2, 8, segments=True)
    block = 128 // num_devices
    _check(inputs, mesh=_mesh(num_devices), strategy=strategy, layout=layout,
           query_chunk_size=block // 2, key_chunk_size=block // 4)


@settings(max_examples=10, deadline=None, derandomize=True)
@given(
    data=st.data(),
    strategy=st.sampled_from(["ring", "allgather", "ulysses"]),
    num_devices=st.sampled_from([2, 4, 8]),
    layout=st.sampled_from(LAYOUTS),
    kv_heads=st.sampled_from([1, 2, 4]),
    groups=st.sampled_from([1, 2, 4]),
    segments=st.booleans(),
    natural_order=st.booleans(),
    windowed=st.booleans(),
)
def test_strategies_and_window_random_shapes(data, strategy, num_devices, layout, kv_heads, groups, segments,
                                             natural_order, windowed):
    q_heads = kv_heads * groups
    if strategy == "ulysses" and (q_heads % num_devices or (kv_heads % num_devices and num_devices % kv_heads)):
        strategy = "allgather"  # heads that Ulysses refuses (test_errors)
    pieces = 2 * num_devices if layout == "zigzag" else num_devices
    seq = pieces * data.draw(st.integers(1, 4), label="tokens per piece")
    block = seq // num_devices
    divisors = [c for c in range(1, block + 1) if block % c == 0]
    causal = windowed or data.draw(st.booleans(), label="causal")
    window = data.draw(st.integers(1, seq), label="window") if windowed else None
    seed = data.draw(st.integers(0, 2**16), label="seed")
    inputs = random_inputs(seed, data.draw(st.integers(1, 2), label="batch"), seq, q_heads, kv_heads,
                           data.draw(st.sampled_from([4, 8]), label="head_dim"), segments=segments)
    perm = None
    if not natural_order:  # tokens handed over already in the layout, as a model holds them
        perm = layout_permutation(seq, num_devices, layout)
        inputs = tuple(None if x is None else x[:, perm] for x in inputs)
    _check(inputs, mesh=_mesh(num_devices), causal=causal, window=window, perm=perm, strategy=strategy,
           layout=layout, natural_order=natural_order,
           query_chunk_size=data.draw(st.sampled_from(divisors), label="query_chunk_size"),
           key_chunk_size=data.draw(st.sampled_from(divisors), label="key_chunk_size"))


@pytest.mark.parametrize("strategy", ["ring", "allgather", "ulysses"])
def test_window_on_eight_devices(strategy):
    # W = seq / 8 = one block, the benchmark's case, with segments; the contiguous ring runs 2 of 8 hops.
    inputs = random_inputs(17, 1, 256, 8, 8, 8, segments=True)
    for layout in ("contiguous", "zigzag"):
        _check(inputs, mesh=_mesh(8), strategy=strategy, layout=layout, window=32, query_chunk_size=8,
               key_chunk_size=16)


def test_window_halves_the_chunks_it_cuts_through():
    assert window_chunk(512, None) == 512
    assert window_chunk(512, 1024) == 128  # an eighth of the window
    assert window_chunk(512, 4096) == 512
    assert window_chunk(512, 100) == 64  # not below 64 tokens
    assert window_chunk(96, 16) == 48 and window_chunk(75, 16) == 75  # halved only while even: it divides the block
    q = jnp.zeros((1, 1024, 2, 8))
    step = block_step(q, q, True, 512, 256, True, "xla", 512)
    assert (step.q_chunk, step.k_chunk) == (64, 64)
    # Exact with the halved chunks: one device (512 -> 64) and the contiguous ring (256 -> 64 per block).
    inputs = random_inputs(19, 1, 512, 4, 2, 8, segments=True)
    _check(inputs, mesh=_mesh(1), window=512, query_chunk_size=512, key_chunk_size=512)
    _check(inputs, mesh=_mesh(2), layout="contiguous", window=300, query_chunk_size=256, key_chunk_size=256)


def test_heads_scored_in_groups_match_float64_oracle(monkeypatch):
    # A score budget of 2 x 8 x 8 makes every strategy's step score one or two K/V heads of a chunk pair at
    # a time (what 8 heads of 512-token chunks do under the default budget), with and without grouped-query
    # attention (the query side travelling in the ring's backward, and the K/V side), the window, segments.
    import importlib

    monkeypatch.setattr(importlib.import_module("ring.ring_attention"), "SCORE_TILE", 2 * 8 * 8)
    q = jnp.zeros((1, 64, 4, 8))
    assert block_step(q, q, True, 8, 8, True, "xla", None).head_chunk == 2
    assert block_step(q, q[:, :, :1], True, 8, 8, True, "xla", None).head_chunk == 1
    for kv_heads in (4, 2):
        inputs = random_inputs(23 + kv_heads, 2, 64, 4, kv_heads, 8, segments=True)
        for strategy in ("ring", "allgather"):
            _check(inputs, mesh=_mesh(4), strategy=strategy, query_chunk_size=8, key_chunk_size=8)
        _check(inputs, mesh=_mesh(4), layout="contiguous", window=20, query_chunk_size=8, key_chunk_size=8)
    _check(random_inputs(29, 1, 64, 8, 8, 8, segments=False), mesh=_mesh(2), strategy="ulysses",
           query_chunk_size=8, key_chunk_size=8)


def test_head_and_side_rules():
    # Heads: the most that divide the K/V heads with at most SCORE_TILE (512 x 512) scores a chunk pair.
    assert head_chunk(8, 1, 512, 512) == 1 and head_chunk(8, 1, 256, 256) == 4 and head_chunk(8, 1, 64, 64) == 8
    assert head_chunk(2, 4, 512, 512) == 1 and head_chunk(6, 1, 256, 256) == 3 and head_chunk(3, 1, 512, 512) == 1
    # The backward sends round whichever side is fewer bytes: queries only without grouped-query attention.
    q, kv = jnp.zeros((1, 64, 8, 32)), jnp.zeros((1, 64, 2, 32))
    assert queries_travel(q, q) and not queries_travel(q, kv)
    assert queries_travel(q.astype(jnp.bfloat16), q.astype(jnp.bfloat16))


def _two_axis_mesh(groups, within):
    from jax.sharding import Mesh

    return Mesh(np.array(jax.devices()[:groups * within]).reshape(groups, within), ("sp", "up"))


@pytest.mark.parametrize("groups,within", [(2, 4), (4, 2)])
def test_hybrid_ulysses_within_groups_ring_across(groups, within):
    # Ulysses over "up" inside each group, the ring over "sp" across the groups: every layout of the groups,
    # GQA with fewer K/V heads than a group's devices (repeated), segments, the layout-ordered input, a window.
    mesh = _two_axis_mesh(groups, within)
    inputs = random_inputs(43 + groups, 1, 64, 8, 2, 8, segments=True)
    for layout in LAYOUTS:
        _check(inputs, mesh=mesh, strategy="hybrid", ulysses_axis="up", layout=layout, query_chunk_size=8,
               key_chunk_size=8)
    perm = layout_permutation(64, groups, "zigzag")
    in_layout = tuple(x[:, perm] for x in inputs)
    _check(in_layout, mesh=mesh, perm=perm, strategy="hybrid", ulysses_axis="up", natural_order=False,
           query_chunk_size=8, key_chunk_size=16)
    _check(inputs, mesh=mesh, strategy="hybrid", ulysses_axis="up", layout="contiguous", window=12,
           query_chunk_size=8, key_chunk_size=8)


def test_batch_and_head_axes():
    # Batch over dp, heads over tp (a K/V head per device pair of query heads), the sequence over sp.
    inputs = random_inputs(23, 2, 64, 8, 2, 8, segments=True)
    for strategy in ("allgather", "ulysses"):
        _check(inputs, mesh=_mesh(8, "dp=2,tp=2,sp=2"), batch_axis="dp", head_axis="tp", strategy=strategy,
               query_chunk_size=8, key_chunk_size=8, window=20)


def test_pallas_block_step():
    # The Pallas step (interpreted off GPU) serves the all-gather and Ulysses strategies too.
    inputs = random_inputs(29, 1, 64, 4, 2, 16, segments=True)
    for strategy in ("allgather", "ulysses"):
        _check(inputs, mesh=_mesh(2), strategy=strategy, impl="pallas", query_chunk_size=16, key_chunk_size=16)


def test_bfloat16_allgather():
    # dK/dV are reduce-scattered in float32 and rounded once.
    q, k, v, dout, seg = random_inputs(31, 1, 128, 8, 2, 16, segments=True)
    q, k, v, dout = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, dout))
    inputs = (q, k, v, dout, seg)
    mesh = _mesh(8)
    expected = _oracle(*(np.asarray(x, np.float64) for x in (q, k, v, dout)), segment_ids=seg)
    fn = jax.jit(lambda q, k, v: sharded_attention(q, k, v, mesh=mesh, segment_ids=seg, strategy="allgather",
                                                   query_chunk_size=8, key_chunk_size=8))
    out, vjp = jax.vjp(fn, *inputs[:3])
    for name, got, want in zip(("out", "dq", "dk", "dv"), (out, *vjp(dout)), expected):
        assert got.dtype == jnp.bfloat16
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=BF16, rtol=BF16, err_msg=name)


def test_ring_hops_stop_after_the_window():
    assert ring_hops(8, 128, "contiguous", None) == 8
    assert ring_hops(8, 128, "contiguous", 1) == 1  # only the diagonal block
    assert ring_hops(8, 128, "contiguous", 128) == 2  # W = seq / 8: this block and the one before
    assert ring_hops(8, 128, "contiguous", 129) == 2
    assert ring_hops(8, 128, "contiguous", 258) == 4
    assert ring_hops(8, 128, "contiguous", 1024) == 8
    # Zigzag's late chunk reads the block of the next device, the ring's last hop: every hop stays.
    assert ring_hops(8, 128, "zigzag", 128) == 8


def test_auto_stays_within_the_budget_where_the_ring_fits():
    for block in (64, 256, 1024, 4096, 8192, 32768):
        for q_heads, kv_heads in ((8, 8), (8, 2), (6, 1)):
            for n in (1, 2, 8):
                shapes = Shapes(batch=1, block=block, q_heads=q_heads, kv_heads=kv_heads, head_dim=64, num_devices=n)
                ring = temp_bytes("ring", shapes)
                for budget in (None, ring // 2, ring, 2 * ring, 8 * ring):
                    choice = choose_strategy(shapes, memory_budget=budget)
                    if choice == "ulysses":
                        assert shapes.ulysses_fits_heads
                    if budget is not None and ring <= budget:
                        assert temp_bytes(choice, shapes) <= budget, (shapes, budget, choice)


def test_memory_model_bounds_the_compiled_programs():
    # temp_bytes bounds XLA's per-device temp bytes from above for every strategy (what "auto" relies on),
    # here off the grid it was fitted on (head_dim 16, a block between its sizes).
    from jax.sharding import NamedSharding, PartitionSpec as P

    mesh = _mesh(8)
    sharding = NamedSharding(mesh, P(None, "sp"))
    # Grouped K/V heads, which Ulysses repeats to one per device (the largest of its terms).
    shapes = Shapes(batch=1, block=384, q_heads=8, kv_heads=2, head_dim=16, num_devices=8, query_chunk=128,
                    key_chunk=128)
    q = jax.ShapeDtypeStruct((1, 8 * 384, 8, 16), jnp.float32, sharding=sharding)
    kv = jax.ShapeDtypeStruct((1, 8 * 384, 2, 16), jnp.float32, sharding=sharding)
    for strategy in ("ring", "allgather", "ulysses"):
        def loss(q, k, v, strategy=strategy):
            return jnp.sum(sharded_attention(q, k, v, mesh=mesh, strategy=strategy, natural_order=False,
                                             query_chunk_size=128, key_chunk_size=128))

        compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, kv, kv).compile()
        measured, estimate = compiled.memory_analysis().temp_size_in_bytes, temp_bytes(strategy, shapes)
        assert measured <= estimate, (strategy, measured, estimate)


def test_auto_runs_exactly():
    inputs = random_inputs(37, 1, 64, 8, 2, 8, segments=True)
    _check(inputs, mesh=_mesh(8), strategy="auto", memory_budget=2**20)


def test_windowed_layers_in_the_transformer():
    # Local attention in the first layer, full in the second: ring (all-gather) equals the dense reference.
    x = jax.random.normal(jax.random.key(0), (2, 32, 32))
    segments = jnp.asarray(np.repeat([[0] * 20 + [1] * 12], 2, axis=0), jnp.int32)
    readout = jax.random.normal(jax.random.key(1), x.shape)

    def model(attention):
        return Transformer(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=64, attention_fn=attention,
                           ffn_chunk_size=16, remat_policy="none", windows=(6, None))

    reference = model(make_attention("reference"))
    params = reference.init(jax.random.key(2), x, segments)

    def value_and_grad(m):
        return jax.jit(jax.value_and_grad(lambda p: jnp.mean(m.apply(p, x, segments) * readout)))(params)

    want_loss, want_grads = value_and_grad(reference)
    ring = make_attention("ring", mesh=make_mesh("dp=2,sp=4"), batch_axis="dp", strategy="allgather",
                          query_chunk_size=4, key_chunk_size=4)
    loss, grads = value_and_grad(model(ring))
    assert abs(float(loss) - float(want_loss)) <= 1e-5 * abs(float(want_loss))
    for got, want in zip(jax.tree.leaves(grads), jax.tree.leaves(want_grads)):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-4)


def test_windowed_decoding_matches_recompute():
    # Decoding over the cache, with a window, equals the windowed reference on the prefix: a cache as long as
    # the stream, and ring buffers of only the window and the new tokens, fed 1 and 3 tokens a call, dense
    # and split over 4 devices (the buffer rounded up to a multiple of 4).
    from ring.decode import cache_length, cached_attention, write_cache
    from ring.transformer import init_cache

    q, k, v, _, _ = random_inputs(41, 2, 18, 4, 2, 8)
    want = np.asarray(reference_attention(q, k, v, window=5))
    positions = jnp.tile(jnp.arange(18, dtype=jnp.int32)[None, :], (2, 1))
    np.testing.assert_allclose(cached_attention(q, k, v, positions, window=5), want, atol=1e-6)
    np.testing.assert_allclose(cached_attention(q, k, v, positions, mesh=_mesh(2), window=5), want, atol=1e-6)
    for t, shards in ((1, 1), (3, 1), (3, 4)):
        slots = cache_length(18, 5, t, shards)
        assert slots == {(1, 1): 5, (3, 1): 7, (3, 4): 8}[(t, shards)]
        k_cache = v_cache = jnp.zeros((2, slots, 2, 8))
        # A reused buffer: stale values from an earlier stream must never be read.
        k_cache, v_cache = k_cache + 100.0, v_cache - 100.0
        got = []
        for start in range(0, 18, t):
            new = slice(start, start + t)
            at = jnp.full((2,), start, jnp.int32)
            k_cache, v_cache = write_cache(k_cache, k[:, new], at), write_cache(v_cache, v[:, new], at)
            mesh = _mesh(shards) if shards > 1 else None
            got.append(cached_attention(q[:, new], k_cache, v_cache, positions[:, new], mesh=mesh, window=5))
        np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5, err_msg=f"t={t}, shards={shards}")
    # A windowed cache is sized by the tokens a call feeds, which must be said; more than fit are refused.
    with pytest.raises(ValueError, match="init_cache needs max_new="):
        init_cache(Transformer(1, 4, 2, 8, 32, make_attention("reference"), windows=(5,)), 2, 18)
    short = jnp.zeros((2, 5, 2, 8))
    with pytest.raises(ValueError, match="6 new tokens do not fit a cache of 5 slots"):
        write_cache(short, k[:, :6], jnp.zeros((2,), jnp.int32))


def test_windowed_layers_decode_with_short_caches():
    # A windowed layer's cache holds only its window (and the new tokens); decoding equals the full forward.
    from ring.transformer import init_cache

    model = Transformer(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8, mlp_dim=32,
                        attention_fn=make_attention("reference"), remat_policy="none", windows=(4, None))
    x = jax.random.normal(jax.random.key(3), (2, 12, 32))
    params = model.init(jax.random.key(4), x)
    want = model.apply(params, x)
    cache = init_cache(model, 2, 12, max_new=2)
    assert [layer[0].shape[1] for layer in cache] == [5, 12]
    got = []
    for start in range(0, 12, 2):
        positions = jnp.tile(jnp.arange(start, start + 2, dtype=jnp.int32)[None], (2, 1))
        y, cache = model.apply(params, x[:, start:start + 2], cache=cache, positions=positions)
        got.append(y)
    np.testing.assert_allclose(np.concatenate(got, axis=1), want, atol=1e-5)


def test_errors():
    q, k, v, _, _ = random_inputs(0, 1, 64, 6, 2, 8)
    mesh = _mesh(4)
    with pytest.raises(ValueError, match="ulysses_axis=None goes with strategy='hybrid'"):
        sharded_attention(q, k, v, mesh=mesh, strategy="hybrid")
    with pytest.raises(ValueError, match="ulysses_axis='sp' goes with strategy='hybrid' and only with it"):
        sharded_attention(q, k, v, mesh=mesh, ulysses_axis="sp")
    with pytest.raises(ValueError, match="strategy='hybrid' needs q_heads=6 divisible by the 4 devices of "
                                         "ulysses_axis='up'; use smaller groups"):
        sharded_attention(q, k, v, mesh=_two_axis_mesh(2, 4), strategy="hybrid", ulysses_axis="up")
    with pytest.raises(ValueError, match="strategy='ulysses' needs q_heads=6 divisible by the 4 devices"):
        sharded_attention(q, k, v, mesh=mesh, strategy="ulysses")
    q, k, v, _, _ = random_inputs(0, 1, 64, 12, 3, 8)
    with pytest.raises(ValueError, match="kv_heads=3 to divide, or be divisible by, the 4 devices"):
        sharded_attention(q, k, v, mesh=mesh, strategy="ulysses")
    with pytest.raises(ValueError, match="strategy='tree' is unknown"):
        sharded_attention(q, k, v, mesh=mesh, strategy="tree")
    with pytest.raises(ValueError, match="window=8 needs causal=True"):
        sharded_attention(q, k, v, mesh=mesh, causal=False, window=8)
    with pytest.raises(ValueError, match="window=0 must be a positive number of tokens"):
        sharded_attention(q, k, v, mesh=mesh, window=0)
    with pytest.raises(ValueError, match="must give one window per layer"):
        Transformer(2, 4, 2, 8, 64, make_attention("reference"), windows=(4,)).init(
            jax.random.key(0), jnp.ones((1, 8, 32)))
