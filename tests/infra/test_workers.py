"""The worker fleet as the shipped stages deploy it: what prod promises, and how it reaches the broker.

What WorkerService, WorkerFleet and BacklogScaling do with their inputs is tested alone in
tests/units/test_workers_construct.py.
"""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match
from celery_fleet.contract import worker_env

from tests.support.synth import Synthesized

SERVICE = "AWS::ECS::Service"


def test_nobody_can_open_a_shell_in_prod_workers(prod: Synthesized) -> None:
    prod.template("stateless").all_resources_properties(SERVICE, {"EnableExecuteCommand": False})


def test_workers_are_admitted_to_the_broker_in_their_own_stack(prod: Synthesized) -> None:
    # The rule sits with the client: the stateful stack never depends on the stateless one, and a
    # new worker group changes only the stateless stack.
    rule = {"Description": Match.string_like_regexp(r"^Celery workers \("), "FromPort": 6379, "ToPort": 6379}
    prod.template("stateless").has_resource_properties("AWS::EC2::SecurityGroupIngress", rule)
    assert (
        prod.template("stateful").find_resources("AWS::EC2::SecurityGroupIngress", {"Properties": rule}) == {}
    )


def test_sample_image_is_an_asset_built_at_deploy_not_at_synth(prod: Synthesized) -> None:
    manifest = (prod.outdir / "CeleryFleet-prod-Stateless.assets.json").read_text()
    assert '"dockerImages"' in manifest
    assert "sample_app/Dockerfile" in manifest


@pytest.mark.parametrize("stage", ["dev", "prod"])
def test_workers_are_set_only_variables_the_worker_side_reads(
    stage: str, request: pytest.FixtureRequest
) -> None:
    # The worker's environment contract names every variable the runtime (or billiard) reads; a
    # variable the stack sets outside it is one nothing reads, and a secret must arrive as a secret.
    synthesized: Synthesized = request.getfixturevalue(stage)
    tasks = synthesized.template("stateless").find_resources("AWS::ECS::TaskDefinition")
    containers = [c for task in tasks.values() for c in task["Properties"]["ContainerDefinitions"]]
    assert containers
    stack_may_set = worker_env.ALL - worker_env.SECRETS - worker_env.SET_BY_ECS
    for container in containers:
        plain = {entry["Name"] for entry in container.get("Environment", [])}
        secrets = {entry["Name"] for entry in container.get("Secrets", [])}
        assert plain <= stack_may_set, (container["Name"], plain - stack_may_set)
        assert secrets <= worker_env.SECRETS, (container["Name"], secrets)
