"""Action heads: losses against NumPy/SciPy-free references, and sampling that follows the distribution."""

import math

import jax
import jax.numpy as jnp
import numpy as np

from agent.heads import LOG_STD_RANGE, per_step_loss, sample_actions


def _mixture(rng, rows=5, k=3, a=2):
    return {"logits": rng.normal(size=(rows, k)).astype(np.float32),
            "means": np.tanh(rng.normal(size=(rows, k, a))).astype(np.float32),
            "log_std": rng.uniform(-2, 0, size=(rows, k, a)).astype(np.float32)}


def test_mixture_nll_matches_a_float64_reference():
    rng = np.random.default_rng(0)
    pred = _mixture(rng)
    pred["action"] = pred["means"][:, 0]
    actions = rng.uniform(-1, 1, size=(5, 2)).astype(np.float32)
    got = np.asarray(per_step_loss({k: jnp.asarray(v) for k, v in pred.items()}, jnp.asarray(actions)))
    logits, means, log_std = (pred[k].astype(np.float64) for k in ("logits", "means", "log_std"))
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    std = np.exp(log_std)
    density = np.prod(np.exp(-0.5 * ((actions[:, None] - means) / std) ** 2) / (std * math.sqrt(2 * math.pi)), -1)
    np.testing.assert_allclose(got, -np.log((weights * density).sum(-1)), rtol=1e-5)


def test_one_component_mixture_equals_the_gaussian_head():
    rng = np.random.default_rng(1)
    mean = np.tanh(rng.normal(size=(4, 3))).astype(np.float32)
    log_std = rng.uniform(-1, 0.5, size=(4, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(4, 3)).astype(np.float32)
    gaussian = per_step_loss({"action": mean, "log_std": log_std}, actions)
    mixture = per_step_loss({"action": mean, "logits": np.zeros((4, 1), np.float32), "means": mean[:, None],
                             "log_std": log_std[:, None]}, actions)
    np.testing.assert_allclose(np.asarray(mixture), np.asarray(gaussian), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(per_step_loss({"action": mean}, actions)),
                               ((mean - actions) ** 2).sum(-1), rtol=1e-6)


def test_mixture_samples_pick_components_by_weight():
    # Two well-separated components at -0.5 and +0.5 with weights 0.2 / 0.8.
    rows = 4000
    pred = {"logits": jnp.tile(jnp.log(jnp.array([0.2, 0.8])), (rows, 1)),
            "means": jnp.tile(jnp.array([[[-0.5]], [[0.5]]]).reshape(1, 2, 1), (rows, 1, 1)),
            "log_std": jnp.full((rows, 2, 1), LOG_STD_RANGE[0])}
    pred["action"] = pred["means"][:, 1]
    draws = np.asarray(sample_actions(pred, jax.random.key(0)))[:, 0]
    share = float(np.mean(draws > 0))
    assert abs(share - 0.8) < 4 * math.sqrt(0.8 * 0.2 / rows)
    assert np.all(np.abs(np.abs(draws) - 0.5) < 0.05)  # std e^-5: every draw sits on its component
    again = np.asarray(sample_actions(pred, jax.random.key(0)))[:, 0]
    np.testing.assert_array_equal(draws, again)
    # Gaussian samples are clipped to the action range; the tanh head's action is returned as it is.
    wide = {"action": jnp.zeros((2000, 1)), "log_std": jnp.full((2000, 1), LOG_STD_RANGE[1])}
    clipped = np.asarray(sample_actions(wide, jax.random.key(1)))
    assert clipped.min() == -1.0 and clipped.max() == 1.0
    plain = {"action": jnp.array([[0.25]])}
    np.testing.assert_array_equal(np.asarray(sample_actions(plain, jax.random.key(2))), [[0.25]])


def test_sampling_without_noise_chooses_a_mode_and_plays_its_mean():
    rows = 2000
    pred = {"logits": jnp.tile(jnp.log(jnp.array([0.3, 0.7])), (rows, 1)),
            "means": jnp.tile(jnp.array([-0.5, 0.25]).reshape(1, 2, 1), (rows, 1, 1)),
            "log_std": jnp.full((rows, 2, 1), LOG_STD_RANGE[1])}  # wide: with noise, draws spread out
    pred["action"] = pred["means"][:, 1]
    exact = np.asarray(sample_actions(pred, jax.random.key(3), noise=False))[:, 0]
    assert set(np.unique(exact)) == {-0.5, 0.25}
    assert abs(float(np.mean(exact == 0.25)) - 0.7) < 4 * math.sqrt(0.7 * 0.3 / rows)
    # The same key picks the same components as the noisy draw; only the spread is gone.
    noisy_pick = np.asarray(sample_actions({**pred, "log_std": jnp.full((rows, 2, 1), LOG_STD_RANGE[0])},
                                           jax.random.key(3)))[:, 0]
    np.testing.assert_array_equal(np.sign(noisy_pick - (-0.125)), np.sign(exact - (-0.125)))
    gaussian = {"action": jnp.full((3, 1), 0.4), "log_std": jnp.zeros((3, 1))}
    np.testing.assert_array_equal(np.asarray(sample_actions(gaussian, jax.random.key(4), noise=False)), np.float32(0.4))
