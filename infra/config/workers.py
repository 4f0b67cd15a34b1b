"""The worker fleet: one Fargate service per worker group, each consuming its own queues."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, StrictInt, field_validator, model_validator

from infra.config.base import ConfigModel, matching, never_as_zero, short
from infra.config.common import RetentionDays
from infra.naming import pascal

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
# Keys kombu's Redis transport keeps beside the queues (kombu/transport/redis.py): a queue of the
# same name would be read as, or written over, the delivered-but-unacknowledged messages.
KOMBU_RESERVED_QUEUES = ("unacked", "unacked_index", "unacked_mutex")
KOMBU_RESERVED_PREFIX = "_kombu."
# Priority sibling lists are `<queue>\x06\x16<priority>`; the queue-name characters above exclude it.

# Pools other than prefork ignore these options (celery/concurrency): only billiard's prefork pool
# recycles children and raises the soft time limit; gevent applies the hard limit only when the task
# yields to gevent, threads, eventlet and solo never.
_PREFORK_ONLY = ("soft_time_limit_s", "max_memory_per_child_mib", "max_tasks_per_child")
Pool = Literal["prefork", "threads", "gevent", "eventlet", "solo"]
# An option documented as "0: never" (TOML cannot unset a default).
NeverAsZero = BeforeValidator(never_as_zero)


def _check_fargate_size(cpu: int, memory_mib: int) -> None:
    allowed = FARGATE_MEMORY_MIB.get(cpu)
    if allowed is None:
        raise ValueError(
            f"cpu={cpu} is not a Fargate size; allowed: {', '.join(map(str, FARGATE_MEMORY_MIB))}"
        )
    if memory_mib not in allowed:
        step = allowed[-1] - allowed[-2]
        raise ValueError(
            f"memory_mib={memory_mib} does not go with cpu={cpu} on Fargate; allowed: {allowed[0]} to "
            f"{allowed[-1]} in steps of {step}"
        )


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except (OSError, ValueError):
        # A name too long for the filesystem, or with a NUL byte: no such Dockerfile either way.
        return False


class WorkerImageConfig(ConfigModel):
    """Where the worker image comes from. Default: the sample app, built from sample_app/Dockerfile.

    Give exactly one of `directory` (a Docker build context of yours, built by `cdk deploy`) or
    `ecr_repository` with `tag` (an image you push yourself). `app_module` is what `celery -A` loads.
    """

    directory: str | None = Field(default=None, description="Build context with a Dockerfile.")
    dockerfile: str = Field(default="Dockerfile", description="Dockerfile path inside `directory`.")
    ecr_repository: (
        Annotated[
            str,
            matching(
                r"[a-z0-9][a-z0-9._/-]{1,255}",
                "an ECR repository name is 2 to 256 lowercase letters, digits and . _ / -, starting with a "
                "letter or digit (the name, not the URI: acme/worker)",
            ),
        ]
        | None
    ) = Field(
        default=None,
        description="Name of an ECR repository in the stage's account and region holding your image.",
    )
    tag: (
        Annotated[
            str,
            matching(
                r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}",
                "an image tag is 1 to 128 letters, digits and _ . -, not starting with . or -",
            ),
        ]
        | None
    ) = Field(default=None, description="Image tag in ecr_repository.")
    app_module: Annotated[
        str,
        matching(
            r"[A-Za-z_][A-Za-z0-9_.:]*",
            "a Python module path as `celery -A` takes it, like myproject.celery or myproject.celery:app",
        ),
    ] = Field(
        default="sample_app.app",
        description="Your Celery app, as `celery -A` takes it (module or module:attribute).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> WorkerImageConfig:
        if self.directory is not None and self.ecr_repository is not None:
            raise ValueError(
                f"directory={short(self.directory)} and ecr_repository={short(self.ecr_repository)} both "
                "set; give one"
            )
        if (self.ecr_repository is None) != (self.tag is None):
            raise ValueError(
                f"ecr_repository={short(self.ecr_repository)} and tag={short(self.tag)}: give both or neither"
            )
        if self.directory is not None and not _is_file(Path(self.directory) / self.dockerfile):
            raise ValueError(
                f"directory={short(self.directory)} has no {short(self.dockerfile)} (looked from "
                f"{Path.cwd()})"
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
    pool: Pool = Field(
        default="prefork",
        description="Celery execution pool (--pool). Only prefork recycles children and raises the soft "
        "time limit; with another pool set soft_time_limit_s, max_memory_per_child_mib and "
        "max_tasks_per_child to 0.",
    )
    concurrency: int = Field(default=4, ge=1, le=1000, description="Pool size (-c); ignored with autoscale.")
    # Lax for the container only: TOML has lists, not tuples; the numbers inside stay strict.
    autoscale: tuple[StrictInt, StrictInt] | None = Field(
        default=None,
        strict=False,
        description="[max, min] pool processes (--autoscale MAX,MIN) instead of concurrency.",
    )
    max_memory_per_child_mib: Annotated[int | None, NeverAsZero] = Field(
        default=200, ge=16, description="Recycle a pool child above this resident memory; 0: never."
    )
    max_tasks_per_child: Annotated[int | None, NeverAsZero] = Field(
        default=1000, ge=1, description="Recycle a pool child after this many tasks; 0: never."
    )
    time_limit_s: int = Field(
        default=1800,
        ge=1,
        le=86_400,
        description="Hard kill of a task (--time-limit); also bounds how long a message may stay "
        "unacknowledged before it is delivered again.",
    )
    soft_time_limit_s: Annotated[int | None, NeverAsZero] = Field(
        default=1500,
        ge=1,
        description="SoftTimeLimitExceeded raised in the task first (--soft-time-limit); 0: none.",
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
        description="Backstop: queues empty (waiting and in flight) this long drop the group to min_tasks; "
        "proportional scale-in removes surplus workers before that.",
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
    tasks_per_month: int = Field(
        default=0,
        ge=0,
        le=100_000_000_000,
        description="Tasks this group runs in a month, for the cost estimate (`python -m tools.cost`): its "
        "typical worker count and monitoring volume. 0: not declared; typical = min_tasks.",
    )
    mean_task_runtime_s: float = Field(
        default=1.0,
        gt=0,
        le=86_400,
        description="Mean run time of one of this group's tasks, for the cost estimate's typical worker "
        "count.",
    )

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, queues: list[str]) -> list[str]:
        for queue in queues:
            if not _QUEUE.fullmatch(queue):
                raise ValueError(
                    f"{short(queue)} is not a usable queue name; allowed: 1 to 200 letters, digits, _ . : -"
                )
            if queue in KOMBU_RESERVED_QUEUES or queue.startswith(KOMBU_RESERVED_PREFIX):
                raise ValueError(
                    f"{short(queue)} is a key kombu's Redis transport keeps for itself "
                    f"({', '.join(KOMBU_RESERVED_QUEUES)}, {KOMBU_RESERVED_PREFIX}*): a queue of that name "
                    "would mix with its bookkeeping; choose another"
                )
        if len(set(queues)) != len(queues):
            raise ValueError(f"{short(queues)} lists a queue twice")
        return queues

    @model_validator(mode="after")
    def _consistent(self) -> WorkerGroupConfig:
        _check_fargate_size(self.cpu, self.memory_mib)
        if self.min_tasks > self.max_tasks:
            raise ValueError(f"min_tasks={self.min_tasks} exceeds max_tasks={self.max_tasks}")
        if self.spot_percent > 0 and self.cpu_architecture != "x86_64":
            raise ValueError(
                f"spot_percent={self.spot_percent} needs cpu_architecture='x86_64': Fargate Spot runs x86_64 "
                f"tasks only (got {short(self.cpu_architecture)})"
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
                    f"autoscale={short(list(self.autoscale))} must be [max, min] with 1 <= min <= max"
                )
            if self.pool != "prefork":
                raise ValueError(f"autoscale needs pool='prefork' (got pool={short(self.pool)})")
        ignored = [f"{key}={getattr(self, key)}" for key in _PREFORK_ONLY if getattr(self, key) is not None]
        if self.pool != "prefork" and ignored:
            raise ValueError(
                f"pool={short(self.pool)} ignores {', '.join(ignored)} (Celery applies them in the prefork "
                "pool only; defaults count): a task that hangs or leaks would never be stopped or recycled. "
                "Use pool='prefork', or set them to 0 to accept that"
            )
        if self.pool == "prefork" and self.max_memory_per_child_mib is not None:
            needed = self.processes * self.max_memory_per_child_mib + MAIN_PROCESS_MIB
            if needed > self.memory_mib:
                raise ValueError(
                    f"memory_mib={self.memory_mib} cannot hold {self.processes} pool processes of up to "
                    f"max_memory_per_child_mib={self.max_memory_per_child_mib} plus {MAIN_PROCESS_MIB} MiB "
                    f"for the main process ({needed} MiB): the kernel would kill the whole worker before any "
                    "child is recycled. Raise memory_mib, or lower the per-child limit or the process count"
                )
        return self

    @property
    def processes(self) -> int:
        """The most pool processes (or threads) one worker task runs."""
        return self.autoscale[0] if self.autoscale else self.concurrency

    @property
    def warnings(self) -> list[str]:
        """Valid but risky choices, printed at synth with their reason."""
        if self.pool in ("threads", "eventlet", "solo"):
            return [
                f"pool={short(self.pool)} never enforces time_limit_s={self.time_limit_s}: a task that hangs "
                "holds its slot until the worker restarts (the limit still sizes the visibility timeout). "
                "Prefer pool='prefork' for tasks that can hang"
            ]
        if self.pool == "gevent":
            return [
                f"pool='gevent' enforces time_limit_s={self.time_limit_s} only when the task yields to "
                "gevent: a task stuck in CPU work or a C call is never stopped"
            ]
        return []


class BeatConfig(ConfigModel):
    """The single celery beat scheduler for periodic tasks. Off by default.

    Always exactly one task on regular Fargate (never Spot): two beats would send every periodic task
    twice, and a Spot interruption would skip schedules. Beat runs as the image's user and keeps its
    schedule file in /tmp, which every user can write (your image's working directory need not be
    writable); a new beat task starts a fresh schedule, so an interval task first runs one interval
    after the start.
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
        description="Publish queue metrics every 10 s instead of every minute, and evaluate the scaling "
        "alarms in 10 s periods: faster scale-out, 6x the metric cost, high-resolution alarm prices.",
    )

    @field_validator("groups")
    @classmethod
    def _group_names(cls, groups: dict[str, WorkerGroupConfig]) -> dict[str, WorkerGroupConfig]:
        ids: dict[str, str] = {}
        for name in groups:
            if not _NAME.fullmatch(name):
                raise ValueError(
                    f"group name {short(name)} must be 1 to 24 lowercase letters, digits and -, starting "
                    "with a letter"
                )
            construct_id = pascal(name)
            if construct_id in ids:
                raise ValueError(
                    f"group names {short(ids[construct_id])} and {short(name)} both become the construct ID "
                    f"{short(construct_id)} (- is dropped and each part capitalized): rename one"
                )
            ids[construct_id] = name
        owners: dict[str, str] = {}
        for name, group in groups.items():
            for queue in group.queues:
                if queue in owners:
                    raise ValueError(
                        f"queue {short(queue)} is consumed by groups {short(owners[queue])} and "
                        f"{short(name)}; each queue belongs to one group, so its depth scales one service"
                    )
                owners[queue] = name
        return groups

    @property
    def queues(self) -> list[str]:
        return [q for group in self.groups.values() for q in group.queues]

    @property
    def longest_time_limit_s(self) -> int:
        return max(group.time_limit_s for group in self.groups.values())
