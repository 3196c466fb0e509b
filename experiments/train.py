"""Train the Agentic Transformer: data -> sampler -> sharded train step, with logs, checkpoints and resume.

    python -m experiments.train                        # the main job, dark_room (makes its data; <10 min)
    python -m experiments.train --preset tiny          # seconds
    python -m experiments.train --preset walker_walk --data.root ~/exorl --train.mesh dp=2,sp=4
    python -m experiments.train --help                 # every preset and field, with choices

Runs live in ``runs/<name>/`` (``experiments.run`` lists the files). Starting the same command again
resumes from the last checkpoint with the same data order; a finished run prints its saved summary; a run
directory made with another config is refused, and ``--force`` resumes it under the new config only when its
checkpoints fit the new model (never training over, or rotating away, checkpoints made with another
config); a second process on the same run directory is refused while the first holds it. Several hosts: the same command in every process with
``--distributed.enable`` (cluster detected) or ``--distributed.coordinator host:port
--distributed.num-processes N --distributed.process-id I``; only process 0 writes files.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time

from experiments.cli import EXPECTED_ERRORS, ConfigArg, DistributedArgs, JobError, PresetArg, fail, parse
from experiments.config import ExperimentConfig
from experiments.own_data import check_inherited
from experiments.presets import DEFAULT_PRESET, PRESETS, get_preset
from experiments.reports import summary_table
from experiments.run import DataSummary, RunDir, check_task, check_trials, is_writer


class NonFiniteLoss(JobError):
    """The loss, the gradient norm or the state to be saved is not finite: training stops, and what is on
    disk is only what was finite."""


@dataclasses.dataclass(frozen=True)
class TrainCommand:
    """Train (or resume) a run, then evaluate it over several in-context trials.

    Attributes:
      config: the run's config.
      preset: the base config.
      force: resume a run directory whose saved config differs, under this one, when its checkpoints fit
        this config's model (e.g. a changed learning rate or more steps); otherwise it is refused, naming
        the fields that differ. Nothing made with the other config is deleted.
      distributed: several processes as one JAX runtime.
    """

    config: ConfigArg
    preset: PresetArg = DEFAULT_PRESET
    force: bool = False
    distributed: DistributedArgs = DistributedArgs()


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Which steps save a checkpoint and which evaluate (the last step does both, evaluation after training)."""

    total: int
    checkpoint_every: int
    eval_every: int

    def evaluates(self, step: int) -> bool:
        return bool(self.eval_every) and step % self.eval_every == 0 and step != self.total

    def saves(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.total or self.evaluates(step)


class MetricLog:
    """Reads each step's metrics one step late (so the host never waits on the step in flight), checks the
    loss is finite, and writes the progress bar and TensorBoard every ``log_every`` steps."""

    def __init__(self, config: ExperimentConfig, run: RunDir, start: int, quiet: bool):
        from tqdm import tqdm

        self.config, self.last, self._pending = config, {}, None
        self.good_step = start or None  # the newest checkpoint known finite: restored, or saved by this process
        # The first step compiles (or loads from the compilation cache) before the bar moves: it says so.
        self.bar = tqdm(total=config.train.steps, initial=start, desc=f"{config.name} (compiling the train step)",
                        disable=quiet, dynamic_ncols=True)
        self._compiling = True
        self.writer = None
        if is_writer():
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(str(run.path / "tb"))
            # The config beside the curves, at the step it takes over from (a --force resume may change it).
            self.writer.add_text("config", "```\n" + config.to_json() + "\n```", start)
        self._tokens, self._tick = 0.0, time.perf_counter()

    def push(self, step: int, metrics) -> None:
        """Logs the previous step, keeps this one for later."""
        if self._compiling:
            self._compiling = False
            self.bar.set_description(self.config.name)
        self.flush()
        self._pending = (step, metrics)

    def flush(self) -> None:
        if self._pending is None:
            return
        import jax

        step, metrics = self._pending
        self._pending = None
        values = {k: float(v) for k, v in jax.device_get(metrics).items()}
        self.last.update(values)
        for name in ("loss", "grad_norm"):
            if not math.isfinite(values[name]):
                self.stop(f"{name} became {values[name]} at step {step}")
        self._tokens += values["tokens"]
        self.bar.update(step - self.bar.n)
        if step % self.config.train.log_every == 0 or step == self.config.train.steps:
            now = time.perf_counter()
            rate = self._tokens / max(now - self._tick, 1e-9)
            self.bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{rate:,.0f}")
            if self.writer is not None:
                for name in ("loss", "grad_norm", "learning_rate"):
                    self.writer.add_scalar(f"train/{name}", values[name], step)
                self.writer.add_scalar("train/tokens_per_second", rate, step)
            self._tokens, self._tick = 0.0, now

    def stop(self, what: str):
        """Raises ``NonFiniteLoss`` naming the checkpoint that really is good."""
        where = self.config.run_dir / "checkpoints"
        good = (f"checkpoint {self.good_step} in {where} is the last good one" if self.good_step else
                f"no checkpoint was kept ({where} holds none of this run)")
        raise NonFiniteLoss(f"{what}; stopping before it is saved. {good} (lower optim.learning_rate or a smaller "
                            "optim.clip_norm, then resume)")

    def evaluation(self, result: dict, step: int) -> None:
        if self.writer is None:
            return
        for trial, value in enumerate(result["per_trial_mean_return"], start=1):  # trials count from 1, as in eval.md
            self.writer.add_scalar(f"eval/trial_{trial}_mean_return", value, step)
        self.writer.add_scalar("eval/last_trial_mean_return", result["last_trial_mean_return"], step)
        self.writer.add_scalar("eval/best_of_n_mean_return", result["best_of_n_mean_return"], step)
        for trial, rate in enumerate(result.get("per_trial_success_rate") or [], start=1):
            self.writer.add_scalar(f"eval/trial_{trial}_success_rate", rate, step)
        if floor := result.get("random_floor"):
            self.writer.add_scalar("eval/random_floor_last_trial_mean_return", floor["last_trial_mean_return"], step)
            if floor.get("per_trial_success_rate"):
                self.writer.add_scalar("eval/random_floor_last_trial_success_rate",
                                       floor["per_trial_success_rate"][-1], step)
        for name, value in (result.get("normalized") or {}).items():
            if isinstance(value, float):
                self.writer.add_scalar(f"eval/normalized_{name}", value, step)

    def close(self) -> None:
        self.bar.close()
        if self.writer is not None:
            self.writer.close()


def finished_summary(config: ExperimentConfig) -> dict | None:
    """The saved summary of a run that has already trained with exactly ``config``; None otherwise."""
    run = RunDir(config.run_dir)
    summary = run.summary()
    if summary is None or summary.get("steps") != config.train.steps:
        return None
    return summary if run.saved_config() == config else None


def train(config: ExperimentConfig, *, force: bool = False, evaluate_at_end: bool = True, until: int | None = None,
          quiet: bool = False, episodes=None) -> dict:
    """Trains (or resumes) ``config``'s run up to step ``until`` (default: the end), then evaluates.

    ``episodes``: the episodes of ``config.data``, when the caller has read them already (a sweep reads
    them once for all its cells).

    Returns:
      The summary (also ``<run>/summary.json``); ``{"stopped_at": until}`` when stopped before the end.
      A finished run is not trained again: its saved summary is returned.
    """
    import envs
    from experiments.own_data import resolve_task
    from experiments.pipeline import load_episodes

    config = resolve_task(config)  # the own-data presets: the task the data names
    envs.task_spec(config.data.task)  # an unknown task fails now, before anything is read or written
    check_trials(config)
    if config.eval.video:  # MUJOCO_GL is read once, when mujoco is first imported (reading data may do it)
        envs.video.choose_headless_backend()
    if (summary := finished_summary(config)) is not None and until is None:
        return {**summary, "already_finished": True}
    if episodes is None:
        made = f"; {config.data.make} histories are written first where missing" if config.data.make != "none" else ""
        _say(quiet, f"{config.name}: reading the data under {config.data.root}{made}")
        episodes = load_episodes(config.data)
    setup = _setup(config, episodes)  # a setup refused here leaves no run directory behind
    run = RunDir(config.run_dir)
    with run.lock():
        changed = run.check_config(config, force)  # refused here without --force, before any work
        return _train(config, run, episodes, setup, changed=changed, force=force, evaluate_at_end=evaluate_at_end,
                      until=until, quiet=quiet)


def _setup(config: ExperimentConfig, episodes):
    """(data, stats, model, mesh): every check of ``config`` against the data, the evaluation task and the
    devices, made before the run directory is touched and anything compiles."""
    from datasets import NormStats
    from experiments.model import build_model

    data, stats = DataSummary.of(episodes), NormStats.compute(episodes)
    check_task(config, data)  # else evaluation would fail, after the whole training run
    model, mesh = build_model(config, data, stats)
    return data, stats, model, mesh


def _train(config, run: RunDir, episodes, setup, *, changed: list[str], force: bool, evaluate_at_end: bool,
           until: int | None, quiet: bool) -> dict:
    from agent.train import batch_shardings, make_train_step
    from experiments.evaluate import evaluate
    from experiments.model import initial_state
    from experiments.pipeline import BatchStream

    data, stats, model, mesh = setup
    run.check_data(data, force)
    _say(quiet, f"{config.name}: {data.episodes} episodes; initialising the model (compiled, or loaded from the "
                f"compilation cache in {_cache_dir()})")
    step_fn, state = make_train_step(model, config.optim, initial_state(config, model, data), mesh)
    shardings = batch_shardings(mesh, model.batch_axes, model.sequence_axis)
    checkpoints = run.checkpoints(config)
    try:
        state, start = _resume(config, run, checkpoints, state, changed, quiet)
    except BaseException:
        checkpoints.close()
        raise
    # Only a run that can go on claims the directory: a refusal above leaves the config and data on disk as
    # they were, so the checkpoints stay those of the config.json beside them.
    run.claim(config, force=True)
    run.save_data(data, stats)
    total = config.train.steps
    stop = total if until is None else min(until, total)
    schedule = Schedule(total, config.train.checkpoint_every, config.train.eval_every)
    log, stream = MetricLog(config, run, start, quiet), BatchStream(config, episodes, start)
    if start:  # a resume that runs no step still reports the loss it stopped at
        log.last.update(checkpoints.notes(start))
    try:
        for step in range(start, stop):
            state, metrics = step_fn(state, _global(next(stream), shardings))
            log.push(step + 1, metrics)
            if schedule.saves(step + 1) or step + 1 == stop:
                log.flush()  # a non-finite loss stops here, before it is saved
                if not _finite(state):  # a finite loss can still leave non-finite parameters (a NaN update)
                    log.stop(f"the parameters or optimiser state became non-finite by step {step + 1}")
                scores = None
                if schedule.evaluates(step + 1):
                    result = evaluate(config, state.params, model, data, run, extra=run.provenance(step + 1))
                    log.evaluation(result, step + 1)
                    scores = {checkpoints.metric: result["last_trial_mean_return"]}
                checkpoints.save(step + 1, state, scores,
                                 notes={name: log.last[name] for name in ("loss", "grad_norm")})
                log.good_step = step + 1
        log.flush()
        if stop < total:
            return {"stopped_at": stop}
        result = None
        if evaluate_at_end:
            result = evaluate(config, state.params, model, data, run, extra=run.provenance(total))
            log.evaluation(result, total)
    finally:
        log.close()
        stream.close()
        checkpoints.close()
    summary = {"run_dir": str(run.path), "steps": total, "final_loss": log.last.get("loss", float("nan")),
               "eval": result, "tensorboard": str(run.path / "tb"), "checkpoints": str(run.path / "checkpoints")}
    run.write_json("summary.json", summary)
    return summary


def _say(quiet: bool, text: str) -> None:
    """A line on stderr about what the job is doing (where the progress bars are)."""
    if not quiet and is_writer():
        print(text, file=sys.stderr, flush=True)


def _cache_dir() -> str:
    import jax

    return jax.config.jax_compilation_cache_dir or "no directory: off"


def _resume(config: ExperimentConfig, run: RunDir, checkpoints, state, changed: list[str], quiet: bool):
    """(state, step) of the latest checkpoint that restores into ``state``'s shapes, or (``state``, 0).

    Refuses checkpoints made with another config that do not fit this one (``--force`` resumes only those
    that do; it never trains over them, so they are never rotated away) and a ``train.steps`` below the
    latest checkpoint's step.
    """
    from experiments.checkpoints import CheckpointMismatch

    try:
        restored, start = checkpoints.restore_latest(state, set_aside=True)
    except CheckpointMismatch as error:
        made_with = f"made with another config ({', '.join(changed)})" if changed else "of other shapes"
        raise ValueError(f"{run.path / 'checkpoints'} holds checkpoints {made_with} that do not fit this one "
                         f"({error}); choose another --name to train this config") from None
    if restored is None:
        if checkpoints.unreadable:
            print(f"{run.path}: no checkpoint restores; training starts again from step 0", file=sys.stderr)
        return state, 0
    if start > config.train.steps:
        raise ValueError(f"train.steps={config.train.steps} is below step {start} of the latest checkpoint in "
                         f"{run.path / 'checkpoints'}; ask for at least {start} steps, or choose another --name")
    if not quiet:
        print(f"resuming {run.path} from step {start}")
    return restored, start


@functools.cache
def _all_finite():
    import jax
    import jax.numpy as jnp

    @jax.jit
    def all_finite(state):
        checks = [jnp.isfinite(x).all() for x in jax.tree.leaves(state) if jnp.issubdtype(x.dtype, jnp.inexact)]
        return jnp.all(jnp.stack(checks))

    return all_finite


def _finite(state) -> bool:
    """Whether every floating-point array of ``state`` is finite (one scalar read back)."""
    return bool(_all_finite()(state))


def _global(batch: dict, shardings: dict) -> dict:
    """With several processes, every host builds the same global batch (same seed and step) and hands
    over only the shards its own devices hold; with one process jit places the NumPy arrays itself."""
    import jax

    if jax.process_count() == 1:
        return batch
    return {k: jax.make_array_from_callback(v.shape, shardings[k], lambda index, v=v: v[index])
            for k, v in batch.items()}


def main(argv=None) -> int:
    try:
        command = parse(TrainCommand, argv, description=__doc__.splitlines()[0])
        check_inherited(command.preset, get_preset(command.preset), command.config)
        command.distributed.initialize()
        summary = train(command.config, force=command.force)
    except EXPECTED_ERRORS as error:
        return fail(error)
    if summary.get("already_finished"):
        print(f"{summary['run_dir']} has finished training; its saved summary (pass another --name to train anew):")
    preset = PRESETS.get(command.preset)
    same_task = preset is not None and preset.config.data.task == command.config.data.task
    print(summary_table(summary, references=preset.references if same_task else ()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
