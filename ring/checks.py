"""Argument checks shared by every attention entry point: loud, early, naming the argument and sizes."""

from __future__ import annotations

import numbers


def check_attention_inputs(q, k, v, segment_ids) -> None:
    """Raises ValueError unless q, k, v and segment_ids have consistent attention shapes."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.ndim != 4:
            raise ValueError(
                f"{name} must be [batch, seq, heads, head_dim], got shape {tuple(x.shape)}"
            )
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape, got k {k.shape} and v {v.shape}")
    batch, seq, q_heads, head_dim = q.shape
    if k.shape[0] != batch or k.shape[1] != seq or k.shape[3] != head_dim:
        raise ValueError(
            f"k/v shape {tuple(k.shape)} does not match q shape {tuple(q.shape)} in batch, seq or head_dim"
        )
    kv_heads = k.shape[2]
    if q_heads % kv_heads:
        raise ValueError(
            f"q_heads={q_heads} must be a multiple of kv_heads={kv_heads} (grouped-query attention)"
        )
    if segment_ids is not None:
        if tuple(segment_ids.shape) != (batch, seq):
            raise ValueError(
                f"segment_ids must have shape [batch, seq] = {(batch, seq)}, got {tuple(segment_ids.shape)}"
            )
        if not _is_integer(segment_ids.dtype):
            raise ValueError(f"segment_ids must be integers, got dtype {segment_ids.dtype}")


def check_chunk(name: str, chunk: int, length: int) -> None:
    """Raises ValueError unless ``chunk`` is a positive divisor of ``length``."""
    if chunk <= 0 or length % chunk:
        raise ValueError(
            f"{name}={chunk} must be a positive divisor of the per-device sequence length {length}"
        )


IMPLS = ("pallas", "xla")


def check_impl(impl) -> None:
    """Raises ValueError unless ``impl`` is None (default by backend) or one of ``IMPLS``."""
    if impl is not None and impl not in IMPLS:
        raise ValueError(f"impl={impl!r} is unknown; expected one of {IMPLS} or None (pallas on GPU, else xla)")


def _is_integer(dtype) -> bool:
    import numpy as np

    return np.issubdtype(np.dtype(dtype), np.integer)


def check_window(window, causal: bool) -> None:
    """Raises ValueError unless ``window`` is None or a positive int on a causal mask."""
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, numbers.Integral) or window < 1:
        raise ValueError(f"window={window!r} must be a positive number of tokens or None")
    if not causal:
        raise ValueError(f"window={window} needs causal=True (a sliding window looks back only)")
