"""Every invalid configuration fails with a message naming the field, the bad value and what is allowed.

The messages are pinned: they are what a user reads when `cdk synth` refuses their config.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, config_path, load_stage_config, parse_stage_config

BROKER = {"backlog_tasks": 100_000}
WORKERS = {"groups": {"default": {"queues": ["default"]}}}


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_stage_config(raw, source="test.toml")
    return caught.value.problems


def _stage(**sections: Any) -> dict[str, Any]:
    return {"name": "test", "broker": dict(BROKER), "workers": WORKERS, **sections}


CASES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unknown top-level key",
        {**_stage(), "brokr": {}},
        "brokr: unknown key (value {}); allowed keys here: aws, broker, monitoring, name, network, "
        "protect_stateful, workers",
    ),
    (
        "unknown broker key",
        _stage(broker={**BROKER, "replica": 2}),
        "broker.replica: unknown key (value 2); allowed keys here: allow_burstable_nodes, backlog_tasks, "
        "bytes_per_task, client_security_group_ids, engine, engine_version, headroom_percent, "
        "maintenance_window, message_bytes, multi_az, node_type, port, replicas, slow_log_retention_days, "
        "snapshot_retention_days, snapshot_window",
    ),
    (
        "unknown network key",
        _stage(network={"nat_gateway": 1}),
        "network.nat_gateway: unknown key (value 1); allowed keys here: availability_zones, cidr, "
        "flow_logs_retention_days, nat_gateways, private_subnet_ids, vpc_id",
    ),
    ("missing broker", {"name": "test", "workers": WORKERS}, "broker: required key is missing"),
    ("missing workers", {"name": "test", "broker": BROKER}, "workers: required key is missing"),
    ("missing backlog", _stage(broker={}), "broker.backlog_tasks: required key is missing"),
    ("missing stage name", {"broker": BROKER}, "name: required key is missing"),
    (
        "stage name with capitals",
        {**_stage(), "name": "Prod"},
        "name: 'Prod' is not allowed: a stage name is 2 to 20 lowercase letters, digits and -, starting with "
        "a letter (e.g. prod)",
    ),
    (
        "negative backlog",
        _stage(broker={"backlog_tasks": -5}),
        "broker.backlog_tasks: -5 is not allowed: input should be greater than 0",
    ),
    (
        "backlog as text",
        _stage(broker={"backlog_tasks": "a million"}),
        "broker.backlog_tasks: 'a million' is not allowed: expected a whole number (a TOML integer without "
        "quotes, e.g. 100_000)",
    ),
    (
        "unknown engine",
        _stage(broker={**BROKER, "engine": "memcached"}),
        "broker.engine: 'memcached' is not allowed: input should be 'valkey' or 'redis'",
    ),
    (
        "engine version not offered",
        _stage(broker={**BROKER, "engine": "redis", "engine_version": "6.2"}),
        "broker: engine_version='6.2' is not offered for engine='redis'; allowed: 7.0, 7.1",
    ),
    (
        "too many replicas",
        _stage(broker={**BROKER, "replicas": 6}),
        "broker.replicas: 6 is not allowed: input should be less than or equal to 5",
    ),
    (
        "multi-AZ without replica",
        _stage(broker={**BROKER, "replicas": 0, "multi_az": True}),
        "broker: multi_az=true needs replicas >= 1 (got replicas=0): failover needs a replica",
    ),
    (
        "privileged port",
        _stage(broker={**BROKER, "port": 80}),
        "broker.port: 80 is not allowed: input should be greater than or equal to 1024",
    ),
    (
        "snapshot retention beyond 35 days",
        _stage(broker={**BROKER, "snapshot_retention_days": 36}),
        "broker.snapshot_retention_days: 36 is not allowed: input should be less than or equal to 35",
    ),
    (
        "malformed snapshot window",
        _stage(broker={**BROKER, "snapshot_window": "3am-4am"}),
        "broker.snapshot_window: '3am-4am' is not a daily window; expected hh:mm-hh:mm in UTC, "
        "e.g. 03:00-04:00",
    ),
    (
        "snapshot window too short",
        _stage(broker={**BROKER, "snapshot_window": "03:00-03:30"}),
        "broker.snapshot_window: '03:00-03:30' is shorter than the 60 minutes ElastiCache requires",
    ),
    (
        "malformed maintenance window",
        _stage(broker={**BROKER, "maintenance_window": "sunday 4:30"}),
        "broker.maintenance_window: 'sunday 4:30' is not a weekly window; expected ddd:hh:mm-ddd:hh:mm "
        "in UTC, e.g. sun:04:30-sun:05:30",
    ),
    (
        "snapshot window overlaps maintenance",
        _stage(broker={**BROKER, "snapshot_window": "04:00-05:00"}),
        "broker: snapshot_window='04:00-05:00' overlaps maintenance_window='sun:04:30-sun:05:30'; "
        "ElastiCache requires them apart",
    ),
    (
        "slow log retention not offered by CloudWatch",
        _stage(broker={**BROKER, "slow_log_retention_days": 10}),
        "broker.slow_log_retention_days: 10 is not a CloudWatch Logs retention period; allowed days: 1, 3, "
        "5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653",
    ),
    (
        "client security group that is not one",
        _stage(broker={**BROKER, "client_security_group_ids": ["web-app"]}),
        "broker.client_security_group_ids: 'web-app' is not a security group ID; expected sg-xxxxxxxx",
    ),
    (
        "node type with a bad shape",
        _stage(broker={**BROKER, "node_type": "r7g.large"}),
        "broker.node_type: 'r7g.large' is not allowed: a node type like cache.r7g.large",
    ),
    (
        "headroom beyond range",
        _stage(broker={**BROKER, "headroom_percent": 500}),
        "broker.headroom_percent: 500 is not allowed: input should be less than or equal to 400",
    ),
    (
        "no NAT gateway",
        _stage(network={"nat_gateways": 0}),
        "network.nat_gateways: 0 is not allowed: input should be greater than or equal to 1",
    ),
    (
        "CIDR too small",
        _stage(network={"cidr": "10.0.0.0/24"}),
        "network.cidr: '10.0.0.0/24' has prefix /24; use /16 to /18: each AZ takes a /24 public and a /20 "
        "private subnet, which 2 or 3 AZs fit only in a /18 or larger",
    ),
    (
        "CIDR not an address",
        _stage(network={"cidr": "ten.zero/16"}),
        "network.cidr: 'ten.zero/16' is not an IPv4 CIDR block (Expected 4 octets in 'ten.zero')",
    ),
    (
        "created-VPC keys with an existing VPC",
        _stage(
            network={
                "vpc_id": "vpc-0123456789abcdef0",
                "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
                "availability_zones": ["eu-west-1a", "eu-west-1b"],
                "nat_gateways": 2,
            }
        ),
        "network: nat_gateways: only for a created VPC, but vpc_id='vpc-0123456789abcdef0' is set; "
        "remove them",
    ),
    (
        "existing VPC with one subnet",
        _stage(
            network={"vpc_id": "vpc-0123456789abcdef0", "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa"]}
        ),
        "network: private_subnet_ids=['subnet-0aaaaaaaaaaaaaaaa']: an existing VPC needs at least 2 private "
        "subnets in "
        "different AZs (Multi-AZ broker, workers spread over AZs)",
    ),
    (
        "existing VPC with AZs not matching subnets",
        _stage(
            network={
                "vpc_id": "vpc-0123456789abcdef0",
                "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
                "availability_zones": ["eu-west-1a"],
            }
        ),
        "network: availability_zones=['eu-west-1a'] must list one AZ per private subnet (2 subnets given), "
        "in the same order",
    ),
    (
        "subnets without a VPC",
        _stage(network={"private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]}),
        "network: private_subnet_ids=['subnet-0aaaaaaaaaaaaaaaa', 'subnet-0bbbbbbbbbbbbbbbb'] needs vpc_id: "
        "subnets are only given for "
        "an existing VPC",
    ),
    (
        "subnet ID of the wrong kind",
        _stage(
            network={
                "vpc_id": "vpc-0123456789abcdef0",
                "private_subnet_ids": ["sg-01", "subnet-0bbbbbbbbbbbbbbbb"],
            }
        ),
        "network.private_subnet_ids: 'sg-01' is not a subnet ID: expected subnet- and 8 or 17 hexadecimal "
        "digits, e.g. subnet-0123456789abcdef0 (the ID column of the VPC console's Subnets page, not the "
        "name)",
    ),
    (
        "AZs without a region",
        _stage(network={"availability_zones": ["eu-west-1a", "eu-west-1b"]}),
        "(top level): network.availability_zones=['eu-west-1a', 'eu-west-1b'] needs aws.region: AZ names "
        "belong to a region",
    ),
    (
        "region without AZs for a created VPC",
        _stage(aws={"region": "eu-west-1"}),
        "(top level): aws.region='eu-west-1' needs network.availability_zones (2 or 3 AZ names): without "
        "them CDK would look the AZs up in the account at synth",
    ),
    (
        "AZ from another region",
        _stage(aws={"region": "eu-west-1"}, network={"availability_zones": ["eu-west-1a", "us-east-1b"]}),
        "(top level): network.availability_zones ['us-east-1b'] are not in aws.region='eu-west-1'",
    ),
    (
        "account ID too short",
        _stage(aws={"account": "12345"}),
        "aws.account: '12345' is not allowed: an AWS account ID is exactly 12 digits, in quotes "
        '("123456789012")',
    ),
]


@pytest.mark.parametrize(("raw", "expected"), [(c[1], c[2]) for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_config_is_rejected_with_a_message_naming_it(raw: dict[str, Any], expected: str) -> None:
    assert expected in _problems(raw)


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems(
        {"name": "test", "broker": {"backlog_tasks": 0, "replicas": -1}, "workers": WORKERS, "extra": 1}
    )
    assert len(problems) == 3


def test_error_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"^test\.toml: invalid configuration:\n  - "):
        parse_stage_config({"name": "test"}, source="test.toml")


def test_invalid_toml_names_the_file_and_the_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text("name = \n")
    with pytest.raises(ConfigError, match=r"broken\.toml: invalid configuration:\n  - not valid TOML: "):
        load_stage_config(path)


def test_unknown_stage_lists_the_stages_available() -> None:
    with pytest.raises(ConfigError, match=r"no config/staging\.toml; stages available: dev, prod"):
        config_path(stage="staging", config=None)
