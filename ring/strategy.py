"""Context-parallel strategies: their names, their per-device memory, and the rule behind ``strategy="auto"``.

- "ring": K/V blocks travel the ring in n steps (:func:`ring.ring_attention`). O(block) memory whatever
  the number of devices; n collective permutes per pass, each step one block pair.
- "allgather": one all-gather of the K/V heads, one block step over the whole sequence
  (:func:`ring.allgather_attention`). Memory grows with the sequence (gathered K/V and their float32
  gradients), cheaply with grouped-query attention; one collective per pass.
- "ulysses": all-to-all to head-sharded and back (:func:`ring.ulysses_attention`). O(block) memory, two
  all-to-alls per pass (four in the backward), and needs the query heads to divide by the devices.

The rule (:func:`choose_strategy`) and the memory model (:func:`temp_bytes`) come from the benchmark
``python -m experiments.bench.ring_strategies`` (README, "Context-parallel strategies").
"""

from __future__ import annotations

import dataclasses

STRATEGIES = ("ring", "allgather", "ulysses")


def check_strategy(strategy: str) -> None:
    """Raises ValueError unless ``strategy`` is one of ``STRATEGIES`` or "auto"."""
    if strategy != "auto" and strategy not in STRATEGIES:
        raise ValueError(f"strategy={strategy!r} is unknown; expected one of {STRATEGIES} or 'auto'")


@dataclasses.dataclass(frozen=True)
class Shapes:
    """What one device attends with: its batch rows, its block of the sequence, its heads, the chunks."""

    batch: int
    block: int
    q_heads: int
    kv_heads: int
    head_dim: int
    num_devices: int  # devices along the sequence axis
    query_chunk: int = 512  # as asked; each strategy clips them (to the block, Ulysses to the sequence)
    key_chunk: int = 512

    @property
    def ulysses_fits_heads(self) -> bool:
        n = self.num_devices
        return self.q_heads % n == 0 and (self.kv_heads % n == 0 or n % self.kv_heads == 0)


# Per-device temp bytes of forward+backward: coefficients of the terms below, fitted (least relative error)
# to XLA's compiled memory analysis on the benchmark's grid (per-device blocks 64-8,192, GQA 1 and 4, head_dim
# 32 and 64, chunks 128-512, 8 devices) and scaled by the largest measured / fitted ratio, so that on that
# grid every estimate bounds the compiled program from above (tests/test_ring_strategies.py checks one).
_MEMORY = {
    # strategy: (query block, own K/V block, whole-sequence K/V, Ulysses' repeated K/V block, score chunk)
    "ring": (2.34, 5.72, 0.0, 0.0, 4.42),
    "allgather": (2.20, 0.0, 4.62, 0.0, 3.85),
    "ulysses": (2.51, 5.60, 0.0, 7.34, 0.03),
}
# Per-device blocks (tokens) up to which a strategy is preferred, from the measured forward+backward times.
_ULYSSES_UP_TO = 2048
_ALLGATHER_UP_TO = 8192


def temp_bytes(strategy: str, shapes: Shapes) -> int:
    """Estimated per-device temp bytes of one attention's forward+backward under ``strategy`` (float32
    accumulators and inputs: an upper bound for low-precision inputs too)."""
    check_strategy(strategy)
    if strategy == "auto":
        raise ValueError("temp_bytes needs a concrete strategy, not 'auto'")
    n, f32 = shapes.num_devices, 4
    rows = shapes.batch * shapes.block * shapes.head_dim * f32  # one float32 head of the block
    scored = n * shapes.block if strategy == "ulysses" else shapes.block  # keys a chunk is clipped to
    heads = shapes.q_heads / n if strategy == "ulysses" else shapes.q_heads  # heads a device scores
    score_chunk = shapes.batch * heads * min(shapes.query_chunk, scored) * min(shapes.key_chunk, scored) * f32
    terms = (rows * shapes.q_heads, rows * shapes.kv_heads, rows * n * shapes.kv_heads,
             rows * n if shapes.kv_heads < n else 0, score_chunk)
    return int(sum(c * t for c, t in zip(_MEMORY[strategy], terms)))


def choose_strategy(shapes: Shapes, *, memory_budget: int | None = None) -> str:
    """The strategy ``strategy="auto"`` runs: the fastest by the measured rule among those whose estimated
    memory fits ``memory_budget`` (bytes per device; None: any). The ring when nothing fits, so that
    "auto" never picks a strategy over the budget where the ring would fit.

    Rule: on one device every strategy is one block step ("ring", no collectives). Otherwise Ulysses
    (when the heads divide) up to ``_ULYSSES_UP_TO`` tokens per device, then all-gather up to
    ``_ALLGATHER_UP_TO``, then the ring.
    """
    if shapes.num_devices == 1:
        return "ring"
    preferred = []
    if shapes.ulysses_fits_heads and shapes.block <= _ULYSSES_UP_TO:
        preferred.append("ulysses")
    if shapes.block <= _ALLGATHER_UP_TO:
        preferred.append("allgather")
    for strategy in preferred:
        if memory_budget is None or temp_bytes(strategy, shapes) <= memory_budget:
            return strategy
    return "ring"
