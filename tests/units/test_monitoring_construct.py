"""Monitoring alone, in a bare Stack: it takes the monitored constructs and reads everything else from
them (namespace, broker nodes, worker groups); severities come from the one list of paging runbooks;
the alarm book refuses what CloudWatch would."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_sns as sns
from aws_cdk.assertions import Template
from celery_fleet.contract import task_metrics

from infra.broker.metrics import maxclients
from infra.config import BrokerConfig
from infra.metric_math import AlarmLimitError, sum_of
from infra.monitoring import PAGES, AlarmBook, Monitoring, Runbook
from infra.queue_depth import QueueDepthPublisher
from infra.task_events import TaskEventIngester
from tests.support.bare import (
    NAMESPACE,
    PRIVATE_SUBNETS,
    bare_stack,
    broker,
    broker_config,
    monitoring_config,
    secret,
    template,
    vpc,
    worker_fleet,
    worker_group,
    workers_config,
)
from tools.alarm_inventory import composite_children

ALARM = "AWS::CloudWatch::Alarm"
COMPOSITE = "AWS::CloudWatch::CompositeAlarm"
RUNBOOK = re.compile(r"Runbook: docs/runbooks\.md#([a-z0-9-]+)$")
GROUPS = {
    "default": worker_group(queues=["default"], oldest_task_slo_s=120),
    "bulk": worker_group(queues=["bulk-a", "bulk-b"], oldest_task_slo_s=1800),
}
# A registry image: the fleet stages no Docker context.
IMAGE = {"ecr_repository": "acme/worker", "tag": "1"}


@dataclass
class Monitored:
    stack: Stack
    monitoring: Monitoring
    template: Template

    def alarms(self) -> dict[str, dict[str, Any]]:
        return {k: v["Properties"] for k, v in self.template.find_resources(ALARM).items()}

    def alarm(self, anchor: str) -> dict[str, Any]:
        found = [p for p in self.alarms().values() if p["AlarmDescription"].endswith(f"#{anchor}")]
        assert len(found) == 1, f"{len(found)} alarms point to {anchor}"
        return found[0]

    def widgets(self) -> list[dict[str, Any]]:
        [dashboard] = self.template.find_resources("AWS::CloudWatch::Dashboard").values()
        body = dashboard["Properties"]["DashboardBody"]
        parts = body["Fn::Join"][1] if isinstance(body, dict) else [body]
        text = "".join(part if isinstance(part, str) else "TOKEN" for part in parts)
        widgets: list[dict[str, Any]] = json.loads(text)["widgets"]
        return widgets

    def graph(self, title: str) -> dict[str, Any]:
        graphs: list[dict[str, Any]] = [
            w["properties"] for w in self.widgets() if w["properties"].get("title") == title
        ]
        assert len(graphs) == 1, f"{len(graphs)} widgets titled {title!r}"
        return graphs[0]


def _monitored(broker_settings: BrokerConfig | None = None) -> Monitored:
    stack = bare_stack()
    the_broker = broker(stack, broker_settings or broker_config())
    fleet = worker_fleet(stack, workers_config(groups=GROUPS, image=IMAGE))
    queues = [queue for group in GROUPS.values() for queue in group.queues]
    publisher = QueueDepthPublisher(
        stack,
        "QueueDepthPublisher",
        vpc=vpc_of(stack),
        subnets=PRIVATE_SUBNETS,
        broker=the_broker,
        queues=queues,
        namespace=NAMESPACE,
        high_resolution=False,
        log_retention_days=7,
    )
    ingester = TaskEventIngester(
        stack,
        "TaskEvents",
        stage="test",
        worker_logs=fleet.log_group,
        queues=queues,
        event_key=secret(stack, "EventKey"),
        namespace=NAMESPACE,
        failed_tasks_retention_days=30,
        log_retention_days=7,
    )
    monitoring = Monitoring(
        stack,
        "Monitoring",
        stage="test",
        config=monitoring_config(notify_emails=["ops@example.com"]),
        broker=the_broker,
        fleet=fleet,
        publisher=publisher,
        ingester=ingester,
    )
    return Monitored(stack=stack, monitoring=monitoring, template=template(stack))


def vpc_of(stack: Stack) -> Any:
    existing = stack.node.try_find_child("Vpc")
    return existing if existing is not None else vpc(stack)


@pytest.fixture(scope="module")
def replicated() -> Monitored:
    """A broker with one replica (the default config)."""
    return _monitored(broker_config(replicas=1))


@pytest.fixture(scope="module")
def single_node() -> Monitored:
    return _monitored(broker_config(replicas=0, multi_az=False))


def _own_metrics(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    stats = [q["MetricStat"]["Metric"] for q in props.get("Metrics", []) if "MetricStat" in q]
    return stats + ([props] if "MetricName" in props else [])


# What Monitoring reads from the constructs instead of taking it beside them.


def test_every_stage_metric_is_read_in_the_publishers_and_ingesters_namespace(replicated: Monitored) -> None:
    namespaces = {
        metric["Namespace"] for props in replicated.alarms().values() for metric in _own_metrics(props)
    }
    assert {n for n in namespaces if not n.startswith(("AWS/", "ECS/"))} == {NAMESPACE}


def test_broker_alarms_read_every_node_the_broker_has(replicated: Monitored, single_node: Monitored) -> None:
    memory = replicated.alarm(Runbook.BROKER_MEMORY_CRITICAL)
    assert [q["Expression"] for q in memory["Metrics"] if q.get("ReturnData")] == ["MAX([m0, m1])"]
    single = single_node.alarm(Runbook.BROKER_MEMORY_CRITICAL)
    assert single["MetricName"] == "DatabaseMemoryUsagePercentage"
    assert [d["Name"] for d in single["Dimensions"]] == ["CacheClusterId"]


def test_replication_lag_is_alarmed_only_when_the_broker_has_replicas(
    replicated: Monitored, single_node: Monitored
) -> None:
    lag = Runbook.BROKER_REPLICATION_LAG.value
    assert replicated.alarm(lag)
    assert [p for p in single_node.alarms().values() if p["AlarmDescription"].endswith(f"#{lag}")] == []


def test_connection_warning_and_graph_follow_the_brokers_node_type(single_node: Monitored) -> None:
    node_type = single_node.stack.node.find_child("Broker").node_type  # type: ignore[attr-defined]
    limit = maxclients(node_type)
    assert single_node.alarm(Runbook.BROKER_CONNECTIONS_HIGH)["Threshold"] == limit * 80 // 100
    assert single_node.graph(f"Broker connections (maxclients {limit:,})")


def test_each_worker_group_gets_its_own_late_task_alarm_with_its_slo(replicated: Monitored) -> None:
    late = replicated.monitoring.queues.oldest_task_late
    assert list(late) == list(GROUPS)
    by_id = replicated.alarms()
    for name, group in GROUPS.items():
        [props] = [
            p for k, p in by_id.items() if k.startswith(f"MonitoringQueues{name.capitalize()}OldestTaskLate")
        ]
        assert props["Threshold"] == group.oldest_task_slo_s
        queues = [d["Value"] for m in _own_metrics(props) for d in m.get("Dimensions", [])]
        assert queues == group.queues


def test_worker_alarms_read_the_worker_services_task_counts(replicated: Monitored) -> None:
    for props in replicated.alarms().values():
        if props["AlarmDescription"].endswith(f"#{Runbook.WORKER_TASKS_NOT_STARTING.value}"):
            names = {m["MetricName"] for m in _own_metrics(props)}
            assert names == {"DesiredTaskCount", "RunningTaskCount"}


# One list of paging alarms.


def test_an_alarm_pages_exactly_when_its_runbook_is_in_the_paging_list(replicated: Monitored) -> None:
    for logical_id, props in replicated.alarms().items():
        match = RUNBOOK.search(props["AlarmDescription"])
        assert match is not None, logical_id
        pages = props["AlarmDescription"].startswith("[PAGE]")
        assert pages == (match.group(1) in PAGES), logical_id
        assert bool(props.get("AlarmActions")) is not pages, logical_id


def test_the_composite_reads_every_paging_alarm_and_nothing_else(replicated: Monitored) -> None:
    pages = {k for k, p in replicated.alarms().items() if p["AlarmDescription"].startswith("[PAGE]")}
    assert set(composite_children(replicated.template.to_json())) == pages
    assert {RUNBOOK.search(replicated.alarms()[k]["AlarmDescription"]).group(1) for k in pages} == {  # type: ignore[union-attr]
        page.value for page in PAGES
    }


# The book refuses at synth what CloudWatch would refuse at deploy (or what would mislead).


def _book(stack: Stack) -> AlarmBook:
    return AlarmBook(stage="test", topic=sns.Topic(stack, "Topic"))


def _add(
    book: AlarmBook, stack: Stack, construct_id: str, metric: cloudwatch.IMetric, runbook: Runbook
) -> None:
    book.add(
        stack,
        construct_id,
        metric=metric,
        threshold=0,
        comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        evaluation_periods=1,
        missing=cloudwatch.TreatMissingData.NOT_BREACHING,
        what="x.",
        first_check="y.",
        runbook=runbook,
    )


def test_an_alarm_reading_more_than_ten_metrics_is_refused_with_its_path_and_count() -> None:
    stack = bare_stack()
    eleven = [cloudwatch.Metric(namespace=NAMESPACE, metric_name=f"M{n}") for n in range(11)]
    with pytest.raises(
        AlarmLimitError, match=r"alarm 'Test/TooWide' reads 11 metrics; CloudWatch allows at most 10"
    ):
        _add(
            _book(stack),
            stack,
            "TooWide",
            sum_of(eleven, label="x", period=Duration.minutes(1)),
            Runbook.RETRY_SURGE,
        )


def test_the_book_refuses_the_runbooks_of_alarms_made_outside_it() -> None:
    stack = bare_stack()
    metric = cloudwatch.Metric(namespace=NAMESPACE, metric_name="M")
    with pytest.raises(
        ValueError, match=r"runbook 'scaling-out-from-zero' belongs to an alarm outside the AlarmBook"
    ):
        _add(_book(stack), stack, "Scaling", metric, Runbook.SCALING_FROM_ZERO)


def test_a_runbook_in_the_paging_list_makes_a_page_and_any_other_a_warning() -> None:
    stack = bare_stack()
    book = _book(stack)
    metric = cloudwatch.Metric(namespace=NAMESPACE, metric_name="M")
    _add(book, stack, "Page", metric, Runbook.QUEUE_METRICS_MISSING)
    _add(book, stack, "Warning", metric, Runbook.RETRY_SURGE)
    assert [a.node.id for a in book.pages] == ["Page"]
    assert [a.node.id for a in book.warnings] == ["Warning"]


# The dashboard reads the same metric objects as the alarms.


def test_malformed_events_are_one_metric_for_the_alarm_and_the_dashboard(replicated: Monitored) -> None:
    alarm = replicated.alarm(Runbook.MALFORMED_EVENTS)
    assert (alarm["Namespace"], alarm["MetricName"], alarm.get("Dimensions")) == (
        NAMESPACE,
        task_metrics.MALFORMED_EVENTS,
        None,
    )
    lines = replicated.graph("Task events lost or unreadable")["metrics"]
    assert [NAMESPACE, task_metrics.MALFORMED_EVENTS] in [row[:2] for row in lines]


def test_per_task_graphs_search_the_contracts_dimension_set_in_the_stages_namespace(
    replicated: Monitored,
) -> None:
    schema = ",".join([f'"{NAMESPACE}"', *task_metrics.DIMENSION_SETS[0]])
    [row] = replicated.graph("Runtime p99 per task (s)")["metrics"]
    assert row[-1]["expression"] == f"SEARCH('{{{schema}}} MetricName=\"Runtime\"', 'p99', 60)"


def test_running_and_desired_workers_are_graphed_per_group(replicated: Monitored) -> None:
    rows = replicated.graph("Worker tasks: running vs desired")["metrics"]
    assert [row[-1]["label"] for row in rows] == [
        f"{name} {kind}" for name in GROUPS for kind in ("running", "desired")
    ]
