"""Orbax checkpoints of the TrainState: keep the last N and the best, and survive a corrupt one."""

from __future__ import annotations

import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


class Checkpoints:
    """Saves and restores TrainStates under ``<run>/checkpoints/<step>``.

    Args:
      directory: the checkpoint directory.
      keep: the number of most recent checkpoints kept; the best by ``metric`` is kept as well.
      metric: the evaluation metric (higher is better) that picks the best checkpoint.
    """

    def __init__(self, directory: Path, keep: int, metric: str = "eval/last_trial_mean_return"):
        self.metric = metric
        policy = pp.AnyPreservationPolicy([
            pp.LatestN(n=keep),
            pp.BestN(get_metric_fn=lambda metrics: metrics[metric], n=1, keep_checkpoints_without_metrics=False),
        ])
        options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def save(self, step: int, state, metrics: dict | None = None) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True)
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore_latest(self, like):
        """The newest checkpoint that restores, falling back past corrupt ones (and saying so).

        Args:
          like: a TrainState (or its abstract shapes with shardings) to restore into.

        Returns:
          (state, step), or (None, None) when there is no checkpoint.
        """
        abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                                if hasattr(x, "sharding") else x, like)
        for step in reversed(self.steps()):
            try:
                state = self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
                return state, step
            except Exception as error:  # noqa: BLE001 - any failure to read this one: try the one before
                print(f"checkpoint {step} could not be restored ({type(error).__name__}: {error}); "
                      "falling back to the previous one", file=sys.stderr)
        return None, None

    def close(self) -> None:
        self.manager.close()
