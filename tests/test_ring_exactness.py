"""Ring and blockwise attention against a float64 dense oracle: values and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from ring import blockwise_attention, make_mesh, reference_attention, sharded_attention
from tests.oracle import attention_and_grads, random_inputs

LAYOUTS = ("contiguous", "striped", "zigzag")
F32_OUT, F32_GRAD, BF16 = 1e-5, 1e-4, 2.5e-2


def _mesh(n):
    return make_mesh("sp=-1", jax.devices()[:n])


def _sharded_value_and_grads(q, k, v, dout, seg, *, mesh, **kwargs):
    def f(q, k, v):
        return sharded_attention(q, k, v, mesh=mesh, segment_ids=seg, **kwargs)

    out, vjp = jax.vjp(jax.jit(f), q, k, v)
    return (out, *vjp(dout))


def _max_err(got, want):
    return float(np.max(np.abs(np.asarray(got, np.float64) - want)))


def _assert_close(results, expected, out_tol, grad_tol):
    names = ("out", "dq", "dk", "dv")
    errors = {name: _max_err(g, w) for name, g, w in zip(names, results, expected)}
    assert errors["out"] <= out_tol, errors
    assert max(errors[n] for n in names[1:]) <= grad_tol, errors


@pytest.mark.parametrize("num_devices", [1, 2, 4, 8])
@pytest.mark.parametrize("segments", [False, True], ids=["noseg", "seg"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_ring_matches_float64_oracle(layout, causal, segments, num_devices):
    # GQA: 8 query heads on 2 K/V heads. Chunks smaller than the local block (16 / 8 of 64 / n).
    q, k, v, dout, seg = random_inputs(num_devices, 2, 128, 8, 2, 16, segments=segments)
    expected = attention_and_grads(q, k, v, dout, causal=causal, segment_ids=seg)
    block = 128 // num_devices
    results = _sharded_value_and_grads(
        q, k, v, dout, seg, mesh=_mesh(num_devices), causal=causal, layout=layout,
        query_chunk_size=max(block // 4, 1), key_chunk_size=max(block // 2, 1),
    )
    _assert_close(results, expected, F32_OUT, F32_GRAD)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ring_chunks_equal_to_block_and_multi_head(layout):
    # Default chunk sizes (512) clip to the 16-token local block; plain multi-head attention.
    q, k, v, dout, seg = random_inputs(7, 1, 128, 4, 4, 32, segments=True)
    expected = attention_and_grads(q, k, v, dout, causal=True, segment_ids=seg)
    results = _sharded_value_and_grads(q, k, v, dout, seg, mesh=_mesh(8), layout=layout)
    _assert_close(results, expected, F32_OUT, F32_GRAD)


def test_ring_batch_sharded_over_second_axis():
    mesh = make_mesh("dp=2,sp=4")
    q, k, v, dout, seg = random_inputs(3, 4, 64, 4, 2, 8, segments=True)
    expected = attention_and_grads(q, k, v, dout, causal=True, segment_ids=seg)
    results = _sharded_value_and_grads(q, k, v, dout, seg, mesh=mesh, batch_axis="dp",
                                       query_chunk_size=4, key_chunk_size=8)
    _assert_close(results, expected, F32_OUT, F32_GRAD)


@pytest.mark.parametrize("segments", [False, True], ids=["noseg", "seg"])
@pytest.mark.parametrize("causal", [True, False], ids=["causal", "full"])
def test_blockwise_and_reference_match_float64_oracle(causal, segments):
    q, k, v, dout, seg = random_inputs(11, 2, 96, 6, 3, 16, segments=segments)
    expected = attention_and_grads(q, k, v, dout, causal=causal, segment_ids=seg)
    for fn in (
        functools.partial(blockwise_attention, query_chunk_size=32, key_chunk_size=16),
        reference_attention,
    ):
        out, vjp = jax.vjp(lambda q, k, v: fn(q, k, v, causal=causal, segment_ids=seg), q, k, v)
        _assert_close((out, *vjp(dout)), expected, F32_OUT, F32_GRAD)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_ring_bfloat16(layout):
    q, k, v, dout, seg = random_inputs(5, 1, 128, 8, 2, 32, segments=True)
    q, k, v, dout = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v, dout))
    # The oracle sees the same bf16-rounded inputs, so only the kernel's own rounding is measured.
    expected = attention_and_grads(*(np.asarray(x, np.float64) for x in (q, k, v, dout)), segment_ids=seg)
    results = _sharded_value_and_grads(q, k, v, dout, seg, mesh=_mesh(8), layout=layout,
                                       query_chunk_size=8, key_chunk_size=8)
    assert all(r.dtype == jnp.bfloat16 for r in results)
    # dk/dv sum over many queries and reach |x| ~ 10, where one bf16 ulp alone is 0.06: the bound is
    # therefore absolute and relative, as in the usual allclose(atol=rtol=2.5e-2).
    for name, got, want in zip(("out", "dq", "dk", "dv"), results, expected):
        np.testing.assert_allclose(np.asarray(got, np.float64), want, atol=BF16, rtol=BF16, err_msg=name)


def test_float32_logits_off_stays_close_in_bfloat16():
    q, k, v, dout, _ = random_inputs(6, 1, 64, 4, 4, 16)
    q, k, v = (jnp.asarray(x, jnp.bfloat16) for x in (q, k, v))
    expected = attention_and_grads(*(np.asarray(x, np.float64) for x in (q, k, v, dout)))[0]
    out = sharded_attention(q, k, v, mesh=_mesh(4), float32_logits=False, query_chunk_size=8)
    assert _max_err(out, expected) <= BF16


@settings(max_examples=12, deadline=None, derandomize=True)
@given(
    data=st.data(),
    num_devices=st.sampled_from([1, 2, 4]),
    layout=st.sampled_from(LAYOUTS),
    causal=st.booleans(),
    kv_heads=st.sampled_from([1, 2]),
    groups=st.sampled_from([1, 3]),
    head_dim=st.sampled_from([4, 8]),
    segments=st.booleans(),
)
def test_ring_property_random_shapes(data, num_devices, layout, causal, kv_heads, groups, head_dim, segments):
    pieces = 2 * num_devices if layout == "zigzag" else num_devices
    seq = pieces * data.draw(st.integers(1, 6), label="tokens per piece")
    block = seq // num_devices
    divisors = [c for c in range(1, block + 1) if block % c == 0]
    q_chunk = data.draw(st.sampled_from(divisors), label="query_chunk_size")
    k_chunk = data.draw(st.sampled_from(divisors), label="key_chunk_size")
    batch = data.draw(st.integers(1, 2), label="batch")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    q, k, v, dout, seg = random_inputs(seed, batch, seq, kv_heads * groups, kv_heads, head_dim, segments=segments)
    expected = attention_and_grads(q, k, v, dout, causal=causal, segment_ids=seg)
    results = _sharded_value_and_grads(q, k, v, dout, seg, mesh=_mesh(num_devices), causal=causal,
                                       layout=layout, query_chunk_size=q_chunk, key_chunk_size=k_chunk)
    _assert_close(results, expected, F32_OUT, F32_GRAD)
