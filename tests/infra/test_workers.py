"""The worker fleet's template: services, tasks, secrets, shutdown, deployments, logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match

from infra.workers.service import worker_command
from tests.support.synth import Synthesized, config_with, stage_config, synth

SERVICE = "AWS::ECS::Service"
TASK_DEFINITION = "AWS::ECS::TaskDefinition"


def _containers(stage: Synthesized) -> dict[str, dict[str, Any]]:
    """Worker container definitions by the group name in their --hostname argument."""
    out = {}
    for task in stage.template("stateless").find_resources(TASK_DEFINITION).values():
        for container in task["Properties"]["ContainerDefinitions"]:
            if container["Name"] == "Worker":
                hostname = next(a for a in container["Command"] if a.startswith("--hostname="))
                out[hostname.removeprefix("--hostname=").split("@")[0]] = container
    return out


def test_one_service_per_worker_group(prod: Synthesized) -> None:
    groups = stage_config("prod").workers.groups
    assert set(_containers(prod)) == set(groups)
    prod.template("stateless").resource_count_is(SERVICE, len(groups))


def test_workers_consume_exactly_their_groups_queues(prod: Synthesized) -> None:
    for name, container in _containers(prod).items():
        command = container["Command"]
        queues = command[command.index("--queues") + 1]
        assert queues.split(",") == stage_config("prod").workers.groups[name].queues


def test_worker_options_from_config_reach_the_command() -> None:
    group = stage_config("prod").workers.groups["bulk"]
    command = worker_command("app.celery", "bulk", group)
    assert command[:4] == ["celery", "-A", "app.celery", "worker"]
    assert "--autoscale=8,2" in command
    assert not any(arg.startswith("--concurrency") for arg in command)
    assert "--max-memory-per-child=409600" in command
    assert "--max-tasks-per-child=1000" in command
    assert "--time-limit=3600" in command
    assert "--soft-time-limit=3300" in command
    assert "--prefetch-multiplier=1" in command


def test_broker_token_arrives_as_an_ecs_secret_never_as_plain_environment(prod: Synthesized) -> None:
    for container in _containers(prod).values():
        names = {entry["Name"] for entry in container["Environment"]}
        assert "CELERY_FLEET_BROKER_AUTH_TOKEN" not in names
        # With the task-event signing key, the only other secret a worker holds.
        assert {s["Name"] for s in container["Secrets"]} == {
            "CELERY_FLEET_BROKER_AUTH_TOKEN",
            "CELERY_FLEET_TASK_EVENT_KEY",
        }
        assert {"CELERY_FLEET_BROKER_HOST", "CELERY_FLEET_BROKER_PORT"} <= names


def test_sigterm_starts_celerys_soft_shutdown(prod: Synthesized) -> None:
    for container in _containers(prod).values():
        assert {"Name": "REMAP_SIGTERM", "Value": "SIGQUIT"} in container["Environment"]


def test_workers_get_fargates_longest_stop_timeout(prod: Synthesized) -> None:
    for container in _containers(prod).values():
        assert container["StopTimeout"] == 120


def test_visibility_timeout_input_is_the_longest_time_limit(prod: Synthesized) -> None:
    longest = stage_config("prod").workers.longest_time_limit_s
    for container in _containers(prod).values():
        assert {"Name": "CELERY_FLEET_MAX_TASK_RUNTIME_S", "Value": str(longest)} in container["Environment"]


def test_the_app_gets_the_same_time_limits_as_the_worker_command_line(prod: Synthesized) -> None:
    # celery_fleet makes these the tasks' own limits, which the pool applies at shutdown.
    for name, container in _containers(prod).items():
        group = stage_config("prod").workers.groups[name]
        environment = {entry["Name"]: entry["Value"] for entry in container["Environment"]}
        assert f"--time-limit={environment['CELERY_FLEET_TIME_LIMIT_S']}" in container["Command"]
        assert f"--soft-time-limit={environment['CELERY_FLEET_SOFT_TIME_LIMIT_S']}" in container["Command"]
        assert environment["CELERY_FLEET_TIME_LIMIT_S"] == str(group.time_limit_s)


def test_container_health_check_proves_the_worker_consumes(prod: Synthesized) -> None:
    for container in _containers(prod).values():
        assert container["HealthCheck"]["Command"] == ["CMD", "celery-fleet-healthcheck"]


def test_deployment_circuit_breaker_rolls_back(prod: Synthesized) -> None:
    prod.template("stateless").all_resources_properties(
        SERVICE,
        {
            "DeploymentConfiguration": Match.object_like(
                {"DeploymentCircuitBreaker": {"Enable": True, "Rollback": True}}
            )
        },
    )


def test_deploys_never_drop_worker_capacity(prod: Synthesized) -> None:
    prod.template("stateless").all_resources_properties(
        SERVICE,
        {"DeploymentConfiguration": Match.object_like({"MinimumHealthyPercent": 100, "MaximumPercent": 200})},
    )


def test_services_run_in_private_subnets_without_public_ips(prod: Synthesized) -> None:
    prod.template("stateless").all_resources_properties(
        SERVICE,
        {"NetworkConfiguration": {"AwsvpcConfiguration": Match.object_like({"AssignPublicIp": "DISABLED"})}},
    )


def test_task_size_and_architecture_follow_config(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        TASK_DEFINITION,
        {
            "Cpu": "2048",
            "Memory": "4096",
            "RuntimePlatform": {"CpuArchitecture": "ARM64", "OperatingSystemFamily": "LINUX"},
        },
    )
    prod.template("stateless").has_resource_properties(
        TASK_DEFINITION, {"RuntimePlatform": {"CpuArchitecture": "X86_64", "OperatingSystemFamily": "LINUX"}}
    )


def test_spot_mix_keeps_an_on_demand_base(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        SERVICE,
        {
            "CapacityProviderStrategy": [
                {"CapacityProvider": "FARGATE", "Base": 1, "Weight": 25},
                {"CapacityProvider": "FARGATE_SPOT", "Weight": 75},
            ]
        },
    )


def test_cluster_has_container_insights(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::ECS::Cluster",
        {"ClusterSettings": [{"Name": "containerInsights", "Value": "enabled"}]},
    )


def test_worker_logs_are_kept_as_configured(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 90})
    for container in _containers(prod).values():
        assert container["LogConfiguration"]["LogDriver"] == "awslogs"


def test_ecs_exec_follows_config(dev: Synthesized, prod: Synthesized) -> None:
    dev.template("stateless").all_resources_properties(SERVICE, {"EnableExecuteCommand": True})
    prod.template("stateless").all_resources_properties(SERVICE, {"EnableExecuteCommand": False})


def test_workers_reach_the_broker_port_through_their_security_group(prod: Synthesized) -> None:
    prod.template("stateless").has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {"Description": "Celery workers (default)", "FromPort": 6379, "ToPort": 6379, "IpProtocol": "tcp"},
    )


def test_sample_image_is_an_asset_built_at_deploy_not_at_synth(prod: Synthesized) -> None:
    manifest = (prod.outdir / "CeleryFleet-prod-Stateless.assets.json").read_text()
    assert '"dockerImages"' in manifest
    assert "sample_app/Dockerfile" in manifest


def test_an_ecr_image_from_config_replaces_the_sample(tmp_path: Path) -> None:
    config = config_with(
        "dev", {"workers": {"image": {"ecr_repository": "acme/worker", "tag": "2024-06-01"}}}
    )
    containers = _containers(synth(config, tmp_path))
    for container in containers.values():
        assert "acme/worker:2024-06-01" in str(container["Image"])


def test_beat_is_one_on_demand_task_and_never_two(tmp_path: Path) -> None:
    config = config_with("dev", {"workers": {"beat": {"enabled": True}}})
    template = synth(config, tmp_path).template("stateless")
    template.has_resource_properties(
        SERVICE,
        {
            "DesiredCount": 1,
            "CapacityProviderStrategy": [{"CapacityProvider": "FARGATE", "Weight": 1}],
            "DeploymentConfiguration": Match.object_like({"MinimumHealthyPercent": 0, "MaximumPercent": 100}),
        },
    )
