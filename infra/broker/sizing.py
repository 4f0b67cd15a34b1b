"""Choosing the broker node from the backlog it must hold.

The model: every queued task costs `bytes_per_task` of broker memory. The figure comes from the
curve `bench/broker_memory.py` measures: real Celery messages of five realistic shapes, stock and
as `celery_fleet.configure` sends them, in a real redis-server configured like the stack's parameter
group (see infra/broker/parameters.py). A message's cost is a step function of its size (a list
node holds 8 KB before compression, so one byte more can mean one message fewer per node), so the
model takes the measured curve's upper envelope, interpolates, and adds a margin; it never predicts
more than an uncompressed list costs. The node must hold the predicted backlog plus headroom within
its usable memory: `maxmemory` less ElastiCache's `reserved-memory-percent` (25 % by default, kept).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from infra.config import BrokerConfig

GIB = 1024**3
MIB = 1024**2

# (message bytes as stored, bytes per queued task) with the stack's parameters (list-compress-depth 1,
# default 8 KB list nodes), from `python -m bench.broker_memory` (20,000 tasks per queue, redis-server
# 7.0.15, 2026-12-02): each shape as configure sends it and as stock Celery does. tests/bench keeps
# the model above what the bench measures now.
MEASURED_CURVE: tuple[tuple[int, int], ...] = (
    (646, 218),  # ids and a URL, configure
    (725, 238),  # a uuid and a timestamp, configure
    (738, 243),  # the bench's own shape, configure
    (1098, 376),  # ids and a URL, stock Celery
    (1260, 496),  # a uuid and a timestamp, stock Celery
    (1290, 523),  # the bench's own shape, stock Celery
    (1518, 623),  # a nested ~1 KB order, configure
    (2339, 1208),  # a nested ~1 KB order, stock Celery
    (4876, 2613),  # a 4 KB batch of readings, configure
    (6734, 4156),  # a 4 KB batch of readings, stock Celery
)
# Above the interpolated curve: the steps between measured sizes reach about 20 % (issue 11 measured
# 520 B at 1,326-byte messages and 624-630 B at 1,430-1,475 bytes).
MARGIN_PERCENT = 20
# An uncompressed list (Redis defaults) measured 1.054-1.072 x the message size over the same shapes;
# Redis keeps a node uncompressed when LZF would not shrink it, so no list costs more than this.
UNCOMPRESSED_RATIO = 1.08
UNCOMPRESSED_EXTRA_BYTES = 16
# `message_bytes` unset: the bench's own small-argument shape as `celery_fleet.configure` sends it.
DEFAULT_MESSAGE_BYTES = 738
# The same task as stock Celery sends it (base64 body, display reprs): for comparisons.
STOCK_MESSAGE_BYTES = 1290

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
    """Broker memory per queued task: measured by the user, or read off the measured curve."""
    if config.bytes_per_task is not None:
        return config.bytes_per_task
    return modelled_bytes_per_task(config.message_bytes or DEFAULT_MESSAGE_BYTES)


def uncompressed_bytes_per_task(message_bytes: int) -> int:
    """What one queued message costs in a list Redis does not compress (its defaults)."""
    return math.ceil(message_bytes * UNCOMPRESSED_RATIO) + UNCOMPRESSED_EXTRA_BYTES


def modelled_bytes_per_task(message_bytes: int) -> int:
    """Bytes per queued task on the stack's list settings for messages of `message_bytes` as stored.

    The measured curve's upper envelope (a larger message never costs less than a smaller one did),
    interpolated linearly, plus MARGIN_PERCENT; beyond the largest measured size the uncompressed
    cost; never above it.
    """
    points: list[tuple[int, int]] = []
    for size, measured in sorted(MEASURED_CURVE):
        points.append((size, max(measured, points[-1][1] if points else 0)))
    if message_bytes > points[-1][0]:
        return uncompressed_bytes_per_task(message_bytes)
    cost = float(points[0][1])
    for (size_a, cost_a), (size_b, cost_b) in itertools.pairwise(points):
        if size_a <= message_bytes <= size_b:
            cost = cost_a + (cost_b - cost_a) * (message_bytes - size_a) / (size_b - size_a)
            break
    return min(uncompressed_bytes_per_task(message_bytes), math.ceil(cost * (100 + MARGIN_PERCENT) / 100))


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
