"""A float64 NumPy attention oracle with its analytic gradient, independent of the JAX code under test."""

from __future__ import annotations

import numpy as np


def _mask(seq, causal, segment_ids, batch):
    mask = np.ones((batch, seq, seq), bool)
    if causal:
        mask &= np.tril(np.ones((seq, seq), bool))[None]
    if segment_ids is not None:
        seg = np.asarray(segment_ids)
        mask &= seg[:, :, None] == seg[:, None, :]
    return mask[:, None]  # [b, 1, q, k]


def attention_and_grads(q, k, v, dout, *, causal=True, segment_ids=None):
    """Dense attention in float64 and the gradients of <out, dout> with respect to q, k, v.

    Shapes: q [b, s, hq, d]; k, v [b, s, hkv, d]; dout like q. K/V heads are repeated for grouped
    queries, and their gradients summed back over the group.
    """
    q, k, v, dout = (np.asarray(x, np.float64) for x in (q, k, v, dout))
    b, s, hq, d = q.shape
    groups = hq // k.shape[2]
    kr, vr = np.repeat(k, groups, axis=2), np.repeat(v, groups, axis=2)
    qt, kt, vt, dot = (x.transpose(0, 2, 1, 3) for x in (q, kr, vr, dout))  # [b, h, s, d]
    scale = 1.0 / np.sqrt(d)
    scores = np.where(_mask(s, causal, segment_ids, b), qt @ kt.transpose(0, 1, 3, 2) * scale, -np.inf)
    scores -= scores.max(axis=-1, keepdims=True)
    p = np.exp(scores)
    p /= p.sum(axis=-1, keepdims=True)
    out = p @ vt
    dv = p.transpose(0, 1, 3, 2) @ dot
    dp = dot @ vt.transpose(0, 1, 3, 2)
    ds = p * (dp - np.sum(dp * p, axis=-1, keepdims=True))
    dq = ds @ kt * scale
    dk = ds.transpose(0, 1, 3, 2) @ qt * scale

    def back(x):
        return x.transpose(0, 2, 1, 3)

    def fold(x):  # sum the repeated K/V heads back onto their group
        x = back(x)
        return x.reshape(b, s, k.shape[2], groups, d).sum(axis=3)

    return back(out), back(dq), fold(dk), fold(dv)


def random_inputs(seed, batch, seq, q_heads, kv_heads, head_dim, *, segments=False, dtype=np.float32):
    """Unit-scale q, k, v, dout and (optionally) random packed segment ids, from one seed."""
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((batch, seq, q_heads, head_dim)).astype(dtype)
    k = rng.standard_normal((batch, seq, kv_heads, head_dim)).astype(dtype)
    v = rng.standard_normal((batch, seq, kv_heads, head_dim)).astype(dtype)
    dout = rng.standard_normal((batch, seq, q_heads, head_dim)).astype(dtype)
    seg = None
    if segments:  # packed rows: increasing ids with random boundaries
        starts = rng.random((batch, seq)) < 0.15
        starts[:, 0] = False
        seg = np.cumsum(starts, axis=1).astype(np.int32)
    return q, k, v, dout, seg
