"""Lambda code assets built at synth by copying files: no pip, no Docker, no network.

A Lambda package under lambdas/ is copied with the shared `celery_fleet` package (its stdlib-only
contract modules are what the Lambdas import), the lambdas/ packages it shares with other Lambdas
(`shared`), and any pure-Python dependency named, taken from the environment that runs synth. That
environment must hold the version requirements.txt pins, the one pin of each bundled dependency
(synth refuses another). The asset hash is the hash of what was copied, so an unchanged tree
synthesizes an unchanged template.

Each Lambda names the environment variables it reads in `celery_fleet.contract.<name>_env`, which
is bundled with it; the constructs set them by those names.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import re
import shutil
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = ROOT / "lambdas"
REQUIREMENTS = ROOT / "requirements.txt"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "tests")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{name} is not installed in the synth environment (pip install -r requirements.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def pinned_versions(requirements: str) -> dict[str, str]:
    """`name==version` lines (extras allowed) of a requirements file, by normalized distribution name."""
    pins: dict[str, str] = {}
    for line in requirements.splitlines():
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*==\s*([^\s;#]+).*", line)
        if match:
            pins[_normalized(match.group(1))] = match.group(2)
    return pins


def _normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bundled_version_problem(distribution: str, installed: str, pins: dict[str, str]) -> str | None:
    """Why `installed` of `distribution` must not go into an asset (None: it is the pinned version)."""
    pinned = pins.get(_normalized(distribution))
    if pinned is None:
        return (
            f"{distribution} is bundled into a Lambda asset but requirements.txt does not pin it "
            "(name==version)"
        )
    if installed != pinned:
        return (
            f"{distribution} {installed} is installed in the synth environment but requirements.txt pins "
            f"{pinned}: the Lambda asset would carry an untested version (pip install -r requirements.txt)"
        )
    return None


@functools.cache
def _import_packages() -> dict[str, list[str]]:
    # Reads the metadata of every installed distribution (about 70 ms): once per synth process, not
    # once per bundled dependency of each Lambda.
    return dict(importlib.metadata.packages_distributions())


def _check_pinned(dependency: str) -> None:
    distributions = _import_packages().get(dependency) or [dependency]
    pins = pinned_versions(REQUIREMENTS.read_text())
    for distribution in distributions:
        problem = bundled_version_problem(distribution, importlib.metadata.version(distribution), pins)
        if problem:
            raise RuntimeError(problem)


@jsii.implements(ILocalBundling)
class _CopyPackages:
    def __init__(self, sources: dict[str, Path]) -> None:
        self._sources = sources

    def try_bundle(self, output_dir: str, *_args: Any, **_kwargs: Any) -> bool:
        for name, source in self._sources.items():
            shutil.copytree(source, Path(output_dir, name), ignore=_IGNORE, dirs_exist_ok=True)
        return True


def lambda_package(
    name: str, *, shared: tuple[str, ...] = (), dependencies: tuple[str, ...] = ()
) -> lambda_.Code:
    """Code for `lambdas/<name>/`, importable in Lambda as `<name>` (handler `<name>.handler.handler`),
    with each of `shared` (`lambdas/<package>/`, importable as `<package>`) and `dependencies`."""
    sources = {name: LAMBDAS / name, "celery_fleet": _package_dir("celery_fleet")}
    sources.update({package: LAMBDAS / package for package in shared})
    for dependency in dependencies:
        _check_pinned(dependency)
        sources[dependency] = _package_dir(dependency)
    return lambda_.Code.from_asset(
        str(LAMBDAS / name),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Never used: local bundling always succeeds, so synth needs no Docker.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=_CopyPackages(sources),
        ),
    )
