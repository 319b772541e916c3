"""The ExecuteInstruction action (llada_vla_ros/action/ExecuteInstruction): "do this and tell
me when you are done", for behaviour trees and task planners.

One goal at a time. Accepting a goal sets its instruction and enables motion; the goal ends
at the first of: the success signal (a std_msgs/Bool true on ``success_topic``, received
after the goal started), ``timeout_s``, ``max_steps`` commands, the estop, a cancel (motion
stops in the cancel callback itself, before the next control tick), a newer goal, the node
stopping. Every end disables motion (the arm holds) except a preemption, where the new goal
takes over at once. Feedback is published at the control rate. The execute callback is a
coroutine awaiting the outcome, so the single-threaded executor keeps running everything
else meanwhile.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Optional

from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.task import Future
from std_msgs.msg import Bool

from llada_vla_ros import topics
from llada_vla_ros.action import ExecuteInstruction

Result = ExecuteInstruction.Result
OUTCOME_NAMES = {getattr(Result, n): n.lower() for n in (
    "SUCCEEDED", "TIMED_OUT", "MAX_STEPS", "ESTOPPED", "CANCELED", "REFUSED", "PREEMPTED",
    "ABORTED")}
ACTION_NAME = topics.relative("/llada_vla/execute_instruction")


@dataclass
class Run:
    handle: object
    done: Future
    started: float
    commands0: int
    chunks0: int
    timeout_s: float
    max_steps: int
    succeeded: bool = False


class InstructionGoals:
    def __init__(self, node, runtime, success_topic: str = ""):
        self.node, self.runtime, self.loop = node, runtime, runtime.loop
        self.active: Optional[Run] = None
        self.accepting = True
        self.server = ActionServer(node, ExecuteInstruction, ACTION_NAME,
                                   execute_callback=self._execute,
                                   goal_callback=self._on_goal,
                                   cancel_callback=self._on_cancel)
        if success_topic:
            runtime.any_publisher(Bool, success_topic, self._on_success)

    # ------------------------------------------------------------------ server callbacks
    def _on_goal(self, goal) -> GoalResponse:
        return GoalResponse.ACCEPT if self.accepting else GoalResponse.REJECT

    def _on_cancel(self, handle) -> CancelResponse:
        if self.active is not None and self.active.handle is handle:
            self.runtime.set_execute(False)  # no command after this returns
        return CancelResponse.ACCEPT

    def _on_success(self, msg: Bool) -> None:
        if msg.data and self.active is not None:
            self.active.succeeded = True

    async def _execute(self, handle):
        goal = handle.request
        s = self.loop.stats
        run = Run(handle, Future(), time.monotonic(), s["commands"], s["chunks"],
                  float(goal.timeout_s), int(goal.max_steps))
        if self.active is not None:
            self._finish(self.active, Result.PREEMPTED, "preempted by a new goal", stop=False)
        self.active = run
        if not (math.isfinite(run.timeout_s) and run.timeout_s >= 0):
            self._finish(run, Result.REFUSED, f"timeout_s must be >= 0, got {goal.timeout_s}")
        else:
            reason = self.runtime.instruct_goal(goal.instruction)
            if reason:
                self._finish(run, Result.REFUSED, reason)
        return await run.done

    # ------------------------------------------------------------------ per control tick
    def tick(self) -> None:
        run = self.active
        if run is None:
            return
        elapsed = time.monotonic() - run.started
        steps = self.loop.stats["commands"] - run.commands0
        if run.handle.is_cancel_requested:
            self._finish(run, Result.CANCELED, "canceled by the client")
        elif self.loop.estop:
            self._finish(run, Result.ESTOPPED, "the estop was engaged")
        elif run.succeeded:
            self._finish(run, Result.SUCCEEDED, "the success signal said true")
        elif run.timeout_s and elapsed >= run.timeout_s:
            self._finish(run, Result.TIMED_OUT, f"no success within {run.timeout_s:g} s")
        elif run.max_steps and steps >= run.max_steps:
            self._finish(run, Result.MAX_STEPS, f"no success within {run.max_steps} steps")
        else:
            feedback = ExecuteInstruction.Feedback(
                steps=steps, chunks=self.loop.stats["chunks"] - run.chunks0,
                last_action_confidence=float(self.loop.last_confidence),
                hold_reason=self.loop.hold_reason, elapsed_s=elapsed)
            run.handle.publish_feedback(feedback)

    def _finish(self, run: Run, outcome: int, reason: str, stop: bool = True) -> None:
        """End ``run`` with ``outcome``; motion stops unless a new goal takes over."""
        if run.done.done():
            return
        if stop:
            self.runtime.set_execute(False)
        s = self.loop.stats
        result = Result(outcome=outcome, reason=reason, steps=s["commands"] - run.commands0,
                        chunks=s["chunks"] - run.chunks0,
                        duration_s=time.monotonic() - run.started)
        if outcome == Result.SUCCEEDED:
            run.handle.succeed()
        elif outcome == Result.CANCELED:
            run.handle.canceled()
        else:
            run.handle.abort()
        self.node.get_logger().info(f"goal {OUTCOME_NAMES[outcome]}: {reason} "
                                    f"({result.steps} steps, {result.duration_s:.1f} s)")
        if self.active is run:
            self.active = None
        run.done.set_result(result)

    def end_all(self, reason: str) -> None:
        """The node stops or is deactivated: the running goal ends ABORTED, new ones are
        rejected until ``accepting`` is set again."""
        self.accepting = False
        if self.active is not None:
            self._finish(self.active, Result.ABORTED, reason)

    def describe(self) -> str:
        run = self.active
        return "" if run is None else f"'{run.handle.request.instruction[:100]}' " \
            f"for {time.monotonic() - run.started:.1f} s"

    def destroy(self) -> None:
        self.server.destroy()
