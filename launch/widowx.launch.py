"""The whole robot: RealSense camera + Interbotix WidowX 250s driver + policy node (+ recorder).

    ros2 launch llada_vla_ros widowx.launch.py model_path:=/ckpt device:=cuda \\
        instruction:="put the spoon on the towel" execute:=true record:=true

``camera:=false`` / ``arm:=false`` leave out a driver started elsewhere; ``sim:=true`` runs
the package's sim_world instead of both drivers (no hardware): a MuJoCo tabletop with one of
the paper's tasks (``task:=``, ``seed:=``), its camera on the RealSense topic and its arm
behind the xs_sdk interface; the instruction defaults to the task's;
``policy:=false record:=true`` records demonstrations (for ``llada-vla-train``).
Motion stays off unless ``execute:=true``. Valid on Humble and Jazzy.
"""
import os
import time

from launch import LaunchDescription
from launch.actions import (DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription,
                            OpaqueFunction, Shutdown)
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from llada_vla_ros import topics
from llada_vla_ros.launch_args import (as_bool, package_share, policy_launch_arguments,
                                      require_rosbag2)
from llada_vla_ros.sim.tasks import get_task

PACKAGE = 'llada_vla_ros'


def _share(package):
    return package_share(package, 'install it, or leave its part out (camera:=false / '
                                  'arm:=false) or use sim:=true')


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    sim = as_bool(arg('sim'))
    robot_name = arg('robot_name')
    image_topic = arg('image_topic') or topics.camera_image_topic(arg('camera_namespace'),
                                                                    arg('camera_name'))
    actions = []

    instruction = arg('instruction')
    if sim:
        task = get_task(arg('task'))  # an unknown task fails here, naming the choices
        world = {'robot_name': robot_name, 'image_topic': image_topic, 'task': task.name,
                 'seed': int(arg('seed'))}
        if arg('image_transport') == 'compressed':
            world['jpeg_quality'] = 85  # also JPEG on <image_topic>/compressed
        actions.append(Node(package=PACKAGE, executable='sim_world', output='screen',
                            parameters=[world]))
        instruction = instruction or task.instruction
    if as_bool(arg('camera')) and not sim:
        profile = arg('color_profile')
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(
                os.path.join(_share('realsense2_camera'), 'launch', 'rs_launch.py')),
            launch_arguments={
                'camera_namespace': arg('camera_namespace'),
                'camera_name': arg('camera_name'),
                'serial_no': arg('serial_no'),
                'rgb_camera.color_profile': profile,  # realsense-ros >= 4.55
                'rgb_camera.profile': profile,        # older 4.x releases
                'enable_depth': arg('enable_depth'),
            }.items()))
    if as_bool(arg('arm')) and not sim:
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(
                _share('interbotix_xsarm_control'), 'launch', 'xsarm_control.launch.py')),
            launch_arguments={
                'robot_model': arg('robot_model'),
                'robot_name': robot_name,
                'use_sim': arg('use_sim'),
                'use_rviz': arg('use_rviz'),
                'load_configs': arg('load_configs'),
            }.items()))

    if as_bool(arg('policy')):
        here = os.path.dirname(os.path.abspath(__file__))
        actions.append(IncludeLaunchDescription(
            PythonLaunchDescriptionSource(os.path.join(here, 'policy.launch.py')),
            launch_arguments=policy_launch_arguments(
                arg, execute=arg('execute'), robot_name=robot_name, image_topic=image_topic,
                instruction_topic=topics.INSTRUCTION, instruction=instruction,
                managed=arg('managed'), autostart=arg('autostart'))))

    if as_bool(arg('record')):
        require_rosbag2(arg('bag_storage'), 'record:=true',
                        'or launch with record:=false')
        bag_dir = os.path.expanduser(arg('bag_dir'))
        os.makedirs(bag_dir, exist_ok=True)
        bag = os.path.join(bag_dir, time.strftime('llada_vla_%Y%m%d_%H%M%S'))
        recorded = list(topics.recorded_topics(robot_name, image_topic, topics.INSTRUCTION,
                                               image_transport=arg('image_transport') or 'raw'))
        # A trial must not go on unrecorded: the launch ends when the recorder does.
        actions.append(ExecuteProcess(
            cmd=['ros2', 'bag', 'record', '-o', bag, '-s', arg('bag_storage')] + recorded,
            name='bag_record', output='screen',
            on_exit=[Shutdown(reason='the bag recorder exited (record:=true)')]))
    return actions


