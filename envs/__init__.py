"""ringrl environments: task names to `dm_env.Environment`s, reward relabelling, batches and video.

    env = envs.make("walker_walk", seed=0)          # flat float32 observations, actions in [-1, 1]
    envs.relabel_rewards("walker_run", physics_states, actions)
    batch = envs.make_batch("cartpole_swingup", 8, seed=0)
    env = envs.make("point_nav_hidden", seed=3)     # hidden goal: env.task_parameter, never observed

Simulators (dm_control, mujoco, gymnasium) and renderers are imported only when first needed.
"""

from envs.batch import BatchEnv, BatchStep, TaskInObservation
from envs.dm_env_to_gymnasium import to_gymnasium
from envs.gymnasium_to_dm_env import GymnasiumToDmEnv
from envs.make import TaskEnv, make, make_batch
from envs.registry import (SUCCESS_REWARD, TaskSpec, best_return, canonical_name, list_tasks, successes, task_set,
                           task_spec)
from envs.relabel import Relabeler, physics_state, relabel_rewards
from envs.video import FrameRenderer, RenderingUnavailableError, record_episodes, write_video

__all__ = [
    "SUCCESS_REWARD",
    "BatchEnv",
    "BatchStep",
    "FrameRenderer",
    "GymnasiumToDmEnv",
    "Relabeler",
    "RenderingUnavailableError",
    "TaskEnv",
    "TaskInObservation",
    "TaskSpec",
    "best_return",
    "canonical_name",
    "list_tasks",
    "make",
    "make_batch",
    "physics_state",
    "record_episodes",
    "relabel_rewards",
    "successes",
    "task_set",
    "task_spec",
    "to_gymnasium",
    "write_video",
]
