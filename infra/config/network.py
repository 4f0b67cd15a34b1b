"""The VPC the broker and workers live in: created by the stage, or an existing one named by IDs."""

from __future__ import annotations

import ipaddress

from pydantic import Field, field_validator, model_validator

from infra.config.base import ConfigModel
from infra.config.common import RetentionDays

# Keys that only make sense when the stage creates its own VPC.
_CREATE_ONLY = ("cidr", "nat_gateways", "flow_logs_retention_days")


class NetworkConfig(ConfigModel):
    """The network for the broker, workers and VPC-attached Lambdas.

    Without `vpc_id` the stage creates a VPC: public subnets for NAT only, private subnets with egress
    for everything else, in two availability zones (or those listed), with one NAT gateway and VPC
    flow logs kept for 30 days. With `vpc_id` the stage uses that VPC as is, from the IDs given, with
    no AWS lookup at synth.
    """

    vpc_id: str | None = Field(
        default=None,
        pattern=r"^vpc-[0-9a-f]{8,17}$",
        description="An existing VPC to use instead of creating one.",
    )
    private_subnet_ids: list[str] = Field(default_factory=list, description="Existing VPC only.")
    availability_zones: list[str] = Field(
        default_factory=list,
        description="AZ names, in the order of private_subnet_ids for an existing VPC. For a created VPC: "
        "optional, and needs aws.region; empty uses the first two AZs of the region at deploy time.",
    )
    cidr: str = Field(default="10.80.0.0/16", description="Created VPC only: its IPv4 range.")
    nat_gateways: int = Field(
        default=1,
        ge=1,
        le=3,
        description="Created VPC only: NAT gateways (one per AZ survives an AZ outage; one is cheaper). "
        "At least one: Fargate pulls images and writes logs through it.",
    )
    flow_logs_retention_days: RetentionDays = Field(
        default=30, description="Created VPC only: days of VPC flow logs kept in CloudWatch Logs."
    )

    @field_validator("private_subnet_ids")
    @classmethod
    def _subnet_ids(cls, ids: list[str]) -> list[str]:
        for subnet in ids:
            if not subnet.startswith("subnet-"):
                raise ValueError(f"{subnet!r} is not a subnet ID; expected subnet-xxxxxxxx")
        return ids

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, cidr: str) -> str:
        try:
            net = ipaddress.IPv4Network(cidr)
        except ValueError as exc:
            raise ValueError(f"{cidr!r} is not an IPv4 CIDR block ({exc})") from None
        if not 16 <= net.prefixlen <= 20:
            raise ValueError(f"{cidr!r} has prefix /{net.prefixlen}; use /16 to /20 to fit the subnets")
        return cidr

    @model_validator(mode="after")
    def _one_way_to_get_a_vpc(self) -> NetworkConfig:
        if self.vpc_id is None:
            if self.private_subnet_ids:
                raise ValueError(
                    f"private_subnet_ids={self.private_subnet_ids!r} needs vpc_id: "
                    "subnets are only given for an existing VPC"
                )
            if len(self.availability_zones) not in (0, 2, 3):
                raise ValueError(
                    f"availability_zones={self.availability_zones!r}: a created VPC spans 2 or 3 AZs"
                )
            if self.nat_gateways > max(2, len(self.availability_zones)):
                raise ValueError(
                    f"nat_gateways={self.nat_gateways} exceeds the VPC's "
                    f"{max(2, len(self.availability_zones))} availability zones"
                )
            return self
        given = sorted(k for k in _CREATE_ONLY if k in self.model_fields_set)
        if given:
            raise ValueError(
                f"{', '.join(given)}: only for a created VPC, but vpc_id={self.vpc_id!r} is set; remove them"
            )
        if len(self.private_subnet_ids) < 2:
            raise ValueError(
                f"private_subnet_ids={self.private_subnet_ids!r}: an existing VPC needs at least 2 private "
                "subnets in different AZs (Multi-AZ broker, workers spread over AZs)"
            )
        if len(self.availability_zones) != len(self.private_subnet_ids):
            raise ValueError(
                f"availability_zones={self.availability_zones!r} must list one AZ per private subnet "
                f"({len(self.private_subnet_ids)} subnets given), in the same order"
            )
        return self
