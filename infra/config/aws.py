"""Where the stage deploys."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from infra.config.base import ConfigModel, matching, short
from infra.powertools import POWERTOOLS_REGIONS, POWERTOOLS_VERSION

# The stage tag is on every resource: how the stage's resources are found and costed.
STAGE_TAG = "celery-fleet:stage"
# The most tags the stage itself puts on one resource: a created VPC's subnets carry the stage tag
# and the Name and aws-cdk:subnet-* tags CDK gives them. A user tag of one of these keys would be
# silently overridden (or override), so those keys are refused, and they count against the limit.
OWN_TAGS = (STAGE_TAG, "Name", "aws-cdk:subnet-name", "aws-cdk:subnet-type")
RESERVED_TAG_PREFIXES = ("celery-fleet:", "aws-cdk:")
# AWS: at most 50 user tags per resource; `aws:` tags (CloudFormation's own among them) do not count.
MAX_TAGS_PER_RESOURCE = 50
MAX_TAG_KEY_CHARS = 128
MAX_TAG_VALUE_CHARS = 256
# Besides letters, digits and spaces (any script), the characters every AWS service takes in tags.
_TAG_PUNCTUATION = frozenset("_.:/=+-@")
_TAG_CHARS_IN_WORDS = "letters, digits, spaces and _ . : / = + - @"


class AwsConfig(ConfigModel):
    """The account and region the stage's stacks are bound to.

    Both empty (the default) synthesizes environment-agnostic templates that deploy to whatever
    account and region the deploying credentials point at; the VPC then spans two availability zones.
    """

    account: (
        Annotated[
            str, matching(r"\d{12}", 'an AWS account ID is exactly 12 digits, in quotes ("123456789012")')
        ]
        | None
    ) = Field(default=None, description="12-digit AWS account ID.")
    region: (
        Annotated[str, matching(r"[a-z]{2}(-[a-z]+)+-\d", "a region code like eu-west-1 or us-east-2")] | None
    ) = Field(default=None, description="Region code, e.g. eu-west-1.")
    tags: dict[str, str] = Field(
        default_factory=dict,
        description=f"Tags applied to every resource of the stage (cost allocation). At most "
        f"{MAX_TAGS_PER_RESOURCE - len(OWN_TAGS)} (AWS takes {MAX_TAGS_PER_RESOURCE} per resource and a "
        f"subnet already carries {len(OWN_TAGS)} of the stage's own); keys up to {MAX_TAG_KEY_CHARS} and "
        f"values up to {MAX_TAG_VALUE_CHARS} characters of {_TAG_CHARS_IN_WORDS}; not the keys "
        f"{', '.join(OWN_TAGS)} nor any starting with aws-cdk:, celery-fleet: or aws: (nor a value starting "
        "with aws:).",
    )

    @field_validator("region")
    @classmethod
    def _region_with_layer(cls, region: str | None) -> str | None:
        if region is not None and region not in POWERTOOLS_REGIONS:
            raise ValueError(
                f"{region!r} has no Powertools for AWS Lambda layer (version {POWERTOOLS_VERSION}, which the "
                "stage's Lambdas run on), so the deploy would fail; regions with it: "
                f"{', '.join(POWERTOOLS_REGIONS)}"
            )
        return region

    @field_validator("tags")
    @classmethod
    def _tags(cls, tags: dict[str, str]) -> dict[str, str]:
        room = MAX_TAGS_PER_RESOURCE - len(OWN_TAGS)
        if len(tags) > room:
            raise ValueError(
                f"{len(tags)} tags, but a resource takes at most {MAX_TAGS_PER_RESOURCE} and the stage puts "
                f"up to {len(OWN_TAGS)} on one itself ({', '.join(OWN_TAGS)}): give at most {room}"
            )
        for key, value in tags.items():
            if key.lower().startswith("aws:"):
                raise ValueError(f"tag key {short(key)}: the aws: prefix is reserved for AWS's own tags")
            if key in OWN_TAGS or key.startswith(RESERVED_TAG_PREFIXES):
                raise ValueError(
                    f"tag key {short(key)}: the stage sets {', '.join(OWN_TAGS)} itself ({STAGE_TAG} = the "
                    "stage name; CDK names the VPC's resources), and a tag of the same key would replace "
                    "its value or be replaced; choose another key"
                )
            if not 1 <= len(key) <= MAX_TAG_KEY_CHARS or not _tag_text(key):
                raise ValueError(
                    f"tag key {short(key)} is not allowed: 1 to {MAX_TAG_KEY_CHARS} characters of "
                    f"{_TAG_CHARS_IN_WORDS}"
                )
            if value.lower().startswith("aws:"):
                raise ValueError(
                    f"tag {key}={short(value)}: the aws: prefix is reserved for AWS, in values too"
                )
            if len(value) > MAX_TAG_VALUE_CHARS or not _tag_text(value):
                raise ValueError(
                    f"tag {key}={short(value)} is not allowed: a value has 0 to {MAX_TAG_VALUE_CHARS} "
                    f"characters of {_TAG_CHARS_IN_WORDS}"
                )
        return tags


def _tag_text(text: str) -> bool:
    return all(c.isalnum() or c == " " or c in _TAG_PUNCTUATION for c in text)
