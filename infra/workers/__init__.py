"""The worker fleet: an ECS cluster, one Fargate service per worker group, optional beat."""

from infra.workers.beat import BeatService
from infra.workers.fleet import WorkerFleet
from infra.workers.scaling import BacklogScaling
from infra.workers.service import WorkerService

__all__ = ["BacklogScaling", "BeatService", "WorkerFleet", "WorkerService"]
