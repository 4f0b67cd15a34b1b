"""Synthesizing stages in tests exactly as `cdk synth` does: cdk.json's feature flags, cdk-nag on."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_cdk import App, Validations
from aws_cdk.assertions import Template
from cdk_nag import AwsSolutionsChecks

from infra.config import StageConfig, config_path, load_stage_config, parse_stage_config
from stacks.stage import StageStacks, build_stage

ROOT = Path(__file__).resolve().parents[2]


def cdk_context() -> dict[str, Any]:
    """The context `cdk synth` passes: the feature flags in cdk.json."""
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    return context


def stage_config(stage: str) -> StageConfig:
    return load_stage_config(config_path(stage=stage, config=None))


def config_with(stage: str, overrides: dict[str, Any], *, replace: tuple[str, ...] = ()) -> StageConfig:
    """A shipped stage's config with keys overridden (sections in `replace` swapped whole), validated."""
    raw = stage_config(stage).model_dump(exclude_unset=True)
    for section, values in overrides.items():
        if isinstance(values, dict) and section not in replace:
            raw.setdefault(section, {}).update(values)
        else:
            raw[section] = values
    return parse_stage_config(raw, source=f"{stage}+overrides")


@dataclass
class Synthesized:
    app: App
    stacks: StageStacks
    outdir: Path

    def template(self, which: str) -> Template:
        return Template.from_stack(getattr(self.stacks, which))

    def template_files(self) -> list[Path]:
        return sorted(self.outdir.glob("*.template.json"))


def synth(config: StageConfig, outdir: Path, *, nag: bool = True) -> Synthesized:
    """Build and synthesize one stage into `outdir`; with nag, synth fails on unacknowledged findings."""
    app = App(context=cdk_context(), outdir=str(outdir))
    stacks = build_stage(app, config)
    if nag:
        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    app.synth()
    return Synthesized(app=app, stacks=stacks, outdir=outdir)
