"""Issue 14 over real DDS: the ExecuteInstruction action as a behaviour tree or task planner
uses it (an rclpy ActionClient in this process, the node in its own), and the managed node
driven through the lifecycle_msgs services exactly as a lifecycle manager does."""
import time

import numpy as np
import pytest

from node_peers import (GROUP, Graph, policy_statuses, publisher, wait_matched, wait_started,
                        write_table)
from ros_harness import new_domain_id, require_ros, wait_for

ACTION = "/llada_vla/execute_instruction"
SUCCESS = "/task/success"
SQUARE = [[0.01, 0, 0, 0, 0, 0, 1.0]] * 5 + [[-0.01, 0, 0, 0, 0, 0, 0.0]] * 5


@pytest.fixture
def graph(tmp_path):
    require_ros()
    graphs = []

    def make(**kwargs):
        params = {"execute": False, "success_topic": SUCCESS,
                  "model_path": write_table(tmp_path / "square.csv", SQUARE),
                  **kwargs.pop("node_params", {})}
        graphs.append(Graph(new_domain_id(), tmp_path, node_params=params, instruction="",
                            **kwargs))
        return graphs[-1]
    yield make
    for g in graphs:
        g.close()


class Client:
    """An ExecuteInstruction action client (what a BT action node wraps)."""

    def __init__(self, probe):
        from rclpy.action import ActionClient
        self.probe = probe

        from llada_vla_ros.action import ExecuteInstruction
        self.Goal = ExecuteInstruction.Goal
        self.Result = ExecuteInstruction.Result
        self.feedback = []
        self.client = ActionClient(probe.node, ExecuteInstruction, ACTION)
        assert self.client.wait_for_server(timeout_sec=20)

    def send(self, instruction, timeout_s=0.0, max_steps=0):
        future = self.client.send_goal_async(
            self.Goal(instruction=instruction, timeout_s=timeout_s, max_steps=max_steps),
            feedback_callback=lambda fb: self.feedback.append((time.monotonic(), fb.feedback)))
        wait_for(future.done, 10, what="goal response (callbacks that raised in this "
                 f"process: {self.probe._background.errors})")
        handle = future.result()
        return handle

    def result(self, handle, timeout=30):
        future = handle.get_result_async()
        wait_for(future.done, timeout, what="the goal's result")
        return future.result().result


def quiet_after(g, t, period=0.2):
    """No command later than one control period after ``t``."""
    time.sleep(1.0)
    return g.probe.messages(GROUP, t + period) == []


def test_goal_succeeds_on_the_success_signal_with_feedback(graph):
    from std_msgs.msg import Bool
    g = graph()
    client = Client(g.probe)
    success = publisher(g.probe, Bool, SUCCESS)
    wait_matched(success)
    handle = client.send("draw a square")
    assert handle.accepted
    wait_for(lambda: len(g.probe.messages(GROUP)) >= 5, 20, what="the goal moving the arm")
    success.publish(Bool(data=True))
    result = client.result(handle)
    t_end = time.monotonic()
    assert result.outcome == client.Result.SUCCEEDED, result.reason
    assert result.steps >= 5 and result.chunks >= 1 and result.duration_s > 0.5
    fb = [f for _, f in client.feedback]
    assert len(fb) >= 5 and fb[-1].steps >= 4 and fb[-1].chunks >= 1
    assert 0 < np.nanmax([f.last_action_confidence for f in fb]) <= 7.0
    times = [t for t, _ in client.feedback]
    assert 0.15 <= (times[-1] - times[0]) / (len(times) - 1) <= 0.25  # at the control rate
    assert quiet_after(g, t_end)  # the goal's end stops motion


def test_timeout_max_steps_and_refusal(graph):
    from std_msgs.msg import Bool
    g = graph()
    client = Client(g.probe)
    wait_started(g.probe)  # a goal's timeout runs from its acceptance, the startup hold included
    result = client.result(client.send("draw a square", timeout_s=1.5))
    assert result.outcome == client.Result.TIMED_OUT and result.steps >= 3, result
    assert 1.4 <= result.duration_s <= 2.5
    result = client.result(client.send("draw a square", max_steps=4))
    assert result.outcome == client.Result.MAX_STEPS and result.steps == 4, result
    result = client.result(client.send("x" * 5000))
    assert result.outcome == client.Result.REFUSED and "5000 bytes" in result.reason
    estop = publisher(g.probe, Bool, "/llada_vla/estop")
    wait_matched(estop)
    estop.publish(Bool(data=True))
    time.sleep(0.3)
    result = client.result(client.send("draw a square"))
    assert result.outcome == client.Result.REFUSED and "estop" in result.reason


def test_cancel_estop_and_preemption_stop_or_hand_over_motion(graph):
    from std_msgs.msg import Bool
    g = graph()
    client = Client(g.probe)
    # cancel mid-motion: no command one control period after the cancel is accepted
    handle = client.send("draw a square")
    wait_for(lambda: len(g.probe.messages(GROUP)) >= 5, 20, what="motion")
    cancel = handle.cancel_goal_async()
    wait_for(cancel.done, 10, what="cancel response")
    t_cancel = time.monotonic()
    assert len(cancel.result().goals_canceling) == 1
    result = client.result(handle)
    assert result.outcome == client.Result.CANCELED
    assert quiet_after(g, t_cancel)

    # a second goal preempts the first, which says so; the second keeps moving
    first = client.send("draw a square")
    wait_for(lambda: len(g.probe.messages(GROUP, time.monotonic() - 0.5)) >= 2, 20,
             what="motion of the first goal")
    second = client.send("draw another square")
    result = client.result(first)
    assert result.outcome == client.Result.PREEMPTED and "preempted" in result.reason
    t = time.monotonic()
    wait_for(lambda: len(g.probe.messages(GROUP, t)) >= 3, 20, what="the second goal moving")

    # the estop ends the running goal
    estop = publisher(g.probe, Bool, "/llada_vla/estop", "best_effort")
    wait_matched(estop)
    estop.publish(Bool(data=True))
    t_estop = time.monotonic()
    result = client.result(second)
    assert result.outcome == client.Result.ESTOPPED
    assert quiet_after(g, t_estop)


