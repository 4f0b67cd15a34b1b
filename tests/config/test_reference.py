"""The README's configuration reference is generated from the models and documents every key."""

from __future__ import annotations

import typing

from pydantic import BaseModel

from infra.config import StageConfig
from tools.config_reference import README, render_readme


def _fields(model: type[BaseModel], path: str = "") -> list[tuple[str, str | None]]:
    out = []
    for name, field in model.model_fields.items():
        out.append((f"{path}{name}", field.description))
        for arg in (field.annotation, *typing.get_args(field.annotation)):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                out += _fields(arg, f"{path}{name}.")
    return out


def test_every_config_key_has_a_description() -> None:
    undocumented = [path for path, description in _fields(StageConfig) if not description]
    assert undocumented == []


def test_readme_reference_is_up_to_date() -> None:
    readme = README.read_text(encoding="utf-8")
    assert render_readme(readme) == readme, "run: .venv/bin/python -m tools.config_reference"
