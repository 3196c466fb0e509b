"""A run directory, the one owner of every file of a run.

    runs/<name>/
      config.json       the resolved ExperimentConfig (a rerun must match it, or pass --force)
      data.json         what the model needs of its data: observation and action sizes, the longest episode,
                        and the return statistics that evaluation reports beside the agent's
      norm_stats.json   observation mean and std (the model standardises with them)
      checkpoints/      orbax TrainStates (the last N and the best)
      summary.json      written once training has finished
      eval.json, eval.md, eval.png, eval_trial1.mp4   the latest evaluation
      tb/               TensorBoard logs
      run.lock          held while a process trains here

Every file is written whole, then renamed (:func:`datasets.atomic.atomic_path`), and only by process 0 of
a multi-process run. The model is rebuilt and restored from these files alone: evaluating a run never
reads its dataset.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Literal

import numpy as np

from datasets import NormStats
from datasets.atomic import atomic_path
from experiments.cli import JobError
from experiments.config import ExperimentConfig, differences


# Fields that only add to an evaluation's reports (a video, the random policy's line beside the agent's): a
# rerun that changes them resumes the run (and evaluates again) without --force.
EVALUATION_ONLY = frozenset({"eval.video", "eval.random_floor"})


class RunLockedError(JobError):
    """Another process holds the run directory."""


@dataclasses.dataclass(frozen=True)
class DataSummary:
    """What a run keeps of its dataset (``data.json``).

    Attributes:
      obs_dim: observation size.
      action_dim: action size (1 for discrete actions).
      longest_episode: steps of the longest episode.
      episodes: number of episodes.
      median_return, max_return, mean_return: episode return statistics.
      discrete: the actions are integer choices (their number is the task's ``envs.TaskSpec.num_actions``).
      best_policy_return: the best policy in the data, where episodes come in histories (a learner's, a
        demonstrator's): the highest mean return at one episode index over the histories (their n-th
        episodes, for the best n); None without histories (:func:`best_policy_return`).
      fingerprint: a hash of every episode's length and return, in order: a resume on other data is seen
        even where the counts and statistics agree ("" in runs made before it was recorded).
    """

    obs_dim: int
    action_dim: int
    longest_episode: int
    episodes: int
    median_return: float
    max_return: float
    mean_return: float
    discrete: bool = False
    fingerprint: str = ""
    best_policy_return: float | None = None

    @classmethod
    def of(cls, trajectories) -> DataSummary:
        returns = np.array([t.total_return for t in trajectories], np.float64)
        lengths = np.array([len(t) for t in trajectories], np.int64)
        fingerprint = hashlib.sha256(lengths.tobytes() + returns.tobytes()).hexdigest()[:16]
        return cls(obs_dim=int(trajectories[0].observation_dim), action_dim=int(trajectories[0].action_dim),
                   longest_episode=int(lengths.max()), episodes=len(trajectories),
                   median_return=float(np.median(returns)), max_return=float(returns.max()),
                   mean_return=float(returns.mean()), discrete=bool(trajectories[0].discrete),
                   fingerprint=fingerprint, best_policy_return=best_policy_return(trajectories))

    def same_data(self, other: DataSummary) -> bool:
        """Whether ``other`` summarises the same episodes (by the statistics alone where either lacks a
        fingerprint)."""
        if self.fingerprint and other.fingerprint:
            return self.fingerprint == other.fingerprint
        unrecorded = dict(fingerprint="", best_policy_return=None)  # figures older runs did not record
        return dataclasses.replace(self, **unrecorded) == dataclasses.replace(other, **unrecorded)


def best_policy_return(trajectories) -> float | None:
    """The best policy in a dataset of histories: the episodes of each history (``Trajectory.history``) in
    their dataset order, the mean return over histories at every episode index, and the highest of those
    means (an index that fewer than half the histories reach does not count). None where an episode has
    no history or every history is one episode long (no policy sequence to speak of)."""
    if any(t.history is None for t in trajectories):
        return None
    by_history: dict[int, list[float]] = {}
    for t in trajectories:
        by_history.setdefault(t.history, []).append(float(t.total_return))
    longest = max(len(r) for r in by_history.values())
    if longest < 2:
        return None
    means = []
    for index in range(longest):
        at = [r[index] for r in by_history.values() if len(r) > index]
        if 2 * len(at) >= len(by_history):
            means.append(float(np.mean(at)))
    return max(means)


def report_dir(run: RunDir, out: str | os.PathLike | None) -> RunDir:
    """Where ``run``'s evaluation reports go: ``out`` (default: the run itself), refused where it holds
    another run (its config.json) or another run's reports, which would be replaced with no trace."""
    if out is None or Path(out).resolve() == run.path.resolve():
        return run
    out = RunDir(out)
    if (out.path / "config.json").is_file():
        raise ValueError(f"--out {out.path} holds another run (it has a config.json), whose results this would "
                         "replace; choose another --out")
    if (out.path / "eval.json").is_file():
        recorded = out.read_json("eval.json").get("run")
        if recorded is None or Path(recorded).resolve() != run.path.resolve():
            raise ValueError(f"--out {out.path} holds the evaluation of another run ({recorded or 'not recorded'}); "
                             "choose another --out")
    return out


def is_writer() -> bool:
    """Process 0 writes; the others compute the same things and keep them to themselves."""
    import jax

    return jax.process_index() == 0


Checkpoint = Literal["latest", "best"] | int  # which checkpoint of a run: the newest, the best scored, a step


def _step_number(checkpoint) -> int:
    if isinstance(checkpoint, str) and checkpoint.isdigit():
        checkpoint = int(checkpoint)
    if isinstance(checkpoint, bool) or not isinstance(checkpoint, int) or checkpoint < 0:
        raise ValueError(f'checkpoint={checkpoint!r} must be "latest", "best" or a step number')
    return checkpoint


def abstract_state(config: ExperimentConfig, model, mesh, data: DataSummary):
    """The TrainState's shapes, dtypes and training shardings (``jax.ShapeDtypeStruct`` leaves), traced by
    ``jax.eval_shape`` without computing anything: what a checkpoint is restored into."""
    import jax

    from agent.train import state_shardings
    from experiments.model import initial_state

    shapes = jax.eval_shape(lambda: initial_state(config, model, data))
    return jax.tree.map(lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes,
                        state_shardings(shapes, config.optim, mesh))


def check_task(config: ExperimentConfig, data: DataSummary, field: str = "data.task") -> None:
    """Refuses an evaluation task (``config.data.task``) whose observations or actions differ from the data's,
    or (discrete) whose number of actions differs from the one the run was trained for.

    Args:
      config: the config to evaluate with (with ``data.observe_task``, a hidden task's parameter is observed
        too).
      data: what the run keeps of its data.
      field: what the message names: data.task for training, --task for evaluating a run on another task
        of its family.
    """
    import envs

    task = config.data.task
    spec = envs.task_spec(task)
    sizes = (spec.obs_dim + (spec.task_dim if config.data.observe_task else 0), spec.action_dim)
    if sizes != (data.obs_dim, data.action_dim) or spec.discrete != data.discrete:
        raise ValueError(f"{field}={task!r} has observations of size {sizes[0]} and actions of size {sizes[1]}"
                         f"{' (discrete)' if spec.discrete else ''}, but the data's are {data.obs_dim} and "
                         f"{data.action_dim}{' (discrete)' if data.discrete else ''}")


def check_trials(config: ExperimentConfig) -> None:
    """Refuses contexts of more trajectories than the model embeds (``model.max_trajectories``), in training
    (``sampler.num_trajectories``) and in evaluation (the trials one context holds: ``eval.num_trials``, or
    ``eval.context_trials`` where that is fewer), before anything is compiled: an index past the embedding
    would train into a NaN loss or act on garbage."""
    most = config.model.max_trajectories
    if config.sampler.num_trajectories > most:
        raise ValueError(f"sampler.num_trajectories={config.sampler.num_trajectories} exceeds "
                         f"model.max_trajectories={most}, the trajectories the model embeds; raise "
                         "model.max_trajectories or lower sampler.num_trajectories")
    ev = config.eval
    if ev.reset_context_each_trial:
        return
    if ev.context_trials is not None and ev.context_trials < config.num_trials:
        name, count = "eval.context_trials", ev.context_trials
    else:
        name = "eval.num_trials" + ("" if ev.num_trials else " (by default sampler.num_trajectories)")
        count = config.num_trials
    if count > most:
        raise ValueError(f"{name}={count} exceeds model.max_trajectories={most}, the trajectories the model "
                         f"embeds: one context cannot hold more trials; lower {name.split()[0]}, or set "
                         "eval.context_trials to condition on only the last ones")


def on_task(config: ExperimentConfig, task: str | None, data: DataSummary) -> ExperimentConfig:
    """``config`` evaluated on ``task``, another task of the run's family (e.g. a hidden-task family's train
    goals for a run evaluated on held-out ones); ``config`` itself for None.

    Raises:
      ValueError: naming ``task`` when its observations, actions or number of actions differ from the run's.
    """
    if task is None:
        return config
    import envs

    moved = config.replace(data={"task": task})
    check_task(moved, data, field="task")
    trained, asked = envs.task_spec(config.data.task).num_actions, envs.task_spec(task).num_actions
    if trained != asked:
        raise ValueError(f"task={task!r} has {asked} actions, but the run was trained for {trained} "
                         f"({config.data.task!r})")
    return moved


class RunDir:
    """The files of one run (see the module docstring).

    Args:
      path: the run directory (need not exist yet).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # Writing: one helper, atomic, process 0 only.

    def write(self, name: str, write_to) -> Path:
        """Calls ``write_to(temporary_path)`` and renames the result to ``<run>/<name>``."""
        target = self.path / name
        if is_writer():
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target, suffix=target.suffix) as temporary:
                write_to(temporary)
        return target

    def write_text(self, name: str, text: str) -> Path:
        return self.write(name, lambda path: path.write_text(text))

    def write_json(self, name: str, payload) -> Path:
        return self.write_text(name, json.dumps(payload, indent=2, sort_keys=True) + "\n")

    def read_json(self, name: str):
        path = self.path / name
        if not path.is_file():
            raise FileNotFoundError(f"{self.path} has no {name}" + (
                "" if (self.path / "config.json").is_file() else " (it is not a run directory: no config.json)"))
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: not valid JSON ({error})") from error

    # The config.

    def config(self) -> ExperimentConfig:
        """The saved config, with name and runs_dir pointing at this directory wherever it now lies."""
        if not (self.path / "config.json").is_file():
            raise FileNotFoundError(f"{self.path} is not a run directory (no config.json)")
        config = self.saved_config()
        path = self.path if self.path.name not in ("", "..") else self.path.resolve()  # "." or "..": its real name
        return dataclasses.replace(config, name=path.name, runs_dir=str(path.parent))

    def saved_config(self) -> ExperimentConfig:
        """config.json as saved; ValueError naming the file where it is damaged or not ringrl's."""
        path = self.path / "config.json"
        try:
            return ExperimentConfig.from_json(path.read_text())
        except ValueError as error:
            raise ValueError(f"{path}: {error}; move it aside, or choose another --name") from None

    def check_config(self, config: ExperimentConfig, force: bool = False) -> list[str]:
        """The fields (``section.field: old -> new``) where the run on disk was made with another config;
        [] for a new run or the same config. Refused unless ``force``. Fields of ``EVALUATION_ONLY`` never
        count: they change no checkpoint and no score."""
        saved = self.path / "config.json"
        if not saved.is_file():
            return []
        changed = [c for c in differences(self.saved_config(), config) if c.split(":")[0] not in EVALUATION_ONLY]
        if changed and not force:
            raise ValueError(f"{self.path} was made with a different config ({', '.join(changed)}); choose another "
                             "--name, or pass --force to resume it with the new one where its checkpoints fit")
        return changed

    def claim(self, config: ExperimentConfig, force: bool = False) -> None:
        """Saves ``config``, after ``check_config``."""
        self.check_config(config, force)
        self.write_text("config.json", config.to_json())

    @contextlib.contextmanager
    def lock(self):
        """Held while a process trains here: a second one refuses at once and touches nothing."""
        if not is_writer():
            yield
            return
        import fcntl

        self.path.mkdir(parents=True, exist_ok=True)
        with open(self.path / "run.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                raise RunLockedError(f"{self.path} is in use by {holder}; wait for it to finish, or choose "
                                     "another --name") from None
            handle.seek(0)
            handle.truncate()
            handle.write(f"process {os.getpid()}\n")
            handle.flush()
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # What the model needs of its data.

    def save_data(self, summary: DataSummary, stats: NormStats) -> None:
        self.write_json("data.json", dataclasses.asdict(summary))
        if is_writer():
            stats.save(self.path / "norm_stats.json")

    def check_data(self, data: DataSummary, force: bool = False) -> None:
        """Refuses to go on with data other than what this run has trained on so far (its ``data.json``):
        its checkpoints and normalisation were made on that. With ``force``, warns loudly and goes on."""
        if not (self.path / "data.json").is_file():
            return
        previous = self.data()
        if previous.same_data(data):
            return
        what = (f"{previous.episodes} episodes (fingerprint {previous.fingerprint or 'not recorded'}) -> "
                f"{data.episodes} episodes (fingerprint {data.fingerprint})")
        if not force:
            raise ValueError(f"the data of {self.path} changed since it was trained on ({what}); its checkpoints "
                             "and normalisation are the old data's. Put that data back, or choose another --name "
                             "(--force resumes on the new data)")
        print(f"WARNING: the data of {self.path} changed since it was trained on ({what}); --force: resuming on "
              "the new data, with normalisation statistics recomputed under weights trained on the old ones",
              file=sys.stderr)

    def data(self) -> DataSummary:
        raw = self.read_json("data.json")
        try:
            return DataSummary(**raw)
        except TypeError as error:
            raise ValueError(f"{self.path / 'data.json'}: {error}") from error

    def norm_stats(self) -> NormStats:
        return NormStats.load(self.path / "norm_stats.json")

    # The model, its state and checkpoints.

    def build(self, config: ExperimentConfig | None = None):
        """The model and mesh of this run from config.json, data.json and norm_stats.json.

        Returns:
          (model, mesh).
        """
        from experiments.model import build_model

        config = config or self.config()
        return build_model(config, self.data(), self.norm_stats())

    def checkpoints(self, config: ExperimentConfig):
        from experiments.checkpoints import Checkpoints

        return Checkpoints(self.path / "checkpoints", config.train.keep_checkpoints)

    def restore(self, config: ExperimentConfig | None = None, checkpoint: Checkpoint = "latest"):
        """(model, mesh, state, step) of a checkpoint, restored into abstract targets (``abstract_state``): no
        train state is computed to be thrown away.

        Args:
          config: the config to build the model with (default: the run's own).
          checkpoint: "latest" (the newest that restores, past unreadable ones), "best" (the highest
            evaluation score saved during training) or a step.
        """
        config = config or self.config()
        model, mesh = self.build(config)
        checkpoints = self.checkpoints(config)
        like = abstract_state(config, model, mesh, self.data())
        try:
            if checkpoint == "latest":
                state, step = checkpoints.restore_latest(like)
            else:
                step = checkpoints.best_step() if checkpoint == "best" else _step_number(checkpoint)
                state = checkpoints.restore(like, step)
        finally:
            checkpoints.close()
        if state is None:
            raise FileNotFoundError(f"{self.path / 'checkpoints'} holds no checkpoint that can be restored")
        return model, mesh, state, step

    def provenance(self, step: int | None) -> dict:
        """What every report of this run records of where it came from (step: the checkpoint evaluated; None
        for a policy without one)."""
        return {"run": str(self.path), "checkpoint_step": step}

    # The finished run.

    def summary(self) -> dict | None:
        """The summary of a finished run (None before training has finished)."""
        return self.read_json("summary.json") if (self.path / "summary.json").is_file() else None
