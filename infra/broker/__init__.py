"""The Celery broker: an ElastiCache (Valkey or Redis OSS) replication group sized from the backlog."""

from infra.broker.construct import Broker
from infra.broker.metrics import BrokerMetrics
from infra.broker.sizing import BrokerSizing, SizingError, size_broker

__all__ = ["Broker", "BrokerMetrics", "BrokerSizing", "SizingError", "size_broker"]
