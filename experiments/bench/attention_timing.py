"""Timing of one attention function on bfloat16 inputs, shared by the GPU benchmark and its tile sweep."""

from __future__ import annotations

from experiments.bench import harness


def _fwd_and_train(attention):
    """Jitted forward, and jitted forward+backward (the VJP of every input)."""
    import jax

    def fwd_bwd(q, k, v, dout):
        out, vjp = jax.vjp(attention, q, k, v)
        return out, vjp(dout)

    return jax.jit(attention), jax.jit(fwd_bwd)


def causal_flops(batch, heads, seq, head_dim, *, backward: bool) -> float:
    """FLOPs of causal attention: half of dense; forward+backward is 3.5x the forward."""
    forward = 4.0 * batch * heads * seq * seq * head_dim / 2
    return forward * (3.5 if backward else 1.0)


def inputs(args, seq, head_dim):
    """Random bfloat16 q, k, v and output cotangent for sequence `seq` (sizes from the command line)."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(seq + head_dim), 4)
    kv_heads = args.kv_heads or args.heads
    q_shape, kv_shape = (args.batch, seq, args.heads, head_dim), (args.batch, seq, kv_heads, head_dim)
    return tuple(jax.random.normal(key, shape, jnp.bfloat16)
                 for key, shape in zip(keys, (q_shape, kv_shape, kv_shape, q_shape)))


def measure(name, attention, q, k, v, dout, repeats):
    """(forward seconds, forward+backward seconds), or the error that stopped them."""
    fwd, train = _fwd_and_train(attention)
    try:
        return (harness.median_seconds(lambda: fwd(q, k, v), repeats),
                harness.median_seconds(lambda: train(q, k, v, dout), repeats))
    except Exception as err:  # noqa: BLE001 - a backend that cannot run this shape is reported, not fatal
        if is_oom(err) or "cudnn" in name or "cuDNN" in str(err):
            return f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"
        raise


def is_oom(err: Exception) -> bool:
    """Whether `err` is the backend running out of memory."""
    text = str(err)
    return any(s in text for s in ("RESOURCE_EXHAUSTED", "Out of memory", "out of memory", "OOM"))
