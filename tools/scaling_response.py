"""How fast each worker group scales, read from the synthesized templates, and a simulation of it.

`python -m tools.scaling_response [--stage prod]` synthesizes each stage as `cdk synth` does, at its
own metric resolution and at the other one, and prints per worker group:

* the time from the first queued task to the first scaling request: the publisher's poll interval
  (the task may arrive just after a poll) plus its publish and the Application Auto Scaling call
  (PUBLISH_S + API_CALL_S, the budgets the publisher gives them);
* to the first consuming worker: that plus the Fargate start and the worker's own start
  (FARGATE_START_S, WORKER_START_S; assumptions, stated with their source below);
* the fallback path (the FromZero alarm) for comparison;
* how long an idle group at max_tasks takes to reach min_tasks: the surplus alarm's window, then
  its steps one cooldown apart (or the idle alarm's quiet period, whichever is first).

Every figure comes from the template: the publisher's POLL_INTERVAL_S and WORKER_GROUPS, the
alarms' periods and evaluation windows, the step policies' steps and cooldowns. `simulate` drives
the same decisions minute by minute (tests/infra/test_scaling_simulation.py runs the traces).

Assumptions (not measured here: this machine runs no Fargate):
* FARGATE_START_S = 60 s (worst 90 s) from RunTask to a running container: the range the project's
  scaling notes have used since issue 10 ("Fargate starts a task in 30-90 s"); AWS documents the
  phases (PROVISIONING, PENDING, image pull; "Best practices: speeding up task launch") but
  publishes no figure. Pass --fargate-start-s to use your own measurement.
* WORKER_START_S = 10 s for Celery to import the app, connect and fetch.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celery_fleet.contract import queue_depth_env

ROOT = Path(__file__).resolve().parents[1]
FARGATE_START_S = 60.0
FARGATE_START_WORST_S = 90.0
FARGATE_SOURCE = "assumed 60 s (worst 90 s): the project's 30-90 s figure; AWS publishes none"
WORKER_START_S = 10.0
# The publisher's budgets after a poll's read: its PutMetricData call, then the three Application
# Auto Scaling / ECS calls of a wake (lambdas/queue_depth/wake.py, 3 s read timeout, usually <0.2 s).
PUBLISH_S = 1.0
API_CALL_S = 3.0

Template = Mapping[str, Any]
_GROUP = re.compile(r"worker group '([^']+)'")


@dataclass(frozen=True)
class GroupScaling:
    """One worker group's scaling as the template has it."""

    name: str
    min_tasks: int
    max_tasks: int
    processes: int
    backlog_per_task: float
    poll_interval_s: int
    publisher_wakes: bool
    from_zero_steps: tuple[tuple[float, float | None, int], ...]
    from_zero_period_s: int
    surplus_periods: int
    surplus_period_s: int
    surplus_steps: tuple[tuple[float, float | None, int], ...]
    surplus_cooldown_s: int
    idle_periods: int
    idle_period_s: int
    scale_out_cooldown_s: int

    @property
    def surplus_minutes(self) -> int:
        """The surplus alarm's window in minutes (30 periods of 10 s or 5 of 60 s: 5)."""
        return self.surplus_periods * self.surplus_period_s // 60

    @property
    def idle_minutes(self) -> int:
        """The idle alarm's quiet period in minutes."""
        return self.idle_periods * self.idle_period_s // 60


def _resources(template: Template, kind: str) -> dict[str, Mapping[str, Any]]:
    return {key: value for key, value in template["Resources"].items() if value["Type"] == kind}


def _group_of(alarm: Mapping[str, Any]) -> str | None:
    match = _GROUP.search(json.dumps(alarm["Properties"].get("AlarmDescription", "")))
    return match.group(1) if match else None


def _steps(policy: Mapping[str, Any]) -> tuple[tuple[float, float | None, int], ...]:
    steps = policy["Properties"]["StepScalingPolicyConfiguration"]["StepAdjustments"]
    return tuple(
        (
            float(s.get("MetricIntervalLowerBound", -math.inf)),
            s.get("MetricIntervalUpperBound"),
            int(s["ScalingAdjustment"]),
        )
        for s in steps
    )


