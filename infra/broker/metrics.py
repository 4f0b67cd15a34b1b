"""The broker's CloudWatch metrics (AWS/ElastiCache, per node), for alarms and dashboards.

ElastiCache publishes node metrics under the dimension CacheClusterId, `<replication group id>-00N`
for each node of a cluster-mode-disabled replication group; a failover moves the primary role
between those nodes, never the names.
"""

from __future__ import annotations

from typing import NamedTuple

from aws_cdk import Duration, Fn
from aws_cdk import aws_cloudwatch as cloudwatch

from infra.metric_math import max_of

NAMESPACE = "AWS/ElastiCache"
MINUTE = Duration.minutes(1)

# maxclients is fixed by node type ("Valkey and Redis OSS node-type specific parameters" in the
# ElastiCache guide): 65,000 on every node type except the smallest burstable one.
DEFAULT_MAXCLIENTS = 65_000
MAXCLIENTS_BY_NODE_TYPE = {"cache.t4g.micro": 20_000}


class Signal(NamedTuple):
    """A node metric and the statistic that answers "how bad is it"."""

    metric_name: str
    statistic: str


MEMORY = Signal("DatabaseMemoryUsagePercentage", "Maximum")
EVICTIONS = Signal("Evictions", "Sum")
ENGINE_CPU = Signal("EngineCPUUtilization", "Average")
CONNECTIONS = Signal("CurrConnections", "Maximum")
# Only replicas report it.
REPLICATION_LAG = Signal("ReplicationLag", "Maximum")
AUTHENTICATION_FAILURES = Signal("AuthenticationFailures", "Sum")


def maxclients(node_type: str) -> int:
    """The connection limit ElastiCache sets on a node of `node_type`."""
    return MAXCLIENTS_BY_NODE_TYPE.get(node_type, DEFAULT_MAXCLIENTS)


class BrokerMetrics:
    """The metrics of one replication group's nodes.

    Attributes:
        node_type: the nodes' type (cache.t4g.micro, ...).
        maxclients: the connections a node of that type accepts.
        node_ids: CacheClusterId of each node, primary first as created (`<group id>-001`, ...).
        replicas: nodes beyond the primary; ReplicationLag exists only when there are any.
    """

    def __init__(self, *, replication_group_id: str, nodes: int, node_type: str) -> None:
        if nodes < 1:
            raise ValueError(f"nodes={nodes}: a replication group has at least its primary (1)")
        self.node_type = node_type
        self.maxclients = maxclients(node_type)
        self.replicas = nodes - 1
        self.node_ids = [Fn.join("", [replication_group_id, f"-{n:03d}"]) for n in range(1, nodes + 1)]

    def node(self, signal: Signal, node_id: str, period: Duration = MINUTE) -> cloudwatch.Metric:
        """`signal` (one of this module's MEMORY, EVICTIONS, ...) of one node."""
        return cloudwatch.Metric(
            namespace=NAMESPACE,
            metric_name=signal.metric_name,
            dimensions_map={"CacheClusterId": node_id},
            statistic=signal.statistic,
            period=period,
        )

    def per_node(self, signal: Signal, period: Duration = MINUTE) -> list[cloudwatch.IMetric]:
        """`signal` of every node, labelled `node 001`, `node 002`, ... (a graph's lines)."""
        return [
            self.node(signal, node_id, period).with_(label=f"node {n:03d}")
            for n, node_id in enumerate(self.node_ids, start=1)
        ]

    def worst(self, signal: Signal, period: Duration = MINUTE) -> cloudwatch.IMetric:
        """`signal` of the node where it is highest, at each period: what one alarm per signal reads,
        whichever node is primary after a failover."""
        nodes: list[cloudwatch.IMetric] = [self.node(signal, node_id, period) for node_id in self.node_ids]
        return max_of(nodes, label=f"{signal.metric_name} (worst node)", period=period)
