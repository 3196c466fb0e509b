"""Behaviour policies of the collector: uniform random exploration and a learning soft actor-critic.

A policy is driven by `experiments.collect` through four calls per episode:

    policy.begin_episode(episode)
    action = policy.action(observation)                       # float32 [act_dim] in [-1, 1]
    policy.observe(observation, action, reward, discount, next_observation)

Randomness depends only on ``(seed, episode)`` and on the global agent step ``t`` (``fold_in``-style), never
on how a run was split into sessions; with the checkpoint (``state_dict``) and the episodes already on disk
(``replay``) a resumed run continues the same history as an uninterrupted one.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from experiments.collection import sac as sac_lib

__all__ = ["RandomPolicy", "SACPolicy", "ExplorationMix"]

# Stream tags, so that each purpose draws from its own random stream.
_WARMUP, _ACTION, _UPDATE, _SAMPLE, _INIT, _MIX = range(6)


class RandomPolicy:
    """ExoRL's ``random``: actions uniform in [-1, 1]^act_dim, one NumPy stream per (seed, episode)."""

    def __init__(self, act_dim: int, seed: int):
        self._act_dim, self._seed = act_dim, seed
        self._rng = np.random.default_rng([seed, _WARMUP, 0])

    def begin_episode(self, episode: int) -> None:
        self._rng = np.random.default_rng([self._seed, _WARMUP, episode])

    def action(self, observation: np.ndarray) -> np.ndarray:
        return self._rng.uniform(-1.0, 1.0, self._act_dim).astype(np.float32)

    def observe(self, observation, action, reward, discount, next_observation) -> None:
        pass

    def state_dict(self) -> dict[str, Any] | None:
        return None  # nothing to remember: episode streams are derived from the seed

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        pass

    def replay(self, trajectories) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return {}


@functools.lru_cache(maxsize=8)
def _jitted(config: sac_lib.SACConfig, act_dim: int):
    """The jitted update and act functions, built once per config (resumes and tests reuse them)."""
    import jax

    update = jax.jit(functools.partial(sac_lib.update_step, config=config), donate_argnums=0)
    act = jax.jit(functools.partial(sac_lib.act, config=config, act_dim=act_dim))
    return update, act


