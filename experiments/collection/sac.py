"""Soft actor-critic (Haarnoja et al. 2018, arXiv 1812.05905) in JAX: networks, pure update, replay buffer.

    config = SACConfig()
    state = init_state(config, obs_dim, act_dim, jax.random.key(0))
    update = jax.jit(functools.partial(update_step, config=config), donate_argnums=0)
    state, metrics = update(state, batch, key)   # batch leaves: [num_updates, batch_size, ...]

The update applies ``num_updates`` gradient steps with ``lax.scan`` in one call (fewer Python round trips on
CPU). Everything random is an explicit key; with the same keys and batches the result is bit-identical.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments.collection.sac_config import SACConfig

__all__ = ["SACConfig", "SACState", "ReplayBuffer", "init_state", "update_step", "act", "Actor", "Critic"]

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


class MLP(nn.Module):
    hidden: tuple[int, ...]
    out: int

    @nn.compact
    def __call__(self, x):
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.out)(x)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy: returns mean and log-std [batch, act_dim] of the pre-tanh Gaussian."""

    hidden: tuple[int, ...]
    act_dim: int

    @nn.compact
    def __call__(self, obs_bo):
        out = MLP(self.hidden, 2 * self.act_dim)(obs_bo)
        mean, log_std = jnp.split(out, 2, axis=-1)
        # Squash log-std smoothly into [LOG_STD_MIN, LOG_STD_MAX] instead of clipping (keeps gradients).
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


class Critic(nn.Module):
    """Two independent Q-networks; returns Q-values [2, batch] (clipped double-Q, Fujimoto et al. 2018)."""

    hidden: tuple[int, ...]

    @nn.compact
    def __call__(self, obs_bo, act_ba):
        x = jnp.concatenate([obs_bo, act_ba], axis=-1)
        return jnp.stack([MLP(self.hidden, 1)(x)[:, 0] for _ in range(2)])


def sample_action(mean, log_std, key):
    """Reparameterised tanh-Gaussian sample and its log-probability (change of variables, SAC paper app. C).

    Returns:
        (action [batch, act_dim] in (-1, 1), log_prob [batch]).
    """
    pre_tanh = mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)
    gauss_logp = -0.5 * (((pre_tanh - mean) / jnp.exp(log_std)) ** 2 + 2 * log_std + jnp.log(2 * jnp.pi))
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), stable for large |u|.
    log_det = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gauss_logp - log_det, axis=-1)


class SACState(NamedTuple):
    """All mutable training state (a pytree)."""

    actor_params: Any
    critic_params: Any
    target_params: Any
    log_alpha: jax.Array
    actor_opt: Any
    critic_opt: Any
    alpha_opt: Any
    step: jax.Array


def _optimizer(config: SACConfig):
    return optax.adam(config.learning_rate)


def init_state(config: SACConfig, obs_dim: int, act_dim: int, key: jax.Array) -> SACState:
    """Fresh parameters and optimiser states.

    Args:
        config: the hyper-parameters.
        obs_dim, act_dim: flat observation and action sizes.
        key: PRNG key for the initial weights.
    """
    if obs_dim < 1 or act_dim < 1:
        raise ValueError(f"obs_dim and act_dim: must be positive, got {obs_dim} and {act_dim}")
    actor_key, critic_key = jax.random.split(key)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    actor_params = Actor(config.hidden, act_dim).init(actor_key, obs)
    critic_params = Critic(config.hidden).init(critic_key, obs, jnp.zeros((1, act_dim), jnp.float32))
    log_alpha = jnp.asarray(np.log(config.init_temperature), jnp.float32)
    optimizer = _optimizer(config)
    target_params = jax.tree.map(jnp.copy, critic_params)  # distinct buffers: the update donates both
    return SACState(actor_params, critic_params, target_params, log_alpha, optimizer.init(actor_params),
                    optimizer.init(critic_params), optimizer.init(log_alpha), jnp.zeros((), jnp.int32))


