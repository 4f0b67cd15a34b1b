"""The broker as the shipped stages deploy it, and the stateful stack around it.

What the Broker construct does with its config is tested alone in
tests/units/test_broker_construct.py; here only what a stage promises its users.
"""

from __future__ import annotations

from typing import Any

from tests.support.synth import Synthesized

REPLICATION_GROUP = "AWS::ElastiCache::ReplicationGroup"


def _group(stage: Synthesized) -> dict[str, Any]:
    groups = stage.template("stateful").find_resources(REPLICATION_GROUP)
    assert len(groups) == 1
    properties: dict[str, Any] = next(iter(groups.values()))["Properties"]
    return properties


def test_prod_broker_has_a_replica_in_another_az_with_automatic_failover(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP,
        {"NumCacheClusters": 2, "AutomaticFailoverEnabled": True, "MultiAZEnabled": True},
    )


def test_prod_keeps_daily_snapshots(prod: Synthesized) -> None:
    assert _group(prod)["SnapshotRetentionLimit"] >= 1


def test_the_broker_node_is_the_one_the_stage_sized(prod: Synthesized) -> None:
    assert _group(prod)["CacheNodeType"] == prod.stacks.sizing.node_type


def test_prod_stateful_stack_is_termination_protected(prod: Synthesized) -> None:
    assert prod.stacks.stateful.termination_protection is True


def test_dev_stateful_stack_can_be_destroyed(dev: Synthesized) -> None:
    assert dev.stacks.stateful.termination_protection is False


def test_outputs_give_the_app_team_what_a_client_needs(prod: Synthesized) -> None:
    outputs = prod.template("stateful").find_outputs("*")
    assert {
        "BrokerEndpoint",
        "BrokerPort",
        "BrokerSecretArn",
        "BrokerSecurityGroupId",
        "CeleryBrokerUrlFormat",
    } <= set(outputs)
    url = outputs["CeleryBrokerUrlFormat"]["Value"]["Fn::Join"][1]
    assert url[0] == "rediss://:<AUTH token>@"
    assert url[-1] == ":6379/0?ssl_cert_reqs=required"
