"""The four WidowX tasks of the paper's Table 1 (SimplerEnv "visual matching"), in primitive
shapes: instruction, episode length, objects, placement layouts and success rule.

Instructions, episode lengths (5 Hz steps) and success rules follow SimplerEnv's ManiSkill 3
port (``bridge_dataset_eval``): the source object must rest on (in) the target and be
released. Layouts: ``grid`` = SimplerEnv's 2x2 grid (every ordered pair of distinct cells x 2
source yaw angles = 24 fixed episodes), ``random`` = continuous ranges around it.

Frames: ``wx250s/base_link`` with the table top at z = 0; lengths in metres. numpy only.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, Tuple

import numpy as np

LAYOUTS = ("grid", "random")
GRID_EPISODES = 24
FINGERS = frozenset({"left_finger", "right_finger"})
RESTING_SPEED = 0.05  # m/s: faster than this the source is still falling or sliding


@dataclass(frozen=True)
class Geom:
    """One MuJoCo geom of an object, in the object's frame (MJCF sizes)."""

    type: str                                   # box | capsule | cylinder | ellipsoid
    size: Tuple[float, ...]
    rgba: Tuple[float, float, float, float]
    pos: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    fromto: Tuple[float, ...] = ()              # capsules/cylinders along an axis
    mass: float = 0.0


@dataclass(frozen=True)
class ObjectSpec:
    name: str
    geoms: Tuple[Geom, ...]
    rest_z: float            # height of the body origin above the table when lying flat
    top: float               # height of its top surface above the table (targets)
    radius: float            # xy bounding radius around the origin (placement spacing)
    grasp_point: Tuple[float, float] = (0.0, 0.0)  # in the object frame (sources)
    grasp_z: float = 0.0     # end-effector height above the table to grasp it
    elongated: bool = False  # grasp across its x axis (the gripper yaw follows the object)
    friction: float = 1.0
    support: float = -1.0    # height a source rests at on/in it (targets); -1: its top

    def rest_height(self) -> float:
        return self.top if self.support < 0 else self.support

    def extent_x(self) -> Tuple[float, float]:
        """(min, max) of the shape along the object's x axis (its length)."""
        lo, hi = [], []
        for g in self.geoms:
            if g.fromto:
                xs = (g.fromto[0], g.fromto[3])
                lo.append(min(xs) - g.size[0])
                hi.append(max(xs) + g.size[0])
            else:
                half = g.size[0]
                lo.append(g.pos[0] - half)
                hi.append(g.pos[0] + half)
        return min(lo), max(hi)

    def center_x(self) -> float:
        """Middle of the shape along its length (placed over the target's centre)."""
        lo, hi = self.extent_x()
        return (lo + hi) / 2


@dataclass(frozen=True)
class SceneState:
    """What the success rule looks at (the world fills it from the physics)."""

    source_pos: np.ndarray
    source_R: np.ndarray
    target_pos: np.ndarray
    target_R: np.ndarray
    source_speed: float
    touching: FrozenSet[str]  # what the source touches: target, table, left/right_finger, robot

    @property
    def grasped(self) -> bool:
        return FINGERS <= self.touching

    @property
    def released(self) -> bool:
        return not (self.touching & (FINGERS | {"robot"}))

    def source_in_target(self) -> np.ndarray:
        """The source origin in the target's frame."""
        return self.target_R.T @ (self.source_pos - self.target_pos)


@dataclass(frozen=True)
class Task:
    name: str
    env_id: str              # SimplerEnv's environment name
    instruction: str
    max_steps: int           # at 5 Hz
    source: ObjectSpec
    target: ObjectSpec
    grid_half_edge: float    # SimplerEnv 2x2 grid
    source_yaws: Tuple[float, float]  # the two grid source yaws
    rule: Callable[["Task", SceneState], bool] = field(repr=False, default=None)
    place_drop: float = 0.01  # release this far above the resting height

    def success(self, s: SceneState) -> bool:
        """Source resting on/in the target and released (the task's own rule)."""
        return bool(s.released and s.source_speed < RESTING_SPEED and "target" in s.touching
                    and self.rule(self, s))

    def place_z(self) -> float:
        """End-effector height that holds the source just above its resting place."""
        return self.target.rest_height() + self.source.grasp_z + self.place_drop


# --- success rules (beyond "released, resting, touching the target") -------------------------

def _on_towel(task: Task, s: SceneState) -> bool:
    """Partly on it counts: the spoon's origin over the cloth."""
    x, y, _ = s.source_in_target()
    half = task.target.geoms[0].size
    return abs(x) <= half[0] and abs(y) <= half[1]


