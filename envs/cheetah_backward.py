"""`cheetah_run_backward`: the dm_control cheetah rewarded for running backward.

Definition (ExoRL): the cheetah `run` task with the forward speed reversed, i.e.
    reward = tolerance(-speed, bounds=(10, inf), margin=10, value_at_margin=0, sigmoid="linear"),
where `speed` is the torso subtree's linear velocity along x. Model, initial state and episode
length (1000 steps of 0.01 s) are those of dm_control's cheetah.
"""

from __future__ import annotations

import numpy as np

# Backward speed (m/s) at and above which the reward is 1, as for cheetah run.
RUN_SPEED = 10.0
TIME_LIMIT = 10.0  # seconds: 1000 control steps of 0.01 s.


def make_task_class():
    """Returns the `CheetahRunBackward` task class (built lazily: it subclasses dm_control's cheetah).

    Returns:
      A `dm_control.suite.cheetah.Cheetah` subclass whose reward prefers negative speed.
    """
    from dm_control.suite import cheetah
    from dm_control.utils import rewards

    class CheetahRunBackward(cheetah.Cheetah):
        """Cheetah run, reversed: reward grows linearly with backward speed up to `RUN_SPEED`."""

        def get_reward(self, physics):
            return rewards.tolerance(
                -physics.speed(),
                bounds=(RUN_SPEED, float("inf")),
                margin=RUN_SPEED,
                value_at_margin=0,
                sigmoid="linear",
            )

    return CheetahRunBackward


def load(seed: int | np.random.RandomState | None):
    """Builds the cheetah_run_backward environment.

    Args:
      seed: seed (or RandomState) for the task's initial-state randomness.

    Returns:
      A `dm_control.rl.control.Environment` with dict observations `position` (8) and `velocity` (9).
    """
    from dm_control.rl import control
    from dm_control.suite import cheetah

    physics = cheetah.Physics.from_xml_string(*cheetah.get_model_and_assets())
    task = make_task_class()(random=seed)
    return control.Environment(physics, task, time_limit=TIME_LIMIT)
