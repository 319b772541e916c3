"""The interbotix_xs_msgs stand-in: built, importable, and carries JointGroupCommand between
processes to the simulated world's driver, whose joint_states follow the command."""
import numpy as np
import pytest

from ros_harness import NodeProcess, RosProbe, new_domain_id, require_ros, wait_for


@pytest.fixture
def domain():
    require_ros()
    return new_domain_id()


def test_stand_in_has_the_driver_fields():
    require_ros()
    from interbotix_xs_msgs.msg import JointGroupCommand, JointSingleCommand, JointTrajectoryCommand
    from interbotix_xs_msgs.srv import OperatingModes, RegisterValues, RobotInfo, TorqueEnable

    assert set(JointGroupCommand.get_fields_and_field_types()) == {"name", "cmd"}
    assert JointGroupCommand.get_fields_and_field_types()["cmd"] == "sequence<float>"
    assert JointSingleCommand.get_fields_and_field_types() == {"name": "string", "cmd": "float"}
    assert JointTrajectoryCommand.get_fields_and_field_types()["traj"] == \
        "trajectory_msgs/JointTrajectory"
    assert list(OperatingModes.Request.get_fields_and_field_types()) == [
        "cmd_type", "name", "mode", "profile_type", "profile_velocity", "profile_acceleration"]
    assert RegisterValues.Response.get_fields_and_field_types() == {"values": "sequence<int32>"}
    assert TorqueEnable.Request.get_fields_and_field_types()["enable"] == "boolean"
    assert RobotInfo.Response.get_fields_and_field_types()["joint_lower_limits"] == "sequence<float>"


def test_joint_group_command_between_processes(domain, tmp_path):
    from interbotix_xs_msgs.msg import JointGroupCommand
    from sensor_msgs.msg import JointState

    from llada_vla_ros.ros import qos

    obs = RosProbe(domain)
    obs.record(JointState, "/wx250s/joint_states", qos.JOINT_STATES)
    pub = obs.node.create_publisher(JointGroupCommand, "/wx250s/commands/joint_group", qos.COMMANDS)
    driver = NodeProcess("sim_world", domain, tmp_path,
                         {"moving_time": 0.2, "width": 64, "height": 48, "fps": 5.0})
    try:
        wait_for(lambda: pub.get_subscription_count() > 0, 20, what="the driver's subscription")
        goal = [0.2, -0.3, 0.5, 0.1, 0.4, -0.2]
        pub.publish(JointGroupCommand(name="arm", cmd=goal))

        def reached():
            msgs = obs.messages("/wx250s/joint_states")
            if not msgs:
                return False
            m = msgs[-1]
            q = [m.position[m.name.index(j)] for j in
                 ("waist", "shoulder", "elbow", "forearm_roll", "wrist_angle", "wrist_rotate")]
            return np.allclose(q, goal, atol=2e-3)  # position servos in the physics
        wait_for(reached, 10, what="joint_states at the commanded position")
        names = obs.messages("/wx250s/joint_states")[-1].name
        assert list(names)[:7] == ["waist", "shoulder", "elbow", "forearm_roll", "wrist_angle",
                                   "wrist_rotate", "gripper"]
    finally:
        assert driver.stop() == 0, driver.output()
        obs.close()
