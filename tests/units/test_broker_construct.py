"""Broker alone: what the replication group, its secret, groups and security group are, given its config."""

from __future__ import annotations

from typing import Any

from aws_cdk.assertions import Match, Template

from infra.broker import size_broker
from tests.support.bare import bare_stack, broker, broker_config, template

REPLICATION_GROUP = "AWS::ElastiCache::ReplicationGroup"


def _template(**config: Any) -> Template:
    stack = bare_stack()
    broker(stack, broker_config(**config))
    return template(stack)


def _group(**config: Any) -> dict[str, Any]:
    (group,) = _template(**config).find_resources(REPLICATION_GROUP).values()
    properties: dict[str, Any] = group["Properties"]
    return properties


def test_replicas_join_the_primary_with_automatic_failover_across_azs() -> None:
    _template(replicas=2, multi_az=True).has_resource_properties(
        REPLICATION_GROUP,
        {"NumCacheClusters": 3, "AutomaticFailoverEnabled": True, "MultiAZEnabled": True},
    )


def test_without_replicas_the_broker_is_a_single_node_without_failover() -> None:
    _template(replicas=0, multi_az=False).has_resource_properties(
        REPLICATION_GROUP,
        {"NumCacheClusters": 1, "AutomaticFailoverEnabled": False, "MultiAZEnabled": False},
    )


def test_cluster_mode_is_disabled() -> None:
    props = _group()
    assert "NumNodeGroups" not in props
    assert "ReplicasPerNodeGroup" not in props
    assert props.get("ClusterMode") in (None, "disabled")


def test_engine_is_valkey_by_default() -> None:
    _template().has_resource_properties(REPLICATION_GROUP, {"Engine": "valkey", "EngineVersion": "9.0"})


def test_redis_oss_engine_uses_the_redis7_family() -> None:
    template = _template(engine="redis", engine_version="7.1")
    template.has_resource_properties(REPLICATION_GROUP, {"Engine": "redis", "EngineVersion": "7.1"})
    template.has_resource_properties(
        "AWS::ElastiCache::ParameterGroup",
        {
            "CacheParameterGroupFamily": "redis7",
            "Properties": Match.object_like({"maxmemory-policy": "noeviction"}),
        },
    )


def test_tls_is_required_and_data_encrypted_at_rest() -> None:
    _template().has_resource_properties(
        REPLICATION_GROUP,
        {
            "TransitEncryptionEnabled": True,
            "TransitEncryptionMode": "required",
            "AtRestEncryptionEnabled": True,
        },
    )


def test_auth_token_is_a_secrets_manager_reference_never_plain_text() -> None:
    template = _template()
    (secret_id,) = template.find_resources("AWS::SecretsManager::Secret")
    template.has_resource_properties(
        REPLICATION_GROUP,
        {
            "AuthToken": {
                "Fn::Join": ["", ["{{resolve:secretsmanager:", {"Ref": secret_id}, ":SecretString:::}}"]]
            }
        },
    )


def test_auth_token_secret_is_generated_without_punctuation() -> None:
    _template().has_resource_properties(
        "AWS::SecretsManager::Secret",
        {"GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True}},
    )


def test_auth_token_secret_outlives_the_stack() -> None:
    _template().has_resource(
        "AWS::SecretsManager::Secret", {"DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain"}
    )


def test_deleting_the_broker_keeps_a_final_snapshot() -> None:
    _template().has_resource(
        REPLICATION_GROUP, {"DeletionPolicy": "Snapshot", "UpdateReplacePolicy": "Snapshot"}
    )


def test_parameter_group_sets_noeviction_and_list_compression() -> None:
    _template().has_resource_properties(
        "AWS::ElastiCache::ParameterGroup",
        {
            "CacheParameterGroupFamily": "valkey9",
            "Properties": {"maxmemory-policy": "noeviction", "list-compress-depth": "1"},
        },
    )


def test_broker_uses_its_parameter_and_subnet_groups() -> None:
    template = _template()
    (params,) = template.find_resources("AWS::ElastiCache::ParameterGroup")
    (subnets,) = template.find_resources("AWS::ElastiCache::SubnetGroup")
    template.has_resource_properties(
        REPLICATION_GROUP,
        {"CacheParameterGroupName": {"Ref": params}, "CacheSubnetGroupName": {"Ref": subnets}},
    )


def test_node_type_is_the_one_sized_from_the_backlog() -> None:
    # Two backlogs that need different nodes: the node follows the sizing, not a fixed default.
    small, large = broker_config(backlog_tasks=10_000), broker_config(backlog_tasks=20_000_000)
    assert size_broker(small).node_type != size_broker(large).node_type
    for config in (small, large):
        stack = bare_stack()
        broker(stack, config)
        template(stack).has_resource_properties(
            REPLICATION_GROUP, {"CacheNodeType": size_broker(config).node_type}
        )


def test_slow_log_is_delivered_as_json_to_its_own_log_group_kept_as_configured() -> None:
    template = _template(slow_log_retention_days=14)
    (slow_log,) = template.find_resources("AWS::Logs::LogGroup", {"Properties": {"RetentionInDays": 14}})
    template.has_resource_properties(
        REPLICATION_GROUP,
        {
            "LogDeliveryConfigurations": [
                {
                    "DestinationType": "cloudwatch-logs",
                    "LogFormat": "json",
                    "LogType": "slow-log",
                    "DestinationDetails": {"CloudWatchLogsDetails": {"LogGroup": {"Ref": slow_log}}},
                }
            ]
        },
    )


def test_daily_snapshots_are_kept_as_configured_outside_the_maintenance_window() -> None:
    _template(
        snapshot_retention_days=7, snapshot_window="01:00-02:00", maintenance_window="sat:05:00-sat:06:00"
    ).has_resource_properties(
        REPLICATION_GROUP,
        {
            "SnapshotRetentionLimit": 7,
            "SnapshotWindow": "01:00-02:00",
            "PreferredMaintenanceWindow": "sat:05:00-sat:06:00",
        },
    )


def test_without_snapshot_retention_no_snapshot_window_is_set() -> None:
    props = _group(snapshot_retention_days=0)
    assert props["SnapshotRetentionLimit"] == 0
    assert "SnapshotWindow" not in props


def test_broker_security_group_admits_nobody_by_default() -> None:
    template = _template()
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


def test_client_security_groups_from_config_reach_the_broker_port() -> None:
    _template(client_security_group_ids=["sg-0123456789abcdef0"], port=6380).has_resource_properties(
        "AWS::EC2::SecurityGroupIngress",
        {
            "SourceSecurityGroupId": "sg-0123456789abcdef0",
            "FromPort": 6380,
            "ToPort": 6380,
            "IpProtocol": "tcp",
        },
    )


def test_the_broker_listens_on_the_configured_port() -> None:
    _template(port=6380).has_resource_properties(REPLICATION_GROUP, {"Port": 6380})
