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

import jax.numpy as jnp
import numpy as np
from jax import lax

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


# ---------------------------------------------------------------------------------------------------------
# The same permutations on a sequence already sharded contiguously over the ring axis, per device (inside
# ``shard_map``): every device sends and receives only its own block, so memory stays O(block). Left to
# XLA's sharding propagation, the reshapes above can make it gather the whole sequence on every device.


def _ring_pairs(n: int, destination) -> list[tuple[int, int]]:
    return [(i, destination(i)) for i in range(n)]


def _split_halves(x, axis):
    half = x.shape[axis] // 2
    return lax.slice_in_dim(x, 0, half, axis=axis), lax.slice_in_dim(x, half, 2 * half, axis=axis)


def _zigzag_local(x, axis_name: str, n: int, axis: int, inverse: bool):
    """Zigzag <-> contiguous on device blocks: two collective permutes of half a block each.

    Natural order puts chunks 2j and 2j+1 (of 2n) on device j; zigzag puts chunks i and 2n-1-i on device
    i. Chunk c goes to device ``c`` if c < n else ``2n-1-c``. Each permute moves one half of every block,
    and each device receives exactly one half from each, so both are permutations of the ring.
    """
    me = lax.axis_index(axis_name)
    first, second = _split_halves(x, axis)
    home = lambda c: c if c < n else 2 * n - 1 - c  # noqa: E731  device of chunk c in the zigzag layout
    if not inverse:
        # Even chunks (every block's first half) land on a device of the same parity as the chunk...
        even = lax.ppermute(first, axis_name, _ring_pairs(n, lambda j: home(2 * j)))
        odd = lax.ppermute(second, axis_name, _ring_pairs(n, lambda j: home(2 * j + 1)))
        # ... so an even device got its early chunk from the first permute, an odd one its late chunk.
        is_even = me % 2 == 0
        return jnp.concatenate([jnp.where(is_even, even, odd), jnp.where(is_even, odd, even)], axis=axis)
    # Device i holds chunks i and 2n-1-i (of opposite parity); chunk c returns to slot c % 2 of device c // 2.
    is_even = me % 2 == 0
    to_slot0 = jnp.where(is_even, first, second)  # the even chunk of this block
    to_slot1 = jnp.where(is_even, second, first)
    slot0 = lax.ppermute(to_slot0, axis_name, _ring_pairs(n, lambda i: (i if i % 2 == 0 else 2 * n - 1 - i) // 2))
    slot1 = lax.ppermute(to_slot1, axis_name, _ring_pairs(n, lambda i: (i if i % 2 == 1 else 2 * n - 1 - i) // 2))
    return jnp.concatenate([slot0, slot1], axis=axis)


def _striped_local(x, axis_name: str, n: int, axis: int, inverse: bool):
    """Striped <-> contiguous on device blocks with one all-to-all (the block divides by ``n``).

    With ``block % n == 0``, token ``j * block + s`` of device j belongs to device ``s mod n``; device i
    receives a strided slice from every device and the sources come in increasing global order.
    """
    x = jnp.moveaxis(x, axis, 0)
    block, rest = x.shape[0], x.shape[1:]
    if not inverse:  # [block/n, n] -> send column d to device d -> [n (sources), block/n]
        y = lax.all_to_all(x.reshape(block // n, n, *rest), axis_name, 1, 0, tiled=True)
        y = y.reshape(n, block // n, *rest)
    else:  # rows r * n + i of the striped block go back to device (r * n) // block in order
        y = lax.all_to_all(x.reshape(n, block // n, *rest), axis_name, 0, 1, tiled=True)
        y = y.reshape(n, block // n, *rest).swapaxes(0, 1)  # [sources, rows] -> token order
    return jnp.moveaxis(y.reshape(block, *rest), 0, axis)


def to_layout_local(x, axis_name: str, num_devices: int, layout: str, *, axis: int = 1, inverse: bool = False):
    """Per-device :func:`to_layout` (or :func:`from_layout` with ``inverse``) inside ``shard_map``.

    ``x`` is this device's contiguous block of a sequence sharded over ``axis_name``; the result is its
    block of the permuted sequence. Zigzag moves two half blocks with collective permutes; striped one
    all-to-all (it needs a block divisible by ``num_devices``: :func:`local_relayout_supported`).
    """
    check_layout(layout)
    if layout == "contiguous" or num_devices == 1:
        return x
    if layout == "zigzag":
        return _zigzag_local(x, axis_name, num_devices, axis, inverse)
    return _striped_local(x, axis_name, num_devices, axis, inverse)


def local_relayout_supported(seq: int, num_devices: int, layout: str) -> bool:
    """Whether :func:`to_layout_local` can permute a sequence of ``seq`` tokens on ``num_devices``."""
    block = seq // num_devices
    if layout == "zigzag":
        return block % 2 == 0
    if layout == "striped":
        return block % num_devices == 0
    return True