def _one_update(state: SACState, batch: dict, key: jax.Array, config: SACConfig, act_dim: int):
    """One gradient step: soft Bellman residual of both critics, then the actor, then the temperature.

    Objectives of Haarnoja et al. (arXiv 1812.05905): J_Q (sec. 4.2) with a clipped double-Q target,
    J_pi with the reparameterised tanh-Gaussian, and J(alpha) (sec. 5) towards entropy ``-scale * act_dim``.
    """
    actor, critic, optimizer = Actor(config.hidden, act_dim), Critic(config.hidden), _optimizer(config)
    target_key, actor_key = jax.random.split(key)
    alpha = jnp.exp(state.log_alpha)

    next_mean, next_log_std = actor.apply(state.actor_params, batch["next_observation"])
    next_action, next_logp = sample_action(next_mean, next_log_std, target_key)
    next_q = critic.apply(state.target_params, batch["next_observation"], next_action).min(axis=0)
    target = batch["reward"] + config.discount * batch["discount"] * (next_q - alpha * next_logp)
    target = jax.lax.stop_gradient(target)

    def critic_loss(params):
        q = critic.apply(params, batch["observation"], batch["action"])
        return jnp.mean((q - target[None]) ** 2), q.mean()

    (c_loss, q_mean), grads = jax.value_and_grad(critic_loss, has_aux=True)(state.critic_params)
    updates, critic_opt = optimizer.update(grads, state.critic_opt)
    critic_params = optax.apply_updates(state.critic_params, updates)

    def actor_loss(params):
        mean, log_std = actor.apply(params, batch["observation"])
        action, logp = sample_action(mean, log_std, actor_key)
        q = critic.apply(critic_params, batch["observation"], action).min(axis=0)
        return jnp.mean(alpha * logp - q), logp

    (a_loss, logp), grads = jax.value_and_grad(actor_loss, has_aux=True)(state.actor_params)
    updates, actor_opt = optimizer.update(grads, state.actor_opt)
    actor_params = optax.apply_updates(state.actor_params, updates)

    target_entropy = -config.target_entropy_scale * act_dim
    entropy = -jax.lax.stop_gradient(logp).mean()

    def alpha_loss(log_alpha):
        return jnp.exp(log_alpha) * (entropy - target_entropy)

    t_loss, grad = jax.value_and_grad(alpha_loss)(state.log_alpha)
    updates, alpha_opt = optimizer.update(grad, state.alpha_opt)
    log_alpha = optax.apply_updates(state.log_alpha, updates)

    target_params = optax.incremental_update(critic_params, state.target_params, config.tau)
    new_state = SACState(actor_params, critic_params, target_params, log_alpha, actor_opt, critic_opt,
                         alpha_opt, state.step + 1)
    metrics = {"critic_loss": c_loss, "actor_loss": a_loss, "alpha_loss": t_loss, "alpha": alpha,
               "entropy": entropy, "q_mean": q_mean}
    return new_state, metrics


def update_step(state: SACState, batch: dict, key: jax.Array, *, config: SACConfig):
    """``num_updates`` SAC gradient steps, one per leading slice of ``batch`` (pure; jit at the call site).

    Args:
        state: the training state.
        batch: ``observation`` [n, B, obs], ``action`` [n, B, act], ``reward`` [n, B], ``discount`` [n, B]
            (0 after a terminal state), ``next_observation`` [n, B, obs].
        key: PRNG key; step ``i`` of the scan uses ``fold_in(key, i)``.

    Returns:
        (new state, metrics averaged over the n steps).
    """
    act_dim = batch["action"].shape[-1]
    num_updates = batch["action"].shape[0]

    def body(carry, inputs):
        index, minibatch = inputs
        return _one_update(carry, minibatch, jax.random.fold_in(key, index), config, act_dim)

    state, metrics = jax.lax.scan(body, state, (jnp.arange(num_updates), batch))
    return state, jax.tree.map(jnp.mean, metrics)


def act(actor_params, obs_o, key, *, config: SACConfig, act_dim: int, deterministic: bool = False):
    """One action [act_dim] in (-1, 1) for one observation [obs_dim]; ``tanh(mean)`` when deterministic."""
    mean, log_std = Actor(config.hidden, act_dim).apply(actor_params, obs_o[None])
    if deterministic:
        return jnp.tanh(mean[0])
    return sample_action(mean, log_std, key)[0][0]


class ReplayBuffer:
    """First-in-first-out transitions in NumPy; sampling takes an explicit NumPy generator.

    Args:
        capacity: the most transitions kept.
        obs_dim, act_dim: sizes of observations and actions.
    """

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        if capacity < 1:
            raise ValueError(f"capacity: must be positive, got {capacity}")
        self.capacity, self.size, self._next = capacity, 0, 0
        self._data = {
            "observation": np.zeros((capacity, obs_dim), np.float32),
            "action": np.zeros((capacity, act_dim), np.float32),
            "reward": np.zeros((capacity,), np.float32),
            "discount": np.zeros((capacity,), np.float32),
            "next_observation": np.zeros((capacity, obs_dim), np.float32),
        }

    def add(self, observation, action, reward, discount, next_observation) -> None:
        """Store one transition; ``discount`` is 0 after a terminal state, 1 otherwise (time limits too)."""
        row = self._next
        for name, value in (("observation", observation), ("action", action), ("reward", reward),
                            ("discount", discount), ("next_observation", next_observation)):
            self._data[name][row] = value
        self._next = (row + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, rng: np.random.Generator, num_updates: int, batch_size: int) -> dict[str, np.ndarray]:
        """``num_updates`` minibatches drawn uniformly with replacement; leaves [num_updates, batch, ...]."""
        if self.size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        index = rng.integers(0, self.size, size=(num_updates, batch_size))
        return {name: array[index] for name, array in self._data.items()}
