"""The VPC the broker and workers live in: created by the stage, or an existing one named by IDs."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated

from pydantic import Field, field_validator, model_validator

from infra.config.base import ConfigModel, matching, short
from infra.config.common import RetentionDays

# Keys that only make sense when the stage creates its own VPC.
_CREATE_ONLY = ("cidr", "nat_gateways", "flow_logs_retention_days")

# A created VPC's subnets per AZ (infra/network.py): a /24 public and a /20 private. CDK allocates
# them in order, each aligned to its size: 2 or 3 AZs need 10.x.0.0-10.x.63.255, a /18.
PUBLIC_SUBNET_PREFIX = 24
PRIVATE_SUBNET_PREFIX = 20
LARGEST_PREFIX = 18

# EC2 IDs: the prefix, then 8 (older) or 17 hex digits.
_ID_DIGITS = "8 or 17 hexadecimal digits"
_SUBNET_ID = re.compile(r"subnet-(?:[0-9a-f]{8}|[0-9a-f]{17})")
_AZ_NAME = re.compile(r"[a-z]{2}(-[a-z]+)+-\d[a-z]")
# Zone IDs (euw1-az1) name the same physical zone in every account; names (eu-west-1a) are mapped
# per account, and are what a VPC and its subnets take.
_AZ_ID = re.compile(r"[a-z]{2,}\d+-az\d+")


class NetworkConfig(ConfigModel):
    """The network for the broker, workers and VPC-attached Lambdas.

    Without `vpc_id` the stage creates a VPC: public subnets for NAT only, private subnets with egress
    for everything else, in two availability zones (or those listed), with one NAT gateway and VPC
    flow logs kept for 30 days. With `vpc_id` the stage uses that VPC as is, from the IDs given, with
    no AWS lookup at synth.
    """

    vpc_id: (
        Annotated[
            str,
            matching(
                r"vpc-(?:[0-9a-f]{8}|[0-9a-f]{17})",
                f"a VPC ID is vpc- and {_ID_DIGITS}, e.g. vpc-0123456789abcdef0",
            ),
        ]
        | None
    ) = Field(default=None, description="An existing VPC to use instead of creating one.")
    private_subnet_ids: list[str] = Field(default_factory=list, description="Existing VPC only.")
    availability_zones: list[str] = Field(
        default_factory=list,
        description="AZ names, in the order of private_subnet_ids for an existing VPC. For a created VPC: "
        "optional, and needs aws.region; empty uses the first two AZs of the region at deploy time.",
    )
    cidr: str = Field(
        default="10.80.0.0/16",
        description=f"Created VPC only: its IPv4 range, /16 to /{LARGEST_PREFIX} (each AZ takes a "
        f"/{PUBLIC_SUBNET_PREFIX} public and a /{PRIVATE_SUBNET_PREFIX} private subnet).",
    )
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
            if not _SUBNET_ID.fullmatch(subnet):
                raise ValueError(
                    f"{short(subnet)} is not a subnet ID: expected subnet- and {_ID_DIGITS}, e.g. "
                    "subnet-0123456789abcdef0 (the ID column of the VPC console's Subnets page, not the "
                    "name)"
                )
        if len(set(ids)) != len(ids):
            twice = sorted({s for s in ids if ids.count(s) > 1})
            raise ValueError(f"{short(twice)} listed twice: each private subnet once, one per AZ")
        return ids

    @field_validator("availability_zones")
    @classmethod
    def _zones(cls, zones: list[str]) -> list[str]:
        for zone in zones:
            if _AZ_ID.fullmatch(zone):
                raise ValueError(
                    f"{short(zone)} is an availability zone ID; give the zone's name (like eu-west-1a) "
                    "instead: `aws ec2 describe-availability-zones` lists each ZoneId beside its ZoneName, "
                    "which differs per account"
                )
            if not _AZ_NAME.fullmatch(zone):
                raise ValueError(
                    f"{short(zone)} is not an availability zone name; expected one like eu-west-1a"
                )
        twice = sorted({z for z in zones if zones.count(z) > 1})
        if twice:
            raise ValueError(
                f"{short(twice)} listed twice: a Multi-AZ broker and workers spread over AZs need different "
                "AZs"
            )
        return zones

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, cidr: str) -> str:
        try:
            net = ipaddress.IPv4Network(cidr)
        except ValueError as exc:
            # ipaddress quotes the whole input back; past any CIDR's length that is a pasted blob.
            detail = f" ({exc})" if len(cidr) <= len("255.255.255.255/32") else ", e.g. 10.80.0.0/16"
            raise ValueError(f"{short(cidr)} is not an IPv4 CIDR block{detail}") from None
        if not 16 <= net.prefixlen <= LARGEST_PREFIX:
            raise ValueError(
                f"{short(cidr)} has prefix /{net.prefixlen}; use /16 to /{LARGEST_PREFIX}: each AZ takes a "
                f"/{PUBLIC_SUBNET_PREFIX} public and a /{PRIVATE_SUBNET_PREFIX} private subnet, which 2 or 3 "
                f"AZs fit only in a /{LARGEST_PREFIX} or larger"
            )
        return cidr

    @model_validator(mode="after")
    def _one_way_to_get_a_vpc(self) -> NetworkConfig:
        if self.vpc_id is None:
            if self.private_subnet_ids:
                raise ValueError(
                    f"private_subnet_ids={short(self.private_subnet_ids)} needs vpc_id: subnets are only "
                    "given for an existing VPC"
                )
            if len(self.availability_zones) not in (0, 2, 3):
                raise ValueError(
                    f"availability_zones={short(self.availability_zones)}: a created VPC spans 2 or 3 AZs"
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
                f"{', '.join(given)}: only for a created VPC, but vpc_id={short(self.vpc_id)} is set; remove "
                "them"
            )
        if len(self.private_subnet_ids) < 2:
            raise ValueError(
                f"private_subnet_ids={short(self.private_subnet_ids)}: an existing VPC needs at least 2 "
                "private subnets in different AZs (Multi-AZ broker, workers spread over AZs)"
            )
        if len(self.availability_zones) != len(self.private_subnet_ids):
            raise ValueError(
                f"availability_zones={short(self.availability_zones)} must list one AZ per private subnet "
                f"({len(self.private_subnet_ids)} subnets given), in the same order"
            )
        return self
