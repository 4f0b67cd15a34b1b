"""Logical IDs of stateful resources are an API: a changed ID replaces the resource.

Replacing the broker loses every queued task; replacing the secret locks every client out. If this
test fails, the change renamed a construct on the path of a stateful resource: rename it back (or
plan a migration, and update the expectation here in the same pull request).
"""

from __future__ import annotations

from tests.support.synth import Synthesized

PINNED = {
    "AWS::ElastiCache::ReplicationGroup": {"BrokerReplicationGroupC7814FB9"},
    # The task-event signing key: a new one voids every running worker's signatures.
    "AWS::SecretsManager::Secret": {"BrokerAuthToken5ACAD3C2", "TaskEventKeySecretE3F7054D"},
    "AWS::ElastiCache::ParameterGroup": {"BrokerParameters9E6D77B2"},
    "AWS::ElastiCache::SubnetGroup": {"BrokerSubnetGroup61EAF853"},
    "AWS::EC2::VPC": {"NetworkVpc7FB7348F"},
}


def test_stateful_logical_ids_are_pinned(prod: Synthesized) -> None:
    template = prod.template("stateful")
    for resource_type, expected in PINNED.items():
        assert set(template.find_resources(resource_type)) == expected, resource_type
