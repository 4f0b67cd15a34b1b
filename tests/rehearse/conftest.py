"""Cloud assemblies synthesized once per test session, for the rehearsal tests that run them."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from rehearse.run import Options, synthesize

HERE = Path(__file__).parent
BEAT_CONFIG = HERE / "beat.toml"

Synthesize = Callable[[str], Path]


@pytest.fixture(scope="session")
def assembly_of(tmp_path_factory: pytest.TempPathFactory) -> Synthesize:
    """`assembly_of("dev")` or `assembly_of("beat")`: that stage's cdk.out, synthesized once."""
    made: dict[str, Path] = {}

    def get(stage: str) -> Path:
        if stage not in made:
            outdir = tmp_path_factory.mktemp(f"assembly-{stage}") / "cdk.out"
            options = Options(config=str(BEAT_CONFIG)) if stage == "beat" else Options(stage=stage)
            synthesize(options, outdir)
            # Rehearsed processes run as the image's user, who must be able to read the assets.
            for path in [outdir, *outdir.parents]:
                if path == Path(tmp_path_factory.getbasetemp()).parent:
                    break
                os.chmod(path, path.stat().st_mode | 0o005)
            made[stage] = outdir
        return made[stage]

    return get


def requires_root() -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        os.geteuid() != 0, reason="the rehearsal runs workers as the image's user: needs root"
    )
