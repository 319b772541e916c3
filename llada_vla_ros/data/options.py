"""The command-line options of the bag tools (llada-vla-eval, llada-vla-train)."""
from __future__ import annotations

from typing import Optional

from .. import topics as T
from .episode import MAX_GAP_FACTOR
from .labels import GRIPPER_LABELS


def add_bag_arguments(parser, what: str = "", nargs: str = "+") -> None:
    """The positional BAG arguments: bags, split bags, or directories of bags."""
    parser.add_argument(
        "bags", nargs=nargs, metavar="BAG",
        help="rosbag2 bag directory (also split into several files, or without "
             "metadata.yaml), a .db3/.mcap file, or a directory of bags" + what)


def add_episode_arguments(parser, hz: Optional[float] = None,
                          action_source: str = "auto") -> None:
    """The ``load_episode`` options as command-line flags; ``episode_options(args)`` turns
    them back into keyword arguments."""
    parser.add_argument("--image-topic", default=T.IMAGE,
                        help="sensor_msgs/Image or CompressedImage (JPEG/PNG) topic")
    parser.add_argument("--instruction-topic", default=T.INSTRUCTION)
    parser.add_argument("--robot-name", default=T.ROBOT_NAME,
                        help="namespace of the Interbotix driver (joint states topic)")
    parser.add_argument("--joint-states-topic", default=None,
                        help="default: /<robot-name>/joint_states")
    parser.add_argument("--action-topic", default=T.ACTION_CHUNK)
    parser.add_argument("--action-source", choices=("auto", "action_chunk", "joint_states"),
                        default=action_source,
                        help="recorded ActionChunk messages, joint states (FK: the motion "
                             "the arm made) or auto (chunks when the bag has any); default "
                             f"{action_source}")
    parser.add_argument("--hz", type=float, default=hz,
                        help="keep at most this many frames per second (e.g. 5, the control "
                             f"rate; default {hz or 'all frames'})")
    parser.add_argument("--max-frames", type=int, default=None,
                        help="use at most N frames per bag")
    parser.add_argument("--instruction", default="",
                        help="instruction for frames before any recorded instruction")
    parser.add_argument("--max-gap-factor", type=float, default=MAX_GAP_FACTOR,
                        help="an interval longer than this many median intervals (of a "
                             "topic the labels use, and of the frames) is a gap: no label "
                             f"across it (default {MAX_GAP_FACTOR})")
    parser.add_argument("--gripper-label", choices=tuple(GRIPPER_LABELS), default="step",
                        help="joint-state labels: the gripper command given during the step "
                             "(step, default) or the one in force at the next frame, one "
                             "frame early (ahead)")


def episode_options(args) -> dict:
    """``load_episode`` keyword arguments from flags added by ``add_episode_arguments``."""
    return dict(image_topic=args.image_topic, instruction_topic=args.instruction_topic,
                robot_name=args.robot_name, joint_states_topic=args.joint_states_topic,
                action_topic=args.action_topic, action_source=args.action_source,
                hz=args.hz, max_frames=args.max_frames, default_instruction=args.instruction,
                max_gap_factor=args.max_gap_factor, gripper_label=args.gripper_label)
