"""The queue-depth publisher as a stage wires it: the stage's queues, namespace, subnets and worker
groups. What the construct does with its inputs is tested alone in
tests/units/test_queue_depth_construct.py."""

from __future__ import annotations

import json
from typing import Any

from celery_fleet.contract import queue_depth_env as contract
from celery_fleet.contract import queue_metrics

from tests.support.synth import Synthesized, stage_config
from tests.support.templates import function_properties


def _function(stage: Synthesized) -> dict[str, Any]:
    return function_properties(stage.template("stateless"), "queue_depth.handler.handler")


def test_the_publisher_measures_the_stages_queues_in_its_namespace(prod: Synthesized) -> None:
    env = _function(prod)["Environment"]["Variables"]
    assert env[contract.QUEUES] == ",".join(stage_config("prod").workers.queues)
    assert env[contract.METRIC_NAMESPACE] == queue_metrics.namespace("prod")
    assert env[contract.POLL_INTERVAL_S] == "60"


def test_high_resolution_in_the_stage_config_polls_every_ten_seconds(
    prod_high_resolution: Synthesized,
) -> None:
    function = _function(prod_high_resolution)

    assert (function["Timeout"], function["Environment"]["Variables"][contract.POLL_INTERVAL_S]) == (58, "10")


def test_the_publisher_sits_in_the_stages_private_subnets(prod: Synthesized) -> None:
    subnets = json.dumps(_function(prod)["VpcConfig"]["SubnetIds"])

    assert subnets.count("NetworkVpcPrivateSubnet") == 2


def test_the_publisher_knows_every_worker_group_it_may_start(prod: Synthesized) -> None:
    # Service and cluster names are deploy-time values: the variable is an Fn::Join of the JSON.
    text = json.dumps(_function(prod)["Environment"]["Variables"][contract.WORKER_GROUPS])
    for name, group in stage_config("prod").workers.groups.items():
        assert f'\\"name\\":\\"{name}\\"' in text
        assert f'\\"max_tasks\\":{group.max_tasks}' in text


def test_the_publisher_may_update_every_worker_service_of_the_stage(prod: Synthesized) -> None:
    policies = prod.template("stateless").find_resources("AWS::IAM::Policy")
    (publisher,) = [p for name, p in policies.items() if name.startswith("QueueDepthPublisher")]
    statements = publisher["Properties"]["PolicyDocument"]["Statement"]
    (services,) = [s for s in statements if "ecs:DescribeServices" in json.dumps(s["Action"])]

    assert len(services["Resource"]) == len(stage_config("prod").workers.groups)