def _policy_of(alarm: Mapping[str, Any], policies: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Any]:
    refs = [
        action.get("Ref")
        for action in alarm["Properties"].get("AlarmActions", [])
        if isinstance(action, dict)
    ]
    found = [policies[ref] for ref in refs if isinstance(ref, str) and ref in policies]
    assert len(found) == 1, (
        f"alarm {alarm['Properties'].get('AlarmDescription')!r} drives {len(found)} policies"
    )
    return found[0]


def groups_from_template(template: Template) -> list[GroupScaling]:
    """Every worker group's scaling, from a stateless stack's template."""
    functions = _resources(template, "AWS::Lambda::Function")
    publisher = next(
        f for f in functions.values() if f["Properties"].get("Handler") == "queue_depth.handler.handler"
    )
    variables = publisher["Properties"]["Environment"]["Variables"]
    poll_interval_s = int(variables.get(queue_depth_env.POLL_INTERVAL_S, "60"))
    wakes = json.dumps(variables.get(queue_depth_env.WORKER_GROUPS, ""))
    policies = _resources(template, "AWS::ApplicationAutoScaling::ScalingPolicy")
    targets = _resources(template, "AWS::ApplicationAutoScaling::ScalableTarget")
    alarms: dict[str, dict[str, Mapping[str, Any]]] = {}
    for alarm in _resources(template, "AWS::CloudWatch::Alarm").values():
        name = _group_of(alarm)
        description = json.dumps(alarm["Properties"].get("AlarmDescription", ""))
        if name is None or "Scaling signal" not in description:
            continue
        kind = (
            "from_zero"
            if "while none of its workers runs" in description
            else "surplus"
            if "more workers than its queues need" in description
            else "idle"
        )
        alarms.setdefault(name, {})[kind] = alarm
    tracking = {
        p["Properties"]["PolicyName"].removesuffix("-backlog-per-task"): p
        for p in policies.values()
        if p["Properties"]["PolicyType"] == "TargetTrackingScaling"
    }
    result = []
    for name, by_kind in sorted(alarms.items()):
        surplus, from_zero, idle = by_kind["surplus"], by_kind["from_zero"], by_kind["idle"]
        expression = next(m["Expression"] for m in surplus["Properties"]["Metrics"] if "Expression" in m)
        numbers = re.search(r"CEIL\(\w+ / (\d+) \+ \w+ / (\d+)\)", expression)
        assert numbers is not None, expression
        surplus_policy = _policy_of(surplus, policies)
        target_id = surplus_policy["Properties"]["ScalingTargetId"]["Ref"]
        target = targets[target_id]["Properties"]
        tracking_config = tracking[name]["Properties"]["TargetTrackingScalingPolicyConfiguration"]
        result.append(
            GroupScaling(
                name=name,
                min_tasks=int(target["MinCapacity"]),
                max_tasks=int(target["MaxCapacity"]),
                processes=int(numbers.group(2)),
                backlog_per_task=float(tracking_config["TargetValue"]),
                poll_interval_s=poll_interval_s,
                publisher_wakes=f'\\"name\\":\\"{name}\\"' in wakes,
                from_zero_steps=_steps(_policy_of(from_zero, policies)),
                from_zero_period_s=_period(from_zero),
                surplus_periods=int(surplus["Properties"]["EvaluationPeriods"]),
                surplus_period_s=_period(surplus),
                surplus_steps=_steps(surplus_policy),
                surplus_cooldown_s=int(
                    surplus_policy["Properties"]["StepScalingPolicyConfiguration"]["Cooldown"]
                ),
                idle_periods=int(idle["Properties"]["EvaluationPeriods"]),
                idle_period_s=_period(idle),
                scale_out_cooldown_s=int(tracking_config.get("ScaleOutCooldown", 0)),
            )
        )
    return result


