"""The worker fleet: one Fargate service per worker group, each consuming its own queues."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from infra.config.base import ConfigModel
from infra.config.common import RetentionDays

# Task-level cpu units -> the memory sizes (MiB) Fargate accepts with them.
FARGATE_MEMORY_MIB: dict[int, tuple[int, ...]] = {
    256: (512, 1024, 2048),
    512: tuple(range(1024, 4097, 1024)),
    1024: tuple(range(2048, 8193, 1024)),
    2048: tuple(range(4096, 16385, 1024)),
    4096: tuple(range(8192, 30721, 1024)),
    8192: tuple(range(16384, 61441, 4096)),
    16384: tuple(range(32768, 122881, 8192)),
}

# Memory a worker task needs besides its pool children: Celery's main process, the init process and
# the kernel's page cache headroom.
MAIN_PROCESS_MIB = 256
# A group's idle scale-in alarm reads two metrics per queue (waiting, in flight), and CloudWatch
# alarms read at most 10.
MAX_QUEUES_PER_GROUP = 5

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
_QUEUE = re.compile(r"^[A-Za-z0-9_.:-]{1,200}$")


def _check_fargate_size(cpu: int, memory_mib: int) -> None:
    allowed = FARGATE_MEMORY_MIB.get(cpu)
    if allowed is None:
        raise ValueError(
            f"cpu={cpu} is not a Fargate size; allowed: {', '.join(map(str, FARGATE_MEMORY_MIB))}"
        )
    if memory_mib not in allowed:
        step = allowed[-1] - allowed[-2]
        raise ValueError(
            f"memory_mib={memory_mib} does not go with cpu={cpu} on Fargate; allowed: "
            f"{allowed[0]} to {allowed[-1]} in steps of {step}"
        )


class WorkerImageConfig(ConfigModel):
    """Where the worker image comes from. Default: the sample app, built from sample_app/Dockerfile.

    Give exactly one of `directory` (a Docker build context of yours, built by `cdk deploy`) or
    `ecr_repository` with `tag` (an image you push yourself). `app_module` is what `celery -A` loads.
    """

    directory: str | None = Field(default=None, description="Build context with a Dockerfile.")
    dockerfile: str = Field(default="Dockerfile", description="Dockerfile path inside `directory`.")
    ecr_repository: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9._/-]{1,255}$",
        description="Name of an ECR repository in the stage's account and region holding your image.",
    )
    tag: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$",
        description="Image tag in ecr_repository.",
    )
    app_module: str = Field(
        default="sample_app.app",
        pattern=r"^[A-Za-z_][A-Za-z0-9_.:]*$",
        description="Your Celery app, as `celery -A` takes it (module or module:attribute).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> WorkerImageConfig:
        if self.directory is not None and self.ecr_repository is not None:
            raise ValueError(
                f"directory={self.directory!r} and ecr_repository={self.ecr_repository!r} both set; give one"
            )
        if (self.ecr_repository is None) != (self.tag is None):
            raise ValueError(
                f"ecr_repository={self.ecr_repository!r} and tag={self.tag!r}: give both or neither"
            )
        if self.directory is not None and not (Path(self.directory) / self.dockerfile).is_file():
            raise ValueError(
                f"directory={self.directory!r} has no {self.dockerfile} (looked from {Path.cwd()})"
            )
        return self

    @property
    def is_sample(self) -> bool:
        return self.directory is None and self.ecr_repository is None


class WorkerGroupConfig(ConfigModel):
    """One Fargate service of Celery workers and the queues it consumes.

    By default: 1 vCPU / 2 GiB on ARM64, 4 prefork processes each recycled after 200 MiB or 1,000
    tasks, tasks killed after 30 minutes (soft limit at 25), scaling from 0 to 10 tasks on queue
    depth at 100 waiting tasks per worker task, back to 0 after the queues are empty for 15 minutes.
    """

    queues: list[str] = Field(
        min_length=1,
        max_length=MAX_QUEUES_PER_GROUP,
        description=f"Celery queues this group consumes (-Q), 1 to {MAX_QUEUES_PER_GROUP}.",
    )
    cpu: int = Field(default=1024, description="Task cpu units (1024 = 1 vCPU).")
    memory_mib: int = Field(default=2048, description="Task memory; must suit cpu (Fargate's table).")
    cpu_architecture: Literal["arm64", "x86_64"] = Field(
        default="arm64", description="arm64 costs ~20 % less; Fargate Spot needs x86_64."
    )
    pool: Literal["prefork", "threads", "gevent", "eventlet", "solo"] = Field(
        default="prefork", description="Celery execution pool (--pool)."
    )
    concurrency: int = Field(default=4, ge=1, le=1000, description="Pool size (-c); ignored with autoscale.")
    autoscale: tuple[int, int] | None = Field(
        default=None, description="[max, min] pool processes (--autoscale MAX,MIN) instead of concurrency."
    )
    max_memory_per_child_mib: int | None = Field(
        default=200, ge=16, description="Recycle a pool child above this resident memory; unset never."
    )
    max_tasks_per_child: int | None = Field(
        default=1000, ge=1, description="Recycle a pool child after this many tasks; unset never."
    )
    time_limit_s: int = Field(
        default=1800, ge=1, le=86_400, description="Hard kill of a task (--time-limit)."
    )
    soft_time_limit_s: int | None = Field(
        default=1500, ge=1, description="SoftTimeLimitExceeded raised in the task first (--soft-time-limit)."
    )
    prefetch_multiplier: int = Field(default=1, ge=1, le=100, description="Messages reserved per process.")
    min_tasks: int = Field(
        default=0, ge=0, le=1000, description="Fewest running worker tasks; 0 scales to zero."
    )
    max_tasks: int = Field(default=10, ge=1, le=1000, description="Most running worker tasks.")
    backlog_per_task: int = Field(
        default=100, ge=1, description="Waiting tasks one worker task is expected to absorb (scaling target)."
    )
    scale_in_quiet_minutes: int = Field(
        default=15,
        ge=1,
        le=1440,
        description="Queues empty (waiting and in flight) this long before scaling in.",
    )
    on_demand_base: int = Field(
        default=0, ge=0, description="Worker tasks always placed on regular Fargate before any Spot."
    )
    spot_percent: int = Field(
        default=0,
        ge=0,
        le=100,
        description="Share of tasks above the base placed on Fargate Spot (x86_64 only).",
    )
    oldest_task_slo_s: int = Field(
        default=300, ge=10, description="A waiting task older than this is late (alarmed by monitoring)."
    )

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, queues: list[str]) -> list[str]:
        for queue in queues:
            if not _QUEUE.fullmatch(queue):
                raise ValueError(f"{queue!r} is not a usable queue name; allowed: letters, digits, _ . : -")
        if len(set(queues)) != len(queues):
            raise ValueError(f"{queues!r} lists a queue twice")
        return queues

    @model_validator(mode="after")
    def _consistent(self) -> WorkerGroupConfig:
        _check_fargate_size(self.cpu, self.memory_mib)
        if self.min_tasks > self.max_tasks:
            raise ValueError(f"min_tasks={self.min_tasks} exceeds max_tasks={self.max_tasks}")
        if self.spot_percent > 0 and self.cpu_architecture != "x86_64":
            raise ValueError(
                f"spot_percent={self.spot_percent} needs cpu_architecture='x86_64': Fargate Spot runs x86_64 "
                f"tasks only (got {self.cpu_architecture!r})"
            )
        if self.on_demand_base > self.max_tasks:
            raise ValueError(f"on_demand_base={self.on_demand_base} exceeds max_tasks={self.max_tasks}")
        if self.soft_time_limit_s is not None and self.soft_time_limit_s >= self.time_limit_s:
            raise ValueError(
                f"soft_time_limit_s={self.soft_time_limit_s} must be below time_limit_s={self.time_limit_s}: "
                "the soft limit warns the task before the hard kill"
            )
        if self.autoscale is not None:
            high, low = self.autoscale
            if not 1 <= low <= high:
                raise ValueError(
                    f"autoscale={list(self.autoscale)!r} must be [max, min] with 1 <= min <= max"
                )
            if self.pool != "prefork":
                raise ValueError(f"autoscale needs pool='prefork' (got pool={self.pool!r})")
        if self.pool == "prefork" and self.max_memory_per_child_mib is not None:
            needed = self.processes * self.max_memory_per_child_mib + MAIN_PROCESS_MIB
            if needed > self.memory_mib:
                raise ValueError(
                    f"memory_mib={self.memory_mib} cannot hold {self.processes} pool processes of up to "
                    f"max_memory_per_child_mib={self.max_memory_per_child_mib} plus {MAIN_PROCESS_MIB} MiB "
                    f"for the main process ({needed} MiB): the kernel would kill the whole worker before "
                    "any child is recycled. Raise memory_mib, or lower the per-child limit or the process "
                    "count"
                )
        return self

    @property
    def processes(self) -> int:
        """The most pool processes (or threads) one worker task runs."""
        return self.autoscale[0] if self.autoscale else self.concurrency


class BeatConfig(ConfigModel):
    """The single celery beat scheduler for periodic tasks. Off by default.

    Always exactly one task on regular Fargate (never Spot): two beats would send every periodic task
    twice, and a Spot interruption would skip schedules.
    """

    enabled: bool = Field(default=False, description="Run `celery beat` for the app's periodic tasks.")
    cpu: int = Field(default=256, description="Task cpu units.")
    memory_mib: int = Field(default=512, description="Task memory; must suit cpu (Fargate's table).")
    cpu_architecture: Literal["arm64", "x86_64"] = Field(default="arm64", description="Beat's architecture.")

    @model_validator(mode="after")
    def _size(self) -> BeatConfig:
        _check_fargate_size(self.cpu, self.memory_mib)
        return self


class WorkersConfig(ConfigModel):
    """Everything shared by the worker groups, and the groups themselves (`[workers.groups.NAME]`)."""

    image: WorkerImageConfig = Field(
        default=WorkerImageConfig(), description="The image all groups run: `[workers.image]`."
    )
    groups: dict[str, WorkerGroupConfig] = Field(
        min_length=1, description="Worker groups by name: `[workers.groups.NAME]`, at least one."
    )
    beat: BeatConfig = Field(default=BeatConfig(), description="Periodic-task scheduler: `[workers.beat]`.")
    log_retention_days: RetentionDays = Field(
        default=30, description="Days worker and Lambda logs are kept (task-event lines included)."
    )
    exec_enabled: bool = Field(
        default=False, description="ECS Exec into running workers (an audited shell; off by default)."
    )
    high_resolution_metrics: bool = Field(
        default=False,
        description="Publish queue metrics every 10 s instead of every minute: faster scale-out, 6x the "
        "metric cost.",
    )

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: dict[str, WorkerGroupConfig]) -> dict[str, WorkerGroupConfig]:
        for name in groups:
            if not _NAME.fullmatch(name):
                raise ValueError(f"group name {name!r} must be lowercase letters, digits and -, 1-24 chars")
        owners: dict[str, str] = {}
        for name, group in groups.items():
            for queue in group.queues:
                if queue in owners:
                    raise ValueError(
                        f"queue {queue!r} is consumed by groups {owners[queue]!r} and {name!r}; each queue "
                        "belongs to one group, so its depth scales one service"
                    )
                owners[queue] = name
        return groups

    @property
    def queues(self) -> list[str]:
        return [q for group in self.groups.values() for q in group.queues]

    @property
    def longest_time_limit_s(self) -> int:
        return max(group.time_limit_s for group in self.groups.values())