def _completely_on_plate(task: Task, s: SceneState) -> bool:
    """Both ends of the carrot over the plate, and the carrot off the table."""
    if "table" in s.touching:
        return False
    axis = s.source_R[:, 0]
    ends = [s.source_pos + x * axis for x in task.source.extent_x()]
    r = task.target.geoms[0].size[0]
    return all(np.hypot(*(e - s.target_pos)[:2]) <= r for e in ends)


def _stacked(task: Task, s: SceneState) -> bool:
    """Green cube on top of the yellow one: off the table, centred within a half edge."""
    if "table" in s.touching:
        return False
    d = s.source_pos - s.target_pos
    edge = 2 * task.target.geoms[0].size[0]
    return bool(np.hypot(d[0], d[1]) <= edge / 2 and abs(d[2] - edge) <= 0.005)


def _in_basket(task: Task, s: SceneState) -> bool:
    """Eggplant origin inside the basket's walls and below their top."""
    x, y, z = s.source_in_target()
    inner = task.target.geoms[0].size[0] - 2 * task.target.geoms[1].size[0]
    return abs(x) <= inner and abs(y) <= inner and z <= task.target.top


# --- objects ---------------------------------------------------------------------------------

def _rgba(r, g, b):
    return (r, g, b, 1.0)


SPOON = ObjectSpec(
    "spoon",
    (Geom("box", (0.045, 0.0065, 0.004), _rgba(0.75, 0.75, 0.78), pos=(-0.02, 0.0, -0.001),
          mass=0.02),
     Geom("ellipsoid", (0.024, 0.016, 0.005), _rgba(0.8, 0.8, 0.83), pos=(0.045, 0.0, 0.0),
          mass=0.015)),
    rest_z=0.005, top=0.01, radius=0.069, grasp_point=(-0.005, 0.0), grasp_z=0.016,
    elongated=True)
CARROT = ObjectSpec(
    "carrot",
    (Geom("capsule", (0.011,), _rgba(0.95, 0.45, 0.05), fromto=(-0.035, 0, 0, 0.035, 0, 0),
          mass=0.035),
     Geom("box", (0.012, 0.008, 0.003), _rgba(0.15, 0.6, 0.15), pos=(0.055, 0.0, -0.008),
          mass=0.003)),
    rest_z=0.011, top=0.022, radius=0.067, grasp_point=(-0.005, 0.0), grasp_z=0.018,
    elongated=True)
EGGPLANT = ObjectSpec(
    "eggplant",
    (Geom("capsule", (0.018,), _rgba(0.35, 0.1, 0.45), fromto=(-0.03, 0, 0, 0.03, 0, 0),
          mass=0.06),
     Geom("box", (0.01, 0.01, 0.01), _rgba(0.2, 0.5, 0.15), pos=(0.056, 0.0, -0.008),
          mass=0.005)),
    rest_z=0.018, top=0.036, radius=0.066, grasp_point=(-0.003, 0.0), grasp_z=0.024,
    elongated=True)
GREEN_CUBE = ObjectSpec(
    "green_cube", (Geom("box", (0.015, 0.015, 0.015), _rgba(0.1, 0.7, 0.2), mass=0.03),),
    rest_z=0.015, top=0.03, radius=0.022, grasp_z=0.02)
YELLOW_CUBE = ObjectSpec(
    "yellow_cube", (Geom("box", (0.015, 0.015, 0.015), _rgba(0.95, 0.85, 0.1), mass=0.03),),
    rest_z=0.015, top=0.03, radius=0.022)
TOWEL = ObjectSpec(
    "towel", (Geom("box", (0.07, 0.07, 0.002), _rgba(0.2, 0.35, 0.75), mass=0.2),),
    rest_z=0.002, top=0.004, radius=0.1, friction=1.5)
PLATE = ObjectSpec(
    "plate", (Geom("cylinder", (0.08, 0.005), _rgba(0.93, 0.93, 0.9), mass=0.2),),
    rest_z=0.005, top=0.01, radius=0.08)
