"""Chain-of-hindsight context sampler (Agentic Transformer; Decision Transformer and BC as special cases).

One context: draw ``k`` distinct episodes, sort them by ascending total return, relabel every episode's
target return to the largest return among them, and lay them end to end (the chain). Each step then
carries ``returns_to_go[t] = target - sum(rewards[:t])`` (the sum within the step's own episode; returns
are summed in float64 left to right, as in ``Trajectory.cumulative_rewards``). The completion flag is not
a batch key: it is derived once from ``returns_to_go <= 0`` where the model's inputs are built.

Which episodes may share a chain (``SamplerConfig.group_by``): ``"none"`` draws the k episodes from the
whole dataset (one observable task). ``"task"`` draws each chain's k episodes from one task of a
hidden-task family, grouped by the stored ``Trajectory.task`` parameter (equal vectors, one group);
``"history"`` from one history (``Trajectory.history``: the episodes of one environment, one task).
The group of each chain is drawn uniformly among the groups, so tasks mix across a batch and every task
counts alike however many episodes it has. Every episode must carry the grouping field and every group
at least k episodes (after ``filter_top_fraction``), else the sampler raises ``ValueError`` at
construction.

Batches are flat in time ("packed"): every context is a row of ``max_steps`` steps. When the chain is
longer, a window of ``max_steps`` consecutive chain steps is kept: ``window="end"`` keeps the last steps
(the best episode whole, earlier ones cut from the front), ``window="random"`` a uniformly placed window
(DT's random sub-trajectory). Shorter chains are padded at the end (``mask`` false), so under a causal
model valid steps never see padding. ``k = 1``, ``max_steps = K`` and ``window="random"`` give
Decision-Transformer contexts; ``filter_top_fraction=0.1`` with ``k = 1`` gives BC-10% data.

Batch keys (B = batch_size, S = max_steps):

=====================  =======  ==================  ============================================
key                    dtype    shape               meaning (padding value)
=====================  =======  ==================  ============================================
observations           float32  [B, S, obs_dim]     (0)
actions                float32  [B, S, act_dim]     (0); discrete actions: int32 [B, S]
rewards                float32  [B, S]              reward after the step's action (0)
returns_to_go          float32  [B, S]              target minus reward collected before t (0)
timesteps              int32    [B, S]              step index within its episode (0)
trajectory_index       int32    [B, S]              position in the ascending chain, 0..k-1 (0)
mask                   bool     [B, S]              a real step, not padding
loss_mask              bool     [B, S]              steps whose action prediction is trained
target_return          float32  [B]                 the chain's best return
num_trajectories       int32    [B]                 episodes at least partly inside the window
labels                 as actions                   only when the episodes carry labels (DPT)
=====================  =======  ==================  ============================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np

from datasets.prefetch import Prefetcher
from datasets.trajectory import Trajectory

__all__ = ["SamplerConfig", "ContextSampler", "top_fraction"]


@dataclasses.dataclass(frozen=True)
class SamplerConfig:
    """How contexts are drawn. The random stream is the caller's (training: one per (train.seed, step)).

    Attributes:
        num_trajectories: k, episodes per context (the most, with ``k_sampling="uniform"``).
        k_sampling: ``"fixed"`` draws k episodes for every context; ``"uniform"`` draws each context's
            k uniformly from 1..num_trajectories, so the model also trains on short chains.
        max_steps: S, steps per context row (the step budget).
        batch_size: B, contexts per batch.
        window: ``"end"`` or ``"random"``: which S steps of a longer chain to keep.
        loss_on: ``"all"`` trains every real step, ``"last"`` only the best (last) episode's steps.
        filter_top_fraction: keep only this fraction of episodes with the highest returns (at least one).
        prefetch: batches computed ahead in a background thread.
        group_by: ``"none"``, ``"task"`` or ``"history"``: which episodes may share one chain (see the
            module docstring).
        order: ``"return"`` (the chain of hindsight: k distinct episodes, ascending by return) or
            ``"history"`` (Algorithm Distillation: k consecutive episodes of one history in the order they
            were played, from a uniformly drawn start; needs ``group_by="history"``).
    """

    num_trajectories: int = 4
    max_steps: int = 4000
    batch_size: int = 8
    window: Literal["end", "random"] = "end"
    k_sampling: Literal["fixed", "uniform"] = "fixed"
    loss_on: Literal["all", "last"] = "all"
    filter_top_fraction: float = 1.0
    prefetch: int = 2
    group_by: Literal["none", "task", "history"] = "none"
    order: Literal["return", "history"] = "return"

    def __post_init__(self):
        for name in ("num_trajectories", "max_steps", "batch_size", "prefetch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"SamplerConfig.{name} must be a positive int, got {getattr(self, name)!r}")
        if self.window not in ("end", "random"):
            raise ValueError(f"SamplerConfig.window must be 'end' or 'random', got {self.window!r}")
        if self.k_sampling not in ("fixed", "uniform"):
            raise ValueError(f"SamplerConfig.k_sampling must be 'fixed' or 'uniform', got {self.k_sampling!r}")
        if self.loss_on not in ("all", "last"):
            raise ValueError(f"SamplerConfig.loss_on must be 'all' or 'last', got {self.loss_on!r}")
        if self.group_by not in ("none", "task", "history"):
            raise ValueError(f"SamplerConfig.group_by must be 'none', 'task' or 'history', got {self.group_by!r}")
        if self.order not in ("return", "history"):
            raise ValueError(f"SamplerConfig.order must be 'return' or 'history', got {self.order!r}")
        if self.order == "history" and self.group_by != "history":
            raise ValueError("SamplerConfig.order='history' plays one history in its own order, so it needs "
                             f"group_by='history', got group_by={self.group_by!r}")
        if not 0.0 < self.filter_top_fraction <= 1.0:
            raise ValueError(f"SamplerConfig.filter_top_fraction must be in (0, 1], got {self.filter_top_fraction}")


def top_fraction(trajectories: Sequence[Trajectory], fraction: float) -> list[Trajectory]:
    """The ``ceil(fraction * n)`` episodes with the highest returns, in their original order."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    returns = np.array([t.total_return for t in trajectories])
    keep = max(1, math.ceil(fraction * len(trajectories) - 1e-9))
    chosen = np.sort(np.argsort(-returns, kind="stable")[:keep])
    return [trajectories[i] for i in chosen]


