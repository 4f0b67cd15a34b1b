"""Alarms on the broker: memory, evictions, engine CPU, connections, replication, authentication."""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.broker.metrics import (
    AUTHENTICATION_FAILURES,
    CONNECTIONS,
    ENGINE_CPU,
    EVICTIONS,
    MEMORY,
    REPLICATION_LAG,
    BrokerMetrics,
)
from infra.config.monitoring import MonitoringConfig
from infra.monitoring.alarms import AlarmBook
from infra.monitoring.runbooks import Runbook

_GT = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
# No broker metric at all is no evidence of a full or busy broker; an unreachable broker shows up as
# the queue-depth publisher's missing data, which pages.
_NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING


class BrokerAlarms(Construct):
    """Broker alarms, each reading the worst node: MAX over the nodes' series in one alarm.

    One alarm per signal rather than per node: a failover moves the primary role between nodes, and
    the person paged needs to know the broker is in trouble, the node is in the runbook's first check.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        book: AlarmBook,
        metrics: BrokerMetrics,
        config: MonitoringConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        five = Duration.minutes(5)

        memory = metrics.worst(MEMORY)
        self.memory_high = book.add(
            self,
            "MemoryHigh",
            metric=memory,
            threshold=config.broker_memory_warning_percent,
            comparison=_GT,
            # Three minutes: a backlog that outgrows the plan does not shrink by itself.
            evaluation_periods=3,
            missing=_NOT_BREACHING,
            what=f"broker memory above {config.broker_memory_warning_percent} % of usable memory: the "
            "backlog is beyond what the broker was sized for.",
            first_check="the dashboard's queue depth: which queue grows, and are its workers running?",
            runbook=Runbook.BROKER_MEMORY_HIGH,
        )
        self.memory_critical = book.add(
            self,
            "MemoryCritical",
            metric=memory,
            threshold=config.broker_memory_page_percent,
            comparison=_GT,
            # Two minutes: at 100 % every enqueue fails, so act before the third.
            evaluation_periods=2,
            missing=_NOT_BREACHING,
            what=f"broker memory above {config.broker_memory_page_percent} % of usable memory; at 100 % "
            "the broker refuses every new task (noeviction) and the web app's enqueues fail.",
            first_check="the dashboard's queue depth and workers running vs desired; scale workers or the "
            "node.",
            runbook=Runbook.BROKER_MEMORY_CRITICAL,
        )
        self.evictions = book.add(
            self,
            "Evictions",
            metric=metrics.worst(EVICTIONS),
            # Under maxmemory-policy noeviction nothing may ever be evicted: one eviction means the
            # parameter group is not applied, and queues or kombu bindings are being deleted.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what="the broker evicted keys: queued tasks or kombu bindings were deleted. The eviction policy "
            "must be noeviction.",
            first_check="the replication group's parameter group and its maxmemory-policy (console, "
            "Parameter groups).",
            runbook=Runbook.BROKER_EVICTIONS,
        )
        self.cpu_high = book.add(
            self,
            "EngineCpuHigh",
            metric=metrics.worst(ENGINE_CPU, five),
            threshold=config.broker_cpu_percent,
            comparison=_GT,
            # 3 x 5 minutes: the engine is single-threaded, short bursts at 100 % are normal; a quarter
            # of an hour of saturation slows every client.
            evaluation_periods=3,
            missing=_NOT_BREACHING,
            what=f"the broker's engine thread has been over {config.broker_cpu_percent} % busy for 15 "
            "minutes: every enqueue and poll waits.",
            first_check="the broker slow log and CurrConnections on the dashboard (a client polling in a "
            "loop?).",
            runbook=Runbook.BROKER_CPU_HIGH,
        )
        limit = metrics.maxclients
        connections_threshold = limit * config.broker_connections_percent // 100
        self.connections_high = book.add(
            self,
            "ConnectionsHigh",
            metric=metrics.worst(CONNECTIONS),
            # A share of the node type's maxclients: past it, new workers cannot connect at all.
            threshold=connections_threshold,
            comparison=_GT,
            evaluation_periods=5,
            missing=_NOT_BREACHING,
            what=f"a broker node holds over {connections_threshold:,} connections "
            f"({config.broker_connections_percent}"
            f" % of the {limit:,} a {metrics.node_type} accepts); at the limit new clients are refused.",
            first_check="which clients connect (CLIENT LIST via redis-cli), and worker counts vs pool sizes.",
            runbook=Runbook.BROKER_CONNECTIONS_HIGH,
        )
        self.replication_lag: cloudwatch.Alarm | None = None
        if metrics.replicas > 0:
            self.replication_lag = book.add(
                self,
                "ReplicationLag",
                # Only replicas report it; MAX over every node still holds after a failover swaps roles.
                metric=metrics.worst(REPLICATION_LAG),
                threshold=config.broker_replication_lag_s,
                comparison=_GT,
                evaluation_periods=5,
                missing=_NOT_BREACHING,
                what=f"a broker replica trails the primary by over {config.broker_replication_lag_s} s for 5 "
                "minutes: a failover now would lose that much of the queues.",
                first_check="NetworkBytesOut and EngineCPUUtilization of the primary on the dashboard.",
                runbook=Runbook.BROKER_REPLICATION_LAG,
            )
        self.authentication_failures = book.add(
            self,
            "AuthenticationFailures",
            metric=metrics.worst(AUTHENTICATION_FAILURES, five),
            # Every client holds the current AUTH token; any failure is a client with a stale or wrong
            # token (a token rotation half done) or someone guessing inside the VPC.
            threshold=0,
            comparison=_GT,
            evaluation_periods=1,
            missing=_NOT_BREACHING,
            what="clients failed to authenticate to the broker: a stale AUTH token or a stranger in the VPC.",
            first_check="whether an AUTH token rotation is in progress; then which clients run an old token.",
            runbook=Runbook.BROKER_AUTHENTICATION_FAILURES,
        )
