"""From sampler batches (or a policy's running history) to the per-step inputs the model embeds.

A step ``t`` of a context is ``(return-to-go R_t, state s_t, action a_t, reward r_t)`` plus its timestep
and the index of its trajectory in the context. The completion flag of step ``t`` says whether the
trajectory had reached its target return *before* acting at ``t``: :func:`completion_flag`, the one
definition, is ``R_t <= 0``. The sampler and an acting policy both compute ``R_t`` as
``float32(target - sum(rewards[:t]))`` with the sum in float64 left to right, so they agree bit for bit.

Token layouts (``ModelConfig.token_layout``):

- ``interleaved``: one token per modality, in the order ``ModelConfig.modalities`` (R, s, a, r); the
  state token's output predicts ``a_t``, and causal attention keeps ``a_t`` itself out of its view.
- ``fused``: one token per step holding ``R_t``, the flag, ``s_t`` and the *previous* step's action and
  reward (zero at a trajectory's first step), so the token that predicts ``a_t`` has seen ``s_t`` and
  not ``a_t``.

Discrete actions stay integers here ([B, S], int32); the model embeds them one-hot, and a previous action
that does not exist is -1 (an all-zero one-hot, as the continuous zero vector).
"""

from __future__ import annotations

import numpy as np

STEP_KEYS = ("observations", "actions", "rewards", "returns_to_go", "prev_actions", "prev_rewards",
             "timesteps", "trajectory_index")


def completion_flag(returns_to_go):
    """True where the target return had been reached before the step (``R_t <= 0``); NumPy or JAX arrays."""
    return returns_to_go <= 0


def step_inputs(batch: dict) -> dict:
    """The model's inputs from a ``datasets.ContextSampler`` batch.

    Args:
      batch: sampler batch with observations [B, S, obs], actions [B, S, act], rewards [B, S],
        returns_to_go [B, S], timesteps [B, S], trajectory_index [B, S], mask [B, S].

    Returns:
      dict of NumPy arrays with ``STEP_KEYS``: the batch's own fields plus ``prev_actions`` [B, S, act]
      and ``prev_rewards`` [B, S], the previous step's action and reward within the same trajectory
      (zero at a trajectory's first step and where the previous step was cut off by the window).
      Discrete actions (an integer batch [B, S]) stay int32, with -1 for a missing previous action.
      ``labels`` is what the loss predicts: the batch's own ``labels`` where it has them (DPT's optimal
      actions), else the actions taken.
    """
    missing = [k for k in ("observations", "actions", "rewards", "returns_to_go", "timesteps",
                           "trajectory_index", "mask") if k not in batch]
    if missing:
        raise ValueError(f"batch is missing keys {missing}")
    actions, rewards = np.asarray(batch["actions"]), np.asarray(batch["rewards"])
    traj, steps, mask = (np.asarray(batch[k]) for k in ("trajectory_index", "timesteps", "mask"))
    same = np.zeros(mask.shape, bool)  # step t-1 in the row is step (timestep - 1) of the same trajectory
    same[:, 1:] = (traj[:, 1:] == traj[:, :-1]) & (steps[:, 1:] == steps[:, :-1] + 1) & mask[:, :-1]
    prev_actions = np.zeros_like(actions)
    prev_actions[:, 1:] = actions[:, :-1]
    prev_rewards = np.zeros_like(rewards)
    prev_rewards[:, 1:] = rewards[:, :-1]
    discrete = actions.dtype.kind in "iu"
    if discrete:
        prev_actions = np.where(same, prev_actions, -1).astype(np.int32)
    else:
        prev_actions = np.where(same[..., None], prev_actions, 0.0).astype(np.float32)
    return {
        "observations": np.asarray(batch["observations"], np.float32),
        "actions": actions.astype(np.int32 if discrete else np.float32),
        "rewards": rewards.astype(np.float32),
        "returns_to_go": np.asarray(batch["returns_to_go"], np.float32),
        "prev_actions": prev_actions,
        "labels": np.asarray(batch.get("labels", actions)).astype(np.int32 if discrete else np.float32),
        "prev_rewards": np.where(same, prev_rewards, 0.0).astype(np.float32),
        "timesteps": steps.astype(np.int32),
        "trajectory_index": traj.astype(np.int32),
    }


def decode_window(tokens_per_step: int, action_token: int, first: bool) -> tuple[int, int]:
    """Token slice of a two-step embedding [previous step, current step] that a decoding call feeds.

    Everything after the previous step's action-predicting token (its action, reward) and the current
    step up to and including its own action-predicting token; only the latter on the very first step.
    """
    end = tokens_per_step + action_token + 1
    return (tokens_per_step if first else action_token + 1), end
