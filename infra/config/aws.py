"""Where the stage deploys."""

from __future__ import annotations

from pydantic import Field

from infra.config.base import ConfigModel


class AwsConfig(ConfigModel):
    """The account and region the stage's stacks are bound to.

    Both empty (the default) synthesizes environment-agnostic templates that deploy to whatever
    account and region the deploying credentials point at; the VPC then spans two availability zones.
    """

    account: str | None = Field(default=None, pattern=r"^\d{12}$", description="12-digit AWS account ID.")
    region: str | None = Field(
        default=None, pattern=r"^[a-z]{2}(-[a-z]+)+-\d$", description="Region code, e.g. eu-west-1."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags applied to every resource of the stage (cost allocation)."
    )
