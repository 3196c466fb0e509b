"""Context-parallel strategies: their names, their per-device memory, and the rule behind ``strategy="auto"``.

- "ring": K/V blocks travel the ring in n steps (:func:`ring.ring_attention`). O(block) memory whatever
  the number of devices; n collective permutes per pass, each step one block pair.
- "allgather": one all-gather of the K/V heads, one block step over the whole sequence
  (:func:`ring.allgather_attention`). Memory grows with the sequence (gathered K/V and their float32
  gradients), cheaply with grouped-query attention; one collective per pass.
- "ulysses": all-to-all to head-sharded and back (:func:`ring.ulysses_attention`). O(block) memory, two
  all-to-alls per pass (four in the backward), and needs the query heads to divide by the devices.
- "hybrid": Ulysses within groups of devices, the ring across them (a mesh with a second sequence axis);
  the heads need only divide by a group. It has no memory model here, and "auto" does not choose it.

The rule (:func:`choose_strategy`) and the memory model (:func:`temp_bytes`) come from the benchmark
``python -m experiments.bench.ring_strategies`` (README, "Context-parallel strategies").
"""

from __future__ import annotations

import dataclasses

# "hybrid": Ulysses within groups of devices along a second mesh axis, the ring across the groups
# (:func:`ring.sharded_attention`'s ``ulysses_axis``); "auto" chooses among the others (it has one axis).
STRATEGIES = ("ring", "allgather", "ulysses", "hybrid")


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


# Per-device temp bytes of forward+backward: coefficients of the terms below, the least upper envelope (a
# linear program) of XLA's compiled memory analysis on 54 programs of the benchmark's grid and beside it
# (per-device blocks 64-8,192, GQA 1 and 4, head_dim 32 and 64, chunks 128-512, 8 devices), plus 5%. On
# that grid every estimate bounds the compiled program from above; tests/test_ring_strategies.py checks a
# shape off it. Ulysses' memory is not linear in these terms (6.1 query blocks at most blocks, 11 at 512
# tokens), so its envelope is loose: 1.8x its usual need.
_MEMORY = {
    # strategy: (query block, own K/V block, whole-sequence K/V, Ulysses' repeated K/V block, score chunk)
    "ring": (3.3, 6.35, 0.0, 0.0, 3.2),
    "allgather": (3.1, 0.0, 4.8, 0.0, 3.2),
    "ulysses": (11.5, 0.0, 0.0, 2.1, 0.0),
}
# The order in which "auto" tries the strategies, fastest first, as measured (README): Ulysses was the
# fastest in 13 of the grid's 14 cells and 0.34-0.86x the ring's forward+backward time in all; all-gather
# 0.59-1.11x the ring's (0.80x and 0.84x in geometric mean at GQA ratios 4 and 1), with the most memory.
PREFERENCE = ("ulysses", "allgather", "ring")


def temp_bytes(strategy: str, shapes: Shapes) -> int:
    """Estimated per-device temp bytes of one attention's forward+backward under ``strategy`` (float32
    accumulators and inputs: an upper bound for low-precision inputs too)."""
    if strategy not in _MEMORY:
        raise ValueError(f"temp_bytes models {tuple(_MEMORY)}, not strategy={strategy!r}")
    n, f32 = shapes.num_devices, 4
    rows = shapes.batch * shapes.block * shapes.head_dim * f32  # one float32 head of the block
    scored = n * shapes.block if strategy == "ulysses" else shapes.block  # keys a chunk is clipped to
    heads = shapes.q_heads / n if strategy == "ulysses" else shapes.q_heads  # heads a device scores
    score_chunk = shapes.batch * heads * min(shapes.query_chunk, scored) * min(shapes.key_chunk, scored) * f32
    terms = (rows * shapes.q_heads, rows * shapes.kv_heads, rows * n * shapes.kv_heads,
             rows * n if shapes.kv_heads < n else 0, score_chunk)
    return int(sum(c * t for c, t in zip(_MEMORY[strategy], terms)))


def choose_strategy(shapes: Shapes, *, memory_budget: int | None = None) -> str:
    """The strategy ``strategy="auto"`` runs: the first of ``PREFERENCE`` that applies (Ulysses needs its
    heads to divide) and whose estimated memory (:func:`temp_bytes`) fits ``memory_budget`` (bytes per
    device; None: any); the ring when none does. The estimates bound the compiled programs from above,
    so "auto" never picks a strategy over the budget where the ring would fit. On one device every
    strategy is the same single block step: "ring", which has no collectives.
    """
    if shapes.num_devices == 1:
        return "ring"
    for strategy in PREFERENCE:
        if strategy == "ulysses" and not shapes.ulysses_fits_heads:
            continue
        if memory_budget is None or temp_bytes(strategy, shapes) <= memory_budget:
            return strategy
    return "ring"
