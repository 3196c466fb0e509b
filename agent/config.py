"""Configuration of the Agentic Transformer and its optimiser: frozen dataclasses, presets by name.

Parsing these imports no JAX: the optimiser is built from ``OptimConfig`` only when asked for.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Literal, get_args

TokenLayout = Literal["fused", "interleaved"]
ActionHead = Literal["tanh", "gaussian", "mixture", "categorical"]
Attention = Literal["reference", "blockwise", "ring"]
RingLayout = Literal["contiguous", "striped", "zigzag"]
AttentionImpl = Literal["pallas", "xla"]
Activation = Literal["relu", "gelu", "silu"]
Strategy = Literal["ring", "allgather", "ulysses", "auto"]
RematPolicy = Literal["none", "nothing_saveable", "dots_saveable", "dots_with_no_batch_dims_saveable"]

TOKEN_LAYOUTS = get_args(TokenLayout)
ACTION_HEADS = get_args(ActionHead)
ATTENTIONS = get_args(Attention)


def check_counts(config, *names: str, optional: tuple[str, ...] = (), minimum: int = 1) -> None:
    """ValueError naming the first of ``names`` (or of ``optional``, which may also be None) of the dataclass
    ``config`` that is not an integer >= ``minimum``: a size of zero fails later as a ZeroDivisionError or an
    empty array, or worse, not at all."""
    for name in names + optional:
        value = getattr(config, name)
        if (value is None and name in optional) or (isinstance(value, int) and not isinstance(value, bool)
                                                    and value >= minimum):
            continue
        wanted = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{type(config).__name__}.{name}={value!r} must be {wanted}"
                         + (" or None" if name in optional else ""))


def check_range(config, name: str, low: float, high: float = math.inf, *, open_low: bool = False,
                open_high: bool = False, optional: bool = False) -> None:
    """ValueError naming ``config.name`` unless it is a finite number in [low, high] (ends open on request;
    None allowed when ``optional``): NaN compares false with everything, so it passes a one-sided check."""
    value = getattr(config, name)
    if value is None and optional:
        return
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if number and math.isfinite(value) and (low < value if open_low else low <= value) and (
            value < high if open_high else value <= high):
        return
    interval = f" in {'(' if open_low else '['}{low}, {high}{')' if open_high or high == math.inf else ']'}"
    raise ValueError(f"{type(config).__name__}.{name}={value!r} must be a finite number"
                     + ("" if low == -math.inf and high == math.inf else interval) + (" or None" if optional else ""))


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The model and how it reads a context.

    Attributes:
      token_layout: "fused" (one token per step, modalities embedded together; the step's token holds
        the state, target return-to-go, completion flag so far, and the previous step's action and
        reward) or "interleaved" (one token per modality: return, state, action, reward).
      use_returns: condition on returns-to-go and the completion flag (False: behaviour cloning).
      use_rewards: condition on rewards.
      num_layers: transformer layers.
      embed_dim: width of every token.
      num_heads: query heads.
      num_kv_heads: key/value heads (grouped-query attention; divides num_heads).
      mlp_ratio: feed-forward hidden width over embed_dim.
      activation: feed-forward nonlinearity.
      max_timestep: timesteps embedded (episode length after action repeat).
      max_trajectories: trajectory indices embedded (trajectories in context, training and evaluation).
      return_scale: returns-to-go are multiplied by this before embedding (e.g. 1/1000 for [0, 1000]).
      action_head: "tanh" (deterministic, squashed to [-1, 1]), "gaussian" (tanh-squashed mean and a
        learned state-dependent log std) or "mixture" (num_components Gaussians with mixing weights); the
        last two are trained by negative log-likelihood (agent.heads); "categorical" for discrete actions
        (logits over the choices, trained by cross-entropy; actions in and out are integers).
      num_components: Gaussians of the mixture head.
      attention: "reference" (dense), "blockwise" (one device, O(chunk) memory) or "ring" (sequence
        sharded over the mesh axis "sp").
      layout: ring layout ("contiguous", "striped", "zigzag").
      attention_impl: block compute of blockwise and ring attention: "pallas", "xla" or None (pallas on
        GPU, else xla); see ``ring.ring_attention``.
      query_chunk_size: blockwise attention's query chunk (clipped to the block).
      key_chunk_size: blockwise attention's key chunk (clipped to the block).
      ffn_chunk_size: blockwise feed-forward's chunk (clipped to the block).
      remat_policy: a key of ``ring.transformer.REMAT_POLICIES``.
      scan_layers: run the layers under ``nn.scan``.
      dropout: embedding dropout rate in training.
      strategy: ``attention="ring"`` only: how the sequence is sharded (``ring.sharded_attention``): "ring"
        (K/V blocks travel; O(block) memory), "allgather" (K/V gathered, then local blockwise attention),
        "ulysses" (all-to-all to head-sharded and back; heads must divide over the devices) or "auto" (the
        measured rule of ``ring.strategy`` under ``memory_budget_gib``).
      memory_budget_gib: the per-device budget that ``strategy="auto"`` keeps to (None: ring's default).
      window: sliding-window attention in tokens for the layers of ``windowed_layers`` (a query at token i
        reads tokens i - window < j <= i); None: every layer attends to the whole context.
      windowed_layers: the layers (0-based) that use ``window``; the others attend to the whole context.
    """

    token_layout: TokenLayout = "fused"
    use_returns: bool = True
    use_rewards: bool = True
    num_layers: int = 2
    embed_dim: int = 128
    num_heads: int = 4
    num_kv_heads: int = 4
    mlp_ratio: int = 4
    activation: Activation = "relu"
    max_timestep: int = 1024
    max_trajectories: int = 64
    return_scale: float = 1e-3
    action_head: ActionHead = "tanh"
    num_components: int = 8
    attention: Attention = "blockwise"
    layout: RingLayout = "zigzag"
    attention_impl: AttentionImpl | None = None
    query_chunk_size: int = 512
    key_chunk_size: int = 512
    ffn_chunk_size: int = 512
    remat_policy: RematPolicy = "nothing_saveable"
    scan_layers: bool = False
    dropout: float = 0.0
    strategy: Strategy = "ring"
    memory_budget_gib: float | None = None
    window: int | None = None
    windowed_layers: tuple[int, ...] = ()

    def __post_init__(self):
        check_counts(self, "num_layers", "embed_dim", "num_heads", "num_kv_heads", "mlp_ratio", "max_timestep",
                     "max_trajectories", "num_components", "query_chunk_size", "key_chunk_size", "ffn_chunk_size")
        check_range(self, "return_scale", 0.0, open_low=True)
        for name, value, allowed in (("token_layout", self.token_layout, TOKEN_LAYOUTS),
                                     ("action_head", self.action_head, ACTION_HEADS),
                                     ("attention", self.attention, ATTENTIONS)):
            if value not in allowed:
                raise ValueError(f"ModelConfig.{name}={value!r} is unknown; expected one of {allowed}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"ModelConfig.embed_dim={self.embed_dim} must be divisible by num_heads={self.num_heads}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"ModelConfig.num_heads={self.num_heads} must be a multiple of "
                             f"num_kv_heads={self.num_kv_heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig.dropout={self.dropout} must be in [0, 1)")
        object.__setattr__(self, "windowed_layers", tuple(self.windowed_layers))  # a JSON list comes back as one
        if self.strategy not in ("ring", "allgather", "ulysses", "auto"):
            raise ValueError(f"ModelConfig.strategy={self.strategy!r} is unknown; expected ring, allgather, "
                             "ulysses or auto")
        check_counts(self, optional=("window",))
        if self.memory_budget_gib is not None and not self.memory_budget_gib > 0:
            raise ValueError(f"ModelConfig.memory_budget_gib={self.memory_budget_gib} must be positive")
        if (self.window is None) != (not self.windowed_layers):
            raise ValueError(f"ModelConfig.window={self.window} and windowed_layers={self.windowed_layers} go "
                             "together: give both (a window and the layers that use it) or neither")
        bad = [i for i in self.windowed_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"ModelConfig.windowed_layers={self.windowed_layers}: layers {bad} do not exist "
                             f"(num_layers={self.num_layers})")
        if self.scan_layers and self.windowed_layers and len(set(self.layer_windows)) > 1:
            raise ValueError("ModelConfig.scan_layers=True runs one layer program for every layer, so "
                             "windowed_layers must name every layer or none")

    @property
    def layer_windows(self) -> tuple[int | None, ...]:
        """Each layer's sliding window (None: the whole context); empty without windows."""
        if self.window is None:
            return ()
        return tuple(self.window if i in self.windowed_layers else None for i in range(self.num_layers))

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @property
    def modalities(self) -> tuple[str, ...]:
        """Token order within a step for the interleaved layout."""
        names = (("return",) if self.use_returns else ()) + ("state", "action")
        return names + (("reward",) if self.use_rewards else ())

    @property
    def tokens_per_step(self) -> int:
        return 1 if self.token_layout == "fused" else len(self.modalities)

    @property
    def action_token(self) -> int:
        """Index within a step of the token whose output predicts the step's action."""
        return 0 if self.token_layout == "fused" else self.modalities.index("state")

    def fitting_steps(self, steps: int, ring_size: int = 1) -> int:
        """The least context length >= ``steps`` (in steps) that the attention accepts, by ``ring``'s own
        checks: with ring attention its tokens split into the layout's pieces over the ``ring_size`` devices
        (``ring.layouts.check_divisible``: two pieces a device for zigzag, on one device too), and each
        device's block into the attention's chunks (``ring.checks.check_chunk``, a chunk clipped to the
        block)."""
        candidate = steps
        while not self._accepts(candidate * self.tokens_per_step, ring_size):
            candidate += 1
        return candidate

    def _accepts(self, tokens: int, ring_size: int) -> bool:
        from ring.checks import check_chunk
        from ring.layouts import check_divisible

        try:
            if self.attention == "ring":
                check_divisible(tokens, ring_size, self.layout)
            elif tokens % ring_size:
                return False
            block = tokens // ring_size
            for name in ("query_chunk_size", "key_chunk_size"):
                check_chunk(name, min(getattr(self, name), block), block)
        except ValueError:  # ring's refusal: this length does not fit
            return False
        return True


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup, cosine decay and global-norm clipping.

    Attributes:
      learning_rate: peak learning rate, reached after the warmup.
      warmup_steps: steps of linear warmup from 0.
      total_steps: steps of the cosine decay (the run's length).
      weight_decay: AdamW's decoupled weight decay.
      clip_norm: gradients are clipped to this global norm.
      b1: Adam's first-moment decay.
      b2: Adam's second-moment decay.
      final_lr_fraction: the decay ends at this fraction of the peak.
    """

    learning_rate: float = 3e-4
    warmup_steps: int = 200
    total_steps: int = 10_000
    weight_decay: float = 1e-4
    clip_norm: float = 0.25
    b1: float = 0.9
    b2: float = 0.99
    final_lr_fraction: float = 0.1

    def __post_init__(self):
        check_range(self, "learning_rate", 0.0, open_low=True)
        check_counts(self, "total_steps")
        check_counts(self, "warmup_steps", minimum=0)
        check_range(self, "weight_decay", 0.0)
        check_range(self, "clip_norm", 0.0, open_low=True)  # a negative norm flips every update
        for name in ("b1", "b2"):
            check_range(self, name, 0.0, 1.0, open_high=True)
        check_range(self, "final_lr_fraction", 0.0, 1.0)

    def schedule(self):
        import optax

        return optax.warmup_cosine_decay_schedule(
            init_value=0.0, peak_value=self.learning_rate, warmup_steps=max(self.warmup_steps, 1),
            decay_steps=max(self.total_steps, self.warmup_steps + 1),
            end_value=self.learning_rate * self.final_lr_fraction)

    def optimizer(self):
        import optax

        return optax.chain(optax.clip_by_global_norm(self.clip_norm),
                           optax.adamw(self.schedule(), b1=self.b1, b2=self.b2, weight_decay=self.weight_decay))


PRESETS = {
    # Tests: seconds on a laptop CPU.
    "tiny": ModelConfig(num_layers=2, embed_dim=32, num_heads=2, num_kv_heads=1, max_timestep=256,
                        max_trajectories=16, query_chunk_size=64, key_chunk_size=64, ffn_chunk_size=64),
    # CPU runs: the main job and sweeps on this machine.
    "small": ModelConfig(num_layers=2, embed_dim=128, num_heads=4, num_kv_heads=4, max_timestep=1024,
                         max_trajectories=64, query_chunk_size=256, key_chunk_size=256, ffn_chunk_size=256),
    # The Agentic Transformer as published: 3 layers, 1 head, embedding 128, ReLU.
    "paper": ModelConfig(num_layers=3, embed_dim=128, num_heads=1, num_kv_heads=1, activation="relu",
                         max_timestep=1024, max_trajectories=128),
    # The Ring Attention paper's RL model size: about 350M parameters.
    "350m": ModelConfig(num_layers=24, embed_dim=1024, num_heads=16, num_kv_heads=16, activation="gelu",
                        max_timestep=1024, max_trajectories=256, attention="ring", scan_layers=True,
                        query_chunk_size=1024, key_chunk_size=1024, ffn_chunk_size=1024),
}


def preset(name: str, **overrides) -> ModelConfig:
    """A named preset with field overrides; unknown names list the known ones."""
    if name not in PRESETS:
        raise ValueError(f"model preset {name!r} is unknown; known presets: {sorted(PRESETS)}")
    return dataclasses.replace(PRESETS[name], **overrides)