class SACPolicy:
    """An online soft actor-critic that learns while it collects (update-to-data ratio from its config).

    Args:
        config: SAC hyper-parameters.
        obs_dim, act_dim: flat sizes.
        seed: the run's seed.
    """

    def __init__(self, config: sac_lib.SACConfig, obs_dim: int, act_dim: int, seed: int):
        import jax

        self._jax = jax
        self.config, self._seed, self._act_dim = config, seed, act_dim
        key = jax.random.key(seed)
        self._keys = {tag: jax.random.fold_in(key, tag) for tag in (_ACTION, _UPDATE, _INIT)}
        self.state = sac_lib.init_state(config, obs_dim, act_dim, self._keys[_INIT])
        self.buffer = sac_lib.ReplayBuffer(config.buffer_capacity, obs_dim, act_dim)
        self.t = 0  # agent steps taken (= transitions observed) over the whole history
        self._warmup = RandomPolicy(act_dim, seed)
        self._metrics: dict[str, float] = {}
        self._update, self._act = _jitted(config, act_dim)

    def begin_episode(self, episode: int) -> None:
        self._warmup.begin_episode(episode)

    def action(self, observation: np.ndarray) -> np.ndarray:
        if self.t < self.config.warmup_steps:
            return self._warmup.action(observation)
        key = self._jax.random.fold_in(self._keys[_ACTION], self.t)
        return np.asarray(self._act(self.state.actor_params, observation, key), dtype=np.float32)

    def observe(self, observation, action, reward, discount, next_observation) -> None:
        self.buffer.add(observation, action, reward, discount, next_observation)
        self.t += 1
        config = self.config
        if self.t >= config.warmup_steps and self.t % config.update_every == 0:
            rng = np.random.default_rng([self._seed, _SAMPLE, self.t])
            batch = self.buffer.sample(rng, config.updates_per_call, config.batch_size)
            key = self._jax.random.fold_in(self._keys[_UPDATE], self.t)
            self.state, metrics = self._update(self.state, batch, key)
            self._metrics = metrics

    def stats(self) -> dict[str, float]:
        """The latest update's averaged losses (empty before the first update)."""
        return {name: float(value) for name, value in self._metrics.items()}

    def state_dict(self) -> dict[str, Any]:
        """Agent state and step counter as NumPy (picklable); the replay buffer is rebuilt by ``replay``."""
        return {"t": self.t, "state": self._jax.device_get(self.state)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if state is None or "state" not in state or "t" not in state:
            raise ValueError("checkpoint: not a SAC checkpoint (needs 't' and 'state')")
        restored = self._jax.tree.map(self._jax.numpy.asarray, state["state"])
        if self._jax.tree.structure(restored) != self._jax.tree.structure(self.state):
            raise ValueError("checkpoint: its network shapes do not match the SAC config (hidden sizes?)")
        self.state, self.t = sac_lib.SACState(*restored), int(state["t"])

    def replay(self, trajectories) -> None:
        """Refill the replay buffer from the episodes already written (in order), as they were observed.

        The files hold exactly what ``observe`` stored (float32 observations, the actions taken, float32
        rewards, discount 0 only after a terminal state), so the buffer equals the uninterrupted one.
        """
        for trajectory in trajectories:
            next_obs = trajectory.next_observations
            discounts = np.where(trajectory.terminals, 0.0, 1.0).astype(np.float32)
            for row in range(len(trajectory)):
                self.buffer.add(trajectory.observations[row], trajectory.actions[row],
                                trajectory.rewards[row], discounts[row], next_obs[row])


class ExplorationMix:
    """Mixes uniform random actions into another policy's episodes (a spread of returns at every stage).

    At the start of each episode, with probability ``fraction``, a rate ``epsilon ~ U(0, max_epsilon)`` is
    drawn (else ``epsilon = 0``); each step then takes a uniform random action with probability
    ``epsilon`` instead of the policy's. The inner policy still sees every executed transition (SAC learns
    off-policy from them), and its own random streams are consumed exactly as without the mix.

    Args:
        policy: the inner policy.
        act_dim: action size.
        seed: the run's seed; the mix draws from its own stream per (seed, episode).
        fraction: share of episodes with a mix, in [0, 1].
        max_epsilon: the largest per-step rate, in [0, 1].
    """

    def __init__(self, policy, act_dim: int, seed: int, fraction: float, max_epsilon: float):
        for name, value in (("fraction", fraction), ("max_epsilon", max_epsilon)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name}: must be in [0, 1], got {value}")
        self.policy, self._act_dim, self._seed = policy, act_dim, seed
        self._fraction, self._max_epsilon = fraction, max_epsilon
        self.epsilon = 0.0
        self._rng = np.random.default_rng([seed, _MIX, 0])

    def begin_episode(self, episode: int) -> None:
        self._rng = np.random.default_rng([self._seed, _MIX, episode])
        mixed = self._rng.random() < self._fraction
        self.epsilon = float(self._rng.uniform(0.0, self._max_epsilon)) if mixed else 0.0
        self.policy.begin_episode(episode)

    def action(self, observation: np.ndarray) -> np.ndarray:
        action = self.policy.action(observation)  # always asked, so its streams do not depend on the mix
        if self._rng.random() < self.epsilon:
            return self._rng.uniform(-1.0, 1.0, self._act_dim).astype(np.float32)
        return action

    def observe(self, observation, action, reward, discount, next_observation) -> None:
        self.policy.observe(observation, action, reward, discount, next_observation)

    def stats(self) -> dict[str, float]:
        return {**self.policy.stats(), "epsilon": self.epsilon}

    def state_dict(self):
        return self.policy.state_dict()

    def load_state_dict(self, state) -> None:
        self.policy.load_state_dict(state)

    def replay(self, trajectories) -> None:
        self.policy.replay(trajectories)

    def __getattr__(self, name: str):
        if name.startswith("__") or name == "policy":
            raise AttributeError(name)
        return getattr(self.policy, name)  # e.g. the SAC replay buffer and step counter
