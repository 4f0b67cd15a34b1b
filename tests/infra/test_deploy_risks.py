"""Deploy risks found at synth, before anyone runs `cdk deploy`: images, the Lambda layer, log names."""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import Mapping
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra.broker.construct import slow_log_group_name
from infra.config import ConfigError, parse_stage_config
from infra.functions import ARCHITECTURE, RUNTIME
from infra.powertools import LAYER_ARCHITECTURE, LAYER_PYTHON, POWERTOOLS_VERSION, layer_parameter_name
from infra.workers.image import DOCKER_PLATFORMS, build_requirements
from tests.support.synth import ROOT, Synthesized, config_with, stage_config

DOCKERFILE = ROOT / "sample_app" / "Dockerfile"


def test_the_layer_ships_the_powertools_version_the_tests_run() -> None:
    pinned = re.search(
        r"^aws-lambda-powertools==(\S+)$", (ROOT / "requirements-dev.txt").read_text(), flags=re.MULTILINE
    )
    assert pinned is not None
    assert POWERTOOLS_VERSION == pinned.group(1) == importlib.metadata.version("aws-lambda-powertools")


def test_the_layer_is_the_one_built_for_the_lambdas_runtime_and_architecture() -> None:
    assert RUNTIME.name == LAYER_PYTHON
    assert ARCHITECTURE.name == LAYER_ARCHITECTURE


def test_every_function_with_a_layer_takes_the_one_powertools_publishes_for_that_version(
    dev: Synthesized,
) -> None:
    template = dev.template("stateless")
    parameters = {
        name: parameter
        for name, parameter in template.to_json()["Parameters"].items()
        if parameter.get("Default") == layer_parameter_name()
    }
    assert layer_parameter_name() == "/aws/service/powertools/python/arm64/python3.14/3.37.0"
    assert len(parameters) == 1
    ((name, parameter),) = parameters.items()
    assert parameter["Type"] == "AWS::SSM::Parameter::Value<String>"
    functions: Mapping[str, Any] = template.find_resources(
        "AWS::Lambda::Function", {"Properties": {"Layers": Match.any_value()}}
    )
    assert functions
    for function in functions.values():
        assert function["Properties"]["Layers"] == [{"Ref": name}]


def test_a_region_without_the_layer_is_refused_at_synth() -> None:
    raw = {
        "name": "test",
        "aws": {"region": "ca-west-1"},
        "network": {"availability_zones": ["ca-west-1a", "ca-west-1b"]},
        "broker": {"backlog_tasks": 1000},
        "workers": {"groups": {"default": {"queues": ["default"]}}},
    }
    with pytest.raises(ConfigError) as caught:
        parse_stage_config(raw, source="test.toml")
    assert caught.value.problems == [
        "aws.region: 'ca-west-1' has no Powertools for AWS Lambda layer (version 3.37.0, which the stage's "
        "Lambdas run on), so the deploy would fail; regions with it: af-south-1, ap-east-1, ap-northeast-1, "
        "ap-northeast-2, ap-northeast-3, ap-south-1, ap-south-2, ap-southeast-1, ap-southeast-2, "
        "ap-southeast-3, ap-southeast-4, ap-southeast-5, ap-southeast-7, ca-central-1, eu-central-1, "
        "eu-central-2, eu-north-1, eu-south-1, eu-south-2, eu-west-1, eu-west-2, eu-west-3, il-central-1, "
        "me-central-1, me-south-1, mx-central-1, sa-east-1, us-east-1, us-east-2, us-west-1, us-west-2"
    ]


def _stages(dockerfile: str) -> list[tuple[str, list[str]]]:
    """(FROM line, instructions) per stage, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", dockerfile)
    stages: list[tuple[str, list[str]]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.upper().startswith("FROM "):
            stages.append((stripped, []))
        elif stages:
            stages[-1][1].append(stripped)
    return stages


def test_the_sample_image_never_runs_target_architecture_code_while_building() -> None:
    stages = _stages(DOCKERFILE.read_text())
    final_from, final = stages[-1]
    assert "--platform" not in final_from
    assert [i for i in final if i.upper().startswith("RUN ")] == []
    for from_line, instructions in stages[:-1]:
        if any(i.upper().startswith("RUN ") for i in instructions):
            assert "--platform=$BUILDPLATFORM" in from_line


def test_the_sample_build_stage_knows_a_wheel_platform_for_every_architecture_the_config_offers() -> None:
    build = "\n".join(_stages(DOCKERFILE.read_text())[0][1])
    for platform in DOCKER_PLATFORMS.values():
        arch = platform.removeprefix("linux/")
        assert re.search(rf"\b{arch}\) machine=\w+ ;;", build), arch


def test_prod_synth_says_what_the_image_build_needs() -> None:
    assert build_requirements(stage_config("prod").workers) == (
        "images: the sample app, built by `cdk deploy` for linux/arm64, linux/amd64, one image per "
        "platform; a plain Docker with BuildKit (Docker 23+) builds each on either architecture, no "
        "emulation needed"
    )


def test_a_users_dockerfile_for_two_platforms_is_told_what_docker_needs() -> None:
    config = config_with("prod", {"workers": {"image": {"directory": str(ROOT / "sample_app")}}})
    requirements = build_requirements(config.workers)
    assert "for linux/arm64, linux/amd64, one image per platform" in requirements
    assert "install QEMU (docker run --privileged --rm tonistiigi/binfmt --install all)" in requirements


def test_an_ecr_image_for_two_architectures_must_be_multi_architecture() -> None:
    config = config_with("prod", {"workers": {"image": {"ecr_repository": "acme/worker", "tag": "v1"}}})
    assert build_requirements(config.workers) == (
        "images: acme/worker:v1 from ECR, not built here; it must offer linux/arm64, linux/amd64 (a "
        "multi-architecture image)"
    )


def test_slow_log_is_a_vended_log_group_under_the_prefix_aws_wants(prod: Synthesized) -> None:
    template = prod.template("stateful")
    groups = template.find_resources(
        "AWS::Logs::LogGroup",
        {"Properties": {"LogGroupName": slow_log_group_name("CeleryFleet-prod-Stateful")}},
    )
    # The same logical ID as before the rename: CloudFormation replaces the log group in place.
    assert list(groups) == ["BrokerSlowLogFF1053F1"]
    assert slow_log_group_name("CeleryFleet-prod-Stateful") == (
        "/aws/vendedlogs/elasticache/CeleryFleet-prod-Stateful/slow-log"
    )
    template.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {
            "LogDeliveryConfigurations": [
                Match.object_like(
                    {
                        "DestinationDetails": {
                            "CloudWatchLogsDetails": {"LogGroup": {"Ref": "BrokerSlowLogFF1053F1"}}
                        }
                    }
                )
            ]
        },
    )