def generate_launch_description():
    return LaunchDescription([
        # --- what to start
        DeclareLaunchArgument(
            'camera', default_value='true',
            description='Start the RealSense driver (realsense2_camera rs_launch.py)'),
        DeclareLaunchArgument(
            'arm', default_value='true',
            description='Start the Interbotix driver (interbotix_xsarm_control)'),
        DeclareLaunchArgument(
            'sim', default_value='false',
            description='Start sim_world (simulated camera + arm + task) instead of both '
                        'drivers (no hardware)'),
        DeclareLaunchArgument(
            'task', default_value='carrot',
            description='sim:=true: the task (spoon, carrot, stack or eggplant)'),
        DeclareLaunchArgument(
            'seed', default_value='0',
            description='sim:=true: the seed of the first episode (object placement)'),
        DeclareLaunchArgument(
            'policy', default_value='true',
            description='Start the policy node; false = drivers (+ recorder) only, e.g. to '
                        'record demonstrations'),
        DeclareLaunchArgument(
            'managed', default_value='false',
            description='true = the managed (lifecycle) policy node managed_policy_node'),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='managed:=true: configure, then activate, at launch'),
        DeclareLaunchArgument(
            'record', default_value='false',
            description='Record camera, instruction, joints, commands and policy outputs'),
        # --- camera
        DeclareLaunchArgument(
            'camera_namespace', default_value='camera',
            description='realsense2_camera camera_namespace (part of the image topic)'),
        DeclareLaunchArgument(
            'camera_name', default_value='camera',
            description='realsense2_camera camera_name (part of the image topic)'),
        DeclareLaunchArgument(
            'serial_no', default_value="''",
            description='Serial number of the D435 to open; empty = the first one found'),
        DeclareLaunchArgument(
            'color_profile', default_value='640x480x30',
            description='Color stream WIDTHxHEIGHTxFPS (rgb_camera.color_profile / .profile)'),
        DeclareLaunchArgument(
            'enable_depth', default_value='false',
            description='Also stream depth (the policy uses color only)'),
        DeclareLaunchArgument(
            'image_topic', default_value='',
            description='Image topic of the policy; empty = '
                        '/<camera_namespace>/<camera_name>/color/image_raw'),
        DeclareLaunchArgument(
            'image_transport', default_value='raw',
            description='raw, or compressed: the policy (and the recorder) take JPEG/PNG '
                        'CompressedImage on <image_topic>/compressed (needs '
                        'image_transport_plugins on the camera side)'),
        # --- arm
        DeclareLaunchArgument(
            'robot_model', default_value='wx250s',
            description='Interbotix robot model (the policy kinematics are the wx250s)'),
        DeclareLaunchArgument(
            'robot_name', default_value='wx250s',
            description='Namespace of the Interbotix driver and its topics'),
        DeclareLaunchArgument(
            'use_sim', default_value='false',
            description='Interbotix xs_sdk_sim instead of the real motors'),
        DeclareLaunchArgument(
            'use_rviz', default_value='false',
            description='Start RViz with the Interbotix driver'),
        DeclareLaunchArgument(
            'load_configs', default_value='true',
            description='Let the Interbotix driver write its motor configs to the EEPROM'),
        # --- policy
        DeclareLaunchArgument(
            'params_file', default_value='',
            description='Policy parameter YAML; empty = the package config/policy.yaml'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Local LLaDA-VLA checkpoint directory; empty = scripted test policy'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='Inference device: cpu, cuda or cuda:N; empty = params file (cpu)'),
        DeclareLaunchArgument(
            'decoding_strategy', default_value='',
            description='hierarchical, vanilla or parallel_threshold; empty = params file'),
        DeclareLaunchArgument(
            'execute', default_value='false',
            description='true = send commands to the arm (or call ~/start later)'),
        DeclareLaunchArgument(
            'instruction', default_value='',
            description='Instruction in force at start; empty = wait for one on the topic '
                        '(sim:=true: the task\'s instruction)'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='Log level of the policy node'),
        # --- recording
        DeclareLaunchArgument(
            'bag_dir', default_value='~/llada_vla_bags',
            description='Directory that receives one timestamped bag per launch'),
        DeclareLaunchArgument(
            'bag_storage', default_value='sqlite3', choices=['sqlite3', 'mcap'],
            description='rosbag2 storage plugin (mcap needs rosbag2_storage_mcap on Humble)'),
        OpaqueFunction(function=launch_setup),
    ])
