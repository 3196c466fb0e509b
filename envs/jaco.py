"""`jaco_reach_{top,bottom}_{left,right}`: the Kinova Jaco arm reaching one of four fixed targets.

The project's own task (ExoRL defines it; dm_control ships only the arm). The scene is built here
around dm_control's Jaco arm and three-finger hand models (`dm_control/third_party/kinova`): the hand
is attached at the arm's wrist site and the arm's base stands at (0, 0.4, 0) on a floor, like
dm_control's manipulation tasks. Each of the 9 joints (6 arm, 3 fingers) gets a force-limited velocity
actuator with the datasheet limits; the arm joints get 3-axis torque sensors.

Definition (ExoRL):
    target  = (+-0.09, +-0.09, 0.001)            ("top" = +y, "right" = +x)
    reward  = tolerance(|pinch site - target|, bounds=(0, 0.05), margin=0.05)   (gaussian)
    episode = 250 steps of 0.04 s (10 s); actions are joint velocities, scaled to [-1, 1] by envs.make.

Observation (42): arm joint angles as sin/cos (12), arm joint velocities (6), arm joint torques
about the joint axes (6), finger angles (3), finger velocities (3), pinch-site position (3) and
orientation matrix (9). Physics state: qpos (9) + qvel (9).
"""

from __future__ import annotations

import collections
import functools
import os

import numpy as np

TARGETS = {
    "reach_top_left": (-0.09, 0.09, 0.001),
    "reach_top_right": (0.09, 0.09, 0.001),
    "reach_bottom_left": (-0.09, -0.09, 0.001),
    "reach_bottom_right": (0.09, -0.09, 0.001),
}
TARGET_RADIUS = 0.05  # metres: reward is 1 within this distance of the target.
CONTROL_TIMESTEP = 0.04
PHYSICS_TIMESTEP = 0.002
TIME_LIMIT = 10.0  # seconds: 250 control steps.
ARM_OFFSET = (0.0, 0.4, 0.0)
ARM_JOINTS = tuple(f"joint_{i}" for i in range(1, 7))
FINGER_JOINTS = ("finger_1", "finger_2", "finger_3")
# Kinova datasheet limits (torque N m, velocity rad/s); large joints 1-3, small joints 4-6.
_LARGE = (30.5, np.deg2rad(36.0))
_SMALL = (6.8, np.deg2rad(48.0))
_ARM_VELOCITY_GAIN = 500.0
_FINGER = dict(kv=10.0, torque=1.0, velocity=5.0)
# A folded, collision-free posture with the hand about 0.3 m above the floor; episodes start here
# plus uniform noise of +-HOME_NOISE rad on every joint.
HOME_QPOS = (4.32, 3.65, 1.4, 0.0, 1.5708, 0.0, 0.4, 0.4, 0.4)
HOME_NOISE = 0.1

_SCENE = """
<mujoco model="jaco_reach">
  <option timestep="{timestep}" integrator="implicitfast"/>
  <visual><global offwidth="640" offheight="480"/></visual>
  <asset>
    <texture name="grid" type="2d" builtin="checker" rgb1=".1 .2 .3" rgb2=".2 .3 .4"
             width="300" height="300" mark="edge" markrgb=".2 .3 .4"/>
    <material name="grid" texture="grid" texrepeat="4 4" texuniform="true" reflectance=".2"/>
    <material name="target" rgba=".9 .2 .2 .6"/>
  </asset>
  <worldbody>
    <light name="light" pos="0 0 2" dir="0 0 -1"/>
    <camera name="front" pos="0 -1.0 1.0" xyaxes="1 0 0 0 0.7 0.7"/>
    <geom name="floor" type="plane" size="1 1 .1" material="grid"/>
    <!-- A mocap body, because MuJoCo does not recompute the pose of sites fixed to the world. -->
    <body name="target" mocap="true">
      <site name="target" type="sphere" size="{radius}" material="target"/>
    </body>
  </worldbody>
</mujoco>
"""


def _kinova_dir() -> str:
    import dm_control

    return os.path.join(os.path.dirname(dm_control.__file__), "third_party", "kinova")


def _add_velocity_actuator(joint, kv: float, torque: float, velocity: float) -> None:
    joint.root.actuator.add(
        "velocity",
        joint=joint,
        name=joint.name,
        kv=kv,
        ctrllimited=True,
        ctrlrange=(-velocity, velocity),
        forcelimited=True,
        forcerange=(-torque, torque),
    )


