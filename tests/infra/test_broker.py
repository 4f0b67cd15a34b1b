"""The broker's template: one behaviour per test."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aws_cdk.assertions import Match

from tests.support.synth import Synthesized, config_with, synth

REPLICATION_GROUP = "AWS::ElastiCache::ReplicationGroup"


def _group(stage: Synthesized) -> dict[str, Any]:
    groups = stage.template("stateful").find_resources(REPLICATION_GROUP)
    assert len(groups) == 1
    return dict(next(iter(groups.values())))


def test_dev_broker_is_a_single_node_without_failover(dev: Synthesized) -> None:
    dev.template("stateful").has_resource_properties(
        REPLICATION_GROUP,
        {"NumCacheClusters": 1, "AutomaticFailoverEnabled": False, "MultiAZEnabled": False},
    )


def test_prod_broker_has_a_replica_in_another_az_with_automatic_failover(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP,
        {"NumCacheClusters": 2, "AutomaticFailoverEnabled": True, "MultiAZEnabled": True},
    )


def test_cluster_mode_is_disabled(prod: Synthesized) -> None:
    props = _group(prod)["Properties"]
    assert isinstance(props, dict)
    assert "NumNodeGroups" not in props
    assert "ReplicasPerNodeGroup" not in props
    assert props.get("ClusterMode") in (None, "disabled")


def test_engine_is_valkey_by_default(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP, {"Engine": "valkey", "EngineVersion": "9.0"}
    )


def test_tls_is_required_and_data_encrypted_at_rest(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP,
        {
            "TransitEncryptionEnabled": True,
            "TransitEncryptionMode": "required",
            "AtRestEncryptionEnabled": True,
        },
    )


def test_auth_token_is_a_secrets_manager_reference_never_plain_text(prod: Synthesized) -> None:
    template = prod.template("stateful")
    secret_id = next(iter(template.find_resources("AWS::SecretsManager::Secret")))
    template.has_resource_properties(
        REPLICATION_GROUP,
        {
            "AuthToken": {
                "Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id}, ":SecretString:::}}"]]
            }
        },
    )


def test_auth_token_secret_is_generated_without_punctuation(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True}},
    )


def test_auth_token_secret_outlives_the_stack(prod: Synthesized) -> None:
    prod.template("stateful").has_resource(
        "AWS::SecretsManager::Secret", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    )


def test_deleting_the_broker_keeps_a_final_snapshot(prod: Synthesized) -> None:
    prod.template("stateful").has_resource(
        REPLICATION_GROUP, {"DeletionPolicy": "Snapshot", "UpdateReplacePolicy": "Snapshot"}
    )


def test_parameter_group_sets_noeviction_and_list_compression(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        "AWS::ElastiCache::ParameterGroup",
        {
            "CacheParameterGroupFamily": "valkey9",
            "Properties": {
                "maxmemory-policy": "noeviction",
                "list-compress-depth": "1",
            },
        },
    )


def test_broker_uses_its_parameter_and_subnet_groups(prod: Synthesized) -> None:
    template = prod.template("stateful")
    params = next(iter(template.find_resources("AWS::ElastiCache::ParameterGroup")))
    subnets = next(iter(template.find_resources("AWS::ElastiCache::SubnetGroup")))
    template.has_resource_properties(
        REPLICATION_GROUP,
        {"CacheParameterGroupName": {"Ref": params}, "CacheSubnetGroupName": {"Ref": subnets}},
    )


def test_node_type_is_the_one_sized_from_the_backlog(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP, {"CacheNodeType": prod.stacks.sizing.node_type}
    )


def test_slow_log_is_delivered_to_cloudwatch_logs_as_json(prod: Synthesized) -> None:
    template = prod.template("stateful")
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP,
        {
            "LogDeliveryConfigurations": [
                {
                    "DestinationType": "cloudwatch-logs",
                    "LogFormat": "json",
                    "LogType": "slow-log",
                    "DestinationDetails": {"CloudWatchLogsDetails": {"LogGroup": {"Ref": Match.any_value()}}},
                }
            ]
        },
    )
    template.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 90})


def test_prod_keeps_a_week_of_daily_snapshots_outside_the_maintenance_window(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        REPLICATION_GROUP,
        {
            "SnapshotRetentionLimit": 7,
            "SnapshotWindow": "03:00-04:00",
            "PreferredMaintenanceWindow": "sun:04:30-sun:05:30",
        },
    )


def test_dev_takes_no_snapshots(dev: Synthesized) -> None:
    props = _group(dev)["Properties"]
    assert isinstance(props, dict)
    assert props["SnapshotRetentionLimit"] == 0
    assert "SnapshotWindow" not in props


def test_broker_security_group_admits_nobody_by_default(prod: Synthesized) -> None:
    template = prod.template("stateful")
    assert template.find_resources("AWS::EC2::SecurityGroupIngress") == {}
    template.has_resource_properties(
        "AWS::EC2::SecurityGroup",
        {
            "GroupDescription": Match.string_like_regexp("Celery broker"),
            "SecurityGroupIngress": Match.absent(),
            # CDK's marker rule for "no outbound traffic".
            "SecurityGroupEgress": [Match.object_like({"CidrIp": "255.255.255.255/32"})],
        },
    )


def test_client_security_groups_from_config_reach_the_broker_port(tmp_path: Path) -> None:
    config = config_with("prod", {"broker": {"client_security_group_ids": ["sg-0123456789abcdef0"]}})
    stage = synth(config, tmp_path)
    stage.template("stateful").has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "SourceSecurityGroupId": "sg-0123456789abcdef0",
            "FromPort": 6379,
            "ToPort": 6379,
            "IpProtocol": "tcp",
        },
    )


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


def test_redis_oss_engine_uses_the_redis7_family(tmp_path: Path) -> None:
    config = config_with("dev", {"broker": {"engine": "redis", "engine_version": "7.1"}})
    template = synth(config, tmp_path).template("stateful")
    template.has_resource_properties(REPLICATION_GROUP, {"Engine": "redis", "EngineVersion": "7.1"})
    template.has_resource_properties(
        "AWS::ElastiCache::ParameterGroup",
        {
            "CacheParameterGroupFamily": "redis7",
            "Properties": Match.object_like({"maxmemory-policy": "noeviction"}),
        },
    )
