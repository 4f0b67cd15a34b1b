"""Starting workers from zero without waiting on CloudWatch: the publisher raises a group's minimum.

Every poll knows what waits in each group's queues. When tasks wait and the group has no worker
(desired and running count 0), the publisher raises the group's Application Auto Scaling minimum to
the number of workers the from-zero steps give for that backlog (1, 2 or 4, never above
max_tasks). Application Auto Scaling brings the service to a new minimum at once (RegisterScalableTarget
"changes the resource's current capacity to a value that is inside of this range"), and no policy
scales below a minimum: the idle policy, whose alarm may still be in ALARM from the quiet hours before,
cannot take the new workers away, which an ECS UpdateService of the desired count could not promise.

The minimum goes back to the configured min_tasks once a worker runs and the idle alarm is no longer
in ALARM (target tracking has a value to act on by then), or once the group has nothing waiting and
nothing in flight. The alarm path (the FromZero step policy) stays as the fallback: it acts on its own
if this fails. Knows nothing of Lambda; the clients are boto3's, passed in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field

SCALABLE_DIMENSION = "ecs:service:DesiredCount"
SERVICE_NAMESPACE = "ecs"
AWS_ERRORS = (BotoCoreError, ClientError)
# DescribeServices takes at most 10 services per call.
DESCRIBE_SERVICES_BATCH = 10


class WakeGroup(BaseModel):
    """One worker group as the publisher needs it (the WORKER_GROUPS variable, JSON)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    queues: tuple[str, ...] = Field(min_length=1)
    cluster: str
    service: str
    min_tasks: int = Field(ge=0)
    max_tasks: int = Field(ge=1)
    # (lower, upper or None, workers) by tasks waiting, as the FromZero step policy has them.
    steps: tuple[tuple[float, float | None, int], ...] = Field(min_length=1)
    idle_alarm: str

    @property
    def resource_id(self) -> str:
        return f"service/{self.cluster}/{self.service}"

    def workers_for(self, waiting: int) -> int:
        """Workers to start from zero for `waiting` tasks: the step holding it, within min and max.

        A step holds lower <= waiting < upper, as Application Auto Scaling reads a step's bounds
        (the FromZero alarm's threshold is 0, so the bounds are tasks waiting)."""
        tasks = self.steps[-1][2]
        for lower, upper, workers in self.steps:
            if waiting >= lower and (upper is None or waiting < upper):
                tasks = workers
                break
        return max(self.min_tasks, min(self.max_tasks, tasks))


@dataclass(frozen=True)
class GroupState:
    """What Application Auto Scaling and ECS say of one group at a poll."""

    min_capacity: int
    max_capacity: int
    desired: int
    running: int
    pending: int
    idle_alarm_in_alarm: bool | None = None


@dataclass(frozen=True)
class Decision:
    """Set the group's minimum to `min_capacity` (a wake or a restore), and why."""

    min_capacity: int
    reason: str


def decide(group: WakeGroup, state: GroupState, waiting: int, in_flight: int | None) -> Decision | None:
    """What to do with `group`'s minimum given its state and its queues' figures (None: nothing)."""
    nobody = state.desired == 0 and state.running == 0 and state.pending == 0
    if waiting > 0 and nobody:
        workers = group.workers_for(waiting)
        if workers > state.min_capacity:
            return Decision(workers, f"{waiting} tasks wait and no worker runs: starting {workers}")
    if state.min_capacity > group.min_tasks:
        if waiting == 0 and in_flight == 0:
            return Decision(group.min_tasks, "nothing waits or runs: minimum back to min_tasks")
        if state.running >= 1 and state.idle_alarm_in_alarm is False:
            return Decision(group.min_tasks, "workers run: minimum back to min_tasks, the policies scale")
    return None


