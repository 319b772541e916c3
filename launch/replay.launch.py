"""Replay a recorded bag into the policy node (never moving the arm) and record its outputs.

    ros2 launch llada_vla_ros replay.launch.py bag:=~/llada_vla_bags/llada_vla_20250101_120000 \\
        model_path:=/ckpt device:=cuda

Plays only the node's inputs (image, instruction, joint states) with ``--clock`` so the node
runs on the bag's time (``use_sim_time``); the node runs with ``execute:=false``; its outputs
(action chunks, target poses, diagnostics) go into a new bag. The launch ends when the bag
has been played. Valid on Humble and Jazzy.
"""
import os
import time

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, Shutdown, TimerAction)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from llada_vla_ros import topics
from llada_vla_ros.launch_args import as_bool, policy_launch_arguments, require_rosbag2


def _input_storage(bag):
    """storage_identifier of a bag directory; RuntimeError when ros2 bag play cannot open it."""
    import yaml

    meta = os.path.join(bag, 'metadata.yaml')
    if not os.path.isfile(meta):
        raise RuntimeError(f'{bag} has no metadata.yaml (a recording that did not finish?): '
                           f'rebuild it with ros2 bag reindex {bag} (-s mcap for an mcap bag), '
                           'then replay; llada-vla-eval reads such a bag as it is')
    with open(meta) as f:
        return yaml.safe_load(f)['rosbag2_bagfile_information']['storage_identifier']


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    bag = os.path.abspath(os.path.expanduser(arg('bag')))
    if not os.path.isdir(bag):
        raise RuntimeError(f'bag not found: {bag} (give the bag directory)')
    require_rosbag2(_input_storage(bag), 'replay.launch.py (ros2 bag play)', 'then replay')
    if as_bool(arg('record')):
        require_rosbag2(arg('bag_storage'), 'record:=true', 'or replay with record:=false')
    robot_name = arg('robot_name')
    image_topic = arg('image_topic')
    instruction_topic = arg('instruction_topic')
    use_sim_time = arg('use_sim_time')
    here = os.path.dirname(os.path.abspath(__file__))
    actions = [IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(here, 'policy.launch.py')),
        launch_arguments=policy_launch_arguments(
            arg, execute='false', robot_name=robot_name, image_topic=image_topic,
            instruction_topic=instruction_topic, use_sim_time=use_sim_time))]

    if as_bool(arg('record')):
        out = arg('output_bag') or os.path.join(
            os.path.dirname(bag),
            os.path.basename(bag.rstrip('/')) + time.strftime('_replay_%Y%m%d_%H%M%S'))
        out = os.path.abspath(os.path.expanduser(out))
        actions.append(ExecuteProcess(
            cmd=['ros2', 'bag', 'record', '-o', out, '-s', arg('bag_storage'),
                 *topics.OUTPUT_TOPICS],
            name='bag_record', output='screen'))

    play_cmd = ['ros2', 'bag', 'play', bag, '--rate', arg('rate')]
    if as_bool(use_sim_time):
        play_cmd += ['--clock', '100']
    play_cmd += ['--topics', topics.image_transport_topic(image_topic, arg('image_transport'))[0],
                 instruction_topic,
                 topics.robot_topic(robot_name, topics.JOINT_STATES)]
    on_exit = None  # an empty list crashes launch's OnProcessExit when the player exits
    if as_bool(arg('shutdown_when_done')):
        on_exit = [TimerAction(period=2.0, actions=[Shutdown(reason='bag played')])]
    play = ExecuteProcess(cmd=play_cmd, name='bag_play', output='screen', on_exit=on_exit)
    # Give the node and the recorder time to start and discover each other.
    actions.append(TimerAction(period=float(arg('play_delay')), actions=[play]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'bag',
            description='Bag directory to replay (required)'),
        DeclareLaunchArgument(
            'rate', default_value='1.0',
            description='Playback rate (ros2 bag play --rate)'),
        DeclareLaunchArgument(
            'play_delay', default_value='3.0',
            description='Seconds to wait before playing, for the node and recorder to start'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='true',
            description='Play with --clock and run the node on the bag time'),
        DeclareLaunchArgument(
            'shutdown_when_done', default_value='true',
            description='End the launch 2 s after the bag has been played'),
        DeclareLaunchArgument(
            'image_topic', default_value=topics.IMAGE,
            description='Image topic in the bag'),
        DeclareLaunchArgument(
            'image_transport', default_value='raw',
            description='raw, or compressed: the bag holds CompressedImage on '
                        '<image_topic>/compressed'),
        DeclareLaunchArgument(
            'instruction_topic', default_value=topics.INSTRUCTION,
            description='Instruction topic in the bag'),
        DeclareLaunchArgument(
            'robot_name', default_value='wx250s',
            description='Interbotix namespace of the joint states in the bag'),
        DeclareLaunchArgument(
            'params_file', default_value='',
            description='Policy parameter YAML; empty = the package config/policy.yaml'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Local LLaDA-VLA checkpoint directory; empty = params file'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='Inference device: cpu, cuda or cuda:N; empty = params file (cpu)'),
        DeclareLaunchArgument(
            'decoding_strategy', default_value='',
            description='hierarchical, vanilla or parallel_threshold; empty = params file'),
        DeclareLaunchArgument(
            'instruction', default_value='',
            description='Instruction when the bag has none; empty = params file'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='Log level of the policy node'),
        DeclareLaunchArgument(
            'record', default_value='true',
            description='Record the node outputs into a new bag'),
        DeclareLaunchArgument(
            'output_bag', default_value='',
            description='Bag to write; empty = <bag>_replay_<date>_<time> next to the input'),
        DeclareLaunchArgument(
            'bag_storage', default_value='sqlite3', choices=['sqlite3', 'mcap'],
            description='rosbag2 storage plugin of the output bag'),
        OpaqueFunction(function=launch_setup),
    ])
