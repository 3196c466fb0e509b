"""The in-context policy: acts in a batch of environments over several trials, each trial conditioned on
the earlier ones, with a KV cache so an environment step costs O(context), not O(context^2).

Trial ``i`` (trajectory index ``i``) sees trials ``0..i-1`` in the order they happened, then its own
steps. The target return-to-go starts at ``target_return`` and falls by each reward (summed in float64,
as the sampler sums them); the completion flag is set once it reaches 0 (``agent.tokens.completion_flag``). Every environment keeps its own token count, so an
environment whose episode ends early simply stops advancing: the tokens it writes meanwhile are
overwritten by its next real ones, and never read before.

``recompute=True`` runs the whole context through the model at every step instead (the simple twin of
the cache, for tests; it needs environments that stay in lock step). ``window=K`` conditions on only the
last K steps (Decision Transformer's evaluation), and ``trial_window=k`` on only the current trial and the
k - 1 before it, renumbered 0..k-1 (a model trained on k trajectories, evaluated over more trials); both
recompute their context at every step. A recomputed context has one fixed length (real steps first,
zeros after them, which a causal model never reads), so it compiles once, not once per length.
"""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as P

from agent.heads import check_temperature, sample_actions
from agent.model import AgenticTransformer
from agent.sharding import place
from agent.tokens import STEP_KEYS, decode_window
from ring.transformer import init_cache


