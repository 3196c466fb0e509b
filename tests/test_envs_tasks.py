"""Every task: episode length, flat sizes from REFERENCE.md, reward range, determinism under a seed."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

import envs

DMC_TASKS = [n for n in envs.list_tasks() if envs.task_spec(n).kind == "dm_control"]
GYM_TASKS = [n for n in envs.list_tasks() if envs.task_spec(n).kind == "gymnasium"]

# REFERENCE.md section 4 (obs / action / physics).
REFERENCE_SIZES = {
    "walker": (24, 6, 18),
    "cheetah": (17, 6, 18),
    "quadruped": (78, 12, 57),
    "cartpole": (5, 1, 4),
    "point_mass_maze": (4, 2, 4),
    "jaco": (42, 9, 18),
}


def run_episode(env, seed):
    """Random actions from `seed` until the last step; returns (observations, rewards, last timestep)."""
    rng = np.random.default_rng(seed)
    timestep = env.reset()
    observations, rewards = [timestep.observation], []
    while not timestep.last():
        timestep = env.step(rng.uniform(-1, 1, env.action_spec().shape).astype(np.float32))
        observations.append(timestep.observation)
        rewards.append(timestep.reward)
    return np.stack(observations), np.asarray(rewards), timestep


def test_list_tasks_covers_the_issue():
    exorl = {
        "walker_stand", "walker_walk", "walker_run", "cheetah_run", "cheetah_run_backward",
        "quadruped_walk", "quadruped_run", "cartpole_balance", "cartpole_balance_sparse",
        "cartpole_swingup", "cartpole_swingup_sparse",
    }
    exorl |= {f"{d}_reach_{v}_{h}" for d in ("jaco", "point_mass_maze")
              for v in ("top", "bottom") for h in ("left", "right")}
    hidden = {"point_mass_maze_reach_hidden", "point_nav_hidden", "point_nav_hidden_heldout"}
    hidden |= {f"{grid}_hidden{split}" for grid in ("dark_room", "dark_key_to_door") for split in ("", "_heldout")}
    gym = {f"{n}-{v}" for n in ("halfcheetah", "hopper", "walker2d") for v in ("v4", "v5")}
    assert set(envs.list_tasks()) == exorl | hidden | gym
    assert len(envs.list_tasks()) == len(exorl) + len(hidden) + len(gym)


@pytest.mark.parametrize("name", [n for n in envs.list_tasks() if not envs.task_spec(n).discrete])
def test_action_bounds_are_per_dimension(name):
    """As dm_control gives them: minimum and maximum have the action's shape, so sampling in them does too.
    (The grids' discrete actions are one integer: tests/test_envs_grid.py.)"""
    env = envs.make(name, seed=0)
    spec = env.action_spec()
    assert spec.minimum.shape == spec.maximum.shape == spec.shape == (envs.task_spec(name).action_dim,)
    np.testing.assert_array_equal(spec.minimum, -1.0)
    np.testing.assert_array_equal(spec.maximum, 1.0)
    assert np.random.default_rng(0).uniform(spec.minimum, spec.maximum).shape == spec.shape
    batch_spec = envs.make_batch(name, 2, seed=0).action_spec()
    assert batch_spec.minimum.shape == batch_spec.shape
    env.close()


@pytest.mark.parametrize("name", DMC_TASKS)
def test_dm_control_task_episode(name):
    spec = envs.task_spec(name)
    env = envs.make(name, seed=3)
    obs_dim, act_dim, phys_dim = REFERENCE_SIZES[spec.domain]
    assert env.observation_spec().shape == (obs_dim,)
    assert env.action_spec().shape == (act_dim,)
    np.testing.assert_array_equal(env.action_spec().minimum, -1.0)
    np.testing.assert_array_equal(env.action_spec().maximum, 1.0)
    observations, rewards, last = run_episode(env, seed=0)
    assert len(rewards) == spec.episode_length == (250 if spec.domain == "jaco" else 1000)
    assert observations.dtype == np.float32 and observations.shape[1] == obs_dim
    assert np.isfinite(observations).all()
    assert envs.physics_state(env).shape == (phys_dim,)
    assert rewards.dtype == np.float32 and rewards.min() >= 0.0 and rewards.max() <= 1.0
    assert last.discount == 1.0  # time limit only: a truncation

    again_obs, again_rewards, _ = run_episode(envs.make(name, seed=3), seed=0)
    np.testing.assert_array_equal(again_obs, observations)
    np.testing.assert_array_equal(again_rewards, rewards)
    other_obs, _, _ = run_episode(envs.make(name, seed=4), seed=0)
    assert not np.array_equal(other_obs[0], observations[0])


@pytest.mark.parametrize("name", GYM_TASKS)
def test_gymnasium_task_episode(name):
    spec = envs.task_spec(name)
    env = envs.make(name, seed=5)
    assert env.name == name
    assert env.observation_spec().shape == (spec.obs_dim,)
    assert env.action_spec().shape == (spec.action_dim,)
    assert envs.physics_state(env).shape == (spec.physics_dim,)
    observations, rewards, last = run_episode(env, seed=1)
    assert 1 <= len(rewards) <= 1000
    # Either the robot fell (terminated, discount 0) or the time limit cut it off (discount 1).
    assert (last.discount == 0.0) or (len(rewards) == 1000 and last.discount == 1.0)
    again_obs, again_rewards, _ = run_episode(envs.make(name, seed=5), seed=1)
    np.testing.assert_array_equal(again_obs, observations)
    np.testing.assert_array_equal(again_rewards, rewards)


def test_halfcheetah_runs_its_full_time_limit():
    _, rewards, last = run_episode(envs.make("halfcheetah", seed=0), seed=0)
    assert len(rewards) == 1000 and last.discount == 1.0


def test_hopper_falls_and_terminates():
    env = envs.make("hopper", seed=0)
    timestep = env.reset()
    steps = 0
    while not timestep.last():
        timestep = env.step(np.ones(3, np.float32))  # full torque topples it quickly
        steps += 1
    assert steps < 1000 and timestep.discount == 0.0


def test_gymnasium_names_and_versions():
    assert envs.canonical_name("hopper") == "hopper-v4"
    assert envs.canonical_name("Walker2d-V5") == "walker2d-v5"
    assert envs.canonical_name("walker_walk") == "walker_walk"
    assert envs.make("hopper", seed=0).name == "hopper-v4"
    assert envs.make("hopper-v5", seed=0).gym_env.spec.id == "Hopper-v5"
    assert envs.make("halfcheetah", seed=0).gym_env.spec.id == "HalfCheetah-v4"


def test_unknown_name_lists_close_matches_and_known_tasks():
    with pytest.raises(ValueError, match="name") as info:
        envs.make("walker_wlak", seed=0)
    message = str(info.value)
    assert "'walker_walk'" in message.split("Known tasks")[0]
    assert "cartpole_swingup" in message and "hopper-v5" in message


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"seed": -1}, "seed"),
        ({"seed": 1.5}, "seed"),
        ({"seed": 0, "action_repeat": 0}, "action_repeat"),
    ],
)
def test_make_rejects_bad_arguments(kwargs, argument):
    with pytest.raises(ValueError, match=argument):
        envs.make("cartpole_swingup", **kwargs)