def test_goal_in_the_simulated_world_succeeds_when_the_task_is_done(tmp_path):
    """A behaviour tree's view: goal "put carrot on plate" to the real node driving the
    simulated world (the scripted expert as the policy); the world's success signal ends the
    goal SUCCEEDED. After a world reset, a goal that cannot be done in time ends TIMED_OUT."""
    require_ros()
    from node_peers import make_probe, sim_world
    from ros_harness import NodeProcess
    domain, state = new_domain_id(), tmp_path / "expert_state.json"
    probe = make_probe(domain)
    procs = [sim_world(domain, tmp_path, task="carrot", seed=3, width=224, height=224,
                       expert_state_file=str(state)),
             NodeProcess("policy_node", domain, tmp_path, {
                 "model_path": f"expert:{state}", "success_topic": "/sim_world/success"})]
    try:
        client = Client(probe)
        result = client.result(client.send("put carrot on plate", timeout_s=40.0), timeout=60)
        assert result.outcome == client.Result.SUCCEEDED, result
        assert 10 <= result.steps <= 60 and "success" in result.reason
        from node_peers import call_trigger
        assert call_trigger(probe, "reset", node="/sim_world").success  # a new episode
        time.sleep(1.0)
        result = client.result(client.send("put carrot on plate", timeout_s=1.5))
        assert result.outcome == client.Result.TIMED_OUT, result  # not done in 1.5 s
        assert result.steps >= 3  # it moved: the start re-anchored on the reset arm
    finally:
        for p in reversed(procs):
            p.stop()
            print(f"--- {p.name} (exit {p.proc.returncode}) ---\n{p.output()[-4000:]}")
        probe.close()


# --- the managed node --------------------------------------------------------------------

class Lifecycle:
    """What a lifecycle manager does: lifecycle_msgs ChangeState / GetState services."""

    def __init__(self, probe, node="/llada_vla_policy"):
        from lifecycle_msgs.srv import ChangeState, GetState
        self.ChangeState = ChangeState
        self.change = probe.node.create_client(ChangeState, f"{node}/change_state")
        self.get = probe.node.create_client(GetState, f"{node}/get_state")
        self.GetState = GetState
        assert self.change.wait_for_service(timeout_sec=20)

    def transition(self, label):
        from lifecycle_msgs.msg import Transition
        ids = {"configure": Transition.TRANSITION_CONFIGURE,
               "activate": Transition.TRANSITION_ACTIVATE,
               "deactivate": Transition.TRANSITION_DEACTIVATE,
               "cleanup": Transition.TRANSITION_CLEANUP,
               "shutdown": Transition.TRANSITION_INACTIVE_SHUTDOWN}
        future = self.change.call_async(self.ChangeState.Request(
            transition=Transition(id=ids[label])))
        wait_for(future.done, 60, what=f"{label} transition")
        return future.result().success

    def state(self):
        future = self.get.call_async(self.GetState.Request())
        wait_for(future.done, 10, what="get_state")
        return future.result().current_state.label


def test_managed_node_lifecycle_and_no_command_after_deactivate(graph, tmp_path):
    g = graph(executable="managed_policy_node", node_params={"instruction": "draw a square"})
    life = Lifecycle(g.probe)
    assert life.state() == "unconfigured"
    time.sleep(1.0)
    assert g.probe.messages(GROUP) == [] and policy_statuses(g.probe) == []
    assert life.transition("configure") and life.state() == "inactive"
    time.sleep(1.5)
    assert g.probe.messages(GROUP) == []  # configured, not active: no motion
    assert life.transition("activate") and life.state() == "active"
    wait_for(lambda: len(g.probe.messages(GROUP)) >= 5, 20, what="motion once active")
    client = Client(g.probe)
    handle = client.send("draw a square")
    assert handle.accepted
    time.sleep(0.6)
    gaps = []
    for _ in range(3):  # deactivate while moving: nothing after the transition returns
        assert life.transition("deactivate")
        t_done = time.monotonic()
        time.sleep(1.0)
        late = g.probe.times(GROUP, t_done)
        gaps.append(late)
        assert late == [], f"commands after deactivate returned: {[x - t_done for x in late]}"
        assert life.transition("activate")
        wait_for(lambda: len(g.probe.messages(GROUP, time.monotonic() - 0.5)) >= 2, 20,
                 what="motion after re-activation")
    assert client.result(handle).outcome == client.Result.ABORTED  # the first deactivation
    assert life.transition("deactivate")
    rejected = client.client.send_goal_async(client.Goal(instruction="go"))
    wait_for(rejected.done, 10, what="goal response")
    assert not rejected.result().accepted  # no goals while inactive
    assert life.transition("cleanup") and life.state() == "unconfigured"
    assert life.transition("configure") and life.state() == "inactive"  # and again
    assert life.transition("shutdown") and life.state() == "finalized"
    assert g.node.alive()


def test_managed_node_configure_fails_on_a_missing_checkpoint(graph, tmp_path):
    g = graph(executable="managed_policy_node",
              node_params={"model_path": str(tmp_path / "no_such_ckpt")})
    life = Lifecycle(g.probe)
    assert not life.transition("configure")
    assert life.state() == "unconfigured"
    out = g.node.output()
    assert "configure failed: policy not loaded" in out and "no_such_ckpt" in out, out[-2000:]
    assert g.node.alive()
