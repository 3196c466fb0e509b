"""Bad input raises ValueError that names the argument and the sizes."""

import jax.numpy as jnp
import pytest

from ring import blockwise_attention, make_mesh, reference_attention, sharded_attention, to_layout


def _qkv(seq=16, q_heads=4, kv_heads=2, head_dim=8, batch=2):
    return (jnp.ones((batch, seq, q_heads, head_dim)), jnp.ones((batch, seq, kv_heads, head_dim)),
            jnp.ones((batch, seq, kv_heads, head_dim)))


@pytest.mark.parametrize("fn", [reference_attention, blockwise_attention])
def test_shape_errors(fn):
    q, k, v = _qkv()
    with pytest.raises(ValueError, match=r"q must be \[batch, seq, heads, head_dim\], got shape \(2, 16, 32\)"):
        fn(q.reshape(2, 16, 32), k, v)
    with pytest.raises(ValueError, match="k and v must have the same shape"):
        fn(q, k, v[:, :8])
    with pytest.raises(ValueError, match="does not match q shape"):
        fn(q, k[:, :8], v[:, :8])
    q3, k3, v3 = _qkv(q_heads=3, kv_heads=2)
    with pytest.raises(ValueError, match="q_heads=3 must be a multiple of kv_heads=2"):
        fn(q3, k3, v3)
    with pytest.raises(ValueError, match=r"segment_ids must have shape \[batch, seq\] = \(2, 16\), got \(2, 8\)"):
        fn(q, k, v, segment_ids=jnp.zeros((2, 8), jnp.int32))
    with pytest.raises(ValueError, match="segment_ids must be integers"):
        fn(q, k, v, segment_ids=jnp.zeros((2, 16)))


def test_chunk_and_layout_errors():
    q, k, v = _qkv(seq=24)
    with pytest.raises(ValueError, match="query_chunk_size=5 must be a positive divisor of the per-device sequence length 24"):
        blockwise_attention(q, k, v, query_chunk_size=5)
    with pytest.raises(ValueError, match="key_chunk_size=0"):
        blockwise_attention(q, k, v, key_chunk_size=0)
    mesh = make_mesh("sp=-1")
    with pytest.raises(ValueError, match="seq=24 must be divisible by 16 for layout='zigzag' on 8 devices"):
        sharded_attention(q, k, v, mesh=mesh)
    with pytest.raises(ValueError, match="layout='diagonal' is unknown"):
        sharded_attention(q, k, v, mesh=mesh, layout="diagonal")
    with pytest.raises(ValueError, match="axis_name='seq' is not an axis"):
        sharded_attention(q, k, v, mesh=mesh, axis_name="seq")
    with pytest.raises(ValueError, match="batch=2 must be divisible by the 4 devices"):
        sharded_attention(*_qkv(seq=32), mesh=make_mesh("dp=4,sp=2"), batch_axis="dp")
    with pytest.raises(ValueError, match=r"x.shape\[1\]=12 must be divisible by 8"):
        to_layout(jnp.ones((1, 12)), 4, "zigzag")
