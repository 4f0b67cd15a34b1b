"""Choosing the broker node from the backlog it must hold.

The model: every queued task costs `bytes_per_task` of broker memory. That figure comes from
`bench/broker_memory.py`, which enqueues real Celery messages with varied, realistic arguments into a
real redis-server configured like the stack's parameter group (see infra/broker/parameters.py), and
measures used memory per task. The node must hold the predicted backlog plus headroom within its
usable memory: `maxmemory` less ElastiCache's `reserved-memory-percent` (25 % by default, kept).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from infra.config import BrokerConfig

GIB = 1024**3
MIB = 1024**2

# `python -m bench.broker_memory` (200,000 tasks, redis-server 7.0) with the stack's parameters
# (list-compress-depth 1, default 8 KB list nodes): 520.1 B per task for messages of 1,290 B as stored,
# against 1,373.5 B with Redis defaults. tests/bench checks the bench still agrees with these.
MEASURED_MESSAGE_BYTES = 1290
MEASURED_BYTES_PER_TASK = 521

# Memory the engine uses before any task is queued (kombu bindings, client buffers, replication
# backlog of 1 MB by default, the engine's own structures), rounded up.
BASELINE_BYTES = 64 * MIB

# ElastiCache keeps this share of maxmemory for non-data use (backups, replication) by default.
RESERVED_MEMORY_PERCENT = 25


@dataclass(frozen=True)
class NodeType:
    """One ElastiCache node type and the `maxmemory` ElastiCache sets for it."""

    name: str
    maxmemory_bytes: int
    burstable: bool = False

    @property
    def usable_bytes(self) -> int:
        return self.maxmemory_bytes * (100 - RESERVED_MEMORY_PERCENT) // 100


# Current-generation Graviton node types by usable memory, smallest first, from the "Valkey (and Redis
# OSS) node-type specific parameters" tables of the page cited in infra/broker/parameters.py (maxmemory
# is not modifiable). m7g sizes above large are left out: an r7g of the same price class holds about
# twice the memory, and a broker needs memory far more than CPU.
NODE_TYPES: tuple[NodeType, ...] = (
    NodeType("cache.t4g.micro", 536_870_912, burstable=True),
    NodeType("cache.t4g.small", 1_471_026_299, burstable=True),
    NodeType("cache.t4g.medium", 3_317_862_236, burstable=True),
    NodeType("cache.m7g.large", 6_854_542_746),
    NodeType("cache.r7g.large", 14_037_181_030),
    NodeType("cache.r7g.xlarge", 28_261_849_702),
    NodeType("cache.r7g.2xlarge", 56_711_183_565),
    NodeType("cache.r7g.4xlarge", 113_609_865_216),
    NodeType("cache.r7g.8xlarge", 225_000_375_228),
    NodeType("cache.r7g.12xlarge", 341_206_346_547),
    NodeType("cache.r7g.16xlarge", 450_000_750_456),
)


@dataclass(frozen=True)
class BrokerSizing:
    """The chosen node and the numbers behind it, for the synth summary and the stack."""

    node_type: str
    usable_bytes: int
    bytes_per_task: int
    predicted_bytes: int
    required_bytes: int
    reason: str

    def summary(self) -> str:
        return (
            f"{self.node_type} ({self.reason}); predicted {self.predicted_bytes / GIB:.2f} GiB at peak "
            f"backlog ({100 * self.predicted_bytes / self.usable_bytes:.0f} % of usable memory), "
            f"{self.required_bytes / GIB:.2f} GiB with headroom, {self.usable_bytes / GIB:.2f} GiB usable"
        )


class SizingError(ValueError):
    """The declared backlog does not fit the node type the config asks for (or any node type)."""


def bytes_per_task(config: BrokerConfig) -> int:
    """Broker memory per queued task: measured by the user, or scaled from our measurement."""
    if config.bytes_per_task is not None:
        return config.bytes_per_task
    if config.message_bytes is None:
        return MEASURED_BYTES_PER_TASK
    # Compressed size grows with the message; scale the measured ratio, never below the raw per-entry
    # overhead a list element costs.
    return max(64, math.ceil(config.message_bytes * MEASURED_BYTES_PER_TASK / MEASURED_MESSAGE_BYTES))


def size_broker(config: BrokerConfig) -> BrokerSizing:
    """Pick the node type for the config's backlog, or check the one it names."""
    per_task = bytes_per_task(config)
    predicted = BASELINE_BYTES + config.backlog_tasks * per_task
    required = predicted * (100 + config.headroom_percent) // 100
    numbers = (
        f"backlog_tasks={config.backlog_tasks:,} x {per_task:,} B/task + {BASELINE_BYTES // MIB} MiB "
        f"baseline = {predicted / GIB:.2f} GiB, +{config.headroom_percent} % headroom = "
        f"{required / GIB:.2f} GiB needed"
    )
    by_name = {node.name: node for node in NODE_TYPES}

    def sized(node: NodeType, reason: str) -> BrokerSizing:
        return BrokerSizing(node.name, node.usable_bytes, per_task, predicted, required, reason)

    if config.node_type is not None:
        node = by_name.get(config.node_type)
        if node is None:
            known = ", ".join(by_name)
            raise SizingError(
                f"broker.node_type={config.node_type!r} is not a known node type; known: {known}"
            )
        if node.usable_bytes < required:
            raise SizingError(
                f"broker.node_type={node.name!r} holds {node.usable_bytes / GIB:.2f} GiB usable "
                f"({RESERVED_MEMORY_PERCENT} % of maxmemory reserved), but {numbers}. Choose a larger node, "
                "lower backlog_tasks, or unset node_type to pick one"
            )
        return sized(node, "from config, fits")

    candidates = [n for n in NODE_TYPES if config.allow_burstable_nodes or not n.burstable]
    for node in candidates:
        if node.usable_bytes >= required:
            return sized(
                node,
                "smallest node holding the backlog"
                + ("" if config.allow_burstable_nodes else ", non-burstable"),
            )
    largest = candidates[-1]
    raise SizingError(
        f"no node type holds the backlog: {numbers}, and the largest, {largest.name}, has "
        f"{largest.usable_bytes / GIB:.2f} GiB usable. Lower broker.backlog_tasks or headroom_percent, "
        "or split queues across brokers"
    )
