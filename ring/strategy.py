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

The rule (:func:`choose_strategy`) comes from the benchmark ``python -m experiments.bench.ring_strategies``
(README, "Context-parallel strategies"), the memory model (:func:`temp_bytes`) from
``python -m experiments.bench.memory_model``.
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


# Per-device temp bytes of forward+backward: coefficients of the terms of :func:`memory_terms`, the least
# upper envelope (a linear program) of XLA's compiled memory analysis on the grid of
# ``python -m experiments.bench.memory_model`` (per-device blocks 64-8,192, GQA 1 and 4, head_dim 32 and
# 64, chunks 128 and 512, rings of 2 and 8 devices, JAX 0.10; 80 programs a strategy), plus 5%. On that
# grid every estimate bounds the compiled program from above (by 1.34x, 1.24x and 1.17x in the median:
# ring, all-gather, Ulysses); tests/test_ring_strategies.py checks a shape off it. A coefficient is what
# the envelope needed, not a count of buffers.
_MEMORY = {
    # strategy: (query block, own K/V block, whole-sequence K/V, Ulysses' repeated K/V block, score chunk)
    "ring": (2.42, 1.85, 0.0, 0.0, 7.38),
    "allgather": (1.51, 0.0, 4.14, 0.6, 7.45),
    "ulysses": (3.82, 2.42, 0.02, 4.04, 4.06),
}
# The order in which "auto" tries the strategies, fastest first, as measured (README): Ulysses was the
# fastest in 13 of the grid's 14 cells and 0.33-0.91x the ring's forward+backward time in all; all-gather
# 0.37-1.08x the ring's (0.69x and 0.82x in geometric mean at GQA ratios 4 and 1), with the most memory.
PREFERENCE = ("ulysses", "allgather", "ring")
MODELLED = tuple(_MEMORY)


def memory_terms(strategy: str, shapes: Shapes) -> tuple[float, ...]:
    """The bytes that one device's memory is modelled as a combination of, for ``strategy``: a float32
    query block (all query heads), its own K/V block, the whole sequence's K/V, the K/V block Ulysses
    repeats to one head a device (where there are fewer K/V heads than devices), and one chunk pair's
    scores over the heads the block step scores together (:func:`ring.ring_attention.head_chunk`)."""
    from ring.ring_attention import head_chunk

    n, f32 = shapes.num_devices, 4
    rows = shapes.batch * shapes.block * shapes.head_dim * f32  # one float32 head of the block
    ulysses = strategy == "ulysses"
    scored = n * shapes.block if ulysses else shapes.block  # keys a chunk is clipped to
    q_chunk, k_chunk = min(shapes.query_chunk, scored), min(shapes.key_chunk, scored)
    q_heads = shapes.q_heads // n if ulysses else shapes.q_heads  # heads a device scores
    kv_heads = max(shapes.kv_heads // n, 1) if ulysses else shapes.kv_heads
    groups = max(q_heads // kv_heads, 1)
    score_chunk = shapes.batch * head_chunk(kv_heads, groups, q_chunk, k_chunk) * groups * q_chunk * k_chunk * f32
    return (rows * shapes.q_heads, rows * shapes.kv_heads, rows * n * shapes.kv_heads,
            rows * n if shapes.kv_heads < n else 0, score_chunk)


def temp_bytes(strategy: str, shapes: Shapes) -> int:
    """Estimated per-device temp bytes of one attention's forward+backward under ``strategy`` (float32
    accumulators and inputs: an upper bound for low-precision inputs too)."""
    if strategy not in _MEMORY:
        raise ValueError(f"temp_bytes models {MODELLED}, not strategy={strategy!r}")
    return int(sum(c * t for c, t in zip(_MEMORY[strategy], memory_terms(strategy, shapes))))


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
