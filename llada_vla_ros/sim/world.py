"""The simulated world: MuJoCo physics of one task's scene, driven like the xs_sdk driver.

``World`` is what both the Gymnasium environment and the ROS ``sim_world`` node wrap:

- ``command_arm(q)``: a JointGroupCommand 'arm' in position mode. The joint reference moves
  to the goal under the driver's time profile (trapezoid over ``moving_time`` with
  ``accel_time`` ramps, like Dynamixel time-based profiles; never faster than the joint
  velocity limit), so targets are rate-limited as on the real arm (a sudden target jump
  would also make contacts blow up). Goals outside the joint limits are refused.
- ``command_gripper(effort)``: a JointSingleCommand 'gripper' in pwm mode: +effort opens,
  -effort closes; the squeeze force grows with |effort|.
- ``set_torque``: torque off removes the servo (gains and gravity compensation): the arm
  falls under gravity. Torque on holds where the arm is.
- ``advance(seconds)``: physics at 2 ms; observations: joint states, end-effector pose,
  object poses, ``scene_state()`` for the task's success rule, ``render()``.

Position servos: gains from the effective joint inertia at the initial pose (natural
frequency ``SERVO_HZ``, critical damping as joint damping, which Euler integrates
implicitly), gravity of the links compensated per joint while torque is on.
"""
from __future__ import annotations

from typing import Optional, Sequence

import mujoco  # after llada_vla_ros/sim/__init__.py, which defaults MUJOCO_GL to egl
import numpy as np

from .. import kinematics as K
from .model import build_mjcf
from .tasks import SceneState, Task, get_task, placement

JOINT_NAMES = list(K.ARM_JOINTS) + ["gripper", "left_finger", "right_finger"]
# SimplerEnv's initial arm joints (flat table scene): the gripper points down above the table.
INITIAL_JOINTS = np.array([-0.0184, 0.0399, 0.2224, -0.0046, 1.3652, 0.0015])
SERVO_HZ = 8.0                # natural frequency of the position servos
CONTROL_DT = 0.01             # the servo reference is updated every 10 ms (5 physics steps)
DEFAULT_MOVING_TIME = 2.0     # s, xs_sdk's default arm time profile
DEFAULT_ACCEL_TIME = 0.3
GRIPPER_FORCE_PER_EFFORT = 10.0 / 250.0  # N of squeeze per unit of pwm effort
MAX_GRIPPER_EFFORT = 885.0
SETTLE_S = 0.3                # objects drop onto the table at reset