class ContextSampler:
    """Samples fixed-shape context batches from the episodes of one task (or task family, see ``group_by``).

    Args:
        trajectories: the episodes (all with equal observation and action sizes).
        config: SamplerConfig.
    """

    def __init__(self, trajectories: Sequence[Trajectory], config: SamplerConfig):
        if not trajectories:
            raise ValueError("ContextSampler needs at least one trajectory")
        dims = {(t.observation_dim, t.action_dim, t.discrete) for t in trajectories}
        if len(dims) != 1:
            raise ValueError(f"trajectories disagree on (observation size, action size, discrete): {sorted(dims)}")
        self.config = config
        self.trajectories = top_fraction(trajectories, config.filter_top_fraction)
        if config.num_trajectories > len(self.trajectories):
            raise ValueError(f"SamplerConfig.num_trajectories={config.num_trajectories} exceeds the "
                             f"{len(self.trajectories)} episodes available (after filter_top_fraction="
                             f"{config.filter_top_fraction})")
        self.returns = np.array([t.total_return for t in self.trajectories])
        self.observation_dim, self.action_dim, self.discrete = dims.pop()
        self.groups = _groups(self.trajectories, config)
        labelled = {t.labels is not None for t in self.trajectories}
        if len(labelled) != 1:
            raise ValueError("some episodes carry labels (the action to predict) and others do not")
        self.labelled = labelled.pop()

    def _action_spec(self) -> tuple[tuple[int, ...], np.dtype]:
        b, s = self.config.batch_size, self.config.max_steps
        return ((b, s), np.dtype(np.int32)) if self.discrete else ((b, s, self.action_dim), np.dtype(np.float32))


    def spec(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        """``{key: (shape, dtype)}`` of every batch."""
        b, s = self.config.batch_size, self.config.max_steps
        labelled = {"labels": self._action_spec()} if self.labelled else {}
        return labelled | {
            "observations": ((b, s, self.observation_dim), np.dtype(np.float32)),
            "actions": self._action_spec(),
            "rewards": ((b, s), np.dtype(np.float32)),
            "returns_to_go": ((b, s), np.dtype(np.float32)),
            "timesteps": ((b, s), np.dtype(np.int32)),
            "trajectory_index": ((b, s), np.dtype(np.int32)),
            "mask": ((b, s), np.dtype(np.bool_)),
            "loss_mask": ((b, s), np.dtype(np.bool_)),
            "target_return": ((b,), np.dtype(np.float32)),
            "num_trajectories": ((b,), np.dtype(np.int32)),
        }

    def sample_batch(self, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """One batch drawn with ``rng`` (see the module docstring for keys and shapes)."""
        batch = {key: np.zeros(shape, dtype) for key, (shape, dtype) in self.spec().items()}
        for row in range(self.config.batch_size):
            self._fill_row(batch, row, rng)
        return batch

    def batches(self, seed) -> Iterator[dict[str, np.ndarray]]:
        """Endless batches from ``np.random.default_rng(seed)``."""
        rng = np.random.default_rng(seed)
        while True:
            yield self.sample_batch(rng)

    def prefetch(self, seed) -> Prefetcher[dict[str, np.ndarray]]:
        """The same sequence as ``batches(seed)``, computed ``config.prefetch`` batches ahead in a thread."""
        iterator = self.batches(seed)
        return Prefetcher(lambda: next(iterator), self.config.prefetch)

    def chain(self, rng: np.random.Generator) -> list[int]:
        """Indices into ``self.trajectories`` of k distinct episodes (of one group), ascending by return
        (``order="history"``: k consecutive episodes of one history, in the order they were played)."""
        k = self.config.num_trajectories
        if self.config.k_sampling == "uniform":
            k = int(rng.integers(1, k + 1))
        if self.config.order == "history":
            group = self.groups[int(rng.integers(len(self.groups)))]  # in dataset (= played) order
            start = int(rng.integers(0, len(group) - k + 1))
            return [int(i) for i in group[start:start + k]]
        if self.groups is None:
            chosen = rng.choice(len(self.trajectories), size=k, replace=False)
        else:
            group = self.groups[int(rng.integers(len(self.groups)))]
            chosen = group[rng.choice(len(group), size=k, replace=False)]
        return [int(i) for i in chosen[np.argsort(self.returns[chosen], kind="stable")]]

    def _fill_row(self, batch: dict[str, np.ndarray], row: int, rng: np.random.Generator) -> None:
        config = self.config
        chain = self.chain(rng)
        target = float(self.returns[chain].max())  # the last one's, unless the chain is in history order
        lengths = [len(self.trajectories[i]) for i in chain]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        total = int(offsets[-1])
        start = 0
        if total > config.max_steps:
            start = total - config.max_steps if config.window == "end" else int(
                rng.integers(0, total - config.max_steps + 1))
        stop = min(total, start + config.max_steps)
        kept = 0
        for position, index in enumerate(chain):
            first, last = max(start, offsets[position]), min(stop, offsets[position + 1])
            if first >= last:
                continue
            kept += 1
            self._write(batch, row, slice(first - start, last - start), self.trajectories[index],
                        int(first - offsets[position]), int(last - offsets[position]), target, position)
        batch["mask"][row, :stop - start] = True
        if config.loss_on == "all":
            batch["loss_mask"][row] = batch["mask"][row]
        else:
            batch["loss_mask"][row] = batch["mask"][row] & (batch["trajectory_index"][row] == len(chain) - 1)
        batch["target_return"][row] = target
        batch["num_trajectories"][row] = kept

    @staticmethod
    def _write(batch, row: int, out: slice, trajectory: Trajectory, a: int, b: int, target: float,
               position: int) -> None:
        """Copy steps ``a:b`` of one episode into ``batch[...][row, out]``."""
        cumulative = trajectory.cumulative_rewards
        batch["observations"][row, out] = trajectory.observations[a:b]
        batch["actions"][row, out] = trajectory.actions[a:b]
        if trajectory.labels is not None:
            batch["labels"][row, out] = trajectory.labels[a:b]
        batch["rewards"][row, out] = trajectory.rewards[a:b]
        before = cumulative[a - 1:b - 1] if a > 0 else np.concatenate([[0.0], cumulative[:b - 1]])
        batch["returns_to_go"][row, out] = target - before
        batch["timesteps"][row, out] = np.arange(a, b, dtype=np.int32)
        batch["trajectory_index"][row, out] = position


def _groups(trajectories: Sequence[Trajectory], config: SamplerConfig) -> list[np.ndarray] | None:
    """Indices of the episodes of each group (in order of first appearance), or None without grouping."""
    if config.group_by == "none":
        return None
    field = config.group_by
    keys: dict = {}
    for index, trajectory in enumerate(trajectories):
        value = getattr(trajectory, field)
        if value is None:
            raise ValueError(f"SamplerConfig.group_by={field!r} needs every episode's {field}, but "
                             f"{trajectory.source} has none (collect with a hidden-task family's data writer)")
        key = value.tobytes() if field == "task" else value
        keys.setdefault(key, []).append(index)
    groups = [np.array(indices) for indices in keys.values()]
    smallest = min(groups, key=len)
    if config.num_trajectories > len(smallest):
        example = trajectories[int(smallest[0])]
        raise ValueError(f"SamplerConfig.num_trajectories={config.num_trajectories} exceeds the {len(smallest)} "
                         f"episodes of {field} {getattr(example, field)!r} (after filter_top_fraction="
                         f"{config.filter_top_fraction}); every {field} needs at least k episodes")
    return groups