@functools.lru_cache(maxsize=1)
def model_xml_and_assets() -> tuple[str, dict]:
    """Builds the scene's MJCF (arm + hand + floor + target site) once per process.

    Returns:
      (xml string, assets dict of mesh files) for `mujoco.Physics.from_xml_string`.
    """
    from dm_control import mjcf

    scene = mjcf.from_xml_string(
        _SCENE.format(timestep=PHYSICS_TIMESTEP, radius=TARGET_RADIUS), model_dir=_kinova_dir()
    )
    arm = mjcf.from_path(os.path.join(_kinova_dir(), "jaco_arm.xml"))
    hand = mjcf.from_path(os.path.join(_kinova_dir(), "jaco_hand.xml"))
    for name in ARM_JOINTS:
        joint = arm.find("joint", name)
        torque, velocity = _LARGE if name in ARM_JOINTS[:3] else _SMALL
        _add_velocity_actuator(joint, _ARM_VELOCITY_GAIN, torque, velocity)
        site = joint.parent.add("site", name=f"{name}_site", size=[1e-3], group=4)
        arm.sensor.add("torque", site=site, name=f"{name}_torque")
    for name in FINGER_JOINTS:
        _add_velocity_actuator(
            hand.find("joint", name), _FINGER["kv"], _FINGER["torque"], _FINGER["velocity"]
        )
    arm.find("site", "wristsite").attach(hand)
    scene.attach(arm).pos = ARM_OFFSET
    return scene.to_xml_string(), scene.get_assets()


def _names(prefix: str, names: tuple[str, ...]) -> list[str]:
    return [f"{prefix}{n}" for n in names]


_ARM = "jaco_arm/"
_HAND = "jaco_arm/jaco_hand/"


def make_task_class():
    """Returns the `JacoReach` task class (built lazily: it subclasses dm_control's base.Task).

    Returns:
      A `dm_control.suite.base.Task` subclass; construct it as `cls(target=(x, y, z), random=seed)`.
    """
    from dm_control.suite import base
    from dm_control.utils import rewards

    class JacoReach(base.Task):
        """Move the pinch site (between the fingertips) to a fixed target."""

        def __init__(self, target, random=None):
            self._target = np.asarray(target, dtype=np.float64)
            super().__init__(random=random)

        @property
        def target(self) -> np.ndarray:
            return self._target

        def initialize_episode(self, physics):
            # Visual only (the reward reads self._target): mocap_pos now, body_pos for later resets.
            physics.named.model.body_pos["target"] = self._target
            physics.data.mocap_pos[0] = self._target
            home = np.asarray(HOME_QPOS)
            physics.data.qpos[:] = home + self.random.uniform(-HOME_NOISE, HOME_NOISE, home.shape)
            physics.data.qvel[:] = 0.0
            super().initialize_episode(physics)

        def pinch_distance(self, physics) -> float:
            pinch = physics.named.data.site_xpos[_HAND + "pinchsite"]
            return float(np.linalg.norm(pinch - self._target))

        def get_observation(self, physics):
            named = physics.named.data
            arm_qpos = named.qpos[_names(_ARM, ARM_JOINTS)]
            torques = named.sensordata[_names(_ARM, tuple(f"{j}_torque" for j in ARM_JOINTS))]
            # Each joint rotates about its body's z axis, where its torque sensor's site sits.
            axis_torques = torques.reshape(-1, 3)[:, 2]
            obs = collections.OrderedDict()
            obs["arm_joints_pos"] = np.stack([np.sin(arm_qpos), np.cos(arm_qpos)], -1).reshape(-1)
            obs["arm_joints_vel"] = named.qvel[_names(_ARM, ARM_JOINTS)].copy()
            obs["arm_joints_torque"] = axis_torques.copy()
            obs["finger_joints_pos"] = named.qpos[_names(_HAND, FINGER_JOINTS)].copy()
            obs["finger_joints_vel"] = named.qvel[_names(_HAND, FINGER_JOINTS)].copy()
            obs["pinch_site_pos"] = named.site_xpos[_HAND + "pinchsite"].copy()
            obs["pinch_site_rmat"] = named.site_xmat[_HAND + "pinchsite"].copy()
            return obs

        def get_reward(self, physics):
            return rewards.tolerance(
                self.pinch_distance(physics), bounds=(0, TARGET_RADIUS), margin=TARGET_RADIUS
            )

    return JacoReach


def load(task: str, seed: int | np.random.RandomState | None):
    """Builds a jaco reach environment.

    Args:
      task: one of `TARGETS` ("reach_top_left", ...).
      seed: seed (or RandomState) for the initial posture noise.

    Returns:
      A `dm_control.rl.control.Environment` (250 steps) with a dict observation of 42 numbers.

    Raises:
      ValueError: naming `task` when it is not a jaco task.
    """
    if task not in TARGETS:
        raise ValueError(f"task: expected one of {sorted(TARGETS)}, got {task!r}")
    from dm_control import mujoco
    from dm_control.rl import control

    physics = mujoco.Physics.from_xml_string(*model_xml_and_assets())
    task_obj = make_task_class()(TARGETS[task], random=seed)
    return control.Environment(
        physics, task_obj, time_limit=TIME_LIMIT, control_timestep=CONTROL_TIMESTEP
    )
