"""The llada_vla_ros policy node alone, for inclusion in larger stacks.

    ros2 launch llada_vla_ros policy.launch.py model_path:=/ckpt device:=cuda execute:=true

Parameters come from ``params_file`` (default: the package's config/policy.yaml); each
argument below overrides one parameter when it is not empty. Valid on Humble and Jazzy.
"""
import os

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from llada_vla_ros.launch_args import as_bool

PACKAGE = 'llada_vla_ros'

# launch argument -> node parameter (config/policy.yaml); empty argument = keep params_file.
STRING_PARAMETERS = {
    'model_path': 'model_path',
    'device': 'device',
    'decoding_strategy': 'decoding.strategy',
    'instruction': 'instruction',
    'robot_name': 'robot_name',
    'image_topic': 'image_topic',
    'image_transport': 'image_transport',
    'instruction_topic': 'instruction_topic',
    'record_to': 'record_to',
    'record_storage': 'record_storage',
}
BOOL_PARAMETERS = {
    'execute': 'execute',
    'use_sim_time': 'use_sim_time',
}


def default_params_file():
    """config/policy.yaml of the installed package, else of the source tree."""
    try:
        from ament_index_python.packages import get_package_share_directory
        return os.path.join(get_package_share_directory(PACKAGE), 'config', 'policy.yaml')
    except Exception:
        here = os.path.dirname(os.path.abspath(__file__))
        return os.path.join(os.path.dirname(here), 'config', 'policy.yaml')


def launch_setup(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {}
    for name, parameter in STRING_PARAMETERS.items():
        if arg(name):
            overrides[parameter] = ParameterValue(arg(name), value_type=str)
    for name, parameter in BOOL_PARAMETERS.items():
        if arg(name):
            overrides[parameter] = as_bool(arg(name))
    params_file = arg('params_file') or default_params_file()
    common = dict(package=PACKAGE, namespace=arg('namespace'),
                  parameters=[params_file, overrides],
                  arguments=['--ros-args', '--log-level', arg('log_level')],
                  output='screen', emulate_tty=True)
    if not as_bool(arg('managed')):
        return [Node(executable='policy_node', **common)]
    # The managed (lifecycle) node; autostart configures it, then activates it once
    # configured (as a lifecycle manager would; a failed configure leaves it unconfigured).
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.events import matches_action
    from launch_ros.actions import LifecycleNode
    from launch_ros.event_handlers import OnStateTransition
    from launch_ros.events.lifecycle import ChangeState
    from lifecycle_msgs.msg import Transition

    node = LifecycleNode(executable='managed_policy_node', name='llada_vla_policy', **common)
    if not as_bool(arg('autostart')):
        return [node]

    def change(transition):
        return EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                           transition_id=transition))
    return [node,
            RegisterEventHandler(OnStateTransition(
                target_lifecycle_node=node, start_state='configuring', goal_state='inactive',
                entities=[change(Transition.TRANSITION_ACTIVATE)])),
            change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument(
            'namespace', default_value='',
            description='Namespace of the policy node: its outputs and a per-arm estop follow it (inputs are parameters)'),
        DeclareLaunchArgument(
            'managed', default_value='false',
            description='true = the managed (lifecycle) node managed_policy_node'),
        DeclareLaunchArgument(
            'autostart', default_value='true',
            description='managed:=true: configure, then activate, at launch (false = leave '
                        'the transitions to a lifecycle manager)'),
        DeclareLaunchArgument(
            'params_file', default_value='',
            description='Parameter YAML; empty = the package config/policy.yaml'),
        DeclareLaunchArgument(
            'model_path', default_value='',
            description='Local LLaDA-VLA checkpoint directory; empty = params file '
                        '(whose default "" is the scripted test policy)'),
        DeclareLaunchArgument(
            'device', default_value='',
            description='Inference device: cpu, cuda or cuda:N; empty = params file'),
        DeclareLaunchArgument(
            'decoding_strategy', default_value='',
            description='hierarchical, vanilla or parallel_threshold; empty = params file'),
        DeclareLaunchArgument(
            'execute', default_value='',
            description='true = send commands to the arm; empty = params file (false)'),
        DeclareLaunchArgument(
            'instruction', default_value='',
            description='Instruction in force at start; empty = params file'),
        DeclareLaunchArgument(
            'robot_name', default_value='',
            description='Namespace of the Interbotix driver; empty = params file (wx250s)'),
        DeclareLaunchArgument(
            'image_topic', default_value='',
            description='Camera color topic; empty = params file'),
        DeclareLaunchArgument(
            'image_transport', default_value='',
            description='raw or compressed (CompressedImage on <image_topic>/compressed); '
                        'empty = params file (raw)'),
        DeclareLaunchArgument(
            'instruction_topic', default_value='',
            description='Instruction topic (std_msgs/String); empty = params file'),
        DeclareLaunchArgument(
            'record_to', default_value='',
            description='Directory of a bag the node records itself; empty = params file'),
        DeclareLaunchArgument(
            'record_storage', default_value='',
            description='sqlite3 or mcap, for record_to; empty = params file'),
        DeclareLaunchArgument(
            'use_sim_time', default_value='',
            description='true when a bag or simulator publishes /clock; empty = false'),
        DeclareLaunchArgument(
            'log_level', default_value='info',
            description='Log level of the policy node: debug, info, warn or error'),
        OpaqueFunction(function=launch_setup),
    ])
