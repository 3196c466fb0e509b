"""Train the Agentic Transformer: data -> sampler -> sharded train step, with logs, checkpoints and resume.

    python -m experiments.train                        # the default main job (built-in data, ~10 min)
    python -m experiments.train --preset tiny          # seconds
    python -m experiments.train --preset walker_walk --data.root ~/exorl --train.mesh dp=2,sp=4

Runs live in ``runs/<name>/``: config.json (the resolved config), norm_stats.json, data.json (dataset
return statistics), checkpoints/, tb/ (TensorBoard), and after evaluation eval.json, eval.md, eval.png.
Starting the same command again resumes from the last checkpoint with the same data order; a run
directory made with another config is refused unless ``--force``. Several hosts: run the same command
on each after ``jax.distributed.initialize()``; only process 0 writes files.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import jax
import numpy as np

from datasets import NormStats
from experiments.checkpoints import Checkpoints
from experiments.config import ExperimentConfig, parse_args
from experiments.data import BatchStream, dataset_returns, load_trajectories


class NonFiniteLoss(RuntimeError):
    pass


def _is_writer() -> bool:
    return jax.process_index() == 0


def _write_json(path: Path, payload) -> None:
    if _is_writer():
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
        tmp.replace(path)


def prepare_run(config: ExperimentConfig, force: bool = False) -> Path:
    """Creates ``runs/<name>`` with config.json, or checks that an existing run has the same config."""
    run_dir = config.run_dir
    saved = run_dir / "config.json"
    if saved.exists():
        previous = ExperimentConfig.from_json(saved.read_text())
        if previous != config and not force:
            changed = _differences(json.loads(previous.to_json()), json.loads(config.to_json()))
            raise ValueError(f"{run_dir} was made with a different config ({', '.join(changed)}); "
                             "choose another --name, or pass --force to resume with the new one")
    if _is_writer():
        run_dir.mkdir(parents=True, exist_ok=True)
        tmp = saved.with_suffix(".json.tmp")
        tmp.write_text(config.to_json())
        tmp.replace(saved)
    return run_dir


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if isinstance(a.get(key), dict) and isinstance(b.get(key), dict):
            out += _differences(a[key], b[key], f"{prefix}{key}.")
        elif a.get(key) != b.get(key):
            out.append(f"{prefix}{key}: {a.get(key)!r} -> {b.get(key)!r}")
    return out


def build(config: ExperimentConfig, trajectories):
    """The model, the mesh and a fresh TrainState for ``config`` and its data."""
    from agent.model import AgenticTransformer
    from agent.train import init_state
    from ring import make_mesh

    mesh = make_mesh(config.train.mesh)
    batch_devices = mesh.shape["dp"] * mesh.shape["fsdp"]
    if config.sampler.batch_size % batch_devices:
        raise ValueError(f"sampler.batch_size={config.sampler.batch_size} must divide over the {batch_devices} "
                         f"devices of dp x fsdp in train.mesh={config.train.mesh!r}")
    tokens = config.sampler.max_steps * config.model.tokens_per_step
    pieces = mesh.shape["sp"] * (2 if config.model.layout == "zigzag" else 1)
    if config.model.attention == "ring" and tokens % pieces:
        raise ValueError(f"a context of {tokens} tokens must divide into {pieces} pieces for sp={mesh.shape['sp']} "
                         f"and layout {config.model.layout!r}; change sampler.max_steps")
    action_dim = trajectories[0].action_dim
    longest = max(len(t) for t in trajectories)
    if longest > config.model.max_timestep:
        raise ValueError(f"episodes of {longest} steps exceed model.max_timestep={config.model.max_timestep}")
    model = AgenticTransformer(config.model, action_dim=action_dim,
                               mesh=mesh if config.model.attention == "ring" else None)
    example = BatchStream.example(config, trajectories)
    return model, mesh, init_state(model, config.optim, example, config.train.seed)


def train(config: ExperimentConfig, *, force: bool = False, evaluate_at_end: bool = True, stop_after=None,
          quiet: bool = False) -> dict:
    """Runs (or resumes) training, then evaluates. Returns the summary (also in ``<run>/summary.json``).

    ``stop_after``: end the process's work after this many steps of this call, as if killed (tests).
    """
    from tqdm import tqdm

    from agent.train import batch_shardings, make_train_step

    import envs

    envs.task_spec(config.data.task)  # an unknown task fails now, not after training
    run_dir = prepare_run(config, force)
    trajectories = load_trajectories(config.data)
    stats = NormStats.compute(trajectories)
    returns = dataset_returns(trajectories)
    if _is_writer():
        stats.save(run_dir / "norm_stats.json")
        _write_json(run_dir / "data.json", {"episodes": len(trajectories), "dataset_median_return": float(np.median(returns)),
                                            "dataset_max_return": float(returns.max()),
                                            "dataset_mean_return": float(returns.mean())})
    model, mesh, state = build(config, trajectories)
    step_fn, state = make_train_step(model, config.optim, state, mesh)
    batch_sharding = batch_shardings(mesh, model.batch_axes, model.sequence_axis)
    checkpoints = Checkpoints(run_dir / "checkpoints", config.train.keep_checkpoints)
    restored, start = checkpoints.restore_latest(state)
    if restored is not None:
        state = restored
        if not quiet:
            print(f"resuming {run_dir} from step {start}")
    start = start or 0
    writer = _summary_writer(run_dir) if _is_writer() else None
    stream = BatchStream(config, trajectories, stats, start)
    total = config.train.steps
    bar = tqdm(total=total, initial=start, desc=config.name, disable=quiet, dynamic_ncols=True)
    pending, tick, tokens = None, time.perf_counter(), 0.0
    eval_result, last = None, {}
    try:
        for step in range(start, total):
            if stop_after is not None and step - start >= stop_after:
                return {"stopped_at": step}
            state, metrics = step_fn(state, _global(next(stream), batch_sharding))
            if pending is not None:  # read the previous step's metrics: the host never waits on this one
                tokens, tick = _log(pending, writer, bar, config, tokens, tick, last)
            pending = (step + 1, metrics)
            done = step + 1
            if done % config.train.checkpoint_every == 0 or done == total or (
                    config.train.eval_every and done % config.train.eval_every == 0):
                tokens, tick = _log(pending, writer, bar, config, tokens, tick, last)  # checks the loss is finite
                pending = None
                ckpt_metrics = None
                if config.train.eval_every and done % config.train.eval_every == 0 and done != total:
                    eval_result = _evaluate(config, state.params, model, stats, returns, writer, done)
                    ckpt_metrics = {checkpoints.metric: eval_result["last_trial_mean_return"]}
                checkpoints.save(done, state, ckpt_metrics)
        if pending is not None:
            _log(pending, writer, bar, config, tokens, tick, last)
        if evaluate_at_end:
            eval_result = _evaluate(config, state.params, model, stats, returns, writer, total)
    finally:
        bar.close()
        stream.close()
        checkpoints.close()
        if writer is not None:
            writer.close()
    summary = {"run_dir": str(run_dir), "steps": total, "final_loss": last.get("loss", float("nan")),
               "eval": eval_result, "tensorboard": str(run_dir / "tb"), "checkpoints": str(run_dir / "checkpoints")}
    _write_json(run_dir / "summary.json", summary)
    return summary


def _global(batch: dict, shardings: dict) -> dict:
    """With several processes, every host builds the same global batch (same seed and step) and hands
    over only the shards its own devices hold; with one process jit places the NumPy arrays itself."""
    if jax.process_count() == 1:
        return batch
    return {k: jax.make_array_from_callback(v.shape, shardings[k], lambda index, v=v: v[index])
            for k, v in batch.items()}


def _log(pending, writer, bar, config, tokens, tick, last: dict):
    """Logs one step's metrics (raising on a non-finite loss); ``last`` keeps the latest values."""
    step, metrics = pending
    values = {k: float(v) for k, v in jax.device_get(metrics).items()}
    last.update(values)
    if not math.isfinite(values["loss"]):
        raise NonFiniteLoss(f"loss became {values['loss']} at step {step}; stopping. The last good checkpoint "
                            f"in {config.run_dir / 'checkpoints'} is kept (lower optim.learning_rate or raise "
                            "optim.clip_norm's strictness, then resume)")
    tokens += values["tokens"]
    bar.update(step - bar.n)
    if step % config.train.log_every == 0 or step == config.train.steps:
        now = time.perf_counter()
        rate = tokens / max(now - tick, 1e-9)
        bar.set_postfix(loss=f"{values['loss']:.4f}", tok_s=f"{rate:,.0f}")
        if writer is not None:
            for name in ("loss", "grad_norm", "learning_rate"):
                writer.add_scalar(f"train/{name}", values[name], step)
            writer.add_scalar("train/tokens_per_second", rate, step)
        tokens, tick = 0.0, now
    return tokens, tick


def _summary_writer(run_dir: Path):
    from tensorboardX import SummaryWriter

    return SummaryWriter(str(run_dir / "tb"))


def _evaluate(config, params, model, stats, returns, writer, step):
    from experiments.evaluate import evaluate_params, write_reports

    result = evaluate_params(config, params, model, stats, returns)
    if _is_writer():
        write_reports(config.run_dir, result)
        if writer is not None:
            for trial, value in enumerate(result["per_trial_mean_return"]):
                writer.add_scalar(f"eval/trial_{trial}_mean_return", value, step)
            writer.add_scalar("eval/last_trial_mean_return", result["last_trial_mean_return"], step)
            writer.add_scalar("eval/best_of_n_mean_return", result["best_of_n_mean_return"], step)
            for name, value in (result.get("normalized") or {}).items():
                writer.add_scalar(f"eval/normalized_{name}", value, step)
    return result


def main(argv=None) -> int:
    try:
        config, extra = parse_args(argv, description=__doc__.splitlines()[0])
        summary = train(config, force=extra["force"])
    except (ValueError, FileNotFoundError, NonFiniteLoss) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from experiments.evaluate import summary_table

    print(summary_table(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
