"""Act with a trained run from your own code: ``load_policy`` and the ``Policy`` it returns.

    from experiments import load_policy

    policy = load_policy("runs/dark_room")         # the latest checkpoint ("best" or a step number too)
    env = policy.make_env(seed=0)                  # a dm_env environment of the run's task
    for trial in range(policy.num_trials):         # every trial conditioned on the ones before it
        timestep = env.reset()
        while not timestep.last():
            timestep = env.step(policy.act(timestep))
        policy.act(timestep)                       # the last reward, which ends the trial
    print(policy.trial_returns)                    # [trials, envs]
    policy.reset()                                 # a new task: forget every trial

The policy acts exactly as ``experiments.evaluate`` does (the same ``agent.policy.InContextPolicy``, with
the run's target return, trials, context and sampling), from the run directory alone.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from experiments.config import ExperimentConfig
from experiments.run import Checkpoint, RunDir, on_task


@dataclasses.dataclass
class _Trial:
    """The trial in progress: which environments have finished it, what each has earned, the last actions."""

    done: np.ndarray
    returns: np.ndarray
    actions: np.ndarray | None = None


class Policy:
    """A trained run's in-context policy for ``num_envs`` environments that begin their trials together.

    Each call of ``act`` shows what the environments returned after the previous actions: a dm_env
    ``TimeStep`` (one environment) or a list of them (a batch), an ``envs.BatchStep``, or plain (gymnasium)
    observations with ``reward`` and ``done`` beside them. The first call of a trial (after ``reset``, after
    a trial has ended, or on a ``TimeStep`` that is ``first()``) begins it; the call that shows every
    environment done records the last rewards, ends the trial and returns None.

    Attributes:
      config: the run's config (its ``eval`` section as this policy acts).
      step: the checkpoint's step.
      task, action_repeat: the environment it acts in.
      num_envs, num_trials, episode_length: its sizes (they fix the context's).
      target_return: the return it is asked for (its models conditioned on returns).
      trial_returns: float64 [trials so far, num_envs], the undiscounted return of every trial.
    """

    def __init__(self, config: ExperimentConfig, step: int, actor, *, episode_length: int, obs_dim: int):
        ev = config.eval
        self.config, self.step = config, step
        self.task, self.action_repeat = config.data.task, config.data.action_repeat
        self.num_envs, self.num_trials, self.episode_length = ev.num_envs, config.num_trials, episode_length
        self.target_return, self.obs_dim = actor.target_return, obs_dim
        self._each_alone = ev.reset_context_each_trial  # BC and DT: every trial sees only itself
        self._inner = actor.make(self.num_envs, episode_length, 1 if self._each_alone else self.num_trials)
        self.reset()

    def reset(self) -> None:
        """Forgets every trial: the next ``act`` begins the first trial of an empty context (a new task)."""
        self._inner.reset()
        self._trial: _Trial | None = None
        self._returns: list[np.ndarray] = []

    @property
    def trial_returns(self) -> np.ndarray:
        """float64 [trials begun since ``reset``, num_envs]; the trial in progress counts what it has earned."""
        rows = self._returns + ([self._trial.returns] if self._trial is not None else [])
        return np.array(rows, np.float64).reshape(len(rows), self.num_envs)

    def act(self, observation, reward=None, done=False):
        """The actions for what the environments returned after the previous ones.

        Args:
          observation: a ``dm_env.TimeStep`` (one environment), a list of ``num_envs`` of them, an
            ``envs.BatchStep``, or observations: float [obs] (one environment) or [num_envs, obs].
          reward: with plain observations, the reward of the previous actions: a number or [num_envs]
            (None, or ignored, on the first step of a trial).
          done: with plain observations, whether the previous actions ended the trial (gymnasium:
            ``terminated or truncated``): a bool or bool [num_envs].

        Returns:
          The actions: [act] for one environment given unbatched (discrete: an int32 scalar), or
          [num_envs, act] (discrete: int32 [num_envs]); None when every environment is done, which ends
          the trial.
        """
        observations, rewards, dones, first, batched = self._unpack(observation, reward, done)
        if first and self._trial is not None:  # the environments were reset before the trial ended
            self._end_trial()
        if self._trial is None:
            self._begin_trial()
        elif self._trial.actions is not None:
            self._record(rewards, dones)
        if self._trial.done.all():
            self._end_trial()
            return None
        actions = np.asarray(self._inner.act(observations, ~self._trial.done))
        self._trial.actions = actions
        return actions if batched else actions[0]

    def _begin_trial(self) -> None:
        if len(self._returns) >= self.num_trials and not self._each_alone:
            raise ValueError(f"act: the {self.num_trials} trials of this policy's context are used; call reset() "
                             "to begin again, or load_policy(..., num_trials=...) for more")
        if self._each_alone:
            self._inner.reset()
        self._inner.start_trial()
        self._trial = _Trial(done=np.zeros(self.num_envs, bool), returns=np.zeros(self.num_envs, np.float64))

    def _record(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """The previous actions' rewards, as ``agent.policy.run_trials`` records them."""
        trial = self._trial
        rewards = np.where(trial.done, 0.0, rewards)
        self._inner.observe(trial.actions, rewards)
        trial.returns += rewards
        trial.done = trial.done | dones

    def _end_trial(self) -> None:
        self._returns.append(self._trial.returns)
        self._trial = None

    def _unpack(self, observation, reward, done):
        """(observations [n, obs], rewards [n], dones [n], whether a trial begins, whether batched)."""
        import dm_env

        import envs

        n = self.num_envs
        if isinstance(observation, dm_env.TimeStep) or (
                isinstance(observation, list) and observation and isinstance(observation[0], dm_env.TimeStep)):
            steps = observation if isinstance(observation, list) else [observation]
            if reward is not None or done is not False:
                raise ValueError("act: a TimeStep carries its own reward and end; pass no reward or done with it")
            if len({step.first() for step in steps}) > 1:
                raise ValueError("act: some TimeSteps begin a trial and others do not; the environments of one "
                                 "policy begin their trials together (reset them together)")
            observations = np.stack([np.asarray(step.observation, np.float32) for step in steps])
            rewards = np.array([0.0 if step.reward is None else step.reward for step in steps], np.float64)
            return (self._check(observations, isinstance(observation, list)), rewards,
                    np.array([step.last() for step in steps]), steps[0].first(), isinstance(observation, list))
        if isinstance(observation, envs.BatchStep):
            observation, reward, done = observation.observation, observation.reward, observation.done
        observations = np.asarray(observation, np.float32)
        batched = observations.ndim == 2
        observations = self._check(observations if batched else observations[None], batched)
        if reward is None and self._trial is not None and self._trial.actions is not None:
            raise ValueError("act: reward is needed after the first step of a trial (the previous actions' reward)")
        rewards = np.broadcast_to(np.asarray(0.0 if reward is None else reward, np.float64), (n,))
        return observations, rewards, np.broadcast_to(np.asarray(done, bool), (n,)), False, batched

    def _check(self, observations: np.ndarray, batched: bool) -> np.ndarray:
        if observations.shape != (self.num_envs, self.obs_dim):
            raise ValueError(f"act: observations of shape {observations.shape[int(not batched):]}; this policy "
                             f"takes [{self.obs_dim}] (one environment) or [{self.num_envs}, {self.obs_dim}] "
                             f"(num_envs={self.num_envs})")
        return observations

    def make_env(self, seed: int = 0):
        """One ``dm_env`` environment of the policy's task and action repeat (``envs.make``)."""
        import envs

        if self.config.data.observe_task:
            raise ValueError("make_env: this run observes its hidden task (the oracle); use make_batch")
        return envs.make(self.task, seed=seed, action_repeat=self.action_repeat)

    def make_batch(self, seed: int | None = None):
        """``num_envs`` environments of the policy's task, seeded as its evaluation is (``envs.make_batch``;
        ``seed`` defaults to ``eval.seed``)."""
        import envs

        return envs.make_batch(self.task, self.num_envs, seed=self.config.eval.seed if seed is None else seed,
                               action_repeat=self.action_repeat, observe_task=self.config.data.observe_task)


def load_policy(run_dir: str | os.PathLike, checkpoint: Checkpoint = "latest", *, num_envs: int = 1,
                num_trials: int | None = None, task: str | None = None, target_return: float | None = None,
                sample: bool | None = None, seed: int | None = None) -> Policy:
    """A trained run's in-context policy, restored from its run directory alone (no dataset, no train state
    computed: the checkpoint is restored into abstract targets).

    Args:
      run_dir: the run directory, e.g. runs/dark_room.
      checkpoint: "latest", "best" (the highest evaluation score saved during training) or a step.
      num_envs: environments acted in together.
      num_trials: trials in one context (default: the run's evaluation's).
      task: another task of the run's family to act in (default: the run's evaluation task).
      target_return: the return asked for (default: the run's: its ``eval.target_return``, or the
        dataset's best episode return).
      sample: draw actions from the head's distribution (default: the run's ``eval.sample``).
      seed: the sampling seed, and ``make_batch``'s default seed (default: ``eval.seed``).

    Returns:
      A ``Policy``.
    """
    from experiments.evaluate import model_actor, override_eval

    run = RunDir(run_dir)
    config = run.config()
    data = run.data()
    model, _, state, step = run.restore(config, checkpoint)
    config = override_eval(on_task(config, task, data), num_envs=num_envs, num_trials=num_trials,
                           target_return=target_return, sample=sample, seed=seed)
    import envs

    spec = envs.task_spec(config.data.task)
    episode_length = -(-spec.episode_length // config.data.action_repeat)  # as envs.TaskEnv.episode_length
    return Policy(config, step, model_actor(config, state.params, model, data), episode_length=episode_length,
                  obs_dim=data.obs_dim)
