"""The VPC: created with private subnets and flow logs, or imported from IDs without lookups."""

from __future__ import annotations

from pathlib import Path

from tests.support.synth import Synthesized, config_with, synth

EXISTING = {
    "vpc_id": "vpc-0a1b2c3d4e5f60718",
    "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
    "availability_zones": ["eu-west-1a", "eu-west-1b"],
}


def test_created_vpc_spans_two_azs_with_private_subnets(dev: Synthesized) -> None:
    template = dev.template("stateful")
    template.resource_count_is("AWS::EC2::VPC", 1)
    private = [
        s
        for s in template.find_resources("AWS::EC2::Subnet").values()
        if s["Properties"].get("MapPublicIpOnLaunch") is False
    ]
    assert len(private) == 2


def test_nat_gateway_count_follows_config(dev: Synthesized, prod: Synthesized) -> None:
    dev.template("stateful").resource_count_is("AWS::EC2::NatGateway", 1)
    prod.template("stateful").resource_count_is("AWS::EC2::NatGateway", 2)


def test_vpc_flow_logs_capture_all_traffic(prod: Synthesized) -> None:
    prod.template("stateful").has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )


def test_existing_vpc_is_used_from_ids_without_creating_one(tmp_path: Path) -> None:
    config = config_with("prod", {"network": EXISTING, "aws": {"region": "eu-west-1"}}, replace=("network",))
    template = synth(config, tmp_path).template("stateful")
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.has_resource_properties(
        "AWS::ElastiCache::SubnetGroup", {"SubnetIds": EXISTING["private_subnet_ids"]}
    )
    template.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": EXISTING["vpc_id"]})


def test_explicit_availability_zones_are_used_as_given(tmp_path: Path) -> None:
    config = config_with(
        "prod",
        {
            "aws": {"account": "123456789012", "region": "eu-west-1"},
            "network": {"availability_zones": ["eu-west-1a", "eu-west-1b", "eu-west-1c"], "nat_gateways": 3},
        },
    )
    template = synth(config, tmp_path).template("stateful")
    template.has_resource_properties("AWS::EC2::Subnet", {"AvailabilityZone": "eu-west-1c"})
    template.resource_count_is("AWS::EC2::NatGateway", 3)
