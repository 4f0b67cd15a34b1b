"""The metric objects each construct exposes (Broker.metrics, TaskEventIngester.metrics, the worker
services' task counts, the queue metrics) and the alarm limit checked where alarms are made."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from celery_fleet.contract import queue_metrics, task_metrics

from infra.broker.metrics import CONNECTIONS, MEMORY, BrokerMetrics, maxclients
from infra.config.workers import WorkerGroupConfig
from infra.metric_math import (
    MAX_METRICS_PER_ALARM,
    AlarmLimitError,
    check_alarm_metrics,
    max_of,
    metrics_read,
    sum_of,
)
from infra.task_events import TaskEventIngester
from infra.task_events.metrics import TaskMetrics
from infra.workers import BacklogScaling
from tests.support.bare import (
    NAMESPACE,
    bare_stack,
    broker,
    broker_config,
    log_group,
    secret,
    template,
    worker_group,
    worker_service,
)
from tests.support.bare import queue_metrics as bare_queue_metrics


def _metric(namespace: str = "N", name: str = "M") -> cloudwatch.Metric:
    return cloudwatch.Metric(namespace=namespace, metric_name=name)


def _resolved(stack: Stack, value: Any) -> Any:
    return stack.resolve(value)


# Broker.metrics


def test_the_broker_exposes_one_node_id_per_node_of_its_replication_group() -> None:
    stack = bare_stack()
    made = broker(stack, broker_config(replicas=2))
    [group_id] = template(stack).find_resources("AWS::ElastiCache::ReplicationGroup")
    group_ref = {"Ref": group_id}
    assert [_resolved(stack, node) for node in made.metrics.node_ids] == [
        {"Fn::Join": ["", [group_ref, f"-00{n}"]]} for n in (1, 2, 3)
    ]
    assert made.metrics.replicas == 2


def test_the_brokers_maxclients_is_its_node_types() -> None:
    stack = bare_stack()
    made = broker(stack)
    assert made.metrics.node_type == made.node_type
    assert made.metrics.maxclients == maxclients(made.node_type)
    assert maxclients("cache.t4g.micro") == 20_000
    assert maxclients("cache.r7g.large") == 65_000


def test_the_worst_node_of_a_single_node_broker_is_that_node() -> None:
    metrics = BrokerMetrics(replication_group_id="rg", nodes=1, node_type="cache.t4g.micro")
    worst = metrics.worst(MEMORY)
    assert isinstance(worst, cloudwatch.Metric)
    assert (worst.namespace, worst.metric_name, worst.statistic) == (
        "AWS/ElastiCache",
        "DatabaseMemoryUsagePercentage",
        "Maximum",
    )


def test_the_worst_node_of_a_replicated_broker_is_the_max_over_every_node() -> None:
    metrics = BrokerMetrics(replication_group_id="rg", nodes=3, node_type="cache.r7g.large")
    worst = metrics.worst(CONNECTIONS, Duration.minutes(5))
    assert isinstance(worst, cloudwatch.MathExpression)
    assert worst.expression == "MAX([m0, m1, m2])"
    assert {m.metric_name for m in worst.using_metrics.values()} == {"CurrConnections"}  # type: ignore[attr-defined]
    assert worst.period.to_seconds() == 300


def test_per_node_lines_are_labelled_by_node_number() -> None:
    metrics = BrokerMetrics(replication_group_id="rg", nodes=2, node_type="cache.r7g.large")
    lines = metrics.per_node(MEMORY)
    assert [line.label for line in lines] == ["node 001", "node 002"]  # type: ignore[attr-defined]


def test_a_broker_without_nodes_is_refused() -> None:
    with pytest.raises(ValueError, match=r"nodes=0: a replication group has at least its primary \(1\)"):
        BrokerMetrics(replication_group_id="rg", nodes=0, node_type="cache.t4g.micro")


# TaskEventIngester.metrics


def test_the_ingester_exposes_its_task_metrics_in_its_namespace() -> None:
    stack = bare_stack()
    ingester = TaskEventIngester(
        stack,
        "TaskEvents",
        stage="test",
        worker_logs=log_group(stack, "WorkerLogs"),
        queues=["alpha"],
        event_key=secret(stack, "EventKey"),
        namespace=NAMESPACE,
        failed_tasks_retention_days=30,
        log_retention_days=7,
    )
    assert ingester.metrics.namespace == NAMESPACE
    assert ingester.metrics.outcome(task_metrics.FAILED, "alpha").namespace == NAMESPACE


def test_outcome_alarms_read_the_contracts_queue_only_dimension_set() -> None:
    failed = TaskMetrics(NAMESPACE).outcome(task_metrics.FAILED, "alpha")
    assert tuple(failed.dimensions or {}) == task_metrics.DIMENSION_SETS[1]
    assert (failed.dimensions, failed.statistic, failed.period.to_seconds()) == (
        {"Queue": "alpha"},
        "Sum",
        300,
    )


def test_a_name_the_lambda_does_not_publish_is_refused() -> None:
    tasks = TaskMetrics(NAMESPACE)
    with pytest.raises(ValueError, match=r"'Failures' is not a task outcome the ingest Lambda publishes"):
        tasks.outcome("Failures", "alpha")
    with pytest.raises(ValueError, match=r"'Failed' is not a task duration"):
        tasks.duration_per_task(task_metrics.FAILED, "p50")
    with pytest.raises(ValueError, match=r"'Succeeded' is not a pipeline count"):
        tasks.pipeline(task_metrics.SUCCEEDED)


def test_outcome_totals_add_each_queue_reading_a_missing_count_as_zero() -> None:
    total = TaskMetrics(NAMESPACE).outcome_total(task_metrics.RETRIED, ["a", "b"], label="Retries")
    assert isinstance(total, cloudwatch.MathExpression)
    assert total.expression == "FILL(m0, 0) + FILL(m1, 0)"
    assert [m.dimensions for m in total.using_metrics.values()] == [{"Queue": "a"}, {"Queue": "b"}]  # type: ignore[attr-defined]


def test_failure_rate_counts_only_windows_with_enough_finished_tasks() -> None:
    rate = TaskMetrics(NAMESPACE).failure_rate(["a", "b"], min_tasks=20, label="rate", id_prefix="r0")
    s, f = "FILL(r0s0, 0) + FILL(r0s1, 0)", "FILL(r0f0, 0) + FILL(r0f1, 0)"
    assert rate.expression == f"IF(({s}) + ({f}) >= 20, 100 * ({f}) / (({s}) + ({f})), 0)"
    assert {key: m.metric_name for key, m in rate.using_metrics.items()} == {  # type: ignore[attr-defined]
        "r0f0": "Failed",
        "r0f1": "Failed",
        "r0s0": "Succeeded",
        "r0s1": "Succeeded",
    }


def test_pipeline_counts_have_no_dimensions() -> None:
    malformed = TaskMetrics(NAMESPACE).pipeline(task_metrics.MALFORMED_EVENTS)
    assert (malformed.namespace, malformed.metric_name, malformed.dimensions) == (
        NAMESPACE,
        "MalformedEvents",
        None,
    )


def test_per_task_graphs_search_the_contracts_task_and_queue_dimension_set() -> None:
    line = TaskMetrics(NAMESPACE).duration_per_task(task_metrics.RUNTIME, "p99")
    schema = ",".join([f'"{NAMESPACE}"', *task_metrics.DIMENSION_SETS[0]])
    assert line.expression == f"SEARCH('{{{schema}}} MetricName=\"Runtime\"', 'p99', 60)"


def test_a_search_over_a_dimension_set_the_lambda_does_not_publish_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\('TaskName',\) is not a dimension set"):
        TaskMetrics(NAMESPACE).search(task_metrics.RUNTIME, "p50", ("TaskName",))


# WorkerService.running_tasks() / desired_tasks()


def test_a_worker_service_exposes_its_running_and_desired_task_counts() -> None:
    stack = bare_stack()
    worker = worker_service(stack, name="bulk")
    running, desired = worker.running_tasks(), worker.desired_tasks()
    assert (running.metric_name, desired.metric_name) == ("RunningTaskCount", "DesiredTaskCount")
    for metric in (running, desired):
        assert metric.namespace == "ECS/ContainerInsights"
        assert _resolved(stack, metric.dimensions) == {
            "ClusterName": _resolved(stack, worker.service.cluster.cluster_name),
            "ServiceName": _resolved(stack, worker.service.service_name),
        }
    assert (worker.name, worker.config.queues) == ("bulk", ["default"])


# QueueMetrics


def test_queue_metrics_carry_the_publishers_names_and_dimensions() -> None:
    metrics = bare_queue_metrics()
    waiting = metrics.waiting("alpha")
    group = metrics.group_waiting("bulk")
    assert (waiting.namespace, waiting.metric_name, waiting.dimensions) == (
        NAMESPACE,
        queue_metrics.WAITING_TASKS,
        {queue_metrics.QUEUE_DIMENSION: "alpha"},
    )
    assert group.dimensions == {queue_metrics.GROUP_DIMENSION: "bulk"}


# The 10-metric limit of an alarm


def test_metrics_read_counts_every_metric_under_nested_expressions() -> None:
    inner = cloudwatch.MathExpression(
        expression="a + b", using_metrics={"a": _metric(name="a"), "b": _metric(name="b")}
    )
    outer = max_of([inner, _metric(name="c")], label="abc", period=Duration.minutes(1))
    assert (metrics_read(_metric()), metrics_read(inner), metrics_read(outer)) == (1, 2, 3)


def test_an_alarm_reading_more_than_ten_metrics_is_refused_by_name() -> None:
    def summed(count: int) -> cloudwatch.IMetric:
        return sum_of([_metric(name=f"m{n}") for n in range(count)], label="sum", period=Duration.minutes(1))

    check_alarm_metrics("Stack/Ten", summed(MAX_METRICS_PER_ALARM))
    limit = f"CloudWatch allows at most {MAX_METRICS_PER_ALARM} per alarm"
    with pytest.raises(AlarmLimitError, match=rf"alarm 'Stack/Many' reads 11 metrics; {limit}"):
        check_alarm_metrics("Stack/Many", summed(11))


def test_scaling_alarms_are_checked_where_they_are_made() -> None:
    # Config validation caps a group at 5 queues; past it, the idle alarm (waiting and in flight per
    # queue) would read 12 metrics, and the scaling construct refuses it by name.
    six = WorkerGroupConfig.model_construct(
        **{**worker_group().model_dump(), "queues": [f"q{n}" for n in range(6)]}
    )
    stack = bare_stack()
    worker = worker_service(stack)
    with pytest.raises(
        AlarmLimitError, match=r"alarm 'Test/DefaultWorkers/Scaling/IdleAlarm' reads 12 metrics"
    ):
        BacklogScaling(
            worker,
            "Scaling",
            service=worker.service,
            running_tasks=worker.running_tasks(),
            group_name="default",
            config=six,
            queue_metrics=bare_queue_metrics(),
        )
