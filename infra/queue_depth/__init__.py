"""The queue-depth publisher: broker queue metrics for scaling and alarms."""

from infra.queue_depth.construct import QueueDepthPublisher

__all__ = ["QueueDepthPublisher"]
