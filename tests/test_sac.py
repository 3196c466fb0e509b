"""The soft actor-critic: update runs with finite losses, is deterministic, and its pieces are correct."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.collection import sac

TINY = sac.SACConfig(hidden=(16, 16), batch_size=8, warmup_steps=0, update_every=2, buffer_capacity=64)
UPDATE = jax.jit(functools.partial(sac.update_step, config=TINY), donate_argnums=0)  # compiled once per shape


def _batch(rng, num_updates, batch_size, obs_dim=3, act_dim=2):
    return {
        "observation": rng.normal(size=(num_updates, batch_size, obs_dim)).astype(np.float32),
        "action": rng.uniform(-1, 1, size=(num_updates, batch_size, act_dim)).astype(np.float32),
        "reward": rng.normal(size=(num_updates, batch_size)).astype(np.float32),
        "discount": np.ones((num_updates, batch_size), np.float32),
        "next_observation": rng.normal(size=(num_updates, batch_size, obs_dim)).astype(np.float32),
    }


def _train(seed, steps=3):
    state = sac.init_state(TINY, 3, 2, jax.random.key(seed))
    rng = np.random.default_rng(seed)
    for step in range(steps):
        state, metrics = UPDATE(state, _batch(rng, 4, TINY.batch_size), jax.random.key(step))
    return state, metrics


def test_update_runs_with_finite_losses_and_counts_steps():
    state, metrics = _train(0)
    assert int(state.step) == 12
    assert set(metrics) == {"critic_loss", "actor_loss", "alpha_loss", "alpha", "entropy", "q_mean"}
    for name, value in metrics.items():
        assert np.isfinite(float(value)), name


def test_fixed_seed_gives_identical_params_and_other_seed_differs():
    first, _ = _train(0)
    second, _ = _train(0)
    other, _ = _train(1)
    for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(second)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    differs = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(first.actor_params),
                                                        jax.tree.leaves(other.actor_params))]
    assert any(differs)


def test_target_moves_by_tau_towards_critic():
    state = sac.init_state(TINY, 3, 2, jax.random.key(0))
    old_target = jax.tree.map(np.asarray, state.target_params)
    new, _ = UPDATE(state, _batch(np.random.default_rng(0), 1, 8), jax.random.key(0))
    for target, old, critic in zip(jax.tree.leaves(new.target_params), jax.tree.leaves(old_target),
                                   jax.tree.leaves(new.critic_params)):
        np.testing.assert_allclose(target, (1 - TINY.tau) * old + TINY.tau * np.asarray(critic), atol=1e-6)


def test_tanh_gaussian_log_prob_matches_change_of_variables():
    mean = jnp.array([[0.3, -1.2]])
    log_std = jnp.array([[-0.5, 0.2]])
    action, logp = sac.sample_action(mean, log_std, jax.random.key(3))
    pre = np.arctanh(np.asarray(action, np.float64))
    std = np.exp(np.asarray(log_std, np.float64))
    gauss = -0.5 * ((pre - np.asarray(mean)) / std) ** 2 - np.log(std) - 0.5 * np.log(2 * np.pi)
    expected = np.sum(gauss - np.log(1 - np.tanh(pre) ** 2), axis=-1)
    np.testing.assert_allclose(np.asarray(logp), expected, rtol=1e-4)
    assert np.all(np.abs(np.asarray(action)) < 1)


def test_critic_regresses_a_constant_reward():
    """With discount 0 the critic target is the reward: its loss must fall by orders of magnitude."""
    config = sac.SACConfig(hidden=(32, 32), batch_size=32, learning_rate=1e-2, discount=0.0)
    state = sac.init_state(config, 3, 2, jax.random.key(0))
    update = jax.jit(functools.partial(sac.update_step, config=config), donate_argnums=0)
    rng = np.random.default_rng(0)
    losses = []
    for step in range(20):
        batch = _batch(rng, 10, config.batch_size)
        batch["reward"][:] = 2.0
        state, metrics = update(state, batch, jax.random.key(step))
        losses.append(float(metrics["critic_loss"]))
    assert losses[-1] < 0.01 * losses[0]


def test_act_samples_around_the_mean_and_deterministic_mode_ignores_key():
    state = sac.init_state(TINY, 3, 2, jax.random.key(0))
    obs = jnp.ones((3,))
    a = sac.act(state.actor_params, obs, jax.random.key(0), config=TINY, act_dim=2, deterministic=True)
    b = sac.act(state.actor_params, obs, jax.random.key(1), config=TINY, act_dim=2, deterministic=True)
    np.testing.assert_array_equal(a, b)
    mean, log_std = sac.Actor(TINY.hidden, 2).apply(state.actor_params, obs[None])
    np.testing.assert_allclose(a, np.tanh(mean[0]), rtol=1e-6)  # deterministic: the squashed mean
    samples = np.stack([sac.act(state.actor_params, obs, jax.random.key(i), config=TINY, act_dim=2)
                        for i in range(200)])
    assert samples.shape == (200, 2) and len(np.unique(samples[:, 0])) == 200  # the key is used
    # The pre-tanh samples have the actor's mean and standard deviation (200 draws: 4 standard errors).
    pre = np.arctanh(samples)
    std = np.exp(np.asarray(log_std[0]))
    assert np.all(np.abs(pre.mean(0) - np.asarray(mean[0])) < 4 * std / np.sqrt(200))
    np.testing.assert_allclose(pre.std(0), std, rtol=0.25)


def test_replay_buffer_is_fifo_and_samples_with_explicit_rng():
    buffer = sac.ReplayBuffer(3, 1, 1)
    for i in range(5):
        buffer.add([i], [0.0], float(i), 1.0, [i + 1])
    assert buffer.size == 3
    batch = buffer.sample(np.random.default_rng(0), 2, 50)
    assert batch["observation"].shape == (2, 50, 1)
    assert set(np.unique(batch["reward"])) == {2.0, 3.0, 4.0}
    again = buffer.sample(np.random.default_rng(0), 2, 50)
    np.testing.assert_array_equal(batch["reward"], again["reward"])
    with pytest.raises(ValueError, match="empty"):
        sac.ReplayBuffer(2, 1, 1).sample(np.random.default_rng(0), 1, 1)


@pytest.mark.parametrize("field, value", [("hidden", ()), ("learning_rate", 0.0), ("discount", 1.0),
                                          ("tau", 0.0), ("batch_size", 0), ("warmup_steps", -1),
                                          ("updates_per_step", 0.0), ("updates_per_step", 0.25)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=field):
        sac.SACConfig(**{field: value})
