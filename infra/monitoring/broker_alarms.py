"""Alarms on the broker: memory, evictions, engine CPU, connections, replication, authentication."""

from __future__ import annotations

from aws_cdk import Duration, Fn
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from infra.broker import Broker
from infra.config.monitoring import MonitoringConfig
from infra.monitoring.alarms import AlarmBook, Severity, max_of
from infra.monitoring.runbooks import Runbook

NAMESPACE = "AWS/ElastiCache"
_GT = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD
# No broker metric at all is no evidence of a full or busy broker; an unreachable broker shows up as
# the queue-depth publisher's missing data, which pages.
_NOT_BREACHING = cloudwatch.TreatMissingData.NOT_BREACHING

# maxclients is fixed by node type ("Valkey and Redis OSS node-type specific parameters" in the
# ElastiCache guide): 65,000 on every node type except the smallest burstable one.
DEFAULT_MAXCLIENTS = 65_000
MAXCLIENTS_BY_NODE_TYPE = {"cache.t4g.micro": 20_000}


def maxclients(node_type: str) -> int:
    """The connection limit ElastiCache sets on a node of `node_type`."""
    return MAXCLIENTS_BY_NODE_TYPE.get(node_type, DEFAULT_MAXCLIENTS)


class BrokerAlarms(Construct):
    """Broker alarms, each reading the worst node: MAX over the nodes' series in one alarm.

    One alarm per signal rather than per node: a failover moves the primary role between nodes, and
    the person paged needs to know the broker is in trouble, the node is in the runbook's first check.
    Node metrics use the dimension CacheClusterId `<replication group id>-00N`, one per node.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        book: AlarmBook,
        broker: Broker,
        replicas: int,
        config: MonitoringConfig,
    ) -> None:
        super().__init__(scope, construct_id)
        self.maxclients = maxclients(broker.node_type)
        self.node_ids = [
            Fn.join("", [broker.replication_group.ref, f"-{n:03d}"]) for n in range(1, replicas + 2)
        ]
        minute, five = Duration.minutes(1), Duration.minutes(5)

        memory = self.worst("DatabaseMemoryUsagePercentage", "Maximum", minute)
        self.memory_high = book.add(
            self,
            "MemoryHigh",
            severity=Severity.WARNING,
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
            severity=Severity.PAGE,
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
            severity=Severity.PAGE,
            metric=self.worst("Evictions", "Sum", minute),
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
            severity=Severity.WARNING,
            metric=self.worst("EngineCPUUtilization", "Average", five),
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
        limit = self.maxclients
        connections_threshold = limit * config.broker_connections_percent // 100
        self.connections_high = book.add(
            self,
            "ConnectionsHigh",
            severity=Severity.WARNING,
            metric=self.worst("CurrConnections", "Maximum", minute),
            # A share of the node type's maxclients: past it, new workers cannot connect at all.
            threshold=connections_threshold,
            comparison=_GT,
            evaluation_periods=5,
            missing=_NOT_BREACHING,
            what=f"a broker node holds over {connections_threshold:,} connections "
            f"({config.broker_connections_percent}"
            f" % of the {limit:,} a {broker.node_type} accepts); at the limit new clients are refused.",
            first_check="which clients connect (CLIENT LIST via redis-cli), and worker counts vs pool sizes.",
            runbook=Runbook.BROKER_CONNECTIONS_HIGH,
        )
        self.replication_lag: cloudwatch.Alarm | None = None
        if replicas > 0:
            self.replication_lag = book.add(
                self,
                "ReplicationLag",
                severity=Severity.WARNING,
                # Only replicas report it; MAX over every node still holds after a failover swaps roles.
                metric=self.worst("ReplicationLag", "Maximum", minute),
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
            severity=Severity.WARNING,
            metric=self.worst("AuthenticationFailures", "Sum", five),
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

    def node_metric(
        self, metric_name: str, node_id: str, statistic: str, period: Duration
    ) -> cloudwatch.Metric:
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=metric_name,
            dimensions_map={"CacheClusterId": node_id},
            statistic=statistic,
            period=period,
        )

    def worst(self, metric_name: str, statistic: str, period: Duration) -> cloudwatch.IMetric:
        """`metric_name` of the node where it is highest, at each period."""
        nodes: list[cloudwatch.IMetric] = [
            self.node_metric(metric_name, node_id, statistic, period) for node_id in self.node_ids
        ]
        return max_of(nodes, label=f"{metric_name} (worst node)", period=period)
