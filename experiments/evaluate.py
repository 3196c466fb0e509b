"""Evaluate a trained run: n trials x m environments of in-context rollouts, with reports.

    python -m experiments.evaluate --run runs/dark_room [--checkpoint best] [--task dark_room_hidden] [--num-envs 8]
        [--num-trials 4] [--seed 3] [--video] [--sample False]

Writes ``<run>/eval.json`` (per-trial mean and std return, last-trial mean, best-of-n mean, normalised
scores where defined, the dataset's median and best return), ``eval.md`` (a table) and ``eval.png``
(return against trial), as ``experiments.reports.evaluation`` writes them. Best-of-n (the largest of the n trials, as the paper reports) inflates scores,
so the last trial and the per-trial means are reported beside it, labelled. The run directory is all it
reads (``experiments.run``): never the dataset.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from experiments.cli import EXPECTED_ERRORS, DistributedArgs, fail, parse
from experiments.config import ExperimentConfig
from experiments.reports import markdown_table, write_reports
from experiments.run import Checkpoint, DataSummary, RunDir, check_trials, is_writer, on_task, report_dir


VIDEO_NAME = "eval_trial1.mp4"  # a GIF of the same name where ffmpeg is missing


class VideoRecorder:
    """Renders one environment of an evaluation while it is evaluated (a ``run_trials`` observer).

    The video is the evaluated trial itself: same policy, same rewards in its context, same actions,
    which it keeps in ``actions`` [steps, act]. A renderer that cannot start or fails midway
    (``envs.video.VideoUnavailableError``) stops the recording with one warning (kept in ``problem``); the
    evaluation goes on.
    """

    def __init__(self, env_index: int = 0, trial: int = 0):
        self.env_index, self.trial = env_index, trial
        self.frames, self.actions, self._renderer, self.problem = [], [], None, None

    def begin(self, trial, batch_env) -> None:
        if trial != self.trial or self.problem:
            return
        from envs import video

        self._guarded(lambda: setattr(self, "_renderer", video.renderer_for(batch_env, self.env_index)))

    def step(self, trial, batch_env, actions, rewards, active) -> None:
        if trial != self.trial or self._renderer is None or not active[self.env_index]:
            return
        self.actions.append(np.asarray(actions[self.env_index]))
        self._guarded(None)

    def _guarded(self, start) -> None:
        """Starts the renderer (``start``) and/or renders a frame; a video problem becomes a warning."""
        from envs import video

        try:
            if start is not None:
                start()
            self.frames.append(self._renderer.render())
        except video.VideoUnavailableError as error:
            self.problem = str(error)
            print(f"WARNING: video: {error}; evaluating without it", file=sys.stderr)
            self.close()
            self.frames = []

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None


class _Outcomes:
    """A ``run_trials`` observer: each trial's largest step reward per environment (and the recorder's view)."""

    def __init__(self, num_trials: int, num_envs: int, recorder=None):
        self.best = np.zeros((num_trials, num_envs))
        self.recorder, self.offset = recorder, 0

    def begin(self, trial, batch_env) -> None:
        if self.recorder is not None:
            self.recorder.begin(trial + self.offset, batch_env)

    def step(self, trial, batch_env, actions, rewards, active) -> None:
        row = trial + self.offset
        self.best[row] = np.where(active, np.maximum(self.best[row], rewards), self.best[row])
        if self.recorder is not None:
            self.recorder.step(row, batch_env, actions, rewards, active)


@dataclasses.dataclass(frozen=True)
class Actor:
    """What acts in an evaluation.

    Attributes:
      make: ``make(num_envs, episode_length, num_trials)`` -> a policy of ``agent.policy.run_trials``'s
        protocol.
      target_return: the return the policy is asked for (None: it is not conditioned on one).
    """

    make: Callable[[int, int, int], object]
    target_return: float | None


def model_actor(config: ExperimentConfig, params, model, data: DataSummary) -> Actor:
    """The trained model's in-context policy, as ``config.eval`` asks for it."""
    from agent.policy import InContextPolicy

    ev = config.eval
    target = data.max_return if ev.target_return is None else float(ev.target_return)

    def make(num_envs: int, episode_length: int, num_trials: int):
        return InContextPolicy(model, params, num_envs=num_envs, obs_dim=data.obs_dim, episode_length=episode_length,
                               num_trials=num_trials, target_return=target, window=ev.context_steps,
                               trial_window=ev.context_trials, sample=ev.sample, sample_noise=ev.sample_noise,
                               temperature=ev.temperature, seed=ev.seed)

    return Actor(make, target)


