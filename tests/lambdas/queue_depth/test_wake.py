"""Starting workers from zero from the publisher: decisions, and the calls against moto's ECS,
Application Auto Scaling and CloudWatch; end to end through the handler with a real redis-server."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import ModuleType
from typing import Any

import boto3
import pytest
from celery import Celery
from queue_depth.wake import GroupState, WakeGroup, decide, wake

from tests.lambdas.queue_depth.conftest import (
    NAMESPACE,
    REGION,
    FakeLambdaContext,
    observe_put_metric_data,
    published,
    send,
)
from tests.support.redis_server import RedisServer

ColdStart = Callable[[Mapping[str, str]], ModuleType]
CLUSTER = "fleet"
IDLE_ALARM = "default-idle"


def group(**changes: Any) -> WakeGroup:
    values: dict[str, Any] = {
        "name": "default",
        "queues": ("alpha", "beta"),
        "cluster": CLUSTER,
        "service": "default-workers",
        "min_tasks": 0,
        "max_tasks": 10,
        "steps": ((0, 100, 1), (100, 400, 2), (400, None, 4)),
        "idle_alarm": IDLE_ALARM,
    }
    values.update(changes)
    return WakeGroup.model_validate(values)


def state(**changes: Any) -> GroupState:
    values: dict[str, Any] = {"min_capacity": 0, "max_capacity": 10, "desired": 0, "running": 0, "pending": 0}
    values.update(changes)
    return GroupState(**values)


@pytest.mark.parametrize(("waiting", "workers"), [(1, 1), (99, 1), (100, 2), (399, 2), (400, 4), (10**6, 4)])
def test_tasks_waiting_with_no_worker_raise_the_minimum_by_the_from_zero_steps(
    waiting: int, workers: int
) -> None:
    decision = decide(group(), state(), waiting, 0)

    assert decision is not None
    assert decision.min_capacity == workers


def test_the_minimum_is_never_raised_above_max_tasks() -> None:
    decision = decide(group(max_tasks=2), state(max_capacity=2), 10**6, 0)

    assert decision is not None
    assert decision.min_capacity == 2


@pytest.mark.parametrize(
    "busy", [{"desired": 1}, {"running": 1}, {"pending": 1}], ids=["desired", "running", "pending"]
)
def test_a_group_with_a_worker_asked_for_or_starting_is_left_to_the_policies(busy: dict[str, int]) -> None:
    assert decide(group(), state(**busy), 500, 0) is None


def test_an_empty_group_is_not_woken() -> None:
    assert decide(group(), state(), 0, 0) is None


def test_the_minimum_returns_to_min_tasks_once_a_worker_runs_and_the_idle_alarm_is_ok() -> None:
    decision = decide(group(), state(min_capacity=2, desired=2, running=1, idle_alarm_in_alarm=False), 50, 3)

    assert decision is not None
    assert decision.min_capacity == 0


def test_the_minimum_stays_raised_while_the_idle_alarm_is_still_in_alarm() -> None:
    assert (
        decide(group(), state(min_capacity=2, desired=2, running=2, idle_alarm_in_alarm=True), 50, 3) is None
    )


def test_the_minimum_returns_to_min_tasks_when_nothing_waits_or_runs() -> None:
    decision = decide(group(min_tasks=1), state(min_capacity=4, desired=4, pending=4), 0, 0)

    assert decision is not None
    assert decision.min_capacity == 1


def test_unknown_in_flight_never_counts_as_nothing_running() -> None:
    assert decide(group(), state(min_capacity=2, desired=2, pending=2), 0, None) is None


@dataclass
class Aws:
    autoscaling: Any
    ecs: Any
    cloudwatch: Any

    def minimum(self, service: str = "default-workers") -> int:
        targets = self.autoscaling.describe_scalable_targets(
            ServiceNamespace="ecs", ResourceIds=[f"service/{CLUSTER}/{service}"]
        )["ScalableTargets"]
        return int(targets[0]["MinCapacity"])


@pytest.fixture
def fleet(aws: None) -> Aws:
    """One ECS service at 0 tasks with its scalable target (0-10) and its idle alarm in ALARM."""
    clients = Aws(
        autoscaling=boto3.client("application-autoscaling", region_name=REGION),
        ecs=boto3.client("ecs", region_name=REGION),
        cloudwatch=boto3.client("cloudwatch", region_name=REGION),
    )
    clients.ecs.create_cluster(clusterName=CLUSTER)
    clients.ecs.register_task_definition(
        family="worker", containerDefinitions=[{"name": "worker", "image": "worker", "memory": 512}]
    )
    clients.ecs.create_service(
        cluster=CLUSTER, serviceName="default-workers", taskDefinition="worker", desiredCount=0
    )
    clients.autoscaling.register_scalable_target(
        ServiceNamespace="ecs",
        ResourceId=f"service/{CLUSTER}/default-workers",
        ScalableDimension="ecs:service:DesiredCount",
        MinCapacity=0,
        MaxCapacity=10,
    )
    clients.cloudwatch.put_metric_alarm(
        AlarmName=IDLE_ALARM,
        MetricName="WaitingTasks",
        Namespace=NAMESPACE,
        Statistic="Maximum",
        Period=60,
        EvaluationPeriods=15,
        Threshold=0,
        ComparisonOperator="LessThanOrEqualToThreshold",
    )
    clients.cloudwatch.set_alarm_state(AlarmName=IDLE_ALARM, StateValue="ALARM", StateReason="idle for hours")
    return clients


def test_a_waiting_backlog_raises_the_scalable_targets_minimum(fleet: Aws) -> None:
    report = wake([group()], {"alpha": 150, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(fleet))

    assert report.errors == []
    assert [(name, minimum) for name, minimum, _ in report.requests] == [("default", 2)]
    assert fleet.minimum() == 2


def test_a_raised_minimum_is_kept_while_the_workers_have_not_started(fleet: Aws) -> None:
    wake([group()], {"alpha": 150, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(fleet))
    # moto does not start tasks: the service still runs none, the minimum must stay.
    report = wake([group()], {"alpha": 150, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(fleet))

    assert report.requests == []
    assert fleet.minimum() == 2


def test_the_minimum_goes_back_once_the_queues_are_empty(fleet: Aws) -> None:
    wake([group()], {"alpha": 5, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(fleet))
    assert fleet.minimum() == 1

    report = wake([group()], {"alpha": 0, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(fleet))

    assert [(name, minimum) for name, minimum, _ in report.requests] == [("default", 0)]
    assert fleet.minimum() == 0


def test_a_queue_left_out_of_the_poll_wakes_nothing(fleet: Aws) -> None:
    report = wake([group()], {"alpha": 150}, {"alpha": 0, "beta": 0}, **vars(fleet))

    assert report.requests == []
    assert fleet.minimum() == 0


def test_a_group_without_a_scalable_target_is_skipped_and_the_others_still_woken(fleet: Aws) -> None:
    missing = group(name="missing", service="no-such-service")

    report = wake([missing, group()], {"alpha": 5, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(fleet))

    assert [(name, minimum) for name, minimum, _ in report.requests] == [("default", 1)]


def test_an_aws_error_is_reported_not_raised(fleet: Aws) -> None:
    # An ECS endpoint where the cluster does not exist: DescribeServices fails with a ClientError.
    elsewhere = Aws(fleet.autoscaling, boto3.client("ecs", region_name="us-east-1"), fleet.cloudwatch)

    report = wake([group()], {"alpha": 5, "beta": 0}, {"alpha": 0, "beta": 0}, **vars(elsewhere))

    assert report.requests == []
    assert len(report.errors) == 1
    assert report.errors[0].startswith("reading the groups' state: ClusterNotFoundException")
    assert fleet.minimum() == 0


def test_the_handler_starts_workers_after_publishing_a_poll(
    redis_server: RedisServer, celery_app: Celery, fleet: Aws, cold_start: ColdStart
) -> None:
    send(celery_app, "alpha", count=3)
    module = cold_start(
        {
            "QUEUES": "alpha,beta",
            "METRIC_NAMESPACE": NAMESPACE,
            "BROKER_URL": redis_server.url,
            "WORKER_GROUPS": json.dumps([group().model_dump(mode="json")]),
        }
    )

    result = module.handler({}, FakeLambdaContext())

    assert result["published_polls"] == 1
    assert fleet.minimum() == 1
    # The group's own sums, which the surplus scale-in alarm reads.
    group_waiting = fleet.cloudwatch.get_metric_statistics(
        Namespace=NAMESPACE,
        MetricName="WaitingTasks",
        Dimensions=[{"Name": "WorkerGroup", "Value": "default"}],
        StartTime=datetime.now(UTC) - timedelta(hours=1),
        EndTime=datetime.now(UTC) + timedelta(hours=1),
        Period=60,
        Statistics=["Maximum"],
    )["Datapoints"]
    assert [point["Maximum"] for point in group_waiting] == [3.0]


def _worker_counts(cloudwatch: Any, group_name: str = "default") -> dict[str, list[float]]:
    """What CloudWatch (moto) holds of the group's DesiredWorkers and RunningWorkers, by name."""
    counts = {}
    for name in ("DesiredWorkers", "RunningWorkers"):
        points = cloudwatch.get_metric_statistics(
            Namespace=NAMESPACE,
            MetricName=name,
            Dimensions=[{"Name": "WorkerGroup", "Value": group_name}],
            StartTime=datetime.now(UTC) - timedelta(hours=1),
            EndTime=datetime.now(UTC) + timedelta(hours=1),
            Period=60,
            Statistics=["Maximum"],
        )["Datapoints"]
        counts[name] = [point["Maximum"] for point in points]
    return counts


