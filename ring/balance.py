"""How evenly a layout spreads causal attention work over the ring, as numbers.

The ring advances in lock step: every device must finish step ``s`` before the K/V blocks move on, so the
time of a step is the time of its busiest device and the time of the whole ring is the sum of those
maxima, the critical path. The kernel skips chunk pairs that the causal mask empties, so work here is
counted the way the kernel spends it: whole chunk pairs, each ``query_chunk x key_chunk`` scores.
"""

from __future__ import annotations

import numpy as np

from ring.layouts import check_divisible, global_positions


def ring_work(layout: str, num_devices: int, *, causal: bool = True, block: int = 1024,
              query_chunk_size: int = 128, key_chunk_size: int = 128) -> np.ndarray:
    """Scores computed by each device at each ring step.

    Args:
      layout: "contiguous", "striped" or "zigzag".
      num_devices: devices in the ring.
      causal: whether chunk pairs entirely above the diagonal are skipped.
      block: tokens per device.
      query_chunk_size, key_chunk_size: the kernel's chunk sizes.

    Returns:
      int64 [num_devices (steps), num_devices (devices)]: entry [s, i] is the number of query-key scores
      device i computes at step s, while it holds the K/V block of device (i - s) mod n.
    """
    check_divisible(block * num_devices, num_devices, layout, name="block * num_devices")
    qc, kc = min(query_chunk_size, block), min(key_chunk_size, block)
    if block % qc or block % kc:
        raise ValueError(f"chunk sizes ({qc}, {kc}) must divide block={block}")
    work = np.zeros((num_devices, num_devices), np.int64)
    for step in range(num_devices):
        for device in range(num_devices):
            q_pos = global_positions(device, block, num_devices, layout).reshape(-1, qc)
            k_pos = global_positions((device - step) % num_devices, block, num_devices, layout).reshape(-1, kc)
            if causal:
                pairs = np.sum(q_pos.max(axis=1)[:, None] >= k_pos.min(axis=1)[None, :])
            else:
                pairs = q_pos.shape[0] * k_pos.shape[0]
            work[step, device] = pairs * qc * kc
    return work


def critical_path(work: np.ndarray) -> int:
    """Scores on the critical path: the sum over steps of the busiest device's work."""
    return int(np.asarray(work).max(axis=1).sum())
