"""tools.cost: every line item of the dev and prod estimates against a hand calculation from the template.

Each expected figure is computed here from the synthesized resources (found with aws_cdk.assertions)
and the price table, written out as the arithmetic a person would do, apart from the tool's code.
The templates are the session's synthesized stages (conftest), read as `cdk synth` wrote them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aws_cdk.assertions import Template
from celery_fleet.contract.task_events import MAX_LINE_BYTES

from infra.broker.sizing import NODE_TYPES
from infra.config import StageConfig
from tests.support.synth import Synthesized, stage_config
from tools import cost

HOURS = 730
GB = 1e9


class Stage:
    def __init__(self, synthesized: Synthesized, config: StageConfig) -> None:
        self.config = config
        self.templates = {
            path.name.removesuffix(".template.json"): json.loads(path.read_text())
            for path in synthesized.template_files()
        }
        self.prices = cost.load_prices()
        self.estimate = cost.estimate(self.config, self.templates, self.prices)
        self.stacks = {name: Template.from_json(dict(body)) for name, body in self.templates.items()}

    def find(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        found: dict[str, Mapping[str, Any]] = {}
        for template in self.stacks.values():
            found.update(template.find_resources(resource_type))
        return found

    def item(self, section: str, name: str) -> cost.LineItem:
        matches = [i for i in self.estimate.items if i.section == section and i.name == name]
        assert len(matches) == 1, [f"{i.section}: {i.name}" for i in self.estimate.items]
        return matches[0]

    def p(self, *path: str) -> float:
        node: Any = self.prices
        for key in path:
            node = node[key]
        return float(node)

    def a(self, key: str) -> float:
        return float(self.prices["assumptions"][key])


@pytest.fixture(scope="module", params=["dev", "prod"])
def stage(request: pytest.FixtureRequest) -> Stage:
    synthesized: Synthesized = request.getfixturevalue(str(request.param))
    return Stage(synthesized, stage_config(str(request.param)))


def one(found: Mapping[str, Mapping[str, Any]]) -> tuple[str, Mapping[str, Any]]:
    assert len(found) == 1, list(found)
    logical_id, resource = next(iter(found.items()))
    return logical_id, resource["Properties"]


def test_broker_nodes(stage: Stage) -> None:
    _, group = one(stage.find("AWS::ElastiCache::ReplicationGroup"))
    nodes = group["NumCacheClusters"]
    expected = nodes * stage.p("elasticache", group["Engine"], group["CacheNodeType"]) * HOURS
    item = stage.item("broker", f"ElastiCache {group['Engine']} {group['CacheNodeType']}")
    assert item.typical == pytest.approx(expected)
    assert stage.estimate.broker_monthly == pytest.approx(expected)


def test_nat_gateways_and_their_addresses(stage: Stage) -> None:
    nat = len(stage.find("AWS::EC2::NatGateway"))
    eips = len(stage.find("AWS::EC2::EIP"))
    assert nat == stage.config.network.nat_gateways
    assert stage.item("network", "NAT gateways").typical == pytest.approx(nat * 0.045 * HOURS)
    assert stage.item("network", "public IPv4 addresses (the NAT gateways')").typical == pytest.approx(
        eips * 0.005 * HOURS
    )


def test_fargate_at_min_typical_and_max_workers(stage: Stage) -> None:
    targets = stage.find("AWS::ApplicationAutoScaling::ScalableTarget")
    definitions = stage.find("AWS::ECS::TaskDefinition")
    for name, group in stage.config.workers.groups.items():
        (definition,) = [
            d["Properties"]
            for d in definitions.values()
            if f"--hostname={name}@%h" in d["Properties"]["ContainerDefinitions"][0]["Command"]
        ]
        (target,) = [
            t["Properties"]
            for t in targets.values()
            if f"Workers{name.title()}Workers" in str(t["Properties"]["ResourceId"])
        ]
        arch = "arm64" if definition["RuntimePlatform"]["CpuArchitecture"] == "ARM64" else "x86_64"
        per_task_hour = int(definition["Cpu"]) / 1024 * stage.p("fargate", arch, "vcpu_hour") + int(
            definition["Memory"]
        ) / 1024 * stage.p("fargate", arch, "gb_hour")
        processes = group.autoscale[0] if group.autoscale else group.concurrency
        busy = group.tasks_per_month * group.mean_task_runtime_s / (processes * HOURS * 3600)
        typical = min(target["MaxCapacity"], max(target["MinCapacity"], busy))
        item = stage.item("workers", f"Fargate {arch}: {name}")
        assert item.low == pytest.approx(target["MinCapacity"] * per_task_hour * HOURS)
        assert item.typical == pytest.approx(typical * per_task_hour * HOURS)
        assert item.high == pytest.approx(target["MaxCapacity"] * per_task_hour * HOURS)


def event_lines(stage: Stage) -> float:
    tasks = sum(g.tasks_per_month for g in stage.config.workers.groups.values())
    return tasks * (1 + stage.a("retried_percent") / 100)


def failures(stage: Stage) -> float:
    return (
        sum(g.tasks_per_month for g in stage.config.workers.groups.values()) * stage.a("failed_percent") / 100
    )


def function_props(stage: Stage, prefix: str) -> Mapping[str, Any]:
    (props,) = [
        r["Properties"] for lid, r in stage.find("AWS::Lambda::Function").items() if lid.startswith(prefix)
    ]
    found: Mapping[str, Any] = props
    return found


def test_queue_depth_publisher_lambda(stage: Stage) -> None:
    props = function_props(stage, "QueueDepthPublisherFunction")
    (rule,) = stage.find("AWS::Events::Rule").values()
    assert rule["Properties"]["ScheduleExpression"] == "rate(1 minute)"
    invocations = HOURS * 60
    gb_s = invocations * stage.a("publisher_ms_per_invocation") / 1000 * props["MemorySize"] / 1024
    expected = invocations * 0.20 / 1e6 + gb_s * stage.p("lambda", "gb_second_arm64")
    assert props["Architectures"] == ["arm64"]
    assert stage.item("lambda", "Lambda QueueDepthPublisherFunction").typical == pytest.approx(expected)


def test_task_event_ingest_lambda(stage: Stage) -> None:
    props = function_props(stage, "TaskEventsFunction")
    per = stage.a("events_per_ingest_invocation")
    invocations = event_lines(stage) / per
    seconds = (stage.a("ingest_ms_per_invocation") + per * stage.a("ingest_ms_per_event")) / 1000
    expected = invocations * 0.20 / 1e6 + invocations * seconds * props["MemorySize"] / 1024 * stage.p(
        "lambda", "gb_second_arm64"
    )
    assert stage.item("lambda", "Lambda TaskEventsFunction").typical == pytest.approx(expected)


def logs_cost(stage: Stage, prefix: str, size_bytes: float) -> float:
    (group,) = [
        r["Properties"] for lid, r in stage.find("AWS::Logs::LogGroup").items() if lid.startswith(prefix)
    ]
    gb = size_bytes / GB
    return gb * 0.50 + gb * float(group["RetentionInDays"]) / (365 / 12) * 0.03


def test_worker_log_group_holds_the_event_lines(stage: Stage) -> None:
    overhead = stage.a("log_event_overhead_bytes")
    size = (event_lines(stage) - failures(stage)) * (stage.a("event_line_bytes") + overhead) + failures(
        stage
    ) * (MAX_LINE_BYTES + overhead)
    expected = logs_cost(stage, "WorkersLogs", size)
    assert stage.item("logs", "CloudWatch Logs WorkersLogs").typical == pytest.approx(expected)


def test_failed_task_records_and_lambda_log_groups(stage: Stage) -> None:
    overhead = stage.a("log_event_overhead_bytes")
    records = logs_cost(stage, "TaskEventsFailedTasks", failures(stage) * (MAX_LINE_BYTES + overhead))
    assert stage.item("logs", "CloudWatch Logs TaskEventsFailedTasks").typical == pytest.approx(records)
    ingest = logs_cost(
        stage,
        "TaskEventsLogs",
        event_lines(stage)
        / stage.a("events_per_ingest_invocation")
        * stage.a("ingest_log_bytes_per_invocation"),
    )
    assert stage.item("logs", "CloudWatch Logs TaskEventsLogs").typical == pytest.approx(ingest)
    publisher = logs_cost(
        stage, "QueueDepthPublisherLogs", HOURS * 60 * stage.a("publisher_log_bytes_per_invocation")
    )
    assert stage.item("logs", "CloudWatch Logs QueueDepthPublisherLogs").typical == pytest.approx(publisher)


def test_custom_metrics_typical_and_worst_case(stage: Stage) -> None:
    queues = sum(len(g.queues) for g in stage.config.workers.groups.values())
    groups = len(stage.config.workers.groups)
    # 9 outcome counts + Runtime + QueueWait, per (task name, queue) and per queue (+ "other", "unknown");
    # 4 pipeline counts; 3 queue-depth metrics per queue, in flight broker-wide, 2 per worker group.
    depth = 3 * queues + 1 + 2 * groups
    typical = (10 * queues + queues + 2) * 11 + 4 + depth
    worst = (202 * (queues + 2) + queues + 2) * 11 + 4 + depth
    item = stage.item("metrics", "custom metrics")
    assert item.typical == pytest.approx(typical * 0.30)
    assert item.high == pytest.approx(worst * 0.30)
    assert stage.item("metrics", "PutMetricData (queue-depth publisher)").typical == pytest.approx(
        HOURS * 60 / 1000 * 0.01
    )


def test_alarms_count_every_metric_they_read(stage: Stage) -> None:
    standard = high = 0
    for alarm in stage.find("AWS::CloudWatch::Alarm").values():
        props = alarm["Properties"]
        stats = [m["MetricStat"] for m in props.get("Metrics", []) if "MetricStat" in m] or [props]
        if min(s.get("Period", 60) for s in stats) < 60:
            high += len(stats)
        else:
            standard += len(stats)
    composite = len(stage.find("AWS::CloudWatch::CompositeAlarm"))
    expected = standard * 0.10 + high * 0.30 + composite * 0.50
    assert stage.item("alarms", "alarms").typical == pytest.approx(expected)


def test_dashboard_keys_and_secrets(stage: Stage) -> None:
    assert stage.item("dashboard", "dashboards").typical == pytest.approx(
        3.00 * len(stage.find("AWS::CloudWatch::Dashboard"))
    )
    assert stage.item("other", "KMS keys").typical == pytest.approx(1.00 * len(stage.find("AWS::KMS::Key")))
    assert stage.item("other", "Secrets Manager secrets").typical == pytest.approx(
        0.40 * len(stage.find("AWS::SecretsManager::Secret"))
    )


def test_every_line_item_has_a_hand_calculation_and_the_total_adds_up(stage: Stage) -> None:
    checked = {
        "broker",
        "network: NAT gateways",
        "network: public IPv4 addresses (the NAT gateways')",
        "lambda: Lambda QueueDepthPublisherFunction",
        "lambda: Lambda TaskEventsFunction",
        "logs: CloudWatch Logs WorkersLogs",
        "logs: CloudWatch Logs TaskEventsFailedTasks",
        "logs: CloudWatch Logs TaskEventsLogs",
        "logs: CloudWatch Logs QueueDepthPublisherLogs",
        "metrics: custom metrics",
        "metrics: PutMetricData (queue-depth publisher)",
        "alarms: alarms",
        "dashboard: dashboards",
        "other: KMS keys",
        "other: Secrets Manager secrets",
    }
    for item in stage.estimate.items:
        key = item.section if item.section in ("broker", "workers") else f"{item.section}: {item.name}"
        assert key in checked | {"workers"}, f"{key} has no hand calculation here"
    for which in ("low", "typical", "high"):
        assert stage.estimate.total(which) == pytest.approx(
            sum(getattr(i, which) for i in stage.estimate.items)
        )


def test_monitoring_per_million_tasks(stage: Stage) -> None:
    tasks = sum(g.tasks_per_month for g in stage.config.workers.groups.values())
    variable = sum(i.typical for i in stage.estimate.items if i.per_task)
    fixed = sum(i.typical for i in stage.estimate.items if i.monitoring and not i.per_task)
    assert stage.estimate.monitoring_variable_per_million_tasks == pytest.approx(variable / tasks * 1e6)
    assert stage.estimate.monitoring_per_million_tasks == pytest.approx((variable + fixed) / tasks * 1e6)
    assert {i.name for i in stage.estimate.items if i.per_task} == {
        "Lambda TaskEventsFunction",
        "CloudWatch Logs WorkersLogs",
        "CloudWatch Logs TaskEventsFailedTasks",
        "CloudWatch Logs TaskEventsLogs",
    }


def test_broker_with_redis_defaults_needs_a_node_for_uncompressed_stock_messages(stage: Stage) -> None:
    # 1,290-byte stock messages cost 1,290 x 1.08 + 16 = 1,410 B each in an uncompressed list.
    needed = (
        (64 * 2**20 + stage.config.broker.backlog_tasks * 1410)
        * (100 + stage.config.broker.headroom_percent)
        // 100
    )
    usable = {n.name: n.usable_bytes for n in NODE_TYPES}
    allowed = [
        name
        for name in usable
        if stage.config.broker.allow_burstable_nodes or not name.startswith("cache.t4g")
    ]
    node = next(name for name in allowed if usable[name] >= needed)
    assert stage.estimate.redis_defaults_node == node
    nodes = 1 + stage.config.broker.replicas
    assert stage.estimate.redis_defaults_monthly == pytest.approx(
        nodes * stage.p("elasticache", stage.config.broker.engine, node) * HOURS
    )


def test_a_price_override_replaces_only_what_it_names(tmp_path: Path) -> None:
    override = tmp_path / "prices.toml"
    override.write_text("[nat_gateway]\nhour = 1.0\n[assumptions]\nevent_line_bytes = 1000\n")
    prices = cost.load_prices(override)
    assert prices["nat_gateway"] == {"hour": 1.0, "gb_processed": 0.045}
    assert prices["assumptions"]["event_line_bytes"] == 1000
    assert prices["elasticache"]["valkey"]["cache.m7g.large"] == 0.1264
    assert str(override) in prices["source"]


def test_summary_line_says_it_is_an_estimate(stage: Stage) -> None:
    line = cost.summary_line(stage.estimate)
    assert line.startswith("  cost (estimate, us-east-1 list prices of 2026-12-02): about $")
    assert f"${stage.estimate.total('typical'):,.2f}/month typical" in line
    assert f"python -m tools.cost -c stage={stage.config.name}" in line
