"""Lambda code assets built at synth by copying files: no pip, no Docker, no network.

A Lambda package under lambdas/ is copied with the shared `celery_fleet` package (its stdlib-only
contract modules are what the Lambdas import) and any pure-Python dependency named, taken from the
environment that runs synth, where requirements.txt pinned it. The asset hash is the hash of what
was copied, so an unchanged tree synthesizes an unchanged template.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import AssetHashType, BundlingOptions, DockerImage, ILocalBundling
from aws_cdk import aws_lambda as lambda_

ROOT = Path(__file__).resolve().parents[1]
LAMBDAS = ROOT / "lambdas"
_IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", "requirements.txt", "tests")


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            f"{name} is not installed in the synth environment (pip install -r requirements.txt)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


@jsii.implements(ILocalBundling)
class _CopyPackages:
    def __init__(self, sources: dict[str, Path]) -> None:
        self._sources = sources

    def try_bundle(self, output_dir: str, *_args: Any, **_kwargs: Any) -> bool:
        for name, source in self._sources.items():
            shutil.copytree(source, Path(output_dir, name), ignore=_IGNORE, dirs_exist_ok=True)
        return True


def lambda_package(name: str, *, dependencies: tuple[str, ...] = ()) -> lambda_.Code:
    """Code for `lambdas/<name>/`, importable in Lambda as `<name>` (handler `<name>.handler.handler`)."""
    sources = {name: LAMBDAS / name, "celery_fleet": _package_dir("celery_fleet")}
    sources.update({dep: _package_dir(dep) for dep in dependencies})
    return lambda_.Code.from_asset(
        str(LAMBDAS / name),
        asset_hash_type=AssetHashType.OUTPUT,
        bundling=BundlingOptions(
            # Never used: local bundling always succeeds, so synth needs no Docker.
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.14"),
            local=_CopyPackages(sources),
        ),
    )
