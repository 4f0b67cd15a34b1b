"""The worker container image: the sample app, a Dockerfile directory of the user's, or an ECR image."""

from __future__ import annotations

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from infra.config.workers import WorkerImageConfig
from infra.lambda_code import ROOT

# The sample app's build context is the repository root (it installs runtime/), limited to the two
# folders the Dockerfile copies so that unrelated changes do not rebuild the image.
_SAMPLE_CONTEXT_EXCLUDES = ["*", "!runtime", "!sample_app", "**/__pycache__", "**/*.egg-info", "**/build"]


def worker_image(
    scope: Construct, config: WorkerImageConfig, *, platform: ecr_assets.Platform
) -> ecs.ContainerImage:
    """The image every worker group and beat run. Built by `cdk deploy`, never by synth."""
    if config.ecr_repository is not None and config.tag is not None:
        repository = ecr.Repository.from_repository_name(scope, "Repository", config.ecr_repository)
        return ecs.ContainerImage.from_ecr_repository(repository, config.tag)
    if config.directory is not None:
        return ecs.ContainerImage.from_asset(config.directory, file=config.dockerfile, platform=platform)
    return ecs.ContainerImage.from_asset(
        str(ROOT),
        file="sample_app/Dockerfile",
        exclude=_SAMPLE_CONTEXT_EXCLUDES,
        ignore_mode=IgnoreMode.DOCKER,
        platform=platform,
    )
