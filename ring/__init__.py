"""ring: exact, memory-bounded long-context attention for JAX (Ring Attention with Blockwise Transformers).

Knows nothing of reinforcement learning; any long-context JAX model can use it.

    from ring import sharded_attention, ring_attention, reference_attention
"""

from ring.allgather import allgather_attention
from ring.balance import critical_path, ring_work
from ring.feedforward import blockwise_feedforward
from ring.layouts import LAYOUTS, from_layout, global_positions, to_layout
from ring.mesh import make_mesh
from ring.reference import reference_attention
from ring.ring_attention import blockwise_attention, ring_attention
from ring.sharded import sharded_attention, sharded_to_layout
from ring.strategy import STRATEGIES, choose_strategy
from ring.ulysses import ulysses_attention

__all__ = [
    "LAYOUTS",
    "STRATEGIES",
    "allgather_attention",
    "blockwise_attention",
    "blockwise_feedforward",
    "choose_strategy",
    "critical_path",
    "from_layout",
    "global_positions",
    "make_mesh",
    "reference_attention",
    "ring_attention",
    "ring_work",
    "sharded_attention",
    "sharded_to_layout",
    "to_layout",
    "ulysses_attention",
]