def test_actions_are_checked_and_clipped():
    env = envs.make("cartpole_swingup", seed=0)
    env.reset()
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([np.nan], np.float32))
    clipped, plain = envs.make("cartpole_swingup", seed=0), envs.make("cartpole_swingup", seed=0)
    clipped.reset(), plain.reset()
    for _ in range(20):
        a, b = clipped.step(np.array([7.0], np.float32)), plain.step(np.array([1.0], np.float32))
    np.testing.assert_array_equal(a.observation, b.observation)


def test_jaco_actions_map_to_joint_velocity_limits():
    env = envs.make("jaco_reach_top_left", seed=0)
    env.reset()
    env.step(np.ones(9, np.float32))
    ctrl = env.physics.data.ctrl
    np.testing.assert_allclose(ctrl[:3], np.deg2rad(36.0))
    np.testing.assert_allclose(ctrl[3:6], np.deg2rad(48.0))
    np.testing.assert_allclose(ctrl[6:], 5.0)


def test_action_repeat_sums_rewards_over_repeated_actions():
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (500, 1)).astype(np.float32)
    repeated, single = envs.make("cartpole_swingup", seed=2, action_repeat=2), envs.make(
        "cartpole_swingup", seed=2)
    assert repeated.episode_length == 500
    repeated.reset(), single.reset()
    for action in actions:
        big = repeated.step(action)
        small = [single.step(action), single.step(action)]
        np.testing.assert_allclose(big.reward, small[0].reward + small[1].reward, rtol=1e-6)
        np.testing.assert_array_equal(big.observation, small[1].observation)
    assert big.last() and small[1].last()


def test_reseed_restarts_the_initial_state():
    env = envs.make("walker_walk", seed=7)
    first = env.reset().observation
    env.reset()
    env.reseed(7)
    np.testing.assert_array_equal(env.reset().observation, first)
    gym_env = envs.make("hopper", seed=7)
    first = gym_env.reset().observation
    gym_env.reseed(7)
    np.testing.assert_array_equal(gym_env.reset().observation, first)


def test_import_envs_is_light():
    code = (
        "import sys, envs; heavy = [m for m in ('mujoco', 'dm_control', 'gymnasium', 'imageio', 'jax')"
        " if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    repo = pathlib.Path(__file__).resolve().parents[1]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=repo
    )
    assert result.returncode == 0, result.stdout + result.stderr
