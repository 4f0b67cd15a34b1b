"""Network alone: a created VPC with private subnets and flow logs, or one imported from IDs."""

from __future__ import annotations

from typing import Any

from aws_cdk import Stack
from aws_cdk.assertions import Match, Template

from infra.broker import size_broker
from infra.broker.construct import Broker
from infra.network import Network
from tests.support.bare import bare_stack, broker_config, network_config, template

EXISTING: dict[str, Any] = {
    "vpc_id": "vpc-0a1b2c3d4e5f6a7b8",
    "private_subnet_ids": ["subnet-0cccccccccccccccc", "subnet-0dddddddddddddddd"],
    "availability_zones": ["eu-west-1a", "eu-west-1b"],
}


def _template(stack: Stack | None = None, **config: Any) -> Template:
    stack = stack or bare_stack()
    Network(stack, "Network", config=network_config(**config))
    return template(stack)


def _private_subnets(template: Template) -> list[dict[str, Any]]:
    return [
        s["Properties"]
        for s in template.find_resources("AWS::EC2::Subnet").values()
        if s["Properties"].get("MapPublicIpOnLaunch") is False
    ]


def test_without_zones_the_vpc_spans_the_regions_first_two_azs_at_deploy_time() -> None:
    stack = bare_stack(environment_agnostic=True)
    Network(stack, "Network", config=network_config(availability_zones=[]))
    t = template(stack)
    t.resource_count_is("AWS::EC2::VPC", 1)
    private = _private_subnets(t)
    assert len(private) == 2
    # No lookup at synth: the template asks the region for its AZs.
    assert all("Fn::GetAZs" in str(subnet["AvailabilityZone"]) for subnet in private)


def test_each_az_gets_a_private_subnet_with_room_for_many_tasks() -> None:
    private = _private_subnets(_template(cidr="10.90.0.0/16"))
    assert sorted(s["AvailabilityZone"] for s in private) == ["eu-west-1a", "eu-west-1b"]
    assert {s["CidrBlock"].split("/")[1] for s in private} == {"20"}
    assert all(s["CidrBlock"].startswith("10.90.") for s in private)


def test_nat_gateway_count_follows_config() -> None:
    _template(nat_gateways=1).resource_count_is("AWS::EC2::NatGateway", 1)
    _template(nat_gateways=2).resource_count_is("AWS::EC2::NatGateway", 2)


def test_vpc_flow_logs_capture_all_traffic_kept_as_configured() -> None:
    t = _template(flow_logs_retention_days=14)
    t.has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "ALL", "LogDestinationType": "cloud-watch-logs"}
    )
    t.has_resource_properties("AWS::Logs::LogGroup", {"RetentionInDays": 14})


def test_explicit_availability_zones_are_used_as_given() -> None:
    t = _template(availability_zones=["eu-west-1a", "eu-west-1b", "eu-west-1c"], nat_gateways=3)
    t.has_resource_properties("AWS::EC2::Subnet", {"AvailabilityZone": "eu-west-1c"})
    t.resource_count_is("AWS::EC2::NatGateway", 3)


def test_an_existing_vpc_is_used_from_ids_without_creating_one() -> None:
    stack = bare_stack()
    network = Network(stack, "Network", config=network_config(**EXISTING))
    assert network.vpc.vpc_id == EXISTING["vpc_id"]
    # Something placed in it, as the stage places the broker: a template needs one resource.
    config = broker_config()
    Broker(
        stack,
        "Broker",
        vpc=network.vpc,
        subnets=network.private_subnets,
        config=config,
        sizing=size_broker(config),
    )
    t = template(stack)
    for created in ("AWS::EC2::VPC", "AWS::EC2::Subnet", "AWS::EC2::NatGateway", "AWS::EC2::FlowLog"):
        t.resource_count_is(created, 0)
    t.has_resource_properties("AWS::ElastiCache::SubnetGroup", {"SubnetIds": EXISTING["private_subnet_ids"]})
    t.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": EXISTING["vpc_id"]})


def test_public_subnets_hold_only_the_nat_gateways() -> None:
    t = _template(nat_gateways=1)
    public = [
        logical_id
        for logical_id, s in t.find_resources("AWS::EC2::Subnet").items()
        if s["Properties"].get("MapPublicIpOnLaunch") is True
    ]
    assert len(public) == 2
    t.has_resource_properties(
        "AWS::EC2::NatGateway", {"SubnetId": {"Ref": Match.string_like_regexp("Public")}}
    )
