"""What the Lambda assets carry beside their code: the synth environment's copy of each dependency,
at the one version requirements.txt pins (infra/lambda_code.py)."""

from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

import pytest

from infra import lambda_code
from infra.lambda_code import bundled_version_problem, lambda_package, pinned_versions
from tests.support.synth import ROOT

_NOT_OURS = {".venv", "node_modules", "cdk.out", "build"}


def _bundled() -> list[str]:
    """Every `dependencies=` a construct passes to lambda_package."""
    found: set[str] = set()
    for path in (ROOT / "infra").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "lambda_package":
                for keyword in node.keywords:
                    if keyword.arg == "dependencies":
                        found.update(ast.literal_eval(keyword.value))
    return sorted(found)


BUNDLED = _bundled()


def _requirement_files() -> list[Path]:
    return sorted(
        path
        for path in ROOT.rglob("requirements*.txt")
        if not _NOT_OURS.intersection(path.relative_to(ROOT).parts)
    )


def test_no_lambda_has_a_requirements_file_the_build_would_ignore() -> None:
    # The asset is copied from the synth environment, which requirements.txt pins; a file beside a
    # Lambda's code would be one more pin that nothing reads.
    assert sorted((ROOT / "lambdas").rglob("requirements*.txt")) == []


def test_the_bundled_dependencies_are_pinned_in_requirements_txt() -> None:
    pins = pinned_versions((ROOT / "requirements.txt").read_text())

    assert "redis" in BUNDLED
    assert set(BUNDLED) <= set(pins)


def test_every_copy_of_a_pin_agrees() -> None:
    # requirements-dev.txt and sample_app/requirements.txt (the sample worker image's) repeat some pins.
    versions: dict[str, dict[str, str]] = {}
    for path in _requirement_files():
        for name, version in pinned_versions(path.read_text()).items():
            versions.setdefault(name, {})[str(path.relative_to(ROOT))] = version
    assert len(versions) > 5
    disagreeing = {name: where for name, where in versions.items() if len(set(where.values())) > 1}
    assert disagreeing == {}


@pytest.mark.parametrize("dependency", BUNDLED)
def test_the_synth_environment_holds_the_pinned_version(dependency: str) -> None:
    pins = pinned_versions((ROOT / "requirements.txt").read_text())

    assert bundled_version_problem(dependency, importlib.metadata.version(dependency), pins) is None


def test_pins_are_read_with_extras_markers_and_comments() -> None:
    text = "-r base.txt\n# redis==1.0\ncelery[redis]==5.7.0\nFoo_Bar.baz == 1.2 ; python_version>'3'\nx>=1\n"

    assert pinned_versions(text) == {"celery": "5.7.0", "foo-bar-baz": "1.2"}


def test_a_version_other_than_the_pin_is_refused_naming_both() -> None:
    problem = bundled_version_problem("redis", "8.0.2", {"redis": "8.1.0"})

    assert problem is not None
    assert "redis 8.0.2 is installed in the synth environment but requirements.txt pins 8.1.0" in problem


def test_an_unpinned_dependency_is_refused() -> None:
    problem = bundled_version_problem("redis", "8.1.0", {"pydantic": "2.14.3"})

    assert problem is not None
    assert "requirements.txt does not pin it" in problem


def test_synth_refuses_to_bundle_a_version_requirements_txt_does_not_pin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    requirements = tmp_path / "requirements.txt"
    requirements.write_text("redis==0.0.1\n")
    monkeypatch.setattr(lambda_code, "REQUIREMENTS", requirements)

    with pytest.raises(RuntimeError, match=r"requirements.txt pins 0\.0\.1"):
        lambda_package("replay", shared=("broker_access",), dependencies=("redis",))
