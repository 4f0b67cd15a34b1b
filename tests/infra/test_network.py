"""The network as the shipped stages deploy it, and how the stateful stack places the broker in it.

What the Network construct does with its config is tested alone in
tests/units/test_network_construct.py; here only what a stage promises and wires.
"""

from __future__ import annotations

from pathlib import Path

from tests.support.synth import Synthesized, config_with, synth

EXISTING = {
    "vpc_id": "vpc-0a1b2c3d4e5f60718",
    "private_subnet_ids": ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"],
    "availability_zones": ["eu-west-1a", "eu-west-1b"],
}


def test_prod_has_a_nat_gateway_in_each_az(prod: Synthesized) -> None:
    # Losing an AZ must not cut the other AZ's workers off from ECR and CloudWatch.
    template = prod.template("stateful")
    private = template.find_resources("AWS::EC2::Subnet", {"Properties": {"MapPublicIpOnLaunch": False}})
    assert len(private) >= 2
    template.resource_count_is("AWS::EC2::NatGateway", len(private))


def test_an_existing_vpc_from_config_holds_the_broker(tmp_path: Path) -> None:
    config = config_with("dev", {"network": EXISTING, "aws": {"region": "eu-west-1"}}, replace=("network",))
    template = synth(config, tmp_path).template("stateful")
    template.resource_count_is("AWS::EC2::VPC", 0)
    template.has_resource_properties(
        "AWS::ElastiCache::SubnetGroup", {"SubnetIds": EXISTING["private_subnet_ids"]}
    )
    template.has_resource_properties("AWS::EC2::SecurityGroup", {"VpcId": EXISTING["vpc_id"]})
