"""The MJCF of the simulated scene: a WidowX 250s built from ``kinematics`` on a table, the
Bridge over-the-shoulder camera, lights, and one task's two objects.

The arm is derived from the product-of-exponentials parameters (``HOME_M``, ``SCREW_AXES``),
never retyped: every body frame has the identity orientation at q = 0 and sits on its joint's
screw axis (the point of the axis closest to the previous joint's point); the end-effector
site ``ee`` sits at ``HOME_M``. So MuJoCo's forward kinematics is ``kinematics.fk``. Joint
ranges are ``JOINT_LOWER/UPPER``; the fingers slide over ``FINGER_CLOSED_M..FINGER_OPEN_M``
(right = -left, coupled by an equality like the real rack). Link shapes are primitives.

Physics choices (measured in ../shared simulation facts): Euler at 2 ms, elliptic friction
cones with impratio 10 (friction grasps hold), position actuators whose gains ``world`` sets
from the effective joint inertia, gravity compensation of the links (the servos' job; torque
off removes it).
"""
from __future__ import annotations

import numpy as np

from .. import kinematics as K
from .tasks import ObjectSpec, Task

TIMESTEP = 0.002
# Bridge "3rd view" camera (SimplerEnv): pose in base_link, SAPIEN axes (x forward, z up).
CAMERA_POS = (0.0, -0.16, 0.36)
CAMERA_QUAT_WXYZ = (0.8993, -0.0926, 0.3589, 0.2321)
# Intrinsics at 640x480 (a Logitech C920): fx = fy, principal point at the centre. Given as
# sensor intrinsics, MuJoCo keeps this field of view at any render size (a resized frame).
CAMERA_F_PX, CAMERA_SIZE = 623.588, (640, 480)
# Finger pads: the inner face sits PAD_INSET inside the finger joint position (3 mm gap when
# closed, 47 mm open); the pads reach PAD_TIP beyond the end effector along the approach axis.
PAD_INSET, PAD_THICK, PAD_TIP, PAD_LEN, PAD_WIDTH = 0.0135, 0.008, 0.014, 0.062, 0.02
LINK_MASS = (0.4, 0.45, 0.3, 0.2, 0.1, 0.15)   # kg, bodies carried by each arm joint
FINGER_MASS = 0.03
FINGER_DAMPING = 100.0  # N s/m: the fingers close in ~0.4 s, like the real gripper
ARMATURE = 0.02      # reflected rotor inertia of a geared servo, kg m^2
TABLE_XY = ((-0.25, 0.8), (-0.6, 0.6))
ROBOT_RGBA = "0.12 0.12 0.13 1"


def _f(values) -> str:
    return " ".join(f"{float(v):.9g}" for v in np.ravel(values))


def joint_points() -> np.ndarray:
    """A point on each arm joint's axis (home configuration, base frame)."""
    points, prev = [], np.zeros(3)
    for S in K.SCREW_AXES:
        w, v = S[:3], S[3:]
        q = np.cross(w, v)  # v = -w x q  =>  q = w x v is on the axis (|w| = 1)
        # the point of the axis closest to the previous point
        p = q + w * float(np.dot(prev - q, w))
        points.append(p)
        prev = p
    return np.array(points)


def _quat_wxyz(R) -> np.ndarray:
    x, y, z, w = K.matrix_to_quat(R)
    return np.array([w, x, y, z])


