"""CloudFormation intrinsics resolved against what the rehearsal deployed, and EMF as CloudWatch reads it."""

from __future__ import annotations

from pathlib import Path

import pytest

from rehearse.assembly import Assembly, AssemblyError, Physical, Stack
from rehearse.aws import emf_to_metric_data

STATEFUL = {
    "Resources": {
        "Token": {"Type": "AWS::SecretsManager::Secret"},
        "Group": {"Type": "AWS::ElastiCache::ReplicationGroup"},
    },
    "Outputs": {
        "TokenArn": {"Value": {"Ref": "Token"}, "Export": {"Name": "token-arn"}},
        "Endpoint": {"Value": {"Fn::GetAtt": ["Group", "PrimaryEndPoint.Address"]}},
    },
}
STATELESS = {"Resources": {"Logs": {"Type": "AWS::Logs::LogGroup"}, "Vpc": {"Type": "AWS::EC2::VPC"}}}


def _assembly() -> Assembly:
    assembly = Assembly(
        outdir=Path("."),
        stacks={"S-Stateful": Stack("S-Stateful", STATEFUL), "S-Stateless": Stack("S-Stateless", STATELESS)},
        image_assets={},
    )
    assembly.physical[("S-Stateful", "Token")] = Physical(ref="arn:secret")
    assembly.physical[("S-Stateful", "Group")] = Physical(
        ref="g", attributes={"PrimaryEndPoint.Address": "127.1.2.3"}
    )
    assembly.physical[("S-Stateless", "Logs")] = Physical(ref="/logs", attributes={"Arn": "arn:logs"})
    return assembly


def test_stack_outputs_and_imports_resolve_across_stacks() -> None:
    assembly = _assembly()
    stack = assembly.stacks["S-Stateless"]
    output = {"Fn::GetStackOutput": {"StackName": "S-Stateful", "OutputName": "Endpoint", "Region": "x"}}
    assert assembly.resolve(stack, output) == "127.1.2.3"
    assert assembly.resolve(stack, {"Fn::ImportValue": "token-arn"}) == "arn:secret"


def test_join_sub_and_pseudo_parameters() -> None:
    assembly = _assembly()
    stack = assembly.stacks["S-Stateless"]
    joined = {
        "Fn::Join": [
            "",
            ["arn:", {"Ref": "AWS::Partition"}, ":x:", {"Ref": "AWS::Region"}, ":", {"Ref": "Logs"}],
        ]
    }
    assert assembly.resolve(stack, joined) == "arn:aws:x:us-east-1:/logs"
    assert assembly.resolve(stack, {"Fn::Sub": "${Logs.Arn}/${AWS::AccountId}"}) == "arn:logs/123456789012"
    assert (
        assembly.resolve(stack, {"Fn::Sub": ["${Logs.Arn}-${x}", {"x": {"Ref": "Logs"}}]}) == "arn:logs-/logs"
    )


def test_a_resource_not_rehearsed_gets_a_recognisable_stand_in() -> None:
    assembly = _assembly()
    assert assembly.resolve(assembly.stacks["S-Stateless"], {"Ref": "Vpc"}) == "Vpc-rehearsal"


def test_a_reference_to_an_undefined_resource_is_an_error() -> None:
    assembly = _assembly()
    with pytest.raises(AssemblyError, match="does not define"):
        assembly.resolve(assembly.stacks["S-Stateless"], {"Ref": "Missing"})


def test_emf_gives_one_datum_per_metric_and_dimension_set() -> None:
    document = {
        "_aws": {
            "Timestamp": 1_700_000_000_000,
            "CloudWatchMetrics": [
                {
                    "Namespace": "CeleryFleet/dev",
                    "Dimensions": [["TaskName", "Queue"], ["Queue"]],
                    "Metrics": [{"Name": "Succeeded", "Unit": "Count"}],
                }
            ],
        },
        "TaskName": "t",
        "Queue": "default",
        "Succeeded": [2, 3],
    }
    ((namespace, data),) = emf_to_metric_data(document)
    assert namespace == "CeleryFleet/dev"
    assert [d["Dimensions"] for d in data] == [
        [{"Name": "TaskName", "Value": "t"}, {"Name": "Queue", "Value": "default"}],
        [{"Name": "Queue", "Value": "default"}],
    ]
    assert data[0]["Values"] == [2.0, 3.0]


def test_emf_drops_a_dimension_set_whose_value_is_missing() -> None:
    document = {
        "_aws": {
            "CloudWatchMetrics": [{"Namespace": "N", "Dimensions": [["Queue"]], "Metrics": [{"Name": "M"}]}]
        },
        "M": 1,
    }
    assert emf_to_metric_data(document) == []
