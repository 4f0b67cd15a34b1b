"""Invalid worker configurations fail at synth with a message naming the key, the value, the rule."""

from __future__ import annotations

from typing import Any

import pytest

from infra.config import ConfigError, parse_stage_config


def _problems(groups: dict[str, Any], **workers: Any) -> list[str]:
    raw = {"name": "test", "broker": {"backlog_tasks": 1000}, "workers": {"groups": groups, **workers}}
    with pytest.raises(ConfigError) as caught:
        parse_stage_config(raw, source="test.toml")
    return caught.value.problems


CASES: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    (
        "no worker group",
        {},
        {},
        "workers.groups: {} is not allowed: dictionary should have at least 1 item after validation, not 0",
    ),
    (
        "group without queues",
        {"default": {"queues": []}},
        {},
        "workers.groups.default.queues: [] is not allowed: list should have at least 1 item after "
        "validation, not 0",
    ),
    (
        "unknown group key",
        {"default": {"queues": ["a"], "concurency": 4}},
        {},
        "workers.groups.default.concurency: unknown key (value 4); allowed keys here: autoscale, "
        "backlog_per_task, concurrency, cpu, cpu_architecture, max_memory_per_child_mib, max_tasks, "
        "max_tasks_per_child, mean_task_runtime_s, memory_mib, min_tasks, oldest_task_slo_s, on_demand_base, "
        "pool, prefetch_multiplier, queues, scale_in_quiet_minutes, soft_time_limit_s, spot_percent, "
        "tasks_per_month, time_limit_s",
    ),
    (
        "cpu Fargate does not offer",
        {"default": {"queues": ["a"], "cpu": 1000}},
        {},
        "workers.groups.default: cpu=1000 is not a Fargate size; allowed: 256, 512, 1024, 2048, 4096, "
        "8192, 16384",
    ),
    (
        "memory that does not go with the cpu",
        {"default": {"queues": ["a"], "cpu": 1024, "memory_mib": 1024}},
        {},
        "workers.groups.default: memory_mib=1024 does not go with cpu=1024 on Fargate; allowed: 2048 to 8192 "
        "in steps of 1024",
    ),
    (
        "Spot on ARM64",
        {"default": {"queues": ["a"], "spot_percent": 50}},
        {},
        "workers.groups.default: spot_percent=50 needs cpu_architecture='x86_64': Fargate Spot runs x86_64 "
        "tasks only (got 'arm64')",
    ),
    (
        "min above max",
        {"default": {"queues": ["a"], "min_tasks": 5, "max_tasks": 2}},
        {},
        "workers.groups.default: min_tasks=5 exceeds max_tasks=2",
    ),
    (
        "soft limit not below hard limit",
        {"default": {"queues": ["a"], "time_limit_s": 60, "soft_time_limit_s": 60}},
        {},
        "workers.groups.default: soft_time_limit_s=60 must be below time_limit_s=60: the soft limit warns "
        "the task before the hard kill",
    ),
    (
        "autoscale min above max",
        {"default": {"queues": ["a"], "autoscale": [2, 8]}},
        {},
        "workers.groups.default: autoscale=[2, 8] must be [max, min] with 1 <= min <= max",
    ),
    (
        "autoscale with threads",
        {"default": {"queues": ["a"], "autoscale": [8, 2], "pool": "threads"}},
        {},
        "workers.groups.default: autoscale needs pool='prefork' (got pool='threads')",
    ),
    (
        "pool children that cannot fit in the task's memory",
        {"default": {"queues": ["a"], "autoscale": [8, 2], "max_memory_per_child_mib": 400}},
        {},
        "workers.groups.default: memory_mib=2048 cannot hold 8 pool processes of up to "
        "max_memory_per_child_mib=400 plus 256 MiB for the main process (3456 MiB): the kernel would "
        "kill the whole worker before any child is recycled. Raise memory_mib, or lower the per-child "
        "limit or the process count",
    ),
    (
        "more queues than one alarm can read",
        {"default": {"queues": ["a", "b", "c", "d", "e", "f"]}},
        {},
        "workers.groups.default.queues: ['a', 'b', 'c', 'd', 'e', 'f'] is not allowed: list should have at "
        "most 5 items after validation, not 6",
    ),
    (
        "queue consumed by two groups",
        {"a": {"queues": ["shared"]}, "b": {"queues": ["shared"]}},
        {},
        "workers.groups: queue 'shared' is consumed by groups 'a' and 'b'; each queue belongs to one group, "
        "so its depth scales one service",
    ),
    (
        "group name with capitals",
        {"Default": {"queues": ["a"]}},
        {},
        "workers.groups: group name 'Default' must be 1 to 24 lowercase letters, digits and -, starting with "
        "a letter",
    ),
    (
        "queue name with a space",
        {"default": {"queues": ["my queue"]}},
        {},
        "workers.groups.default.queues: 'my queue' is not a usable queue name; allowed: 1 to 200 letters, "
        "digits, _ . : -",
    ),
    (
        "image from ECR without a tag",
        {"default": {"queues": ["a"]}},
        {"image": {"ecr_repository": "acme/worker"}},
        "workers.image: ecr_repository='acme/worker' and tag=None: give both or neither",
    ),
    (
        "image directory without a Dockerfile",
        {"default": {"queues": ["a"]}},
        {"image": {"directory": "does-not-exist"}},
        "workers.image: directory='does-not-exist' has no 'Dockerfile' (looked from ",
    ),
    (
        "log retention not offered",
        {"default": {"queues": ["a"]}},
        {"log_retention_days": 31},
        "workers.log_retention_days: 31 is not a CloudWatch Logs retention period; allowed days: 1, 3, 5, 7, "
        "14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653",
    ),
]


@pytest.mark.parametrize(("groups", "workers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_worker_config_is_rejected_with_a_message_naming_it(
    groups: dict[str, Any], workers: dict[str, Any], expected: str
) -> None:
    problems = _problems(groups, **workers)
    assert any(p.startswith(expected) for p in problems), problems