@dataclass
class WakeReport:
    """What the waker did in one poll."""

    requests: list[tuple[str, int, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _group_totals(
    group: WakeGroup, waiting: Mapping[str, int], in_flight: Mapping[str, int] | None
) -> tuple[int | None, int | None]:
    if any(queue not in waiting for queue in group.queues):
        # A queue left out of the poll (a key of the wrong type): not evidence of anything.
        return None, None
    flying = None if in_flight is None else sum(in_flight.get(queue, 0) for queue in group.queues)
    return sum(waiting[queue] for queue in group.queues), flying


def wake(
    groups: Sequence[WakeGroup],
    waiting: Mapping[str, int],
    in_flight: Mapping[str, int] | None,
    *,
    autoscaling: Any,
    ecs: Any,
    cloudwatch: Any,
    services: Mapping[str, tuple[int, int, int]] | None = None,
) -> WakeReport:
    """Look at every group once and raise or restore minimums as `decide` says.

    `services`: the groups' ECS counts as `describe_services` read them in this poll, if it did
    (the publisher reads them for its worker-count metrics); otherwise the candidates are read here.
    AWS errors are reported, never raised: the poll's metrics are already published, and the alarm
    path starts workers without this.
    """
    report = WakeReport()
    totals = {group.name: _group_totals(group, waiting, in_flight) for group in groups}
    try:
        targets = _scalable_targets(autoscaling, groups)
        # Only groups that may need a decision cost an ECS or CloudWatch call.
        candidates = [
            group
            for group in groups
            if group.resource_id in targets
            and totals[group.name][0] is not None
            and ((totals[group.name][0] or 0) > 0 or targets[group.resource_id][0] > group.min_tasks)
        ]
        if services is None:
            services = describe_services(ecs, candidates)
        raised = [group for group in candidates if targets[group.resource_id][0] > group.min_tasks]
        alarms = _alarm_states(cloudwatch, [group.idle_alarm for group in raised])
    except AWS_ERRORS as error:
        report.errors.append(f"reading the groups' state: {type(error).__name__}: {error}")
        return report
    for group in candidates:
        if group.service not in services:
            continue
        low, high = targets[group.resource_id]
        desired, running, pending = services[group.service]
        state = GroupState(low, high, desired, running, pending, alarms.get(group.idle_alarm))
        group_waiting, group_in_flight = totals[group.name]
        assert group_waiting is not None
        decision = decide(group, state, group_waiting, group_in_flight)
        if decision is None:
            continue
        try:
            autoscaling.register_scalable_target(
                ServiceNamespace=SERVICE_NAMESPACE,
                ResourceId=group.resource_id,
                ScalableDimension=SCALABLE_DIMENSION,
                MinCapacity=decision.min_capacity,
            )
        except AWS_ERRORS as error:
            report.errors.append(f"group {group.name!r}: {type(error).__name__}: {error}")
            continue
        report.requests.append((group.name, decision.min_capacity, decision.reason))
    return report


def _scalable_targets(autoscaling: Any, groups: Sequence[WakeGroup]) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    ids = [group.resource_id for group in groups]
    paginator = autoscaling.get_paginator("describe_scalable_targets")
    for page in paginator.paginate(
        ServiceNamespace=SERVICE_NAMESPACE, ResourceIds=ids, ScalableDimension=SCALABLE_DIMENSION
    ):
        for target in page["ScalableTargets"]:
            found[target["ResourceId"]] = (int(target["MinCapacity"]), int(target["MaxCapacity"]))
    return found


def describe_services(ecs: Any, groups: Sequence[WakeGroup]) -> dict[str, tuple[int, int, int]]:
    """(desired, running, pending) of each group's ECS service, by service name and ARN; a service
    ECS does not describe (deleted, renamed) is left out. AWS errors are raised."""
    found: dict[str, tuple[int, int, int]] = {}
    by_cluster: dict[str, list[str]] = {}
    for group in groups:
        by_cluster.setdefault(group.cluster, []).append(group.service)
    for cluster, names in by_cluster.items():
        for start in range(0, len(names), DESCRIBE_SERVICES_BATCH):
            reply = ecs.describe_services(
                cluster=cluster, services=names[start : start + DESCRIBE_SERVICES_BATCH]
            )
            for service in reply["services"]:
                counts = (
                    int(service["desiredCount"]),
                    int(service["runningCount"]),
                    int(service["pendingCount"]),
                )
                found[service["serviceName"]] = counts
                found[service["serviceArn"]] = counts
    return found


def worker_counts(
    groups: Sequence[WakeGroup], services: Mapping[str, tuple[int, int, int]]
) -> dict[str, tuple[int, int]]:
    """(desired, running) by group name, for the groups whose service `services` holds."""
    return {
        group.name: (services[group.service][0], services[group.service][1])
        for group in groups
        if group.service in services
    }


def _alarm_states(cloudwatch: Any, names: Sequence[str]) -> dict[str, bool]:
    if not names:
        return {}
    reply = cloudwatch.describe_alarms(AlarmNames=list(names), AlarmTypes=["MetricAlarm"])
    return {alarm["AlarmName"]: alarm["StateValue"] == "ALARM" for alarm in reply["MetricAlarms"]}
