"""Action heads: what the action-predicting token's output becomes, its loss, and how an action is drawn.

- ``tanh``: one deterministic action in [-1, 1], trained by squared error.
- ``gaussian``: a tanh-squashed mean and a learned state-dependent log std, trained by the negative
  log-likelihood of a diagonal Normal around the mean.
- ``mixture``: K diagonal Gaussians with learned mixing weights (means squashed to [-1, 1]), trained by the
  mixture's negative log-likelihood. Drawing an action picks a component by its weight, then a point of
  it: a policy that commits to one of several modes (one of several goals it might search) where a
  mean-regressing head averages them and goes nowhere.
- ``categorical``: discrete actions: logits over the ``action_dim`` choices, trained by cross-entropy; its
  actions are integers (the most likely one, or one drawn from the softmax).

Every head also returns ``"action"``, its most likely action (the mean; for the mixture, the mean of the
heaviest component; for the categorical head, the most likely choice), which is what a deterministic
policy plays.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

LOG_STD_RANGE = (-5.0, 2.0)
_LOG_2PI = math.log(2 * math.pi)


def action_head(h, kind: str, action_dim: int, num_components: int = 8) -> dict:
    """The head's predictions from hidden states [..., D]; called inside the model's ``nn.compact`` method,
    so its layers are the model's own ("action_head", "log_std_head", "mixture_logits_head").

    Args:
      h: hidden states of the action-predicting tokens.
      kind: "tanh", "gaussian", "mixture" or "categorical".
      action_dim: size of the action vector (categorical: the number of choices).
      num_components: mixture components (mixture only).

    Returns:
      dict with "action" [..., act]; "log_std" [..., act] (gaussian); "logits" [..., K], "means" and
      "log_std" [..., K, act] (mixture); categorical: "action" int32 [...] and "logits" [..., act].
    """
    if kind == "categorical":
        logits = nn.Dense(action_dim, name="action_head")(h).astype(jnp.float32)
        return {"action": jnp.argmax(logits, axis=-1).astype(jnp.int32), "logits": logits}
    if kind == "mixture":
        k, a = num_components, action_dim
        logits = nn.Dense(k, name="mixture_logits_head")(h)
        means = jnp.tanh(nn.Dense(k * a, name="action_head")(h)).reshape(*h.shape[:-1], k, a)
        log_std = jnp.clip(nn.Dense(k * a, name="log_std_head")(h), *LOG_STD_RANGE).reshape(means.shape)
        best = jnp.argmax(logits, axis=-1)
        mode = jnp.take_along_axis(means, best[..., None, None], axis=-2)[..., 0, :]
        return {"action": mode, "logits": logits, "means": means, "log_std": log_std}
    out = {"action": jnp.tanh(nn.Dense(action_dim, name="action_head")(h))}
    if kind == "gaussian":
        out["log_std"] = jnp.clip(nn.Dense(action_dim, name="log_std_head")(h), *LOG_STD_RANGE)
    return out


def _normal_log_prob(x, mean, log_std):
    """Diagonal Normal log-density, summed over the last axis."""
    return jnp.sum(-0.5 * jnp.square((x - mean) * jnp.exp(-log_std)) - log_std - 0.5 * _LOG_2PI, axis=-1)


def per_step_loss(predictions: dict, actions):
    """The loss of every step [...]: squared error (tanh), negative log-likelihood (gaussian, mixture) or
    cross-entropy (categorical; ``actions`` int [...])."""
    if "logits" in predictions and "means" not in predictions:
        log_probs = jax.nn.log_softmax(predictions["logits"], axis=-1)
        return -jnp.take_along_axis(log_probs, actions.astype(jnp.int32)[..., None], axis=-1)[..., 0]
    if "logits" in predictions:
        log_weights = jax.nn.log_softmax(predictions["logits"], axis=-1)
        log_probs = _normal_log_prob(actions[..., None, :], predictions["means"], predictions["log_std"])
        return -jax.nn.logsumexp(log_weights + log_probs, axis=-1)
    if "log_std" in predictions:
        return -_normal_log_prob(actions, predictions["action"], predictions["log_std"])
    return jnp.sum(jnp.square(predictions["action"] - actions), axis=-1)


def check_temperature(temperature: float, action_head: str) -> None:
    """Raises ValueError unless ``temperature`` is positive, and 1 for heads other than the categorical."""
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be positive")
    if temperature != 1.0 and action_head != "categorical":
        raise ValueError(f"temperature={temperature} applies to the categorical action head only, not "
                         f"action_head={action_head!r}")


def sample_actions(predictions: dict, key, noise: bool = True, temperature: float = 1.0):
    """One action per row, drawn from the head's distribution and clipped to [-1, 1] (the tanh head has
    none: its action is returned as it is; the categorical head draws a choice from its softmax).

    ``noise=False`` keeps the choice among modes and drops the spread around them: the mixture plays the
    mean of a component drawn by its weight, the gaussian head its mean. ``temperature`` divides the
    categorical head's logits (below 1 sharper, towards greedy; above 1 flatter); the other heads have
    none (:func:`check_temperature`).
    """
    if "logits" in predictions and "means" not in predictions:
        logits = predictions["logits"] if temperature == 1.0 else predictions["logits"] / temperature
        return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)
    if "logits" in predictions:
        component_key, noise_key = jax.random.split(key)
        component = jax.random.categorical(component_key, predictions["logits"], axis=-1)
        pick = lambda x: jnp.take_along_axis(x, component[..., None, None], axis=-2)[..., 0, :]  # noqa: E731
        mean, log_std = pick(predictions["means"]), pick(predictions["log_std"])
    elif "log_std" in predictions:
        mean, log_std, noise_key = predictions["action"], predictions["log_std"], key
    else:
        return predictions["action"]
    if not noise:
        return mean
    return jnp.clip(mean + jnp.exp(log_std) * jax.random.normal(noise_key, mean.shape), -1.0, 1.0)