def random_actor(config: ExperimentConfig, data: DataSummary) -> Actor:
    """The floor: uniform random actions (no model, no context)."""
    from agent.policy import UniformRandomPolicy

    import envs

    num_actions = envs.task_spec(config.data.task).num_actions
    return Actor(lambda num_envs, episode_length, num_trials: UniformRandomPolicy(
        num_envs, data.action_dim, seed=config.eval.seed, num_actions=num_actions), None)


def _progress(what: str, steps: int):
    """A bar over an evaluation's environment steps (its first one compiles the policy), shown only where
    the evaluation takes more than two seconds, by process 0, and removed when it ends."""
    from tqdm import tqdm

    return tqdm(total=steps, desc=what, unit="step", delay=2.0, leave=False, disable=not is_writer(),
                dynamic_ncols=True)


def rollout(config: ExperimentConfig, actor: Actor, data: DataSummary, *, recorder=None) -> dict:
    """Rolls a policy out in ``config.eval.num_envs`` environments for ``config.num_trials`` trials.

    Hidden-task families give every environment its own hidden task (drawn from its seed) and report the
    success rate of every trial (``envs.successes``: a step reward of at least ``envs.SUCCESS_REWARD``, or
    Key-to-Door's door opened) beside the returns;
    with ``data.observe_task`` (the oracle) the environments append their task to the observations.

    Args:
      config: the run's config (its eval section, its task and action repeat).
      actor: what acts (``model_actor``, ``random_actor``).
      data: what the run keeps of its data (the dataset's return statistics are reported beside).
      recorder: an observer of the rollout (``VideoRecorder``).
    """
    import envs
    from agent.policy import run_trials

    ev = config.eval
    batch_env = envs.make_batch(config.data.task, ev.num_envs, seed=ev.seed, action_repeat=config.data.action_repeat,
                                observe_task=config.data.observe_task)
    trials = config.num_trials
    outcomes = _Outcomes(trials, ev.num_envs, recorder)
    bar = _progress(f"evaluating on {config.data.task}: {ev.num_envs} environments x {trials} trials",
                    trials * batch_env.episode_length)
    try:
        if ev.reset_context_each_trial:  # one policy (one compilation); its context is emptied before each trial
            single = actor.make(ev.num_envs, batch_env.episode_length, 1)
            rows = []
            for trial in range(trials):
                single.reset()
                outcomes.offset = trial
                rows.append(run_trials(single, batch_env, 1, observer=outcomes, progress=bar.update))
            returns = np.concatenate(rows)
        else:
            returns = run_trials(actor.make(ev.num_envs, batch_env.episode_length, trials), batch_env, trials,
                                 observer=outcomes, progress=bar.update)
    finally:
        bar.close()
    hidden = envs.task_spec(config.data.task).hidden
    succeeded = envs.successes(config.data.task, outcomes.best, returns) if hidden else None
    best = envs.best_return(config.data.task, batch_env.task_parameters) if hidden else None
    return {
        # The oracle's return on these environments' tasks, exact where the family defines it (the grids).
        "oracle_return": None if best is None else float(np.mean(best)),
        "task": config.data.task,
        "num_envs": ev.num_envs,
        "num_trials": trials,
        "target_return": actor.target_return,
        "returns": returns.tolist(),
        "per_trial_mean_return": returns.mean(axis=1).tolist(),
        "per_trial_std_return": returns.std(axis=1).tolist(),
        "last_trial_mean_return": float(returns[-1].mean()),
        "best_of_n_mean_return": float(returns.max(axis=0).mean()),
        "normalized": _normalized(config.data.task, returns),
        "dataset_median_return": data.median_return,
        "dataset_max_return": data.max_return,
        "dataset_best_policy_return": data.best_policy_return,
        "per_trial_success_rate": succeeded.mean(axis=1).tolist() if hidden else None,
        # Each environment's hidden task and success per trial, for the breakdown by task
        # (experiments.analysis.per_task).
        "tasks": np.asarray(batch_env.task_parameters).tolist() if hidden else None,
        "successes": succeeded.tolist() if hidden else None,
    }