def _period(alarm: Mapping[str, Any]) -> int:
    periods = {int(m["Period"]) for m in alarm["Properties"].get("Metrics", []) if "Period" in m}
    periods |= {
        int(m["MetricStat"]["Period"]) for m in alarm["Properties"].get("Metrics", []) if "MetricStat" in m
    }
    if "Period" in alarm["Properties"]:
        periods.add(int(alarm["Properties"]["Period"]))
    return max(periods)


def step_change(steps: Sequence[tuple[float, float | None, int]], breach: float) -> int | None:
    """The adjustment of the step holding `breach` (metric minus threshold), as AAS reads bounds."""
    for lower, upper, change in steps:
        if breach >= lower and (upper is None or breach < upper):
            return change
    return None


@dataclass(frozen=True)
class Response:
    first_request_s: float
    first_request_worst_s: float
    first_worker_s: float
    first_worker_worst_s: float
    fallback_first_request_worst_s: float
    idle_to_min_s: float


def response(group: GroupScaling, *, fargate_start_s: float = FARGATE_START_S) -> Response:
    """The group's response times (see module docstring)."""
    interval = group.poll_interval_s
    if group.publisher_wakes:
        typical = interval / 2 + PUBLISH_S
        worst = interval + PUBLISH_S + API_CALL_S
    else:
        typical = worst = math.inf
    # Fallback: the poll, a datapoint of the alarm's period, the alarm's evaluation at its end.
    fallback = interval + 2 * group.from_zero_period_s
    first_worker = min(typical, fallback) + fargate_start_s + WORKER_START_S
    first_worker_worst = min(worst, fallback) + max(fargate_start_s, FARGATE_START_WORST_S) + WORKER_START_S
    return Response(
        first_request_s=min(typical, fallback),
        first_request_worst_s=min(worst, fallback),
        first_worker_s=first_worker,
        first_worker_worst_s=first_worker_worst,
        fallback_first_request_worst_s=fallback,
        idle_to_min_s=idle_to_min_s(group),
    )


def idle_to_min_s(group: GroupScaling) -> float:
    """An idle group at max_tasks to min_tasks: surplus steps one cooldown apart, or the idle alarm."""
    running = group.max_tasks
    elapsed = float(group.surplus_periods * group.surplus_period_s)
    while running > group.min_tasks:
        change = step_change(group.surplus_steps, running - 1) or 0
        running = max(group.min_tasks, running + change)
        if running > group.min_tasks:
            elapsed += group.surplus_cooldown_s
    return min(elapsed, float(group.idle_periods * group.idle_period_s))


# ------------------------------------------------------------------------------------------------
# Simulation: a queue trace through the publisher's wake, target tracking, the surplus and idle
# policies and ECS with scale-in protection, in 10-second ticks.

TICK_S = 10


@dataclass
class Worker:
    ready_at: float
    # When each pool process is next free (a task runs in it until then).
    slots: list[float]
    idle_since: float = 0.0

    def busy(self, now: float) -> int:
        return sum(1 for free_at in self.slots if free_at > now)


@dataclass
class Step:
    """One minute of the simulated fleet."""

    minute: int
    waiting: int
    in_flight: int
    running: int
    desired: int


@dataclass
class Simulation:
    steps: list[Step]
    interrupted_tasks: int
    stopped_workers: int
    most_workers: int


