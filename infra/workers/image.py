"""The worker container image: the sample app, a Dockerfile directory of the user's, or an ECR image."""

from __future__ import annotations

from aws_cdk import IgnoreMode
from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from constructs import Construct

from infra.config.workers import WorkerImageConfig, WorkersConfig
from infra.lambda_code import ROOT

# Docker's platform names for the architectures the config offers.
DOCKER_PLATFORMS = {"arm64": "linux/arm64", "x86_64": "linux/amd64"}

# The sample app's build context is the repository root (it installs runtime/), limited to the two
# folders the Dockerfile copies so that unrelated changes do not rebuild the image.
_SAMPLE_CONTEXT_EXCLUDES = ["*", "!runtime", "!sample_app", "**/__pycache__", "**/*.egg-info", "**/build"]


def architectures(config: WorkersConfig) -> list[str]:
    """The CPU architectures the stage's tasks run on (each built image is built for one)."""
    used = {group.cpu_architecture for group in config.groups.values()}
    if config.beat.enabled:
        used.add(config.beat.cpu_architecture)
    return sorted(used)


def build_requirements(config: WorkersConfig) -> str:
    """What `cdk deploy` needs to produce the worker images, said at synth, before anyone deploys."""
    platforms = ", ".join(DOCKER_PLATFORMS[a] for a in architectures(config))
    image = config.image
    if image.ecr_repository is not None:
        return (
            f"images: {image.ecr_repository}:{image.tag} from ECR, not built here; it must offer {platforms}"
            + (" (a multi-architecture image)" if len(architectures(config)) > 1 else "")
        )
    if image.directory is None:
        return (
            f"images: the sample app, built by `cdk deploy` for {platforms}, one image per platform; a plain "
            "Docker with BuildKit (Docker 23+) builds each on either architecture, no emulation needed"
        )
    return (
        f"images: {image.directory}/{image.dockerfile}, built by `cdk deploy` for {platforms}, one image per "
        "platform. A Docker without emulation cannot RUN programs of another architecture: build on a "
        "machine of that architecture, install QEMU (docker run --privileged --rm tonistiigi/binfmt "
        "--install all), or keep RUN steps in a --platform=$BUILDPLATFORM stage as sample_app/Dockerfile "
        "does"
    )


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
