"""rosbag2 bags without rosbag2: the public names of ``llada_vla_ros.data``.

- ``BagWriter``: writes real rosbag2 bags (metadata.yaml + .db3 or .mcap); the policy node
  records with it when its ``record_to`` parameter is set.
- ``read_bag``: iterate over ``(topic, msgtype, timestamp_ns, msg)`` of a bag;
  ``BagReader``: the raw messages of a bag as ``ros2 bag`` leaves it (split, without
  metadata.yaml, a single storage file); ``find_bags``: bags and directories of bags.
- ``open_episode`` / ``load_episode``: frames of a bag (RGB image, instruction in force,
  recorded action) for offline evaluation and training, streamed or in memory.
"""
from .data import BagError
from .data.episode import Episode, EpisodeStream, Frame, load_episode, open_episode
from .data.labels import ACTION_DIM
from .data.messages import (build_message, custom_msg_definitions, find_msg_file,
                            make_typestore, normalize_msgtype)
from .data.options import add_bag_arguments, add_episode_arguments, episode_options
from .data.reader import BagReader, find_bags, read_bag
from .data.writer import BAG_VERSION, STORAGES, BagWriter

__all__ = ["ACTION_DIM", "BAG_VERSION", "STORAGES", "BagError", "BagReader", "BagWriter",
           "Episode", "EpisodeStream", "Frame", "add_bag_arguments", "add_episode_arguments",
           "build_message", "custom_msg_definitions", "episode_options", "find_bags",
           "find_msg_file", "load_episode", "make_typestore", "normalize_msgtype",
           "open_episode", "read_bag"]