class _Fleet:
    """The simulated group: its queue, workers and scaling state."""

    def __init__(self, group: GroupScaling, *, task_s: float, fargate_start_s: float, grace_s: float) -> None:
        self.group = group
        self.task_s = task_s
        self.fargate_start_s = fargate_start_s
        self.grace_s = grace_s
        self.waiting = 0
        self.workers: list[Worker] = []
        self.desired = group.min_tasks
        self.minimum = group.min_tasks
        # Per minute: most waiting, most in flight, running at the minute's end.
        self.history: list[tuple[int, int, int]] = []
        self.last_surplus_at = -math.inf
        self.last_out_at = -math.inf
        self.interrupted = 0
        self.stopped = 0
        self.peak = (0, 0)

    def work(self, now: float) -> tuple[int, int]:
        """Each ready worker's processes run tasks back to back through this tick; (running, in flight)."""
        tick_end = now + TICK_S
        for worker in self.workers:
            if worker.ready_at > now:
                continue
            for index, free_at in enumerate(worker.slots):
                start = max(free_at, now)
                while start < tick_end and self.waiting > 0:
                    start += self.task_s
                    self.waiting -= 1
                worker.slots[index] = max(free_at, start)
            if worker.busy(now):
                worker.idle_since = now
        running = sum(1 for w in self.workers if w.ready_at <= now)
        in_flight = sum(w.busy(now) for w in self.workers)
        self.peak = (max(self.peak[0], self.waiting), max(self.peak[1], in_flight))
        return running, in_flight

    def poll(self, running: int, in_flight: int) -> None:
        """The publisher: raise the minimum from zero, give it back once workers run or all is done."""
        group = self.group
        if self.waiting > 0 and not self.workers and self.desired == 0:
            wake = step_change(group.from_zero_steps, self.waiting) or group.from_zero_steps[-1][2]
            self.minimum = max(self.minimum, min(group.max_tasks, wake))
        elif self.minimum > group.min_tasks and (running >= 1 or (self.waiting == 0 and in_flight == 0)):
            self.minimum = group.min_tasks
        self.desired = max(self.desired, self.minimum)

    def minute(self, now: float, running: int) -> None:
        """The minute's datapoint, then target tracking, the surplus and the idle policies."""
        group = self.group
        self.history.append((*self.peak, running))
        self.peak = (0, 0)
        if running > 0 and now - self.last_out_at >= group.scale_out_cooldown_s:
            wanted = math.ceil(self.history[-1][0] / group.backlog_per_task)
            if wanted > self.desired:
                self.desired, self.last_out_at = min(group.max_tasks, wanted), now
        # The simulation keeps one datapoint a minute; the alarms' windows are whole minutes.
        window = self.history[-group.surplus_minutes :]
        surpluses = [
            r - max(group.min_tasks, math.ceil(w / group.backlog_per_task + f / group.processes))
            for w, f, r in window
        ]
        if (
            len(window) == group.surplus_minutes
            and all(surplus >= 1 for surplus in surpluses)
            and now - self.last_surplus_at >= group.surplus_cooldown_s
        ):
            change = step_change(group.surplus_steps, surpluses[-1] - 1) or 0
            self.desired, self.last_surplus_at = max(self.minimum, self.desired + change), now
        quiet = self.history[-group.idle_minutes :]
        if len(quiet) == group.idle_minutes and all(w + f == 0 for w, f, _ in quiet):
            self.desired = self.minimum

    def ecs(self, now: float) -> None:
        """Start what the desired count lacks; stop unprotected workers beyond it, never others."""
        while len(self.workers) < self.desired:
            ready_at = now + self.fargate_start_s + WORKER_START_S
            self.workers.append(Worker(ready_at, [ready_at] * self.group.processes, idle_since=now))
        excess = len(self.workers) - self.desired
        unprotected = [w for w in self.workers if not w.busy(now) and now - w.idle_since >= self.grace_s]
        for worker in unprotected[: max(0, excess)]:
            self.interrupted += worker.busy(now)
            self.workers.remove(worker)
            self.stopped += 1