_Y = _rgba(0.95, 0.8, 0.2)
BASKET = ObjectSpec(
    "basket",
    (Geom("box", (0.085, 0.085, 0.004), _Y, pos=(0.0, 0.0, 0.004), mass=0.15),
     Geom("box", (0.004, 0.085, 0.025), _Y, pos=(0.081, 0.0, 0.033), mass=0.04),
     Geom("box", (0.004, 0.085, 0.025), _Y, pos=(-0.081, 0.0, 0.033), mass=0.04),
     Geom("box", (0.085, 0.004, 0.025), _Y, pos=(0.0, 0.081, 0.033), mass=0.04),
     Geom("box", (0.085, 0.004, 0.025), _Y, pos=(0.0, -0.081, 0.033), mass=0.04)),
    rest_z=0.0, top=0.058, radius=0.12, support=0.008)

TASKS: Dict[str, Task] = {t.name: t for t in (
    Task("spoon", "PutSpoonOnTableClothInScene", "put the spoon on the towel", 60,
         SPOON, TOWEL, 0.075, (0.0, np.pi / 2), _on_towel),
    Task("carrot", "PutCarrotOnPlateInScene", "put carrot on plate", 60,
         CARROT, PLATE, 0.075, (0.0, np.pi / 2), _completely_on_plate),
    Task("stack", "StackGreenCubeOnYellowCube", "stack the green block on the yellow block", 60,
         GREEN_CUBE, YELLOW_CUBE, 0.05, (0.0, np.pi / 4), _stacked, place_drop=0.005),
    Task("eggplant", "PutEggplantInBasketScene", "put eggplant into yellow basket", 120,
         EGGPLANT, BASKET, 0.09, (0.0, np.pi / 2), _in_basket, place_drop=0.02),
)}

GRID_CENTER = (0.31, 0.0)   # the grid is centred ~0.31 m in front of the robot base
RANDOM_X = (0.22, 0.40)     # random layout: object origins drawn in this box
RANDOM_Y = (-0.13, 0.13)


def get_task(name: str) -> Task:
    """A task by its short name (spoon, carrot, stack, eggplant) or SimplerEnv env name."""
    for task in TASKS.values():
        if name in (task.name, task.env_id):
            return task
    raise ValueError(f"unknown task {name!r}; choose one of {', '.join(TASKS)} "
                     "(or a SimplerEnv name: "
                     f"{', '.join(t.env_id for t in TASKS.values())})")


def task_names(spec: str) -> list:
    """'all' or a comma-separated list of task names -> short names."""
    if spec == "all":
        return list(TASKS)
    return [get_task(s.strip()).name for s in spec.split(",") if s.strip()]


@dataclass(frozen=True)
class Placement:
    """Object poses on the table: (x, y, yaw) of the source and the target."""

    source: Tuple[float, float, float]
    target: Tuple[float, float, float]


def grid_placements(task: Task) -> list:
    """SimplerEnv's 24 episodes: ordered pairs of distinct 2x2 grid cells x 2 source yaws."""
    h, (cx, cy) = task.grid_half_edge, GRID_CENTER
    cells = [(cx + sx * h, cy + sy * h) for sx in (-1, 1) for sy in (-1, 1)]
    out = []
    for (src, tgt), yaw in itertools.product(itertools.permutations(cells, 2),
                                             task.source_yaws):
        out.append(Placement((src[0], src[1], yaw), (tgt[0], tgt[1], 0.0)))
    assert len(out) == GRID_EPISODES
    return out


def random_placement(task: Task, rng: np.random.Generator) -> Placement:
    """Source and target drawn uniformly in the layout box, far enough apart to not touch."""
    gap = task.source.radius + task.target.radius + 0.015
    for _ in range(1000):
        src = rng.uniform((RANDOM_X[0], RANDOM_Y[0]), (RANDOM_X[1], RANDOM_Y[1]))
        tgt = rng.uniform((RANDOM_X[0], RANDOM_Y[0]), (RANDOM_X[1], RANDOM_Y[1]))
        if np.hypot(*(src - tgt)) >= gap:
            break
    else:  # pragma: no cover - the box is far larger than any pair of objects
        raise RuntimeError(f"no placement for {task.name} found")
    src_yaw = float(rng.uniform(-np.pi, np.pi))
    tgt_yaw = float(rng.uniform(-np.pi / 4, np.pi / 4))
    return Placement((float(src[0]), float(src[1]), src_yaw),
                     (float(tgt[0]), float(tgt[1]), tgt_yaw))


def placement(task: Task, layout: str, seed: int) -> Placement:
    """The placement of episode ``seed``: grid episode ``seed % 24``, or random from the seed."""
    if layout == "grid":
        return grid_placements(task)[int(seed) % GRID_EPISODES]
    if layout == "random":
        return random_placement(task, np.random.default_rng(int(seed)))
    raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
