"""One episode of a collection policy in an `envs` environment, recorded as a `datasets.Trajectory`.

Shared by the collector and the demonstrators' per-history runner; NumPy only.
"""

from __future__ import annotations

import numpy as np

import datasets
import envs


def play_episode(env, policy, episode: int, *, source: str, **fields) -> datasets.Trajectory:
    """Plays one episode from a reset with the collector's policy protocol and records it with physics
    states (``begin_episode(episode)``, ``action(observation)``, ``observe(...)``); ``fields`` (e.g. the
    hidden ``task`` and ``history``) go into the Trajectory as they are."""
    policy.begin_episode(episode)
    timestep = env.reset()
    observations, actions, rewards, physics = [], [], [], []
    while True:
        observation = timestep.observation
        action = policy.action(observation)
        physics.append(envs.physics_state(env))
        timestep = env.step(action)
        observations.append(observation)
        actions.append(action)
        rewards.append(timestep.reward)
        policy.observe(observation, action, timestep.reward, timestep.discount, timestep.observation)
        if timestep.last():
            break
    terminal = bool(timestep.discount == 0)  # dm_env: discount 0 ends in a terminal state, 1 is a time limit
    last = np.arange(len(rewards)) == len(rewards) - 1
    return datasets.Trajectory(
        observations=np.stack(observations), actions=np.stack(actions), rewards=np.asarray(rewards, np.float32),
        terminals=last & terminal, timeouts=last & (not terminal), physics=np.stack(physics),
        final_observation=timestep.observation, final_physics=envs.physics_state(env), source=source, **fields)
