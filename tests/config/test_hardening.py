"""Config mistakes found by trying the loader as users and attackers would, one class per test.

Each test pins the message a user reads when synth refuses the config: the key path, the bad value
and what is allowed, in words.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aws_cdk import App, Environment, Stack
from aws_cdk.assertions import Annotations, Match

from infra.config import ConfigError, StageConfig, parse_stage_config
from infra.network import Network
from infra.workers.service import worker_command
from tests.support.synth import config_with, synth

GROUPS = {"default": {"queues": ["default"]}}


def _stage(**sections: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "name": "test",
        "broker": {"backlog_tasks": 100_000},
        "workers": {"groups": GROUPS},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stage_config(raw, source="test.toml")
    return caught.value.problems


def _valid(raw: dict[str, Any]) -> StageConfig:
    return parse_stage_config(raw, source="test.toml")


@pytest.mark.parametrize(
    ("first", "second", "construct_id"), [("etl-2", "etl2", "Etl2"), ("bulk", "bulk-", "Bulk")]
)
def test_group_names_that_map_to_one_construct_id_are_refused(
    first: str, second: str, construct_id: str
) -> None:
    groups = {first: {"queues": ["a"]}, second: {"queues": ["b"]}}
    assert _problems(_stage(workers={"groups": groups})) == [
        f"workers.groups: group names {first!r} and {second!r} both become the construct ID {construct_id!r} "
        "(- is dropped and each part capitalized): rename one"
    ]


@pytest.mark.parametrize("cidr", ["10.0.0.0/19", "10.0.0.0/20"])
def test_created_vpc_cidr_the_subnets_cannot_fit_is_refused(cidr: str) -> None:
    prefix = cidr.rsplit("/", 1)[1]
    assert _problems(_stage(network={"cidr": cidr})) == [
        f"network.cidr: {cidr!r} has prefix /{prefix}; use /16 to /18: each AZ takes a /24 public and a /20 "
        "private subnet, which 2 or 3 AZs fit only in a /18 or larger"
    ]


def test_cidr_with_host_bits_is_refused_with_the_reason() -> None:
    assert _problems(_stage(network={"cidr": "10.80.0.1/16"})) == [
        "network.cidr: '10.80.0.1/16' is not an IPv4 CIDR block (10.80.0.1/16 has host bits set)"
    ]


OWN_TAG_MESSAGE = (
    "aws.tags: tag key {key}: the stage sets celery-fleet:stage, Name, aws-cdk:subnet-name, "
    "aws-cdk:subnet-type itself (celery-fleet:stage = the stage name; CDK names the VPC's resources), and a "
    "tag of the same key would replace its value or be replaced; choose another key"
)

TAG_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "aws: prefix on a key",
        {"AWS:createdBy": "me"},
        "aws.tags: tag key 'AWS:createdBy': the aws: prefix is reserved for AWS's own tags",
    ),
    (
        "aws: prefix on a value",
        {"owner": "aws:team"},
        "aws.tags: tag owner='aws:team': the aws: prefix is reserved for AWS, in values too",
    ),
    (
        "a user tag replacing the stage tag",
        {"celery-fleet:stage": "prod"},
        OWN_TAG_MESSAGE.format(key="'celery-fleet:stage'"),
    ),
    (
        "a Name tag, which CDK sets on the VPC's resources",
        {"Name": "celery"},
        OWN_TAG_MESSAGE.format(key="'Name'"),
    ),
    ("a tag under CDK's prefix", {"aws-cdk:owner": "me"}, OWN_TAG_MESSAGE.format(key="'aws-cdk:owner'")),
    (
        "a character tags do not take",
        {"cost#center": "42"},
        "aws.tags: tag key 'cost#center' is not allowed: 1 to 128 characters of letters, digits, spaces and "
        "_ . : / = + - @",
    ),
    (
        "a key longer than 128 characters",
        {"k" * 129: "v"},
        "aws.tags: tag key '" + "k" * 76 + "... is not allowed: 1 to 128 characters of letters, digits, "
        "spaces and _ . : / = + - @",
    ),
    (
        "a value longer than 256 characters",
        {"team": "v" * 257},
        "aws.tags: tag team='" + "v" * 76 + "... is not allowed: a value has 0 to 256 characters of letters, "
        "digits, spaces and _ . : / = + - @",
    ),
    (
        "a value that is not a string",
        {"cost-center": 42},
        "aws.tags.cost-center: 42 is not allowed: expected a string in quotes",
    ),
    (
        "more tags than a resource takes beside the stage's own",
        {f"tag{i}": "x" for i in range(47)},
        "aws.tags: 47 tags, but a resource takes at most 50 and the stage puts up to 4 on one itself "
        "(celery-fleet:stage, Name, aws-cdk:subnet-name, aws-cdk:subnet-type): give at most 46",
    ),
]


@pytest.mark.parametrize(("tags", "expected"), [c[1:] for c in TAG_CASES], ids=[c[0] for c in TAG_CASES])
def test_invalid_tags_are_refused_with_the_rule(tags: dict[str, Any], expected: str) -> None:
    problems = _problems(_stage(aws={"tags": tags}))
    assert problems == [expected]


def test_tags_up_to_the_room_the_stage_leaves_are_accepted() -> None:
    tags = {f"tag{i}": "Ünïcode value: a/b=c+d-e@f_g." for i in range(46)}
    assert _valid(_stage(aws={"tags": tags})).aws.tags == tags


@pytest.mark.parametrize("subnet", ["private-subnet-a", "subnet-private-a", "subnet-0123"])
def test_subnet_that_is_not_an_id_gives_one_line(subnet: str) -> None:
    network = {
        "vpc_id": "vpc-0123456789abcdef0",
        "private_subnet_ids": [subnet, "subnet-0bbbbbbbbbbbbbbbb"],
        "availability_zones": ["eu-west-1a", "eu-west-1b"],
    }
    assert _problems(_stage(network=network)) == [
        f"network.private_subnet_ids: {subnet!r} is not a subnet ID: expected subnet- and 8 or 17 "
        "hexadecimal digits, e.g. subnet-0123456789abcdef0 (the ID column of the VPC console's Subnets "
        "page, not the name)"
    ]


def test_the_same_az_twice_is_refused() -> None:
    raw = _stage(aws={"region": "eu-west-1"}, network={"availability_zones": ["eu-west-1a", "eu-west-1a"]})
    assert _problems(raw) == [
        "network.availability_zones: ['eu-west-1a'] listed twice: a Multi-AZ broker and workers spread over "
        "AZs need different AZs"
    ]


def test_the_same_subnet_twice_is_refused() -> None:
    network = {
        "vpc_id": "vpc-0123456789abcdef0",
        "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0aaaaaaaaaaaaaaaa"],
        "availability_zones": ["eu-west-1a", "eu-west-1b"],
    }
    assert _problems(_stage(network=network)) == [
        "network.private_subnet_ids: ['subnet-0aaaaaaaaaaaaaaaa'] listed twice: each private subnet once, "
        "one per AZ"
    ]


def test_az_id_is_recognised_as_one() -> None:
    raw = _stage(aws={"region": "eu-west-1"}, network={"availability_zones": ["euw1-az1", "euw1-az2"]})
    assert _problems(raw) == [
        "network.availability_zones: 'euw1-az1' is an availability zone ID; give the zone's name (like "
        "eu-west-1a) instead: `aws ec2 describe-availability-zones` lists each ZoneId beside its ZoneName, "
        "which differs per account"
    ]


STRICT_CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "a boolean written as a word",
        {"protect_stateful": "no"},
        "protect_stateful: 'no' is not allowed: expected true or false (a TOML boolean, without quotes)",
    ),
    (
        "a count written as a boolean",
        {"broker": {"replicas": True}},
        "broker.replicas: True is not allowed: expected a whole number (a TOML integer without quotes, e.g. "
        "100_000)",
    ),
    (
        "a count written as a float",
        {"broker": {"backlog_tasks": 1.5e6}},
        "broker.backlog_tasks: 1500000.0 is not allowed: expected a whole number (a TOML integer without "
        "quotes, e.g. 100_000)",
    ),
    (
        "a boolean inside autoscale",
        {"workers": {"groups": {"default": {"queues": ["default"], "autoscale": [True, 2]}}}},
        "workers.groups.default.autoscale[0]: True is not allowed: expected a whole number (a TOML integer "
        "without quotes, e.g. 100_000)",
    ),
    (
        "nan as a threshold",
        {"monitoring": {"failure_rate_percent": float("nan")}},
        "monitoring.failure_rate_percent: nan is not allowed: expected a finite number, not inf or nan",
    ),
    (
        "a number where a name goes",
        {"name": 42},
        "name: 42 is not allowed: expected a string in quotes",
    ),
]


@pytest.mark.parametrize(
    ("sections", "expected"), [c[1:] for c in STRICT_CASES], ids=[c[0] for c in STRICT_CASES]
)
def test_values_of_the_wrong_type_are_never_coerced(sections: dict[str, Any], expected: str) -> None:
    assert _problems(_stage(**sections)) == [expected]


def test_zero_unsets_the_never_options_and_drops_their_flags() -> None:
    group = {
        "queues": ["default"],
        "max_memory_per_child_mib": 0,
        "max_tasks_per_child": 0,
        "soft_time_limit_s": 0,
    }
    config = _valid(_stage(workers={"groups": {"default": group}})).workers.groups["default"]
    assert (config.max_memory_per_child_mib, config.max_tasks_per_child, config.soft_time_limit_s) == (
        None,
        None,
        None,
    )
    command = " ".join(worker_command("app", "default", config))
    assert "--max-memory-per-child" not in command
    assert "--max-tasks-per-child" not in command
    assert "--soft-time-limit" not in command


def test_engine_redis_alone_takes_the_redis_default_version() -> None:
    broker = _valid(_stage(broker={"engine": "redis"})).broker
    assert (broker.engine, broker.engine_version) == ("redis", "7.1")


def test_valkey_9_1_is_allowed() -> None:
    assert _valid(_stage(broker={"engine_version": "9.1"})).broker.engine_version == "9.1"


def test_explicit_burstable_node_in_a_protected_multi_az_stage_is_refused() -> None:
    assert _problems(_stage(broker={"node_type": "cache.t4g.medium"})) == [
        "(top level): broker.node_type='cache.t4g.medium' is a burstable node in a protected Multi-AZ "
        "stage: a busy broker spends its CPU credits, then is throttled and slows every worker and the web "
        "app. Choose an m7g or r7g node (or unset node_type), or set broker.allow_burstable_nodes = true to "
        "accept the risk"
    ]


@pytest.mark.parametrize(
    "sections",
    [
        {"broker": {"node_type": "cache.t4g.medium", "allow_burstable_nodes": True}},
        {"broker": {"node_type": "cache.t4g.medium"}, "protect_stateful": False},
    ],
    ids=["accepted explicitly", "unprotected stage"],
)
def test_burstable_node_is_accepted_when_chosen_knowingly(sections: dict[str, Any]) -> None:
    assert _valid(_stage(**sections)).broker.node_type == "cache.t4g.medium"


@pytest.mark.parametrize("pool", ["threads", "gevent", "eventlet", "solo"])
def test_pool_that_ignores_limits_and_recycling_is_refused_until_they_are_zero(pool: str) -> None:
    assert _problems(_stage(workers={"groups": {"default": {"queues": ["default"], "pool": pool}}})) == [
        f"workers.groups.default: pool={pool!r} ignores soft_time_limit_s=1500, "
        "max_memory_per_child_mib=200, max_tasks_per_child=1000 (Celery applies them in the prefork pool "
        "only; defaults count): a task that hangs or leaks would never be stopped or recycled. Use "
        "pool='prefork', or set them to 0 to accept that"
    ]


def test_threads_pool_warns_that_the_time_limit_is_never_enforced() -> None:
    group = {
        "queues": ["default"],
        "pool": "threads",
        "soft_time_limit_s": 0,
        "max_memory_per_child_mib": 0,
        "max_tasks_per_child": 0,
    }
    assert _valid(_stage(workers={"groups": {"default": group}})).warnings == [
        "workers.groups.default: pool='threads' never enforces time_limit_s=1800: a task that hangs holds "
        "its slot until the worker restarts (the limit still sizes the visibility timeout). Prefer "
        "pool='prefork' for tasks that can hang"
    ]


def test_prefork_defaults_warn_nothing() -> None:
    assert _valid(_stage()).warnings == []


@pytest.mark.parametrize("queue", ["unacked", "unacked_index", "unacked_mutex", "_kombu.binding.default"])
def test_kombu_reserved_names_are_refused_as_queues(queue: str) -> None:
    assert _problems(_stage(workers={"groups": {"default": {"queues": [queue]}}})) == [
        f"workers.groups.default.queues: {queue!r} is a key kombu's Redis transport keeps for itself "
        "(unacked, unacked_index, unacked_mutex, _kombu.*): a queue of that name would mix with its "
        "bookkeeping; choose another"
    ]


def test_priority_separator_in_a_queue_name_is_refused() -> None:
    assert _problems(_stage(workers={"groups": {"default": {"queues": ["default\x06\x163"]}}})) == [
        "workers.groups.default.queues: 'default\\x06\\x163' is not a usable queue name; allowed: 1 to 200 "
        "letters, digits, _ . : -"
    ]


def test_a_pasted_blob_is_cut_in_the_message() -> None:
    problems = _problems(_stage(name="x" * 5000))
    assert problems == [
        "name: '" + "x" * 76 + "... is not allowed: a stage name is 2 to 20 lowercase letters, digits and -, "
        "starting with a letter (e.g. prod)"
    ]


def test_the_smallest_cidr_allowed_fits_the_subnets_of_three_azs() -> None:
    config = _valid(
        _stage(
            aws={"region": "eu-west-1"},
            network={"cidr": "10.0.0.0/18", "availability_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"]},
        )
    ).network
    app = App()
    stack = Stack(app, "Fit", env=Environment(account="123456789012", region="eu-west-1"))
    network = Network(stack, "Network", config=config)
    assert [s.ipv4_cidr_block for s in network.vpc.private_subnets] == [
        "10.0.16.0/20",
        "10.0.32.0/20",
        "10.0.48.0/20",
    ]


def test_a_risky_pool_is_a_synth_warning_on_the_stack(tmp_path: Path) -> None:
    group = {
        "queues": ["default"],
        "pool": "threads",
        "soft_time_limit_s": 0,
        "max_memory_per_child_mib": 0,
        "max_tasks_per_child": 0,
    }
    config = config_with("dev", {"workers": {"groups": {"default": group}}}, replace=("workers",))
    stacks = synth(config, tmp_path, nag=False).stacks
    Annotations.from_stack(stacks.stateless).has_warning(
        "*",
        Match.string_like_regexp(
            r"workers\.groups\.default: pool='threads' never enforces time_limit_s=1800"
        ),
    )