def camera_quat_mujoco() -> np.ndarray:
    """The camera's orientation in MuJoCo's convention (looks along -z, y up)."""
    w, x, y, z = CAMERA_QUAT_WXYZ
    n = np.sqrt(w * w + x * x + y * y + z * z)
    w, x, y, z = w / n, x / n, y / n, z / n
    R = np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                  [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                  [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])
    # MuJoCo camera axes in SAPIEN axes: x = -y (right), y = z (up), z = -x (backward).
    return _quat_wxyz(R @ np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


def _arm_xml() -> str:
    """Nested bodies waist .. wrist_rotate, the gripper and the ee site."""
    pts = joint_points()
    ee = K.HOME_M[:3, 3]
    # Link shapes (home configuration, base frame): capsules between joint points.
    forearm_mid = pts[3] + 0.4 * (pts[4] - pts[3])
    shapes = [
        [("capsule", pts[0] + [0, 0, 0.04], pts[1], 0.035)],
        [("capsule", pts[1], pts[2], 0.025)],
        [("capsule", pts[2], forearm_mid, 0.022)],
        [("capsule", forearm_mid, pts[4], 0.02)],
        [("capsule", pts[4], pts[4] + [0.045, 0, 0], 0.02)],
        [],
    ]
    xml, close = [], []
    prev = np.zeros(3)
    for i, (name, S) in enumerate(zip(K.ARM_JOINTS, K.SCREW_AXES)):
        p = pts[i]
        xml.append(f'<body name="{name}_link" pos="{_f(p - prev)}">')
        xml.append(f'<joint name="{name}" axis="{_f(S[:3])}" range="{K.JOINT_LOWER[i]:.9g} '
                   f'{K.JOINT_UPPER[i]:.9g}" armature="{ARMATURE}" damping="1"/>')
        for kind, a, b, r in shapes[i]:
            xml.append(f'<geom class="robot" type="{kind}" fromto="{_f(a - p)} {_f(b - p)}" '
                       f'size="{r}" mass="{LINK_MASS[i]}"/>')
        close.append("</body>")
        prev = p
    # Gripper, in the wrist_rotate body (frame at pts[5], identity at home).
    palm_x = ee[0] - PAD_LEN + PAD_TIP - 0.025
    approach = K.HOME_M[:3, :3]  # ee axes: x = approach, y = finger travel
    xml.append(f'<geom class="robot" type="box" pos="{_f(approach @ [palm_x - ee[0], 0, 0] + ee - prev)}" '
               f'size="0.025 0.045 0.02" mass="{LINK_MASS[5]}"/>')
    pad_center = approach @ [PAD_TIP - PAD_LEN / 2, 0, 0] + ee - prev
    for side, sign in (("left", 1.0), ("right", -1.0)):
        travel = approach @ [0, sign, 0]
        lo, hi = (K.FINGER_CLOSED_M, K.FINGER_OPEN_M) if sign > 0 else (-K.FINGER_OPEN_M,
                                                                      -K.FINGER_CLOSED_M)
        # Body at the open position; qpos = ref = FINGER_OPEN there.
        open_q = sign * K.FINGER_OPEN_M
        xml.append(f'<body name="{side}_finger_link" pos="{_f(pad_center + travel * K.FINGER_OPEN_M)}">')
        xml.append(f'<joint name="{side}_finger" type="slide" axis="{_f(approach @ [0, 1, 0])}" '
                   f'range="{lo:.9g} {hi:.9g}" ref="{open_q:.9g}" damping="{FINGER_DAMPING}" '
                   'armature="0.01"/>')
        xml.append(f'<geom name="{side}_pad" class="pad" type="box" '
                   f'pos="{_f(travel * (PAD_THICK / 2 - PAD_INSET))}" '
                   f'size="{PAD_LEN / 2} {PAD_THICK / 2} {PAD_WIDTH / 2}" mass="{FINGER_MASS}"/>')
        xml.append("</body>")
    xml.append(f'<site name="ee" pos="{_f(ee - prev)}" quat="{_f(_quat_wxyz(K.HOME_M[:3, :3]))}" '
               'size="0.005" rgba="1 0 0 0"/>')
    return "\n".join(xml + close[::-1])


def _object_xml(spec: ObjectSpec, role: str) -> str:
    geoms = []
    for i, g in enumerate(spec.geoms):
        where = f'fromto="{_f(g.fromto)}"' if g.fromto else f'pos="{_f(g.pos)}"'
        geoms.append(f'<geom name="{role}_{i}" class="object" type="{g.type}" size="{_f(g.size)}" '
                     f'{where} rgba="{_f(g.rgba)}" mass="{g.mass}" '
                     f'friction="{spec.friction} 0.01 0.001"/>')
    return (f'<body name="{role}" pos="0 0 {spec.rest_z}"><freejoint name="{role}"/>'
            + "".join(geoms) + "</body>")


def build_mjcf(task: Task) -> str:
    """The scene of ``task`` as an MJCF string."""
    (x0, x1), (y0, y1) = TABLE_XY
    w, h = CAMERA_SIZE
    lo, hi = K.FINGER_CLOSED_M, K.FINGER_OPEN_M
    return f"""<mujoco model="widowx_tabletop_{task.name}">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{TIMESTEP}" integrator="Euler" cone="elliptic" impratio="10"/>
  <visual><global offwidth="1280" offheight="960"/><quality shadowsize="0" offsamples="0"/>
    <headlight ambient="0.35 0.35 0.35" diffuse="0.3 0.3 0.3" specular="0 0 0"/></visual>
  <default>
    <default class="robot"><geom contype="4" conaffinity="3" rgba="{ROBOT_RGBA}"/></default>
    <default class="pad"><geom contype="4" conaffinity="3" friction="1.5 0.02 0.001"
      rgba="0.35 0.35 0.38 1" solref="0.004 1"/></default>
    <default class="object"><geom contype="2" conaffinity="7" solref="0.004 1"/></default>
  </default>
  <asset>
    <texture name="wood" type="2d" builtin="flat" rgb1="0.72 0.6 0.46" width="16" height="16"/>
    <material name="table" texture="wood" rgba="0.72 0.6 0.46 1"/>
  </asset>
  <worldbody>
    <light name="key" pos="0.3 -0.4 1.2" dir="0 0.3 -1" diffuse="0.6 0.6 0.6" castshadow="false"/>
    <light name="fill" pos="0.6 0.5 1.0" dir="-0.3 -0.4 -1" diffuse="0.3 0.3 0.3" castshadow="false"/>
    <geom name="table" type="box" pos="{(x0 + x1) / 2} {(y0 + y1) / 2} -0.02"
      size="{(x1 - x0) / 2} {(y1 - y0) / 2} 0.02" material="table" contype="1" conaffinity="6"/>
    <geom name="floor" type="plane" pos="0 0 -0.75" size="3 3 0.1" rgba="0.35 0.35 0.37 1"
      contype="0" conaffinity="0"/>
    <geom name="wall" type="box" pos="1.1 0 0.2" size="0.02 1.5 1.0" rgba="0.82 0.82 0.8 1"
      contype="0" conaffinity="0"/>
    <geom name="base" type="cylinder" pos="0 0 0.02" size="0.06 0.02" rgba="{ROBOT_RGBA}"
      contype="0" conaffinity="0"/>
    <camera name="bridge" pos="{_f(CAMERA_POS)}" quat="{_f(camera_quat_mujoco())}"
      resolution="{w} {h}" focalpixel="{CAMERA_F_PX} {CAMERA_F_PX}" principalpixel="0 0"
      sensorsize="{w * 1e-5:.6g} {h * 1e-5:.6g}"/>
    {_arm_xml()}
    {_object_xml(task.source, "source")}
    {_object_xml(task.target, "target")}
  </worldbody>
  <equality><joint joint1="right_finger" joint2="left_finger" polycoef="0 -1 0 0 0"/></equality>
  <actuator>
    {"".join(f'<position name="{j}" joint="{j}" kp="1" forcelimited="true" forcerange="-10 10"/>'
             for j in K.ARM_JOINTS)}
    <position name="gripper" joint="left_finger" kp="1500" ctrlrange="{lo} {hi}"
      forcelimited="true" forcerange="-10 10"/>
  </actuator>
</mujoco>"""