def simulate(
    group: GroupScaling,
    arrivals_per_minute: Sequence[int],
    *,
    task_s: float,
    fargate_start_s: float = FARGATE_START_S,
    protection_grace_s: float = 10.0,
) -> Simulation:
    """Run `arrivals_per_minute` (tasks queued in each minute, spread over it) through the group's
    policies, in TICK_S steps.

    ECS stops only unprotected workers: a worker holds protection while it runs a task and for
    `protection_grace_s` after (celery_fleet.protection's idle grace); a desired count below the
    protected workers leaves them running until they are idle. A stopped worker's running tasks
    would count as interrupted.
    """
    fleet = _Fleet(group, task_s=task_s, fargate_start_s=fargate_start_s, grace_s=protection_grace_s)
    steps: list[Step] = []
    most = 0
    for tick in range(len(arrivals_per_minute) * 60 // TICK_S):
        now = float(tick * TICK_S)
        # A minute's tasks arrive spread over its ticks, the remainder in the first.
        per_minute, ticks_per_minute = arrivals_per_minute[tick * TICK_S // 60], 60 // TICK_S
        fleet.waiting += per_minute // ticks_per_minute
        if tick % ticks_per_minute == 0:
            fleet.waiting += per_minute % ticks_per_minute
        running, in_flight = fleet.work(now)
        if group.publisher_wakes and (tick * TICK_S) % group.poll_interval_s == 0:
            fleet.poll(running, in_flight)
        end_of_minute = (tick + 1) % (60 // TICK_S) == 0
        if end_of_minute:
            fleet.minute(now, running)
        fleet.ecs(now)
        most = max(most, len(fleet.workers))
        if end_of_minute:
            steps.append(Step(tick * TICK_S // 60, fleet.waiting, in_flight, running, fleet.desired))
    return Simulation(steps, fleet.interrupted, fleet.stopped, most)


# ------------------------------------------------------------------------------------------------


def synthesize(stage: str, *, high_resolution: bool | None = None) -> Template:
    """The stage's stateless template, with its own metric resolution or the one given."""
    from aws_cdk import App  # noqa: PLC0415 - synthesizing is the command's business, not the module's

    from infra.config import load_stage_config  # noqa: PLC0415
    from stacks.stage import build_stage  # noqa: PLC0415

    config = load_stage_config(ROOT / "config" / f"{stage}.toml")
    if high_resolution is not None:
        workers = config.workers.model_copy(update={"high_resolution_metrics": high_resolution})
        config = config.model_copy(update={"workers": workers})
    context = json.loads((ROOT / "cdk.json").read_text(encoding="utf-8"))["context"]
    with tempfile.TemporaryDirectory() as outdir:
        app = App(context=context, outdir=outdir)
        build_stage(app, config)
        assembly = app.synth()
        return next(s.template for s in assembly.stacks if s.stack_name.endswith("-Stateless"))


def report(stage: str, templates: Iterable[tuple[str, Template]], *, fargate_start_s: float) -> list[str]:
    """The printed table: one row per worker group and metric resolution."""
    lines = [
        f"stage {stage!r}: Fargate start {FARGATE_SOURCE}; worker start {WORKER_START_S:.0f} s assumed",
        f"  {'group':<10} {'metrics':<8} {'1st request':>12} {'worst':>6} {'1st worker':>11} {'worst':>6}"
        f" {'fallback':>9} {'idle->min':>10}",
    ]
    for label, template in templates:
        for group in groups_from_template(template):
            r = response(group, fargate_start_s=fargate_start_s)
            lines.append(
                f"  {group.name:<10} {label:<8} {r.first_request_s:>11.0f}s {r.first_request_worst_s:>5.0f}s"
                f" {r.first_worker_s:>10.0f}s {r.first_worker_worst_s:>5.0f}s"
                f" {r.fallback_first_request_worst_s:>8.0f}s {r.idle_to_min_s / 60:>7.0f} min"
                f"  (min {group.min_tasks}, max {group.max_tasks})"
            )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--stage", action="append", help="stage name (config/NAME.toml); default: every stage"
    )
    parser.add_argument("--fargate-start-s", type=float, default=FARGATE_START_S)
    args = parser.parse_args(argv)
    stages = args.stage or sorted(path.stem for path in (ROOT / "config").glob("*.toml"))
    for stage in stages:
        templates = [
            ("60 s", synthesize(stage, high_resolution=False)),
            ("10 s", synthesize(stage, high_resolution=True)),
        ]
        print("\n".join(report(stage, templates, fargate_start_s=args.fargate_start_s)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
