"""The VPC the broker, workers and VPC-attached Lambdas share."""

from __future__ import annotations

from aws_cdk import RemovalPolicy
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.config import NetworkConfig
from infra.logs import retention


class Network(Construct):
    """Creates a VPC, or imports an existing one from IDs without any lookup at synth.

    A created VPC has a public subnet per AZ (NAT gateways only) and a private subnet with egress per
    AZ (the broker, the workers and the Lambdas), and sends every flow to CloudWatch Logs.

    Attributes:
        vpc: the VPC.
        private_subnets: where everything of ours is placed.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: NetworkConfig) -> None:
        super().__init__(scope, construct_id)
        self.private_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS)
        if config.vpc_id is not None:
            self.vpc: ec2.IVpc = ec2.Vpc.from_vpc_attributes(
                self,
                "Vpc",
                vpc_id=config.vpc_id,
                availability_zones=config.availability_zones,
                private_subnet_ids=config.private_subnet_ids,
            )
            return

        flow_logs = logs.LogGroup(
            self,
            "FlowLogs",
            retention=retention(config.flow_logs_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(config.cidr),
            # Explicit AZ names avoid a lookup in the account; without them the template asks the
            # region for its first two AZs at deploy time.
            availability_zones=config.availability_zones or None,
            max_azs=None if config.availability_zones else 2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="Public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                # /20 leaves room for hundreds of Fargate tasks, each taking one IP.
                ec2.SubnetConfiguration(
                    name="Private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=20
                ),
            ],
            flow_logs={
                "All": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
                    traffic_type=ec2.FlowLogTrafficType.ALL,
                )
            },
        )
