"""BeatService alone, and in a fleet: one beat, never two; the workers' platform, broker settings and
log group; the logical IDs beat had when the fleet built it inline."""

from __future__ import annotations

from typing import Any

import pytest
from aws_cdk.assertions import Match, Template
from celery_fleet.contract.worker_env import BROKER_AUTH_TOKEN_ENV, BROKER_HOST_ENV, BROKER_PORT_ENV

from infra.config.workers import BeatConfig
from infra.workers import BeatService
from infra.workers.beat import BEAT_SCHEDULE_PATH, beat_command
from tests.support.bare import (
    PRIVATE_SUBNETS,
    bare_stack,
    broker,
    broker_config,
    cluster,
    image,
    log_group,
    template,
    worker_fleet,
    workers_config,
)

SERVICE = "AWS::ECS::Service"
TASK_DEFINITION = "AWS::ECS::TaskDefinition"
IMAGE = {"ecr_repository": "acme/worker", "tag": "1"}


def _beat_template(config: BeatConfig | None = None, *, port: int = 6379) -> Template:
    stack = bare_stack()
    BeatService(
        stack,
        "Beat",
        cluster=cluster(stack),
        subnets=PRIVATE_SUBNETS,
        image=image(),
        app_module="app.celery",
        broker=broker(stack, broker_config(port=port)),
        log_group=log_group(stack, "FleetLogs"),
        config=config or BeatConfig(enabled=True),
    )
    return template(stack)


def _containers(t: Template) -> dict[str, dict[str, Any]]:
    return {
        container["Name"]: container
        for definition in t.find_resources(TASK_DEFINITION).values()
        for container in definition["Properties"]["ContainerDefinitions"]
    }


def _environment(container: dict[str, Any]) -> dict[str, Any]:
    return {entry["Name"]: entry["Value"] for entry in container["Environment"]}


@pytest.fixture(scope="module")
def fleet_with_beat() -> Template:
    stack = bare_stack()
    worker_fleet(stack, workers_config(image=IMAGE, beat={"enabled": True}))
    return template(stack)


def test_exactly_one_beat_runs_even_during_a_deploy() -> None:
    _beat_template().has_resource_properties(
        SERVICE,
        {
            "DesiredCount": 1,
            "DeploymentConfiguration": Match.object_like(
                {
                    "MinimumHealthyPercent": 0,
                    "MaximumPercent": 100,
                    "DeploymentCircuitBreaker": {"Enable": True, "Rollback": True},
                }
            ),
        },
    )


def test_beat_runs_on_regular_fargate_only() -> None:
    _beat_template().has_resource_properties(
        SERVICE, {"CapacityProviderStrategy": [{"CapacityProvider": "FARGATE", "Weight": 1}]}
    )


def test_beat_keeps_its_schedule_where_any_user_can_write() -> None:
    command = _containers(_beat_template())["Beat"]["Command"]
    assert command == beat_command("app.celery")
    assert command[:4] == ["celery", "-A", "app.celery", "beat"]
    assert f"--schedule={BEAT_SCHEDULE_PATH}" in command
    assert BEAT_SCHEDULE_PATH.startswith("/tmp/")


def test_beat_finds_the_broker_as_workers_do_with_the_token_as_a_secret() -> None:
    beat = _containers(_beat_template(port=6380))["Beat"]
    environment = _environment(beat)
    assert set(environment) == {BROKER_HOST_ENV, BROKER_PORT_ENV}
    assert environment[BROKER_PORT_ENV] == "6380"
    assert [secret["Name"] for secret in beat["Secrets"]] == [BROKER_AUTH_TOKEN_ENV]


def test_beat_logs_into_the_fleets_log_group_under_beat() -> None:
    options = _containers(_beat_template())["Beat"]["LogConfiguration"]
    assert options["LogDriver"] == "awslogs"
    assert options["Options"]["awslogs-stream-prefix"] == "beat"
    assert options["Options"]["awslogs-group"]["Ref"].startswith("FleetLogs")


@pytest.mark.parametrize(("architecture", "expected"), [("arm64", "ARM64"), ("x86_64", "X86_64")])
def test_task_size_and_architecture_follow_the_beat_config(architecture: str, expected: str) -> None:
    config = BeatConfig(enabled=True, cpu=512, memory_mib=1024, cpu_architecture=architecture)  # type: ignore[arg-type]
    _beat_template(config).has_resource_properties(
        TASK_DEFINITION,
        {
            "Cpu": "512",
            "Memory": "1024",
            "RuntimePlatform": {"CpuArchitecture": expected, "OperatingSystemFamily": "LINUX"},
        },
    )


def test_beat_is_admitted_to_the_broker_port() -> None:
    _beat_template().has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "FromPort": 6379,
            "Description": "Celery beat",
            "SourceSecurityGroupId": {
                "Fn::GetAtt": [Match.string_like_regexp("^BeatSecurityGroup"), "GroupId"]
            },
        },
    )


def test_beat_and_workers_share_platform_broker_settings_and_log_group(fleet_with_beat: Template) -> None:
    containers = _containers(fleet_with_beat)
    beat, worker = containers["Beat"], containers["Worker"]
    worker_broker = {k: v for k, v in _environment(worker).items() if k in (BROKER_HOST_ENV, BROKER_PORT_ENV)}
    assert _environment(beat) == worker_broker
    assert beat["Secrets"] == [s for s in worker["Secrets"] if s["Name"] == BROKER_AUTH_TOKEN_ENV]
    assert (
        beat["LogConfiguration"]["Options"]["awslogs-group"]
        == worker["LogConfiguration"]["Options"]["awslogs-group"]
    )
    assert beat["Image"] == worker["Image"]


def test_beat_in_a_fleet_keeps_the_logical_ids_it_had_when_built_inline(fleet_with_beat: Template) -> None:
    # A new logical ID replaces the service, and CloudFormation starts the new one before it deletes
    # the old: two beats for a while. These are the IDs of the inline beat (commit 317ee06).
    beat_ids = {logical_id for logical_id in fleet_with_beat.to_json()["Resources"] if "Beat" in logical_id}
    assert {
        "WorkersBeatTaskDefinitionABF7E581",
        "WorkersBeatTaskDefinitionTaskRole2DD26814",
        "WorkersBeatTaskDefinitionExecutionRole42184279",
        "WorkersBeatTaskDefinitionExecutionRoleDefaultPolicyD3F5BDA2",
        "WorkersBeatService48D623FC",
        "WorkersBeatSecurityGroup427620C6",
    } <= beat_ids


def test_a_fleet_without_beat_has_none() -> None:
    stack = bare_stack()
    fleet = worker_fleet(stack, workers_config(image=IMAGE))
    assert fleet.beat is None
    assert "Beat" not in _containers(template(stack))
