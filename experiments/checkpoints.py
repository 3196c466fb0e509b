"""Orbax checkpoints of the TrainState: keep the last N and the best, and survive a damaged one.

A step that cannot be read is renamed ``<step>.unreadable-<n>`` (kept for a person to inspect, out of
orbax's sight) before training can reach that step again and try to save over it. A step that reads but
holds arrays of other shapes was made with another config: that is refused (``CheckpointMismatch``), never
set aside or rotated away.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


class CheckpointMismatch(ValueError):
    """A checkpoint that reads, but holds a state of other shapes than the one asked for."""

    def __init__(self, step: int, detail: str):
        super().__init__(f"checkpoint {step} holds a state of other shapes ({detail})")
        self.step = step


class Checkpoints:
    """Saves and restores TrainStates under ``<run>/checkpoints/<step>``.

    Args:
      directory: the checkpoint directory.
      keep: the number of most recent checkpoints kept; the best by ``metric`` is kept as well.
      metric: the evaluation metric (higher is better) that picks the best checkpoint.
    """

    def __init__(self, directory: Path, keep: int, metric: str = "eval/last_trial_mean_return"):
        self.directory = Path(directory).absolute()
        self.keep, self.metric = keep, metric
        self._writer = None
        self.unreadable: list[str] = []  # the steps the last restore_latest could not read, and why

    @property
    def manager(self) -> ocp.CheckpointManager:
        """The manager that saves and rotates; made on first use, so that reading a run creates nothing."""
        if self._writer is None:
            policy = pp.AnyPreservationPolicy([
                pp.LatestN(n=self.keep),
                pp.BestN(get_metric_fn=lambda metrics: metrics[self.metric], n=1,
                         keep_checkpoints_without_metrics=False),
            ])
            # best_fn makes orbax store each step's metrics (without it none are kept, nothing is ever the
            # best, and checkpoint="best" has nothing to read); a step saved without them is expected here.
            options = ocp.CheckpointManagerOptions(preservation_policy=policy, enable_async_checkpointing=False,
                                                   best_fn=lambda metrics: metrics[self.metric])
            logging.getLogger("absl").addFilter(_NO_METRICS_WARNING)  # once: the same filter
            self._writer = ocp.CheckpointManager(self.directory, options=options)
        return self._writer

    def _reader(self) -> ocp.CheckpointManager:
        # A fresh manager for every read: one that failed to restore a damaged step cannot be trusted to
        # restore the others (orbax keeps state from the failed attempt).
        options = ocp.CheckpointManagerOptions(create=False, save_root_metadata=False,
                                               enable_async_checkpointing=False)
        return ocp.CheckpointManager(self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler())

    def save(self, step: int, state, metrics: dict | None = None, notes: dict | None = None) -> None:
        """Saves ``state`` as ``step``; ``notes`` (JSON values, e.g. the step's loss) are kept beside it."""
        self.manager.save(step, args=ocp.args.StandardSave(state), metrics=metrics, force=True,
                          custom_metadata=notes or {})
        self.manager.wait_until_finished()

    def steps(self) -> list[int]:
        reader = self._reader()
        try:
            return sorted(reader.all_steps())
        finally:
            reader.close()

    def notes(self, step: int) -> dict:
        """The ``notes`` saved with ``step`` ({} for checkpoints saved without them)."""
        reader = self._reader()
        try:
            return dict(reader.metadata(step).custom_metadata or {})
        finally:
            reader.close()

    def restore_latest(self, like, *, set_aside: bool = False):
        """The newest checkpoint that restores, falling back past unreadable ones (and saying so in one line).

        Steps are listed again after every failure, so a step deleted or added by a trainer while this reads
        is seen. A step that reads as a state of other shapes raises ``CheckpointMismatch``.

        Args:
          like: a TrainState (or its abstract shapes with shardings) to restore into.
          set_aside: rename each unreadable step ``<step>.unreadable-<n>`` (the trainer, which holds the run;
            an evaluation leaves the run as it is).

        Returns:
          (state, step), or (None, None) when no checkpoint restores.
        """
        abstract = _abstract(like)
        tried, unreadable = set(), self.unreadable
        unreadable.clear()
        while untried := [step for step in self.steps() if step not in tried]:
            step = max(untried)
            tried.add(step)
            reader = self._reader()
            try:
                state = reader.restore(step, args=ocp.args.StandardRestore(abstract))
            except Exception as error:  # noqa: BLE001 - orbax and tensorstore raise many types for a damaged step
                self._check_shapes(step, abstract)
                text = str(error).strip()
                reason = type(error).__name__ + (f": {text.splitlines()[0][:160]}" if text else "")
                moved = self._set_aside(step) if set_aside else None
                unreadable.append(f"checkpoint {step} could not be restored ({reason}"
                                  + (f"; set aside as {moved}" if moved else "") + ")")
                continue
            finally:
                reader.close()
            if unreadable:
                print(f"{self.directory}: {', '.join(unreadable)}; restored step {step} instead", file=sys.stderr)
            return state, step
        if unreadable:
            print(f"{self.directory}: {', '.join(unreadable)}; no checkpoint restores", file=sys.stderr)
        return None, None

    def restore(self, like, step: int):
        """Checkpoint ``step`` restored into ``like``'s shapes (no fallback: the step asked for, or an error).

        Raises:
          ValueError: naming ``checkpoint`` and the steps there are, when ``step`` is not one of them;
            ``CheckpointMismatch`` when it holds a state of other shapes.
        """
        steps = self.steps()
        if step not in steps:
            raise ValueError(f"checkpoint={step}: {self.directory} holds the steps {steps or 'none'}")
        abstract = _abstract(like)
        reader = self._reader()
        try:
            return reader.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception:
            self._check_shapes(step, abstract)  # a mismatch is named as such; anything else keeps its error
            raise
        finally:
            reader.close()

    def best_step(self) -> int:
        """The step with the highest ``metric`` among the checkpoints that were scored (those saved by an
        evaluation during training: ``train.eval_every``; the final evaluation comes after the last save).

        Raises:
          ValueError: naming ``checkpoint="best"`` when no checkpoint was scored.
        """
        reader = self._reader()
        try:
            scored = {step: (reader.metrics(step) or {}).get(self.metric) for step in reader.all_steps()}
        finally:
            reader.close()
        scored = {step: score for step, score in scored.items() if score is not None}
        if not scored:
            raise ValueError(f'checkpoint="best": no checkpoint in {self.directory} was scored by an evaluation '
                             'during training (train.eval_every); ask for "latest" or a step')
        return max(scored, key=lambda step: (scored[step], step))

    def _check_shapes(self, step: int, abstract) -> None:
        """Raises ``CheckpointMismatch`` when ``step``'s metadata reads and its arrays differ from ``abstract``'s."""
        reader = self._reader()
        try:
            metadata = reader.item_metadata(step)
        except Exception:  # noqa: BLE001 - unreadable metadata is damage, which the caller handles
            return
        finally:
            reader.close()
        saved = sorted((tuple(m.shape), str(m.dtype)) for m in jax.tree.leaves(metadata) if hasattr(m, "shape"))
        wanted = sorted((tuple(x.shape), str(x.dtype)) for x in jax.tree.leaves(abstract))
        if saved and saved != wanted:
            extra = [s for s in saved if s not in wanted][:2]
            missing = [w for w in wanted if w not in saved][:2]
            raise CheckpointMismatch(step, f"{len(saved)} arrays against {len(wanted)}; saved but not wanted: "
                                           f"{extra}, wanted but not saved: {missing}")

    def _set_aside(self, step: int) -> str | None:
        """Renames an unreadable step out of orbax's sight (process 0 only); returns its new name."""
        source = self.directory / str(step)
        if jax.process_index() != 0 or not source.exists():
            return None
        n = 1
        while (self.directory / f"{step}.unreadable-{n}").exists():
            n += 1
        target = self.directory / f"{step}.unreadable-{n}"
        os.rename(source, target)
        if self._writer is not None:
            self._writer.reload()  # its cached list still holds the step
        return target.name

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _abstract(like):
    """``like`` as abstract arrays (shape, dtype and sharding: what orbax restores into)."""
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
                        if hasattr(x, "sharding") else x, like)


class _NoMetricsWarning(logging.Filter):
    """Drops orbax's warning for a step saved without metrics: only evaluated steps have them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "did not provide metrics" not in record.getMessage()


_NO_METRICS_WARNING = _NoMetricsWarning()