def _environment(redis_server: RedisServer, *groups: WakeGroup) -> dict[str, str]:
    return {
        "QUEUES": "alpha,beta",
        "METRIC_NAMESPACE": NAMESPACE,
        "BROKER_URL": redis_server.url,
        "WORKER_GROUPS": json.dumps([g.model_dump(mode="json") for g in groups or (group(),)]),
    }


def test_every_poll_publishes_each_groups_desired_and_running_workers(
    redis_server: RedisServer,
    celery_app: Celery,
    fleet: Aws,
    cold_start: ColdStart,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # moto reports this many running tasks for a service created while it is set.
    monkeypatch.setenv("MOTO_ECS_SERVICE_RUNNING", "2")
    fleet.ecs.create_service(
        cluster=CLUSTER, serviceName="busy-workers", taskDefinition="worker", desiredCount=3
    )
    busy = group(name="busy", queues=("beta",), service="busy-workers")
    module = cold_start(_environment(redis_server, group(queues=("alpha",)), busy))

    result = module.handler({}, FakeLambdaContext())

    assert result["published_polls"] == 1
    # Nothing waits, nobody runs: the idle group's counts are published as zeros, not left out.
    assert _worker_counts(fleet.cloudwatch) == {"DesiredWorkers": [0.0], "RunningWorkers": [0.0]}
    assert _worker_counts(fleet.cloudwatch, "busy") == {"DesiredWorkers": [3.0], "RunningWorkers": [2.0]}


def test_worker_counts_are_high_resolution_when_the_stage_polls_every_ten_seconds(
    redis_server: RedisServer, fleet: Aws, cold_start: ColdStart
) -> None:
    module = cold_start({**_environment(redis_server), "POLL_INTERVAL_S": "10"})
    requests = observe_put_metric_data(module.cloudwatch)

    # Only the first of the invocation's six polls: no time is left past the finish margin.
    module.handler({}, FakeLambdaContext(remaining_ms=int(module.FINISH_MARGIN_S * 1000)))

    counts = [
        datum
        for request in requests.requests
        for datum in request["MetricData"]
        if datum["MetricName"] in {"DesiredWorkers", "RunningWorkers"}
    ]
    assert sorted(datum["MetricName"] for datum in counts) == ["DesiredWorkers", "RunningWorkers"]
    assert {datum["StorageResolution"] for datum in counts} == {1}
    assert counts[0]["Dimensions"] == [{"Name": "WorkerGroup", "Value": "default"}]


def test_a_group_whose_service_ecs_does_not_describe_gets_no_worker_counts(
    redis_server: RedisServer, fleet: Aws, cold_start: ColdStart
) -> None:
    gone = group(name="gone", queues=("beta",), service="no-such-service")
    module = cold_start(_environment(redis_server, group(queues=("alpha",)), gone))

    module.handler({}, FakeLambdaContext())

    # Missing data, never a zero: a zero would read as "no worker" to the from-zero alarm.
    assert _worker_counts(fleet.cloudwatch, "gone") == {"DesiredWorkers": [], "RunningWorkers": []}
    assert _worker_counts(fleet.cloudwatch) == {"DesiredWorkers": [0.0], "RunningWorkers": [0.0]}


def test_an_ecs_error_leaves_the_worker_counts_out_and_the_queue_metrics_published(
    redis_server: RedisServer,
    celery_app: Celery,
    fleet: Aws,
    cold_start: ColdStart,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    send(celery_app, "alpha", count=2)
    module = cold_start(_environment(redis_server))
    # An ECS endpoint where the cluster does not exist: DescribeServices fails with a ClientError.
    monkeypatch.setattr(module, "ecs", boto3.client("ecs", region_name="us-east-1"))

    result = module.handler({}, FakeLambdaContext())

    assert result["published_polls"] == 1
    assert _worker_counts(fleet.cloudwatch) == {"DesiredWorkers": [], "RunningWorkers": []}
    assert published(fleet.cloudwatch)[("WaitingTasks", "alpha")].maximum == 2.0