class World:
    """One task's scene. ``reset(seed)`` lays out an episode; the rest mirrors the driver."""

    def __init__(self, task="carrot", layout: str = "random"):
        self.task: Task = get_task(task) if isinstance(task, str) else task
        self.layout = layout
        placement(self.task, layout, 0)  # validates the layout name
        self.model = mujoco.MjModel.from_xml_string(build_mjcf(self.task))
        self.data = mujoco.MjData(self.model)
        m = self.model
        self._qpos = np.array([m.joint(j).qposadr[0] for j in K.ARM_JOINTS])
        self._dof = np.array([m.joint(j).dofadr[0] for j in K.ARM_JOINTS])
        self._finger_q = [m.joint(f"{s}_finger").qposadr[0] for s in ("left", "right")]
        self._act = np.array([m.actuator(j).id for j in K.ARM_JOINTS])
        self._grip_act = m.actuator("gripper").id
        self._ee = m.site("ee").id
        self._bodies = {name: m.body(name).id for name in ("source", "target")}
        self._free = {name: (m.joint(name).qposadr[0], m.joint(name).dofadr[0])
                      for name in ("source", "target")}
        self._geom_role = self._geom_roles()
        self._renderers: dict = {}
        self.seed: Optional[int] = None
        # the driver's time profile (set_operating_modes); a new episode keeps it
        self.moving_time, self.accel_time = DEFAULT_MOVING_TIME, DEFAULT_ACCEL_TIME
        self.torque = np.ones(7, bool)
        self._tune_servos()
        self.reset(0)

    # --- set-up --------------------------------------------------------------------------------
    def _geom_roles(self) -> np.ndarray:
        """Per geom: what it belongs to, for contact bookkeeping."""
        m = self.model
        roles = np.array(["robot"] * m.ngeom, dtype=object)
        for g in range(m.ngeom):
            body = m.body(m.geom_bodyid[g]).name
            name = m.geom(g).name
            if name == "table":
                roles[g] = "table"
            elif body in ("source", "target"):
                roles[g] = body
            elif name in ("left_pad", "right_pad"):
                roles[g] = name.replace("pad", "finger")
            elif m.geom_bodyid[g] == 0:
                roles[g] = "world"
        return roles

    def _tune_servos(self) -> None:
        """kp = I w^2 and damping = 2 I w from the effective inertia at the initial pose."""
        m, d = self.model, self.data
        d.qpos[self._qpos] = INITIAL_JOINTS
        mujoco.mj_forward(m, d)
        M = np.zeros((m.nv, m.nv))
        try:
            mujoco.mj_fullM(m, d, M)  # mujoco >= 4
        except TypeError:
            mujoco.mj_fullM(m, M, d.qM)
        inertia = M[self._dof, self._dof]
        w = 2 * np.pi * SERVO_HZ
        self.kp = inertia * w * w
        m.dof_damping[self._dof] = 2 * inertia * w

    def _apply_torque(self) -> None:
        m = self.model
        kp = np.where(self.torque[:6], self.kp, 0.0)
        m.actuator_gainprm[self._act, 0] = kp
        m.actuator_biasprm[self._act, 1] = -kp
        force = self.gripper_force if self.torque[6] else 0.0
        m.actuator_forcerange[self._grip_act] = (-force, force)

    # --- episodes ------------------------------------------------------------------------------
    def reset(self, seed: int = 0, initial_joints: Optional[Sequence[float]] = None) -> None:
        """Lay out episode ``seed`` (grid: episode seed % 24; random: drawn from the seed)."""
        m, d = self.model, self.data
        self.seed = int(seed)
        self.placement = placement(self.task, self.layout, self.seed)
        q0 = INITIAL_JOINTS if initial_joints is None else np.asarray(initial_joints, float)
        if q0.shape != (6,) or not np.all(np.isfinite(q0)):
            raise ValueError(f"initial joints must be 6 finite values, got {q0.tolist()}")
        if np.any(q0 < K.JOINT_LOWER) or np.any(q0 > K.JOINT_UPPER):
            raise ValueError(f"initial joints {q0.tolist()} outside the joint limits")
        mujoco.mj_resetData(m, d)
        d.qpos[self._qpos] = q0
        d.qpos[self._finger_q] = (K.FINGER_OPEN_M, -K.FINGER_OPEN_M)
        for role, (x, y, yaw) in (("source", self.placement.source),
                                  ("target", self.placement.target)):
            spec = self.task.source if role == "source" else self.task.target
            adr = self._free[role][0]
            d.qpos[adr:adr + 3] = (x, y, spec.rest_z + 0.001)
            d.qpos[adr + 3:adr + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.torque = np.ones(7, bool)
        self.gripper_force = GRIPPER_FORCE_PER_EFFORT * 250.0
        self.last_command: Optional[np.ndarray] = None  # last accepted arm goal
        self.commands = 0  # arm goals accepted this episode
        self._ref_start = q0.copy()
        self._goal = q0.copy()
        self._profile_t, self._profile_T, self._profile_Ta = 0.0, 0.0, 0.0
        d.ctrl[self._act] = q0
        d.ctrl[self._grip_act] = K.FINGER_OPEN_M
        self._apply_torque()
        mujoco.mj_forward(m, d)
        self.advance(SETTLE_S)
        d.time = 0.0

    # --- the driver's interface ------------------------------------------------------------
    def set_time_profile(self, moving_time: float, accel_time: float) -> None:
        """Position-mode time profile (s), like set_operating_modes(profile_type='time')."""
        if not (moving_time >= 0 and accel_time >= 0):
            raise ValueError(f"profile times must be >= 0, got {moving_time}, {accel_time}")
        self.moving_time, self.accel_time = float(moving_time), float(accel_time)

    def command_arm(self, q_goal) -> str:
        """Move the arm to ``q_goal`` (6 rad) under the time profile. Returns '' or why the
        command was refused (outside the joint limits, wrong size, not finite)."""
        q = np.asarray(q_goal, dtype=float).ravel()
        if q.shape != (6,) or not np.all(np.isfinite(q)):
            return f"arm command needs 6 finite joint values, got {q.size}"
        bad = [f"{n} {v:.3f}" for n, v, lo, hi in
               zip(K.ARM_JOINTS, q, K.JOINT_LOWER, K.JOINT_UPPER) if not lo <= v <= hi]
        if bad:
            return "outside the joint limits: " + ", ".join(bad)
        start = self.reference()
        T = self.moving_time
        # the reference never exceeds the joint velocity limit (trapezoid peak speed)
        ramp = min(self.accel_time, T / 2)
        span = float(np.max(np.abs(q - start)))
        if span > 0:
            T = max(T, span / K.JOINT_VELOCITY_LIMIT + ramp)
            ramp = min(ramp, T / 2)
        self._ref_start, self._goal = start, q
        self.last_command = q.copy()
        self.commands += 1
        self._profile_t, self._profile_T, self._profile_Ta = 0.0, T, ramp
        return ""

    def command_gripper(self, effort: float) -> None:
        """pwm mode: +effort opens, -effort closes; 0 relaxes."""
        effort = float(np.clip(effort, -MAX_GRIPPER_EFFORT, MAX_GRIPPER_EFFORT))
        self.gripper_force = GRIPPER_FORCE_PER_EFFORT * abs(effort)
        self.data.ctrl[self._grip_act] = K.FINGER_OPEN_M if effort > 0 else K.FINGER_CLOSED_M
        self._apply_torque()

    def set_torque(self, enable: bool, joints: Sequence[str] = tuple(K.ARM_JOINTS)) -> None:
        """Torque on/off for arm joints by name and/or 'gripper'. Off: limp under gravity;
        on: the servo holds where the joint is now."""
        idx = [JOINT_NAMES.index(j) for j in joints]
        for i in idx:
            if enable and not self.torque[i] and i < 6:
                q = self.arm_joints()
                ref = self.reference()
                ref[i] = q[i]
                self._ref_start, self._goal = ref, ref.copy()
                self._profile_t = self._profile_T = 0.0
            self.torque[i] = bool(enable)
        self._apply_torque()

    def reference(self) -> np.ndarray:
        """Where the servos are being told to be now (the time-profile reference)."""
        T, Ta, t = self._profile_T, self._profile_Ta, self._profile_t
        if T <= 0 or t >= T:
            s = 1.0
        elif Ta <= 0:
            s = t / T
        else:
            vp = 1.0 / (T - Ta)
            a = vp / Ta
            if t < Ta:
                s = 0.5 * a * t * t
            elif t <= T - Ta:
                s = 0.5 * a * Ta * Ta + vp * (t - Ta)
            else:
                s = 1.0 - 0.5 * a * (T - t) ** 2
        return self._ref_start + (self._goal - self._ref_start) * s

    def advance(self, seconds: float, observer=None) -> None:
        """Run the physics for ``seconds`` (servo reference updated every 10 ms);
        ``observer(world)`` is called after every 10 ms (recorders)."""
        m, d = self.model, self.data
        n_sub = max(1, int(round(CONTROL_DT / m.opt.timestep)))
        for _ in range(max(1, int(round(seconds / CONTROL_DT)))):
            self._profile_t += CONTROL_DT / 2
            d.ctrl[self._act] = self.reference()
            self._profile_t += CONTROL_DT / 2
            # the servos hold the links up: gravity (and Coriolis) of the arm, per joint
            d.qfrc_applied[self._dof] = np.where(self.torque[:6], d.qfrc_bias[self._dof], 0.0)
            mujoco.mj_step(m, d, nstep=n_sub)
            if observer is not None:
                observer(self)

    # --- observations ----------------------------------------------------------------------
    @property
    def time(self) -> float:
        return float(self.data.time)

    def arm_joints(self) -> np.ndarray:
        return self.data.qpos[self._qpos].copy()

    def finger(self) -> float:
        """left_finger position (m)."""
        return float(self.data.qpos[self._finger_q[0]])

    def gripper_opening(self) -> float:
        return K.finger_opening(self.finger())

    def joint_state(self):
        """(names, positions, velocities, efforts) in the driver's joint order."""
        d = self.data
        q = self.arm_joints()
        f = self.finger()
        pos = list(q) + [K.finger_opening(f), f, -f]
        vel = list(d.qvel[self._dof]) + [0.0, float(d.qvel[self._dof[-1] + 1]),
                                         float(d.qvel[self._dof[-1] + 2])]
        eff = list(d.actuator_force[self._act]) + [float(d.actuator_force[self._grip_act]), 0.0, 0.0]
        return JOINT_NAMES, [float(v) for v in pos], [float(v) for v in vel], [float(v) for v in eff]

    def ee_pose(self) -> np.ndarray:
        T = np.eye(4)
        T[:3, :3] = self.data.site_xmat[self._ee].reshape(3, 3)
        T[:3, 3] = self.data.site_xpos[self._ee]
        return T

    def object_pose(self, role: str) -> np.ndarray:
        """4x4 pose of 'source' or 'target'."""
        b = self._bodies[role]
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[b].reshape(3, 3)
        T[:3, 3] = self.data.xpos[b]
        return T

    def object_poses(self) -> dict:
        """{task object name: (x, y, z, qx, qy, qz, qw)} of both objects."""
        return {self.task.source.name: K.pose_to_xyz_quat(self.object_pose("source")),
                self.task.target.name: K.pose_to_xyz_quat(self.object_pose("target"))}

    def touching(self, role: str = "source") -> frozenset:
        """What the object touches (target/source, table, left_finger, right_finger, robot)."""
        d, roles = self.data, self._geom_role
        out = set()
        for c in d.contact[: d.ncon]:
            a, b = roles[c.geom1], roles[c.geom2]
            if a == role:
                out.add(b)
            elif b == role:
                out.add(a)
        return frozenset(out)

    def scene_state(self) -> SceneState:
        src, tgt = self.object_pose("source"), self.object_pose("target")
        touching = {"target" if t == "target" else t for t in self.touching("source")}
        vel = self.data.qvel[self._free["source"][1]:self._free["source"][1] + 3]
        return SceneState(src[:3, 3], src[:3, :3], tgt[:3, 3], tgt[:3, :3],
                          float(np.linalg.norm(vel)), frozenset(touching))

    def success(self) -> bool:
        return self.task.success(self.scene_state())

    def grasped(self) -> bool:
        return self.scene_state().grasped

    def place_object(self, role: str, pos, yaw: float = 0.0, quat_wxyz=None) -> None:
        """Put an object somewhere by hand (tests): position, and yaw or a full quaternion."""
        adr, dof = self._free[role]
        self.data.qpos[adr:adr + 3] = pos
        self.data.qpos[adr + 3:adr + 7] = (quat_wxyz if quat_wxyz is not None else
                                          (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2)))
        self.data.qvel[dof:dof + 6] = 0.0
        mujoco.mj_forward(self.model, self.data)

    def is_finite(self) -> bool:
        return bool(np.all(np.isfinite(self.data.qpos)) and np.all(np.isfinite(self.data.qvel)))

    # --- rendering ---------------------------------------------------------------------------
    def render(self, width: int = 640, height: int = 480, lock=None) -> np.ndarray:
        """The Bridge camera's RGB frame (HxWx3 uint8) at this size: the 640x480 camera's
        field of view whatever the size (a smaller frame is the same picture, resized).
        ``lock`` (held by whoever steps the physics) is only taken to copy the scene, not
        while drawing. Call it from one thread (the GL context belongs to it)."""
        key = (int(width), int(height))
        r = self._renderers.get(key)
        if r is None:
            r = self._renderers[key] = mujoco.Renderer(self.model, key[1], key[0])
        if lock is None:
            r.update_scene(self.data, camera="bridge")
        else:
            with lock:
                r.update_scene(self.data, camera="bridge")
        return r.render()

    def close(self) -> None:
        for r in self._renderers.values():
            r.close()
        self._renderers.clear()
