"""The project's own tasks behave as defined: cheetah backward, jaco reach targets, the maze walls."""

import numpy as np
import pytest

import envs
from envs import jaco, point_mass_maze


def test_cheetah_backward_rewards_backward_speed_linearly():
    relabel = envs.Relabeler("cheetah_run_backward")
    forward = envs.Relabeler("cheetah_run")
    env = envs.make("cheetah_run_backward", seed=0)
    env.reset()
    state = envs.physics_state(env)
    rewards = {}
    for speed in (-20.0, -10.0, -5.0, 0.0, 5.0):
        moving = state.copy()
        moving[9:] = 0.0
        moving[9] = speed  # qvel of the root x slide: the whole body moves at this speed
        rewards[speed] = (relabel(moving[None])[0], forward(moving[None])[0])
    backward = [rewards[s][0] for s in (-20, -10, -5, 0, 5)]
    np.testing.assert_allclose(backward, [1, 1, 0.5, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rewards[5.0][1], 0.5, atol=1e-6)  # cheetah run mirrors it
    np.testing.assert_allclose(rewards[-5.0][1], 0.0, atol=1e-6)


def test_jaco_targets_are_the_exorl_ones():
    expected = {
        "top_left": (-0.09, 0.09), "top_right": (0.09, 0.09),
        "bottom_left": (-0.09, -0.09), "bottom_right": (0.09, -0.09),
    }
    for corner, (x, y) in expected.items():
        env = envs.make(f"jaco_reach_{corner}", seed=0)
        env.reset()
        np.testing.assert_allclose(env.task.target, (x, y, 0.001))
        np.testing.assert_allclose(env.physics.named.data.site_xpos["target"], (x, y, 0.001))


def solve_jaco_ik(physics, target, iterations=200):
    """Damped least squares on the arm joints until the pinch site sits on `target`; returns qpos."""
    import mujoco

    site = physics.model.name2id("jaco_arm/jaco_hand/pinchsite", "site")
    jac = np.zeros((3, physics.model.nv))
    for _ in range(iterations):
        physics.forward()
        error = target - physics.data.site_xpos[site]
        if np.linalg.norm(error) < 1e-4:
            break
        mujoco.mj_jacSite(physics.model.ptr, physics.data.ptr, jac, None, site)
        arm = jac[:, :6]
        step = arm.T @ np.linalg.solve(arm @ arm.T + 1e-4 * np.eye(3), error)
        physics.data.qpos[:6] += np.clip(step, -0.2, 0.2)
    return physics.data.qpos.copy()


@pytest.mark.parametrize("corner", ["top_left", "bottom_right"])
def test_jaco_reward_is_the_tolerance_of_the_pinch_distance(corner):
    env = envs.make(f"jaco_reach_{corner}", seed=1)
    env.reset()
    physics, task = env.physics, env.task
    start = envs.physics_state(env)
    qpos = solve_jaco_ik(physics, task.target + np.array([0, 0, 0.03]))
    on_target = start.copy()
    on_target[:9] = qpos
    on_target[9:] = 0
    relabel = envs.Relabeler(f"jaco_reach_{corner}")
    assert relabel(on_target[None])[0] == 1.0  # 3 cm away: inside the 5 cm bound
    # Outside the bound the gaussian tolerance gives 0.1 at the margin (10 cm away).
    scale = np.sqrt(-2 * np.log(0.1))
    with physics.reset_context():
        physics.set_state(start)
    distance = task.pinch_distance(physics)
    assert distance > 0.05
    want = np.exp(-0.5 * ((distance - 0.05) / 0.05 * scale) ** 2)
    np.testing.assert_allclose(relabel(start[None])[0], want, rtol=1e-5)


def test_jaco_velocity_controller_reaches_the_target():
    env = envs.make("jaco_reach_top_right", seed=2)
    timestep = env.reset()
    start = envs.physics_state(env)
    goal = solve_jaco_ik(env.physics, env.task.target + np.array([0, 0, 0.02]))
    with env.physics.reset_context():
        env.physics.set_state(start)
    rewards = []
    while not timestep.last():
        error = goal[:6] - env.physics.data.qpos[:6]
        action = np.concatenate([np.clip(2.0 * error, -1, 1), np.zeros(3)]).astype(np.float32)
        timestep = env.step(action)
        rewards.append(timestep.reward)
    assert len(rewards) == 250 and rewards[-1] > 0.9 and sum(rewards) > 100


def drive(env, waypoints, steps_per_waypoint=400):
    """Heads the point mass to each waypoint in turn at full force; returns rewards and positions."""
    timestep = env.reset()
    rewards, positions = [], []
    for waypoint in waypoints:
        for _ in range(steps_per_waypoint):
            if timestep.last():
                return np.array(rewards), np.array(positions)
            delta = np.asarray(waypoint) - env.physics.data.qpos
            action = np.clip(delta / 0.01, -1, 1).astype(np.float32)
            timestep = env.step(action)
            rewards.append(timestep.reward)
            positions.append(env.physics.data.qpos.copy())
    return np.array(rewards), np.array(positions)


def test_maze_box_blocks_the_direct_path_down():
    env = envs.make("point_mass_maze_reach_bottom_left", seed=0)
    rewards, positions = drive(env, [(-0.2, -0.2)], steps_per_waypoint=1000)
    assert positions[:, 1].min() > -0.1  # stopped by the box's bottom wall
    assert rewards.max() < 1e-3


@pytest.mark.parametrize("corner", ["top_left", "top_right", "bottom_left", "bottom_right"])
def test_maze_targets_are_reachable_around_the_box(corner):
    env = envs.make(f"point_mass_maze_reach_{corner}", seed=0)
    target = np.array(point_mass_maze.TARGETS[f"reach_{corner}"])
    side = np.sign(target[0])
    path = [(0.0, 0.2), (side * 0.2, 0.2), tuple(target)]
    rewards, positions = drive(env, path, steps_per_waypoint=300)
    assert len(rewards) == 900 and rewards.max() == 1.0
    assert np.linalg.norm(positions[-1] - target) < point_mass_maze.TARGET_SIZE


def test_maze_start_is_inside_the_box():
    for seed in range(5):
        env = envs.make("point_mass_maze_reach_top_left", seed=seed)
        observation = env.reset().observation
        assert np.all(np.abs(observation[:2]) <= point_mass_maze.START_HALF_WIDTH)
        np.testing.assert_allclose(env.physics.named.data.geom_xpos["target", :2], (-0.2, 0.2))
        np.testing.assert_array_equal(observation[2:], 0.0)


def test_custom_loaders_reject_unknown_tasks():
    with pytest.raises(ValueError, match="task"):
        jaco.load("reach_middle", seed=0)
    with pytest.raises(ValueError, match="task"):
        point_mass_maze.load("reach_middle", seed=0)
