"""Sequence layouts for ring attention: which global tokens each device of the ring holds.

With ``n`` devices and a global sequence of ``seq`` tokens every device holds ``block = seq // n`` of them:

- ``contiguous``: device ``i`` holds tokens ``[i * block, (i + 1) * block)``. Under a causal mask device
  ``i`` has work only for the ``i + 1`` blocks at or before its own, so the last device sets the pace.
- ``striped``: token ``t`` lives on device ``t mod n`` (Brandon et al., Striped Attention). Every device
  sees about half of every other block under a causal mask.
- ``zigzag``: the sequence is cut into ``2n`` chunks and device ``i`` holds chunks ``i`` and ``2n-1-i``,
  pairing an early chunk with a late one so that causal work is equal on every device.

A model permutes its tokens once with :func:`to_layout`, shards the sequence contiguously over the ring
axis, and undoes the permutation with :func:`from_layout` at the output. Inside the ring, global token
positions come from :func:`global_positions`.
"""

from __future__ import annotations

import numpy as np
import jax.numpy as jnp

LAYOUTS = ("contiguous", "striped", "zigzag")


def check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise ValueError(f"layout={layout!r} is unknown; expected one of {LAYOUTS}")


def check_divisible(seq: int, num_devices: int, layout: str, name: str = "seq") -> None:
    """Raises ValueError unless a sequence of ``seq`` tokens splits into the layout's pieces."""
    check_layout(layout)
    pieces = 2 * num_devices if layout == "zigzag" else num_devices
    if seq % pieces:
        raise ValueError(
            f"{name}={seq} must be divisible by {pieces} for layout={layout!r} on {num_devices} devices"
        )


def layout_permutation(seq: int, num_devices: int, layout: str) -> np.ndarray:
    """Global token index stored at each position of the layout-ordered sequence.

    ``x_layout = x[:, perm]``: after this gather, contiguous sharding over ``num_devices`` gives each
    device exactly the tokens the layout assigns to it, in increasing order of position.

    Returns:
      int64 [seq] permutation.
    """
    check_divisible(seq, num_devices, layout)
    if layout == "contiguous":
        return np.arange(seq)
    if layout == "striped":
        return np.arange(seq).reshape(seq // num_devices, num_devices).T.reshape(-1)
    chunks = np.arange(seq).reshape(2 * num_devices, -1)
    order = [c for i in range(num_devices) for c in (i, 2 * num_devices - 1 - i)]
    return chunks[order].reshape(-1)


def to_layout(x, num_devices: int, layout: str, *, axis: int = 1):
    """Reorders ``x`` along ``axis`` (the sequence) from natural token order into ``layout``.

    Written with reshapes, transposes and a flip rather than a gather, so that on a sharded sequence XLA
    moves the tokens with collectives instead of gathering the whole sequence on every device.
    """
    check_divisible(x.shape[axis], num_devices, layout, name=f"x.shape[{axis}]")
    if layout == "contiguous":
        return x
    x = jnp.moveaxis(x, axis, 0)
    seq, rest = x.shape[0], x.shape[1:]
    if layout == "striped":  # [block, n] -> [n, block]
        y = x.reshape(seq // num_devices, num_devices, *rest).swapaxes(0, 1)
    else:  # chunks (i, 2n-1-i) side by side for every device i
        halves = x.reshape(2, num_devices, seq // (2 * num_devices), *rest)
        y = jnp.stack([halves[0], jnp.flip(halves[1], axis=0)], axis=1)
    return jnp.moveaxis(y.reshape(seq, *rest), 0, axis)


def from_layout(x, num_devices: int, layout: str, *, axis: int = 1):
    """Inverse of :func:`to_layout`: back to natural token order along ``axis``."""
    check_divisible(x.shape[axis], num_devices, layout, name=f"x.shape[{axis}]")
    if layout == "contiguous":
        return x
    x = jnp.moveaxis(x, axis, 0)
    seq, rest = x.shape[0], x.shape[1:]
    if layout == "striped":
        y = x.reshape(num_devices, seq // num_devices, *rest).swapaxes(0, 1)
    else:
        pairs = x.reshape(num_devices, 2, seq // (2 * num_devices), *rest)
        y = jnp.stack([pairs[:, 0], jnp.flip(pairs[:, 1], axis=0)], axis=0)
    return jnp.moveaxis(y.reshape(seq, *rest), 0, axis)


def global_positions(device, block: int, num_devices: int, layout: str):
    """Global token positions of the ``block`` tokens held by ``device`` (a traced or concrete int).

    Works on NumPy ints (host-side accounting) and on traced JAX ints (inside ``shard_map``).

    Returns:
      int32 [block] positions, increasing.
    """
    check_layout(layout)
    xp = np if isinstance(device, (int, np.integer)) else jnp
    t = xp.arange(block, dtype=xp.int32)
    if layout == "contiguous":
        return device * block + t
    if layout == "striped":
        return t * num_devices + device
    half = block // 2
    late_chunk = 2 * num_devices - 1 - device
    return xp.where(t < half, device * half + t, late_chunk * half + (t - half))