def evaluate(config: ExperimentConfig, params, model, data: DataSummary, out: RunDir, *,
             extra: dict | None = None) -> dict:
    """``rollout`` of the trained model (plus ``extra`` fields) with the reports and the video, if asked for,
    in ``out``.

    With ``eval.random_floor`` the uniform random policy is rolled out on the same environments too, and its
    per-trial figures are stored under ``random_floor``.
    """
    extra = dict(extra or {})
    if config.eval.random_floor:
        floor = rollout(config, random_actor(config, data), data)
        extra["random_floor"] = {key: floor[key] for key in ("per_trial_mean_return", "per_trial_success_rate",
                                                             "last_trial_mean_return", "best_of_n_mean_return")}
    return evaluate_actor(config, model_actor(config, params, model, data), data, out, extra=extra)


def evaluate_actor(config: ExperimentConfig, actor: Actor, data: DataSummary, out: RunDir, *,
                   extra: dict | None = None) -> dict:
    """``rollout`` (plus ``extra`` fields) with the reports and the video, if asked for, in ``out``."""
    recorder, video_path = _video_recorder(config, out)
    try:
        result = rollout(config, actor, data, recorder=recorder)
    finally:
        if recorder is not None:
            recorder.close()
    if recorder is not None and recorder.frames:
        result["video"] = _write_video(out, video_path, recorder.frames)
    elif recorder is not None:
        result["video_problem"] = recorder.problem or "no frame was rendered"
    result.update(extra or {})
    write_reports(out, result)
    return result


def _video_recorder(config: ExperimentConfig, out: RunDir):
    """(recorder, file name) for ``eval.video``, with the writer checked and a headless OpenGL backend chosen
    before the rollout; (None, None) without video, or with a warning where no video can be written."""
    if not config.eval.video:
        return None, None
    from envs import video

    video.choose_headless_backend()
    try:
        name = Path(video.check_video_writer(str(out.path / VIDEO_NAME))).name
    except video.VideoUnavailableError as error:
        print(f"WARNING: video: {error}; evaluating without it", file=sys.stderr)
        return None, None
    return VideoRecorder(), name


def _write_video(out: RunDir, name: str, frames) -> str | None:
    """Writes the video; a failure to (a broken ffmpeg, a full disk) only warns: the reports come first."""
    import envs

    try:
        return str(out.write(name, lambda path: envs.write_video(frames, str(path))))
    except (OSError, RuntimeError, ValueError) as error:
        print(f"WARNING: video: writing {out.path / name} failed ({type(error).__name__}: {error}); the "
              "reports are written without it", file=sys.stderr)
        return None


def _normalized(task: str, returns: np.ndarray):
    """D4RL normalised scores for the gymnasium locomotion tasks; None for dm_control tasks."""
    from datasets import d4rl

    family = task.split("-")[0]
    if family not in ("halfcheetah", "hopper", "walker2d", "ant"):
        return None
    return {"per_trial_mean": [float(d4rl.normalized_score(family, r.mean())) for r in returns],
            "last_trial_mean": float(d4rl.normalized_score(family, returns[-1].mean())),
            "best_of_n_mean": float(d4rl.normalized_score(family, returns.max(axis=0).mean()))}