class InContextPolicy:
    """Acts for ``num_envs`` environments over up to ``num_trials`` trials of ``episode_length`` steps.

    Args:
      model: the AgenticTransformer (its ``mesh`` decides whether the cache is sharded over "sp").
      params: its parameters.
      num_envs, episode_length, num_trials: sizes of the evaluation (they fix the cache size).
      target_return: the return the policy is asked for.
      recompute: use full recomputation instead of the KV cache.
      window: condition on only the last this many steps (implies recomputation).
      trial_window: condition on only the last this many trials, the current one included (implies
        recomputation; environments must stay in lock step).
      sample: draw each action from the head's distribution (``agent.heads.sample_actions``) instead of
        playing its most likely action; draws use ``fold_in(key(seed), call)``.
      sample_noise: with ``sample``, also draw the spread around the chosen mode (False: the mixture plays
        the mean of a component drawn by its weight).
      temperature: with ``sample``, the categorical head's logits are divided by it (below 1: sharper).
      seed: the sampling seed.
    """

    def __init__(self, model: AgenticTransformer, params, *, num_envs: int, obs_dim: int, episode_length: int,
                 num_trials: int, target_return: float, recompute: bool = False, window: int | None = None,
                 trial_window: int | None = None, sample: bool = False, sample_noise: bool = True,
                 temperature: float = 1.0, seed: int = 0):
        cfg = model.config
        check_temperature(temperature, cfg.action_head)
        if episode_length > cfg.max_timestep:
            raise ValueError(f"episode_length={episode_length} exceeds the model's max_timestep={cfg.max_timestep}")
        self.model, self.params, self.num_envs = model, params, num_envs
        if window is not None and window < 1:
            raise ValueError(f"window={window} must be a positive number of steps")
        if trial_window is not None and trial_window < 1:
            raise ValueError(f"trial_window={trial_window} must be a positive number of trials")
        in_context = num_trials if trial_window is None else min(num_trials, trial_window)
        if in_context > cfg.max_trajectories:
            name = "num_trials" if trial_window is None else "trial_window"
            raise ValueError(f"{name}={in_context} exceeds the model's max_trajectories={cfg.max_trajectories}")
        self.target_return, self.window, self.trial_window = float(target_return), window, trial_window
        self.recompute = recompute or window is not None or trial_window is not None
        ring = model.mesh.shape["sp"] if cfg.attention == "ring" and model.mesh is not None else 1
        self.context_steps = cfg.fitting_steps(window if window is not None else in_context * episode_length, ring)
        self.obs_dim, self.action_dim = obs_dim, model.action_dim
        self.discrete = cfg.action_head == "categorical"  # integer actions [num_envs], -1: none yet
        tokens = in_context * episode_length * cfg.tokens_per_step
        shards = model.mesh.shape["sp"] if model.mesh is not None else 1
        self.max_tokens = -(-tokens // shards) * shards
        self.sample, self.sample_noise, self.temperature = sample, sample_noise, float(temperature)
        self._key, self._calls = jax.random.key(seed), 0
        self._decode = jax.jit(self._decode_fn, static_argnames=("window",), donate_argnums=(1,))
        self._full = jax.jit(self._full_fn)
        # A call feeds at most tokens_per_step tokens (the previous step's tail and the current step's head);
        # windowed layers keep only the window and those (ring.decode.cache_length).
        self.cache = None if self.recompute else init_cache(model.stack(decoding=True), num_envs, self.max_tokens,
                                                            max_new=cfg.tokens_per_step, shards=shards)
        if model.mesh is not None:  # the cache's length is split over the ring axis; parameters replicated
            if self.cache is not None:
                slots = P(None, None, "sp") if cfg.scan_layers else P(None, "sp")  # scanned: [layers, b, slots]
                self.cache = place(self.cache, NamedSharding(model.mesh, slots))
            self.params = place(params, NamedSharding(model.mesh, P()))
        self.lengths = np.zeros(num_envs, np.int32)
        self.trial = -1
        self.history: list[dict] = []  # recomputation: the steps in context, oldest first
        self._previous = None

    def _choose(self, out, key):
        return sample_actions(out, key, self.sample_noise, self.temperature) if self.sample else out["action"]

    def _decode_fn(self, params, cache, inputs, positions, key, *, window):
        out, cache = self.model.apply({"params": params}, inputs, cache=cache, positions=positions, window=window)
        return self._choose(out, key), cache

    def _full_fn(self, params, inputs, last, key):
        out = self.model.apply({"params": params}, inputs)
        return self._choose({name: jax.lax.dynamic_index_in_dim(value, last, axis=1, keepdims=False)
                             for name, value in out.items()}, key)

    def reset(self) -> None:
        """Forgets every earlier trial: the next ``start_trial`` begins an empty context.

        The compiled functions and the cache buffer are kept; a slot is read only once it holds a token of
        the new stream (``ring.decode.slot_positions``), so stale entries are never read.
        """
        self.lengths = np.zeros(self.num_envs, np.int32)
        self.trial = -1
        self.history = []
        self._previous = None

    def start_trial(self) -> None:
        """Begins the next trial in every environment (call before its first ``act``)."""
        self.trial += 1
        self.timestep = np.zeros(self.num_envs, np.int32)
        self.collected = np.zeros(self.num_envs, np.float64)  # this trial's rewards, summed left to right
        self.prev_action = (np.full(self.num_envs, -1, np.int32) if self.discrete
                            else np.zeros((self.num_envs, self.action_dim), np.float32))
        self.prev_reward = np.zeros(self.num_envs, np.float32)

    def _actions(self, actions) -> np.ndarray:
        return np.asarray(actions, np.int32 if self.discrete else np.float32)

    def act(self, observations, active=None) -> np.ndarray:
        """Actions [num_envs, act] (discrete: int32 [num_envs]) for the current observations [num_envs, obs].

        ``active`` [num_envs] marks environments still in their episode; the others' tokens are not kept.
        """
        active = np.ones(self.num_envs, bool) if active is None else np.asarray(active, bool)
        current = self._step(np.asarray(observations, np.float32))
        if self.recompute:
            if not active.all() and self.window is None:
                raise ValueError("recompute=True and trial_window need every environment active (lock step)")
            self.history.append(current)  # with a window, finished environments' rows are never read
            if self.window is not None:
                self.history = self.history[-self.window:]
            if self.trial_window is not None:
                first = self.trial - self.trial_window + 1
                self.history = [h for h in self.history if h["trajectory_index"][0] >= first]
            inputs, last = self._context()
            actions = self._full(self.params, inputs, last, self._next_key())
        else:
            first = self._previous is None
            previous = current if first else self._previous
            start, end = decode_window(self.model.config.tokens_per_step, self.model.config.action_token, first)
            inputs = {k: np.stack([previous[k], current[k]], axis=1) for k in STEP_KEYS}
            positions = self.lengths[:, None] + np.arange(end - start, dtype=np.int32)[None]
            if positions.max() >= self.max_tokens:
                raise ValueError(f"the context outgrew its cache of {self.max_tokens} tokens")
            actions, self.cache = self._decode(self.params, self.cache, inputs, positions, self._next_key(),
                                               window=(start, end))
            self.lengths = np.where(active, self.lengths + (end - start), self.lengths)
        self._pending = (current, active)
        return np.asarray(actions)

    def _context(self) -> tuple[dict, int]:
        """The steps in context stacked [n, context_steps, ...] (zeros after the real ones), and the index
        of the current step."""
        steps = len(self.history)
        if steps > self.context_steps:
            raise ValueError(f"the context outgrew its {self.context_steps} steps")
        inputs = {}
        for key in STEP_KEYS:
            real = np.stack([h[key] for h in self.history], axis=1)
            padded = np.zeros((real.shape[0], self.context_steps) + real.shape[2:], real.dtype)
            padded[:, :steps] = real
            inputs[key] = padded
        if self.trial_window is not None:  # the oldest trial in the window is trajectory 0
            oldest = inputs["trajectory_index"][:, :1].copy()
            inputs["trajectory_index"][:, :steps] -= oldest
        return inputs, steps - 1

    def _next_key(self):
        self._calls += 1
        return jax.random.fold_in(self._key, self._calls)

    def observe(self, actions, rewards) -> None:
        """Records the actions taken and the rewards received after ``act``."""
        current, active = self._pending
        current = dict(current, actions=self._actions(actions), rewards=np.asarray(rewards, np.float32))
        if self.recompute:
            self.history[-1] = current
        elif self._previous is None:
            self._previous = current
        else:  # environments that were not active keep their last real step as the previous one
            self._previous = {k: np.where(_expand(active, current[k]), current[k], self._previous[k]) for k in STEP_KEYS}
        step = active.astype(np.int32)
        self.collected = np.where(active, self.collected + np.asarray(rewards, np.float32), self.collected)
        self.prev_action = np.where(_expand(active, self.prev_action), self._actions(actions), self.prev_action)
        self.prev_reward = np.where(active, np.asarray(rewards, np.float32), self.prev_reward)
        self.timestep = self.timestep + step

    def _step(self, observations) -> dict:
        n = self.num_envs
        return {
            "observations": observations,
            "actions": np.zeros_like(self.prev_action),
            "rewards": np.zeros(n, np.float32),
            "returns_to_go": (self.target_return - self.collected).astype(np.float32),
            "prev_actions": self.prev_action.copy(),
            "prev_rewards": self.prev_reward.copy(),
            "timesteps": self.timestep.copy(),
            "trajectory_index": np.full(n, self.trial, np.int32),
        }


class UniformRandomPolicy:
    """The floor of every comparison: actions uniform in [-1, 1]^act (or, with ``num_actions``, integers
    uniform in 0..num_actions-1), from one stream seeded by ``seed``.

    Follows ``run_trials``'s protocol; it reads nothing it is shown.
    """

    def __init__(self, num_envs: int, action_dim: int, *, seed: int = 0, num_actions: int = 0):
        self.num_envs, self.action_dim, self.num_actions = num_envs, action_dim, num_actions
        self._rng = np.random.default_rng(seed)

    def reset(self) -> None:
        """Nothing to forget: the stream goes on, so every trial draws new actions."""

    def start_trial(self) -> None:
        pass

    def act(self, observations, active=None) -> np.ndarray:
        if self.num_actions:
            return self._rng.integers(0, self.num_actions, self.num_envs).astype(np.int32)
        return self._rng.uniform(-1.0, 1.0, (self.num_envs, self.action_dim)).astype(np.float32)

    def observe(self, actions, rewards) -> None:
        pass


def _expand(mask, like):
    return mask.reshape(mask.shape + (1,) * (np.ndim(like) - 1))


def run_trials(policy, batch_env, num_trials: int, *, progress=None, observer=None) -> np.ndarray:
    """Rolls ``policy`` out for ``num_trials`` consecutive trials in a ``envs.BatchEnv``.

    A policy is anything with ``start_trial()``, ``act(observations [n, obs], active [n]) -> [n, act]`` and
    ``observe(actions [n, act], rewards [n])``: the one protocol of acting in this project.

    Args:
      policy: the policy.
      batch_env: the environments.
      num_trials: consecutive trials (each starts from a reset of every environment).
      progress: called after every environment step.
      observer: sees every trial as it happens: ``observer.begin(trial, batch_env)`` after each reset and
        ``observer.step(trial, batch_env, actions, rewards, active)`` after each step (e.g. a video of it).

    Returns:
      float64 [num_trials, num_envs]: the undiscounted return of every trial in every environment.
    """
    returns = np.zeros((num_trials, batch_env.num_envs))
    for trial in range(num_trials):
        policy.start_trial()
        step = batch_env.reset()
        done = np.zeros(batch_env.num_envs, bool)
        observation = step if isinstance(step, np.ndarray) else step.observation
        if observer is not None:
            observer.begin(trial, batch_env)
        while not done.all():
            active = ~done
            actions = policy.act(observation, active)
            result = batch_env.step(actions)
            rewards = np.where(active, result.reward, 0.0)
            policy.observe(actions, rewards)
            returns[trial] += rewards
            if observer is not None:
                observer.step(trial, batch_env, actions, rewards, active)
            observation, done = result.observation, result.done
            if progress is not None:
                progress()
    return returns
