"""Two policies side by side, each in its own namespace and driving its own arm (issue 13):
their outputs never mix, /diagnostics tells them apart, the global estop stops both and a
namespaced one only its own arm."""
import time

from node_peers import make_probe, publisher, sim_world, wait_matched, write_table
from ros_harness import FAST_START, NodeProcess, new_domain_id, require_ros, wait_for

ARMS = {"left": [[0.01, 0, 0, 0, 0, 0, 1.0]] * 5, "right": [[-0.01, 0, 0, 0, 0, 0, 0.0]] * 5}


def test_two_namespaced_policies_keep_their_outputs_apart(tmp_path):
    require_ros()
    from diagnostic_msgs.msg import DiagnosticArray
    from interbotix_xs_msgs.msg import JointGroupCommand
    from std_msgs.msg import Bool

    from llada_vla_ros.msg import ActionChunk
    from llada_vla_ros.ros import qos
    domain = new_domain_id()
    probe = make_probe(domain)
    procs = []
    for arm, table in ARMS.items():  # two worlds, each an arm and a camera of its own
        camera = f"/{arm}_cam/color/image_raw"
        procs.append(sim_world(domain, tmp_path, robot_name=f"{arm}_wx250s", image_topic=camera))
        procs.append(NodeProcess("policy_node", domain, tmp_path, namespace=arm, params={
            "robot_name": f"{arm}_wx250s", "image_topic": camera, "execute": True, **FAST_START,
            "instruction": f"{arm} arm, go",
            "model_path": write_table(tmp_path / f"{arm}.csv", table)}))
        probe.record(ActionChunk, f"/{arm}/llada_vla/action_chunk")
        probe.record(JointGroupCommand, f"/{arm}_wx250s/commands/joint_group", qos.COMMANDS)
    probe.record(DiagnosticArray, "/diagnostics")
    try:
        for arm in ARMS:
            wait_for(lambda: len(probe.messages(f"/{arm}_wx250s/commands/joint_group")) >= 5,
                     30, what=f"{arm} commands")
        for arm, table in ARMS.items():
            chunks = probe.messages(f"/{arm}/llada_vla/action_chunk")
            assert chunks and {c.model_id for c in chunks} == {f"scripted:{arm}.csv"}
            assert {c.instruction for c in chunks} == {f"{arm} arm, go"}
        assert probe.messages("/llada_vla/action_chunk") == []  # nothing un-namespaced
        # each node's /diagnostics (1 Hz: the first may come after the first commands)
        wait_for(lambda: {"llada_vla_ros: /left/llada_vla_policy",
                          "llada_vla_ros: /right/llada_vla_policy"}
                 <= {st.name for a in probe.messages("/diagnostics") for st in a.status},
                 10, what="both policies' diagnostics, named after their namespaces")

        def moving(arm, since):
            return probe.messages(f"/{arm}_wx250s/commands/joint_group", since)

        left_stop = publisher(probe, Bool, "/left/llada_vla/estop")
        wait_matched(left_stop)
        left_stop.publish(Bool(data=True))
        time.sleep(0.5)
        t = time.monotonic()
        time.sleep(1.0)
        assert moving("left", t) == [] and len(moving("right", t)) >= 3

        stop_all = publisher(probe, Bool, "/llada_vla/estop")
        wait_matched(stop_all, count=2)
        stop_all.publish(Bool(data=True))
        time.sleep(0.5)
        t = time.monotonic()
        time.sleep(1.0)
        assert moving("left", t) == [] and moving("right", t) == []
    finally:
        for p in procs:
            p.stop()
        probe.close()