def override_eval(config: ExperimentConfig, **fields) -> ExperimentConfig:
    """``config`` with the ``eval`` fields given (those that are not None) replaced, refused where its trials
    exceed the model's (``experiments.run.check_trials``)."""
    config = config.replace(eval={k: v for k, v in fields.items() if v is not None})
    check_trials(config)
    return config


def evaluate_run(run_dir: Path, *, checkpoint: Checkpoint = "latest", task: str | None = None,
                 num_envs: int | None = None, num_trials: int | None = None, video: bool = False,
                 target_return: float | None = None, sample_noise: bool | None = None, sample: bool | None = None,
                 temperature: float | None = None, seed: int | None = None, out_dir: Path | None = None) -> dict:
    """Evaluates a checkpoint of ``run_dir`` (``RunDir.restore``: "latest", "best" or a step) from its files
    alone, on its own task or ``task`` (another of its family), and writes the reports to ``out_dir``
    (default: ``run_dir``, replacing its earlier evaluation)."""
    run = RunDir(run_dir)
    config = run.config()
    model, _, state, step = run.restore(config, checkpoint)
    config = override_eval(on_task(config, task, run.data()), num_envs=num_envs, num_trials=num_trials,
                           video=video or None, target_return=target_return, sample_noise=sample_noise,
                           sample=sample, temperature=temperature, seed=seed)
    return evaluate(config, state.params, model, run.data(), report_dir(run, out_dir), extra=run.provenance(step))


@dataclasses.dataclass(frozen=True)
class EvaluateCommand:
    """Evaluate a trained run's checkpoint over several in-context trials.

    Attributes:
      run: a run directory, e.g. runs/dark_room.
      checkpoint: which checkpoint: latest, best (the highest evaluation score saved during training) or a
        step number.
      task: evaluate on another task of the run's family (e.g. dark_room_hidden, the train goals of a run
        evaluated on dark_room_hidden_heldout); default: the run's own.
      num_envs: environments run together (default: the run's own).
      num_trials: consecutive trials per environment (default: the run's own).
      video: record the first environment's first trial, as evaluated.
      target_return: the return asked for (default: the run's own).
      sample_noise: with a sampling run, also draw the spread around the chosen mode (default: the run's
        own; False plays the chosen component's mean).
      sample: draw actions from the head's distribution (True) or play the most likely one (False: greedy;
        default: the run's own).
      temperature: with sampling, divide the categorical head's logits by this (below 1: sharper; default:
        the run's own).
      seed: the environments' seed (their hidden tasks too) and the sampling seed (default: the run's own).
      out: write the reports here instead of into the run directory.
      distributed: several processes as one JAX runtime (as in experiments.train).
    """

    run: Path
    checkpoint: Checkpoint = "latest"
    task: str | None = None
    num_envs: int | None = None
    num_trials: int | None = None
    video: bool = False
    target_return: float | None = None
    sample_noise: bool | None = None
    sample: bool | None = None
    temperature: float | None = None
    seed: int | None = None
    out: Path | None = None
    distributed: DistributedArgs = DistributedArgs()


def main(argv=None) -> int:
    try:
        args = parse(EvaluateCommand, argv, description=__doc__.splitlines()[0])
        args.distributed.initialize()
        result = evaluate_run(args.run, checkpoint=args.checkpoint, task=args.task, num_envs=args.num_envs,
                              num_trials=args.num_trials, video=args.video, target_return=args.target_return,
                              sample_noise=args.sample_noise, sample=args.sample, temperature=args.temperature,
                              seed=args.seed, out_dir=args.out)
    except EXPECTED_ERRORS as error:
        return fail(error)
    print(markdown_table(result))
    out = args.out or args.run
    print(f"wrote {out / 'eval.json'}, {out / 'eval.md'}, {out / 'eval.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
