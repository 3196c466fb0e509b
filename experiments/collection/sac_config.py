"""The soft actor-critic's hyper-parameters, apart from its networks: a collection's command line parses them
without importing JAX or Flax (``experiments.collection.sac`` holds the networks and the update)."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """Hyper-parameters of the soft actor-critic (defaults: the usual DMC settings).

    Attributes:
        hidden: widths of the hidden layers of the actor and of each critic.
        learning_rate: Adam step size of actor, critics and temperature.
        batch_size: transitions per gradient step.
        discount: gamma of the soft Bellman target.
        tau: Polyak rate of the target critics.
        init_temperature: alpha at the start.
        target_entropy_scale: target entropy is ``-scale * act_dim``.
        warmup_steps: uniform random actions (and no updates) for this many agent steps.
        update_every: gradient steps are done in one jitted call every this many agent steps.
        updates_per_step: update-to-data ratio (``update_every * updates_per_step`` gradient steps per
            call, an integer); lower values learn more slowly per episode.
        buffer_capacity: replay buffer size (first in, first out).
    """

    hidden: tuple[int, ...] = (256, 256)
    learning_rate: float = 3e-4
    batch_size: int = 256
    discount: float = 0.99
    tau: float = 0.005
    init_temperature: float = 0.1
    target_entropy_scale: float = 1.0
    warmup_steps: int = 2000
    update_every: int = 10
    updates_per_step: float = 1.0
    buffer_capacity: int = 1_000_000

    def __post_init__(self):
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            raise ValueError(f"hidden: expected positive widths, got {self.hidden}")
        for name in ("learning_rate", "init_temperature", "target_entropy_scale"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        if not 0 <= self.discount < 1:
            raise ValueError(f"discount: must be in [0, 1), got {self.discount}")
        if not 0 < self.tau <= 1:
            raise ValueError(f"tau: must be in (0, 1], got {self.tau}")
        for name in ("batch_size", "update_every", "buffer_capacity"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be a positive integer, got {getattr(self, name)}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps: must be non-negative, got {self.warmup_steps}")
        per_call = self.update_every * self.updates_per_step
        if not 0 < self.updates_per_step <= 16 or per_call < 1 or abs(per_call - round(per_call)) > 1e-9:
            raise ValueError(f"updates_per_step: must be in (0, 16] with update_every * updates_per_step a "
                             f"positive integer, got {self.updates_per_step} (update_every {self.update_every})")

    @property
    def updates_per_call(self) -> int:
        """Gradient steps in one jitted call (done every ``update_every`` agent steps)."""
        return round(self.update_every * self.updates_per_step)
