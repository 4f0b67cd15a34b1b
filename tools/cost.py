"""What a stage costs a month: an estimate from its synthesized templates and a dated price table.

Run from the repository root: ``python -m tools.cost -c stage=prod`` (or ``-c config=PATH``;
``--prices PATH`` overrides any prices of ``tools/prices/us-east-1.toml``; ``--json``). It
synthesizes the stage as ``cdk synth`` does (no AWS account, network or Docker), reads the
resources from the templates (node types and counts, task sizes and scaling bounds, functions and
their triggers, log groups and retention, alarms, dashboards, keys, secrets) and the workload the
stage's config declares (`tasks_per_month`, `mean_task_runtime_s` per worker group), and prints one
line per item with its formula, at the fewest, typical and most worker tasks.

It is an estimate: list prices of one region, no free tier, no Savings Plans, reserved nodes or
Spot discount, and assumptions (in the price table's [assumptions]) wherever the templates and the
config say nothing. What it leaves out is printed with it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from celery_fleet.contract import queue_depth_env, queue_metrics, task_metrics
from celery_fleet.contract.task_events import MAX_LINE_BYTES

from infra.broker.sizing import STOCK_MESSAGE_BYTES, SizingError, size_broker, uncompressed_bytes_per_task
from infra.config import StageConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_PRICES = Path(__file__).resolve().with_name("prices") / "us-east-1.toml"
GB = 10**9  # AWS bills data in decimal gigabytes
MIB_PER_GB = 1024  # Fargate and Lambda sizes are MiB; their prices are per GB of memory, i.e. GiB
DAYS_PER_MONTH = 365 / 12

# Per-task metrics (each outcome count, Runtime, QueueWait) under each of the contract's dimension sets.
PER_TASK_METRIC_NAMES = len(task_metrics.COUNT_BY_EVENT) + 2
# Queue dimension values beyond the configured queues: OTHER_QUEUE and UNKNOWN_QUEUE.
EXTRA_QUEUE_VALUES = 2
# Task name values beyond the per-minute cap: OTHER_TASK and UNKNOWN_TASK.
EXTRA_TASK_VALUES = 2
QUEUE_METRIC_NAMES = (
    queue_metrics.WAITING_TASKS,
    queue_metrics.OLDEST_TASK_AGE,
    queue_metrics.IN_FLIGHT_TASKS,
)
# WaitingTasks and InFlightTasks once more per worker group (queue_metrics.GROUP_DIMENSION).
GROUP_METRIC_NAMES = 2


class CostError(ValueError):
    """The templates or the price table lack something the estimate needs."""


@dataclass(frozen=True)
class LineItem:
    """One monthly cost, at the fewest, typical and most worker tasks, and how it was computed."""

    section: str
    name: str
    low: float
    typical: float
    high: float
    formula: str
    monitoring: bool = False
    # Part of the monitoring cost that grows with the number of tasks (event lines and what reads them).
    per_task: bool = False

    @classmethod
    def fixed(
        cls,
        section: str,
        name: str,
        usd: float,
        formula: str,
        *,
        monitoring: bool = False,
        per_task: bool = False,
    ) -> LineItem:
        return cls(section, name, usd, usd, usd, formula, monitoring, per_task)


@dataclass(frozen=True)
class Estimate:
    stage: str
    region: str
    prices_read_on: str
    prices_source: str
    tasks_per_month: int
    items: tuple[LineItem, ...]
    assumptions: Mapping[str, float]
    monitoring_fixed_monthly: float
    monitoring_per_million_tasks: float | None
    monitoring_variable_per_million_tasks: float | None
    broker_node: str
    broker_monthly: float
    redis_defaults_node: str
    redis_defaults_monthly: float | None
    redis_defaults_formula: str
    not_included: tuple[str, ...] = field(default=())

    def total(self, which: str) -> float:
        return sum(float(getattr(item, which)) for item in self.items)


def load_prices(override: Path | None = None) -> dict[str, Any]:
    """The default table with `override`'s values merged over it, key by key."""
    prices = tomllib.loads(DEFAULT_PRICES.read_text())
    if override is not None:
        try:
            extra = tomllib.loads(override.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CostError(f"price table {override}: {exc}") from None
        _merge(prices, extra)
        prices["source"] = f"{DEFAULT_PRICES.relative_to(ROOT)} with {override}"
    else:
        prices["source"] = str(DEFAULT_PRICES.relative_to(ROOT))
    return prices


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> None:
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = value


def synthesize(config: StageConfig) -> dict[str, dict[str, Any]]:
    """The stage's templates by stack name, synthesized in-process as `cdk synth` would."""
    # Imported here: aws_cdk is slow to import, and reading a saved assembly does not need it.
    from aws_cdk import App  # noqa: PLC0415

    from stacks.stage import build_stage  # noqa: PLC0415

    context = json.loads((ROOT / "cdk.json").read_text())["context"]
    with tempfile.TemporaryDirectory(prefix="celery-fleet-cost-") as outdir:
        app = App(context=context, outdir=outdir)
        build_stage(app, config)
        assembly = app.synth()
        return {stack.stack_name: stack.template for stack in assembly.stacks}


class Resources:
    """Every resource of the stage's templates, by logical ID (unique across the stage's stacks here)."""

    def __init__(self, templates: Mapping[str, Mapping[str, Any]]) -> None:
        self.by_id: dict[str, Mapping[str, Any]] = {}
        for template in templates.values():
            self.by_id.update(template.get("Resources", {}))

    def of_type(self, resource_type: str) -> dict[str, Mapping[str, Any]]:
        return {
            logical_id: resource.get("Properties", {})
            for logical_id, resource in sorted(self.by_id.items())
            if resource.get("Type") == resource_type
        }


def _refs(value: Any) -> set[str]:
    """Logical IDs a property value points at (Ref and Fn::GetAtt), however deeply nested."""
    found: set[str] = set()
    if isinstance(value, Mapping):
        if isinstance(value.get("Ref"), str):
            found.add(value["Ref"])
        attribute = value.get("Fn::GetAtt")
        if isinstance(attribute, list) and attribute and isinstance(attribute[0], str):
            found.add(attribute[0])
        for item in value.values():
            found |= _refs(item)
    elif isinstance(value, list):
        for item in value:
            found |= _refs(item)
    return found


def _money(usd: float) -> str:
    return f"${usd:,.2f}"


def _rate(usd: float) -> str:
    """A unit price with the digits the price table gives it."""
    return f"${usd:,.10f}".rstrip("0").rstrip(".") if usd < 1 else _money(usd)


def _label(logical_id: str) -> str:
    """A logical ID without CDK's hash suffix: WorkersLogsE28D5C5A -> WorkersLogs."""
    return re.sub(r"[0-9A-F]{8}$", "", logical_id)


class _Estimator:
    def __init__(
        self, config: StageConfig, templates: Mapping[str, Mapping[str, Any]], prices: Mapping[str, Any]
    ):
        self.config = config
        self.resources = Resources(templates)
        self.prices = prices
        self.hours = float(prices["hours_per_month"])
        self.assume: dict[str, float] = {key: float(value) for key, value in prices["assumptions"].items()}
        self.items: list[LineItem] = []
        self.not_included: list[str] = []

    def price(self, *path: str) -> float:
        node: Any = self.prices
        for key in path:
            if not isinstance(node, Mapping) or key not in node:
                raise CostError(f"the price table has no {'.'.join(path)}")
            node = node[key]
        return float(node)

    # -- the broker and the network --------------------------------------------------------------

    def broker(self) -> tuple[str, float]:
        groups = self.resources.of_type("AWS::ElastiCache::ReplicationGroup")
        node_type, total = "", 0.0
        for props in groups.values():
            node_type = str(props["CacheNodeType"])
            engine = str(props.get("Engine", "redis")).lower()
            nodes = int(
                props.get("NumCacheClusters")
                or int(props.get("NumNodeGroups", 1)) * (1 + int(props.get("ReplicasPerNodeGroup", 0)))
            )
            hourly = self.price("elasticache", engine, node_type)
            usd = nodes * hourly * self.hours
            total += usd
            self.items.append(
                LineItem.fixed(
                    "broker",
                    f"ElastiCache {engine} {node_type}",
                    usd,
                    f"{nodes} node(s) x {_rate(hourly)}/h x {self.hours:.0f} h",
                )
            )
        self.not_included.append(
            "ElastiCache backup storage beyond the free allowance, data transfer across AZs"
        )
        return node_type, total

    def network(self) -> None:
        nat = len(self.resources.of_type("AWS::EC2::NatGateway"))
        if nat:
            hourly = self.price("nat_gateway", "hour")
            self.items.append(
                LineItem.fixed(
                    "network",
                    "NAT gateways",
                    nat * hourly * self.hours,
                    f"{nat} x {_rate(hourly)}/h x {self.hours:.0f} h",
                )
            )
            self.not_included.append(
                f"NAT data processing ({_rate(self.price('nat_gateway', 'gb_processed'))}/GB through the "
                "NAT: image pulls, logs, calls to services outside the VPC)"
            )
        addresses = len(self.resources.of_type("AWS::EC2::EIP"))
        if addresses:
            hourly = self.price("public_ipv4", "hour")
            self.items.append(
                LineItem.fixed(
                    "network",
                    "public IPv4 addresses (the NAT gateways')",
                    addresses * hourly * self.hours,
                    f"{addresses} x {_rate(hourly)}/h x {self.hours:.0f} h",
                )
            )

    # -- workers ---------------------------------------------------------------------------------

    def workers(self) -> None:
        services = self.resources.of_type("AWS::ECS::Service")
        targets = self.resources.of_type("AWS::ApplicationAutoScaling::ScalableTarget")
        bounds: dict[str, tuple[int, int]] = {}
        for props in targets.values():
            for service_id in _refs(props.get("ResourceId")) & set(services):
                bounds[service_id] = (int(props["MinCapacity"]), int(props["MaxCapacity"]))
        for service_id, props in services.items():
            task_definition_id = next(
                iter(_refs(props.get("TaskDefinition")) & set(self.resources.by_id)), None
            )
            if task_definition_id is None:
                raise CostError(f"service {service_id} has no task definition in the templates")
            task = self.resources.by_id[task_definition_id]["Properties"]
            vcpu = int(task["Cpu"]) / 1024
            memory_gb = int(task["Memory"]) / MIB_PER_GB
            architecture = (
                "arm64" if task.get("RuntimePlatform", {}).get("CpuArchitecture") == "ARM64" else "x86_64"
            )
            per_hour = vcpu * self.price("fargate", architecture, "vcpu_hour") + memory_gb * self.price(
                "fargate", architecture, "gb_hour"
            )
            command = [str(part) for part in task["ContainerDefinitions"][0].get("Command", [])]
            group_name = _group_of(command)
            fewest, most = bounds.get(service_id, (int(props.get("DesiredCount", 1)),) * 2)
            typical, how = float(fewest), "no scaling target: always this many"
            if service_id in bounds:
                typical, how = self._typical_workers(group_name, command, fewest, most)
            label = f"Fargate {architecture}: {group_name or service_id}"
            self.items.append(
                LineItem(
                    "workers",
                    label,
                    fewest * per_hour * self.hours,
                    typical * per_hour * self.hours,
                    most * per_hour * self.hours,
                    f"{fewest} / {typical:.2f} / {most} task(s) x ({vcpu:g} vCPU x "
                    f"{_rate(self.price('fargate', architecture, 'vcpu_hour'))} + {memory_gb:g} GB x "
                    f"{_rate(self.price('fargate', architecture, 'gb_hour'))}) x {self.hours:.0f} h; "
                    f"typical: {how}",
                )
            )
            if any(
                part.get("CapacityProvider") == "FARGATE_SPOT"
                for part in props.get("CapacityProviderStrategy", [])
            ):
                self.not_included.append(
                    f"the Fargate Spot discount on {group_name or service_id} (priced on-demand)"
                )

    def _typical_workers(
        self, group_name: str | None, command: Sequence[str], fewest: int, most: int
    ) -> tuple[float, str]:
        group = self.config.workers.groups.get(group_name or "")
        if group is None or group.tasks_per_month == 0:
            return float(fewest), "tasks_per_month not declared, so min_tasks"
        processes = _processes(command)
        busy = group.tasks_per_month * group.mean_task_runtime_s / (processes * self.hours * 3600)
        # The month's average: bursts above it cost the same task-hours, only sooner.
        typical = min(float(most), max(float(fewest), busy))
        return typical, (
            f"{group.tasks_per_month:,} tasks x {group.mean_task_runtime_s:g} s / ({processes} processes x "
            f"{self.hours:.0f} h) = {busy:.2f} busy on average, within [{fewest}, {most}]"
        )

    # -- Lambda, logs, metrics -------------------------------------------------------------------

    def event_lines(self) -> float:
        """Task-event lines a month: one per attempt's outcome."""
        tasks = sum(group.tasks_per_month for group in self.config.workers.groups.values())
        return tasks * (1 + self.assume["retried_percent"] / 100)

    def functions(self) -> dict[str, tuple[float, str]]:
        """(invocations a month, "scheduled" or "subscribed") by function; adds each function's line item."""
        functions = self.resources.of_type("AWS::Lambda::Function")
        rules = self.resources.of_type("AWS::Events::Rule")
        filters = self.resources.of_type("AWS::Logs::SubscriptionFilter")
        invocations: dict[str, tuple[float, str]] = {}
        for function_id, props in functions.items():
            memory_gb = int(props.get("MemorySize", 128)) / MIB_PER_GB
            architecture = "arm64" if "arm64" in props.get("Architectures", []) else "x86_64"
            scheduled = [
                _per_month(str(rule["ScheduleExpression"]), self.hours)
                for rule in rules.values()
                if "ScheduleExpression" in rule and function_id in _refs(rule.get("Targets"))
            ]
            subscribed = any(function_id in _refs(item.get("DestinationArn")) for item in filters.values())
            if scheduled:
                polls = self._polls_per_invocation()
                kind, what = "scheduled", f"on its schedule, {polls:g} poll(s) each"
                # With more than one poll per invocation the function waits out the interval between.
                count = sum(scheduled)
                seconds = polls * self.assume["publisher_ms_per_invocation"] / 1000 + (polls - 1) * 60 / polls
            elif subscribed:
                kind = "subscribed"
                per = self.assume["events_per_ingest_invocation"]
                count = self.event_lines() / per
                seconds = (
                    self.assume["ingest_ms_per_invocation"] + per * self.assume["ingest_ms_per_event"]
                ) / 1000
                what = f"{self.event_lines():,.0f} event lines / {per:g} per invocation"
            else:
                continue
            invocations[function_id] = (count, kind)
            requests = count / 1e6 * self.price("lambda", "requests_per_million")
            compute = count * seconds * memory_gb * self.price("lambda", f"gb_second_{architecture}")
            self.items.append(
                LineItem.fixed(
                    "lambda",
                    f"Lambda {_label(function_id)}",
                    requests + compute,
                    f"{count:,.0f} invocations ({what}) x "
                    f"{_rate(self.price('lambda', 'requests_per_million'))}/M "
                    f"+ {seconds * 1000:g} ms x {memory_gb * 1024:.0f} MiB x "
                    f"{_rate(self.price('lambda', f'gb_second_{architecture}'))}/GB-s",
                    monitoring=True,
                    per_task=kind == "subscribed",
                )
            )
        others = [_label(fid) for fid, props in functions.items() if fid not in invocations]
        if others:
            self.not_included.append(f"Lambda functions run on demand or at deploy only: {', '.join(others)}")
        return invocations

    def logs(self, invocations: Mapping[str, tuple[float, str]]) -> None:
        groups = self.resources.of_type("AWS::Logs::LogGroup")
        functions = self.resources.of_type("AWS::Lambda::Function")
        tasks = self.resources.of_type("AWS::ECS::TaskDefinition")
        overhead = self.assume["log_event_overhead_bytes"]
        lines = self.event_lines()
        failures = (
            sum(g.tasks_per_month for g in self.config.workers.groups.values())
            * self.assume["failed_percent"]
            / 100
        )
        volume: dict[str, tuple[float, str, bool]] = {}
        for props in tasks.values():
            for container in props.get("ContainerDefinitions", []):
                for group_id in _refs(container.get("LogConfiguration", {}).get("Options")) & set(groups):
                    size = (lines - failures) * (self.assume["event_line_bytes"] + overhead) + failures * (
                        MAX_LINE_BYTES + overhead
                    )
                    volume[group_id] = (
                        size,
                        f"{lines - failures:,.0f} event lines x ({self.assume['event_line_bytes']:g} + "
                        f"{overhead:g}) B "
                        f"+ {failures:,.0f} failures x ({MAX_LINE_BYTES} + {overhead:g}) B",
                        True,
                    )
        for function_id, props in functions.items():
            env = props.get("Environment", {}).get("Variables", {})
            for group_id in _refs(env) & set(groups):
                # A log group the function writes records to (the failed-task records).
                volume[group_id] = (
                    failures * (MAX_LINE_BYTES + overhead),
                    f"{failures:,.0f} failure records x ({MAX_LINE_BYTES} + {overhead:g}) B",
                    True,
                )
            own = _refs(props.get("LoggingConfig", {}).get("LogGroup")) & set(groups)
            if function_id in invocations:
                count, kind = invocations[function_id]
                per = self.assume[
                    "publisher_log_bytes_per_invocation"
                    if kind == "scheduled"
                    else "ingest_log_bytes_per_invocation"
                ]
                for group_id in own:
                    volume[group_id] = (
                        count * per,
                        f"{count:,.0f} invocations x {per:g} B",
                        kind == "subscribed",
                    )
        ingest_price = self.price("cloudwatch", "logs_ingestion_gb")
        store_price = self.price("cloudwatch", "logs_storage_gb_month")
        unestimated = []
        for group_id, props in groups.items():
            if group_id not in volume:
                unestimated.append(group_id)
                continue
            size, how, per_task = volume[group_id]
            gb = size / GB
            retention = props.get("RetentionInDays")
            months_kept = float(retention) / DAYS_PER_MONTH if retention else 12.0
            usd = gb * ingest_price + gb * months_kept * store_price
            self.items.append(
                LineItem.fixed(
                    "logs",
                    f"CloudWatch Logs {_label(group_id)}",
                    usd,
                    f"{how} = {gb:,.3f} GB x {_money(ingest_price)}/GB + {gb:,.3f} GB x {months_kept:.2f} "
                    f"months kept ({retention or 'never expiring: 12 months counted'} days) x "
                    f"{_money(store_price)}/GB-month",
                    monitoring=True,
                    per_task=per_task,
                )
            )
        if unestimated:
            self.not_included.append(
                "log groups whose volume depends on traffic, not tasks (VPC flow logs, the broker's slow "
                f"log, on-demand functions): {', '.join(_label(group_id) for group_id in unestimated)}"
            )

    def metrics(self, publisher_invocations: float) -> None:
        queues = sum(len(group.queues) for group in self.config.workers.groups.values())
        queue_values = queues + EXTRA_QUEUE_VALUES
        names_typical = self.assume["task_names_per_queue"] * queues
        names_worst = (task_metrics.MAX_TASK_NAMES_PER_MINUTE + EXTRA_TASK_VALUES) * queue_values
        pipeline = len(task_metrics.PIPELINE_COUNTS)
        # The queue-depth publisher: each figure per queue, in-flight broker-wide once more, and waiting
        # and in-flight per worker group (lambdas/queue_depth/logic.py metric_data).
        groups = len(self.config.workers.groups)
        queue_level = len(QUEUE_METRIC_NAMES) * queues + 1 + GROUP_METRIC_NAMES * groups
        typical = (names_typical + queue_values) * PER_TASK_METRIC_NAMES + pipeline + queue_level
        worst = (names_worst + queue_values) * PER_TASK_METRIC_NAMES + pipeline + queue_level
        price = self.price("cloudwatch", "custom_metric_month")
        self.items.append(
            LineItem(
                "metrics",
                "custom metrics",
                typical * price,
                typical * price,
                worst * price,
                f"({PER_TASK_METRIC_NAMES} per-task metrics x (task-name/queue pairs + {queue_values} queue "
                f"values) + {pipeline} pipeline + {queue_level} queue-depth) x {_money(price)}; typical "
                f"{self.assume['task_names_per_queue']:g} task names per queue = {typical:,.0f} metrics; "
                f"most: the contract's cap of {task_metrics.MAX_TASK_NAMES_PER_MINUTE} + {EXTRA_TASK_VALUES} "
                f"names on each of {queue_values} queue values = {worst:,.0f} metrics",
                monitoring=True,
            )
        )
        calls = publisher_invocations * self._polls_per_invocation()
        per_thousand = self.price("cloudwatch", "put_metric_data_per_thousand")
        if calls:
            self.items.append(
                LineItem.fixed(
                    "metrics",
                    "PutMetricData (queue-depth publisher)",
                    calls / 1000 * per_thousand,
                    f"{calls:,.0f} calls (one per poll) x {_money(per_thousand)}/1,000",
                    monitoring=True,
                )
            )

    def _polls_per_invocation(self) -> float:
        for props in self.resources.of_type("AWS::Lambda::Function").values():
            interval = props.get("Environment", {}).get("Variables", {}).get(queue_depth_env.POLL_INTERVAL_S)
            if isinstance(interval, str) and interval.replace(".", "", 1).isdigit() and float(interval) > 0:
                return max(1.0, 60 / float(interval))
        return 1.0

    def alarms(self) -> None:
        standard = high = 0
        for props in self.resources.of_type("AWS::CloudWatch::Alarm").values():
            if "Metrics" in props:
                stats = [m["MetricStat"] for m in props["Metrics"] if "MetricStat" in m]
                periods = [int(stat.get("Period", 60)) for stat in stats]
            else:
                stats, periods = [props], [int(props.get("Period", 60))]
            # Each metric an alarm reads is billed; a period under a minute makes it high resolution.
            if min(periods, default=60) < 60:
                high += len(stats)
            else:
                standard += len(stats)
        composite = len(self.resources.of_type("AWS::CloudWatch::CompositeAlarm"))
        p_std = self.price("cloudwatch", "alarm_metric_month")
        p_high = self.price("cloudwatch", "alarm_high_resolution_metric_month")
        p_comp = self.price("cloudwatch", "composite_alarm_month")
        self.items.append(
            LineItem.fixed(
                "alarms",
                "alarms",
                standard * p_std + high * p_high + composite * p_comp,
                f"{standard} standard alarm metrics x {_money(p_std)} + {high} high-resolution x "
                f"{_money(p_high)} "
                f"+ {composite} composite x {_money(p_comp)}",
                monitoring=True,
            )
        )

    def fixed_extras(self) -> None:
        dashboards = len(self.resources.of_type("AWS::CloudWatch::Dashboard"))
        if dashboards:
            price = self.price("cloudwatch", "dashboard_month")
            self.items.append(
                LineItem.fixed(
                    "dashboard",
                    "dashboards",
                    dashboards * price,
                    f"{dashboards} x {_money(price)}",
                    monitoring=True,
                )
            )
        keys = len(self.resources.of_type("AWS::KMS::Key"))
        if keys:
            price = self.price("kms", "key_month")
            self.items.append(LineItem.fixed("other", "KMS keys", keys * price, f"{keys} x {_money(price)}"))
        secrets = len(self.resources.of_type("AWS::SecretsManager::Secret"))
        if secrets:
            price = self.price("secrets_manager", "secret_month")
            self.items.append(
                LineItem.fixed(
                    "other", "Secrets Manager secrets", secrets * price, f"{secrets} x {_money(price)}"
                )
            )
        self.not_included.append("requests to KMS, Secrets Manager, S3, SQS and SNS (cents at these volumes)")

    def redis_defaults(self) -> tuple[str, float | None, str]:
        per_task = uncompressed_bytes_per_task(STOCK_MESSAGE_BYTES)
        broker = self.config.broker.model_copy(update={"bytes_per_task": per_task, "node_type": None})
        nodes = 1 + broker.replicas
        try:
            sizing = size_broker(broker)
        except SizingError:
            return "no node type", None, f"{per_task:,} B/task: no node type holds the backlog"
        hourly = self.price("elasticache", broker.engine, sizing.node_type)
        return (
            sizing.node_type,
            nodes * hourly * self.hours,
            f"{broker.backlog_tasks:,} tasks x {per_task:,} B (stock {STOCK_MESSAGE_BYTES:,}-byte messages "
            f"in an uncompressed list) -> {sizing.node_type}, {nodes} x {_rate(hourly)}/h x "
            f"{self.hours:.0f} h",
        )


def _group_of(command: Sequence[str]) -> str | None:
    """The worker group a container command serves, from its `--hostname=<group>@%h`."""
    for part in command:
        match = re.fullmatch(r"--hostname=([^@]+)@.*", part)
        if match:
            return match.group(1)
    return None


def _processes(command: Sequence[str]) -> int:
    for index, part in enumerate(command):
        for flag in ("--concurrency", "--autoscale", "-c"):
            value = part[len(flag) + 1 :] if part.startswith(flag + "=") else None
            if value is None and part == flag and index + 1 < len(command):
                value = command[index + 1]
            if value:
                return max(1, int(value.split(",")[0]))
    return 1


def _per_month(expression: str, hours: float) -> float:
    match = re.fullmatch(r"rate\((\d+) (minute|minutes|hour|hours|day|days)\)", expression)
    if not match:
        raise CostError(f"schedule {expression!r} is not a rate() the estimate reads")
    every = int(match.group(1)) * {"minute": 1, "hour": 60, "day": 1440}[match.group(2).rstrip("s")]
    return hours * 60 / every


def estimate(
    config: StageConfig, templates: Mapping[str, Mapping[str, Any]], prices: Mapping[str, Any]
) -> Estimate:
    """The stage's monthly estimate, item by item, from its templates, its config and `prices`."""
    estimator = _Estimator(config, templates, prices)
    node_type, broker_monthly = estimator.broker()
    estimator.network()
    estimator.workers()
    invocations = estimator.functions()
    estimator.logs(invocations)
    estimator.metrics(sum(count for count, kind in invocations.values() if kind == "scheduled"))
    estimator.alarms()
    estimator.fixed_extras()
    redis_node, redis_monthly, redis_formula = estimator.redis_defaults()
    tasks = sum(group.tasks_per_month for group in config.workers.groups.values())
    monitoring = sum(item.typical for item in estimator.items if item.monitoring)
    variable = sum(item.typical for item in estimator.items if item.per_task)
    return Estimate(
        stage=config.name,
        region=str(prices["region"]),
        prices_read_on=str(prices["read_on"]),
        prices_source=str(prices["source"]),
        tasks_per_month=tasks,
        items=tuple(estimator.items),
        assumptions=estimator.assume,
        monitoring_fixed_monthly=monitoring - variable,
        monitoring_per_million_tasks=monitoring / tasks * 1e6 if tasks else None,
        monitoring_variable_per_million_tasks=variable / tasks * 1e6 if tasks else None,
        broker_node=node_type,
        broker_monthly=broker_monthly,
        redis_defaults_node=redis_node,
        redis_defaults_monthly=redis_monthly,
        redis_defaults_formula=redis_formula,
        not_included=tuple(estimator.not_included),
    )


def summary_line(result: Estimate) -> str:
    """One line for the synth output."""
    if result.monitoring_variable_per_million_tasks is not None:
        monitoring = (
            f"monitoring {_money(result.monitoring_fixed_monthly)}/month fixed + "
            f"{_money(result.monitoring_variable_per_million_tasks)} per million tasks"
        )
    else:
        monitoring = "declare workers.groups.*.tasks_per_month for monitoring per million tasks"
    return (
        f"  cost (estimate, {result.region} list prices of {result.prices_read_on}): about "
        f"{_money(result.total('typical'))}/month typical, {_money(result.total('low'))} at the fewest "
        f"workers, {_money(result.total('high'))} at the most; {monitoring}; "
        f"python -m tools.cost -c stage={result.stage} for each item"
    )


def format_estimate(result: Estimate) -> str:
    rule = "-" * 94
    lines = [
        f"celery-fleet stage {result.stage!r}: monthly cost ESTIMATE from {result.region} on-demand list "
        f"prices read {result.prices_read_on} ({result.prices_source}).",
        "No free tier, Savings Plans, reserved nodes or Spot discount. Not a quote: check AWS's prices.",
        f"Declared workload: {result.tasks_per_month:,} tasks a month (workers.groups.*.tasks_per_month).",
        "",
        f"{'item':<58} {'fewest':>11} {'typical':>11} {'most':>11}",
        rule,
    ]
    for item in result.items:
        label = f"{item.section}: {item.name}"
        lines.append(
            f"{label:<58.58} {_money(item.low):>11} {_money(item.typical):>11} {_money(item.high):>11}"
        )
        lines.append(f"    = {item.formula}")
    low, typical, high = (_money(result.total(which)) for which in ("low", "typical", "high"))
    lines += [rule, f"{'total':<58} {low:>11} {typical:>11} {high:>11}", ""]
    if result.monitoring_variable_per_million_tasks is not None and result.monitoring_per_million_tasks:
        lines.append(
            f"Monitoring: {_money(result.monitoring_fixed_monthly)}/month fixed (alarms, dashboard, typical "
            "metrics, queue-depth publisher) + "
            f"{_money(result.monitoring_variable_per_million_tasks)} per million tasks (event lines, failure "
            f"records, the ingest Lambda): {_money(result.monitoring_per_million_tasks)} per million tasks "
            f"all told at {result.tasks_per_month:,} tasks a month."
        )
    if result.redis_defaults_monthly is not None:
        lines.append(
            f"Broker: {result.broker_node}, {_money(result.broker_monthly)}/month. With Redis defaults and "
            f"stock Celery messages the same backlog needs {result.redis_defaults_node}, "
            f"{_money(result.redis_defaults_monthly)}/month ({result.redis_defaults_formula})."
        )
    else:
        lines.append(f"Broker: {result.broker_node}; with Redis defaults: {result.redis_defaults_formula}.")
    lines += ["", "Assumptions (the price table's [assumptions]):"]
    lines += [f"  {key} = {value:g}" for key, value in result.assumptions.items()]
    lines += ["", "Not included:"] + [f"  - {entry}" for entry in result.not_included]
    return "\n".join(lines)


def _context_values(values: Iterable[str]) -> dict[str, str]:
    context: dict[str, str] = {}
    for value in values:
        key, sep, setting = value.partition("=")
        if not sep:
            raise SystemExit(f"-c expects KEY=VALUE, got {value!r}")
        context[key] = setting
    return context


def main(argv: Sequence[str] | None = None) -> int:
    from infra.config import ConfigError, config_path, load_stage_config  # noqa: PLC0415

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "-c", "--context", action="append", default=[], help="stage=NAME or config=PATH, as for cdk"
    )
    parser.add_argument(
        "--prices", type=Path, default=None, help="a price table whose values override the default"
    )
    parser.add_argument("--json", action="store_true", help="print the estimate as JSON")
    args = parser.parse_args(argv)
    context = _context_values(args.context)
    try:
        config = load_stage_config(config_path(stage=context.get("stage"), config=context.get("config")))
        prices = load_prices(args.prices or (Path(context["prices"]) if "prices" in context else None))
        result = estimate(config, synthesize(config), prices)
    except (ConfigError, SizingError, CostError) as exc:
        print(f"celery-fleet: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(asdict(result), indent=2) if args.json else format_estimate(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
