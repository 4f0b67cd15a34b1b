"""Each Lambda's environment contract (celery_fleet.contract.<name>_env) held against its code and the
shipped stages' templates: a construct that sets a variable the code does not read, or code that
reads one the stack does not set, fails here.

What the code reads is its settings model's variables and the ones Powertools reads; nothing else may
read the environment. What the stack sets is each function's Environment.Variables as synthesized.
"""

from __future__ import annotations

import ast
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aws_lambda_powertools.shared import constants as powertools
from celery_fleet.contract import broker_access_env as broker_environment
from celery_fleet.contract import queue_depth_env as queue_depth_environment
from celery_fleet.contract import replay_env as replay_environment
from celery_fleet.contract import task_events_env as task_events_environment
from queue_depth.settings import Settings as QueueDepthSettings
from replay.settings import Settings as ReplaySettings
from task_events.models import VARIABLES as TASK_EVENTS_VARIABLES

from tests.support.synth import ROOT, Synthesized, stage_config, synth

LAMBDAS = ROOT / "lambdas"
STAGES = sorted(path.stem for path in (ROOT / "config").glob("*.toml"))
# Each function by its handler, with the contract of its environment.
CONTRACTS: dict[str, ModuleType] = {
    "queue_depth.handler.handler": queue_depth_environment,
    "replay.handler.handler": replay_environment,
    "task_events.handler.handler": task_events_environment,
}
# The variables each settings model reads.
SETTINGS_VARIABLES = {
    "queue_depth.handler.handler": {field.alias for field in QueueDepthSettings.model_fields.values()},
    "replay.handler.handler": {field.alias for field in ReplaySettings.model_fields.values()},
    "task_events.handler.handler": set(TASK_EVENTS_VARIABLES.values()),
}
# The only calls the environment may be handed to: the settings loaders.
SETTINGS_LOADERS = {"load_settings", "from_environ"}
_ENVIRONMENT_READERS = {"environ", "environb", "getenv", "getenvb"}


@pytest.mark.parametrize("handler", CONTRACTS)
def test_the_settings_read_the_variables_the_contract_names(handler: str) -> None:
    assert SETTINGS_VARIABLES[handler] == set(CONTRACTS[handler].SETTINGS_READS)


@pytest.mark.parametrize("handler", CONTRACTS)
def test_the_contracts_powertools_variables_are_the_ones_powertools_reads(handler: str) -> None:
    # Logger reads POWERTOOLS_SERVICE_NAME, Metrics POWERTOOLS_METRICS_NAMESPACE, when the code
    # passes neither (aws_lambda_powertools.shared.constants).
    read_by_powertools = {powertools.SERVICE_NAME_ENV, powertools.METRICS_NAMESPACE_ENV}
    assert CONTRACTS[handler].POWERTOOLS_READS.issubset(read_by_powertools)


@pytest.mark.parametrize("handler", CONTRACTS)
def test_the_contract_reads_every_variable_the_stack_sets(handler: str) -> None:
    contract = CONTRACTS[handler]
    assert contract.READS == contract.SETTINGS_READS | contract.POWERTOOLS_READS
    assert contract.STACK_SETS <= contract.READS


def test_the_in_vpc_lambdas_read_the_broker_as_the_stack_gives_it() -> None:
    for contract in (queue_depth_environment, replay_environment):
        assert broker_environment.READS <= contract.SETTINGS_READS
        assert broker_environment.STACK_SETS <= contract.STACK_SETS
        assert broker_environment.BROKER_URL not in contract.STACK_SETS


def _environment_reads(path: Path) -> list[str]:
    """Where `path` touches the process environment other than by handing os.environ to a loader."""
    tree = ast.parse(path.read_text(), str(path))
    handed_to_loader: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in SETTINGS_LOADERS:
                handed_to_loader.update(id(arg) for arg in node.args)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [(node.lineno, f"from os import {alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Attribute)
            and node.attr in _ENVIRONMENT_READERS
            and isinstance(node.value, ast.Name)
            and node.value.id == "os"
            and id(node) not in handed_to_loader
        ):
            found.append((node.lineno, f"os.{node.attr}"))
    return [f"line {line}: {text}" for line, text in sorted(found)]


def test_no_lambda_code_reads_the_environment_but_through_its_settings() -> None:
    sources = sorted(LAMBDAS.rglob("*.py"))
    assert sources
    found = {str(path.relative_to(ROOT)): reads for path in sources if (reads := _environment_reads(path))}
    assert found == {}, (
        "read the variable through the Lambda's settings and name it in its celery_fleet.contract module"
    )


def test_the_scan_sees_a_direct_read(tmp_path: Path) -> None:
    source = tmp_path / "handler.py"
    source.write_text(
        "import os\nsettings = load_settings(os.environ)\nlevel = os.environ.get('LOG_LEVEL')\n"
        "debug = os.getenv('DEBUG')\n"
    )

    assert _environment_reads(source) == ["line 3: os.environ", "line 4: os.getenv"]


_synthesized: dict[str, Synthesized] = {}


@pytest.fixture(scope="module", params=STAGES)
def stage(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    name = str(request.param)
    if name not in _synthesized:
        _synthesized[name] = synth(stage_config(name), tmp_path_factory.mktemp(f"cdk-{name}"), nag=False)
    return _synthesized[name]


def _functions(stage: Synthesized) -> dict[str, dict[str, Any]]:
    """The celery-fleet Lambdas of the stage's stacks, by handler (CDK's own functions left out)."""
    packages = {path.name for path in LAMBDAS.iterdir() if (path / "handler.py").exists()}
    found: dict[str, dict[str, Any]] = {}
    for which in ("stateful", "stateless"):
        resources = stage.template(which).find_resources("AWS::Lambda::Function")
        for resource in resources.values():
            handler = str(resource["Properties"].get("Handler", ""))
            if handler.split(".", maxsplit=1)[0] in packages:
                assert handler not in found, f"two functions run {handler}"
                found[handler] = resource["Properties"]
    return found


def test_every_lambda_of_the_stage_has_a_contract(stage: Synthesized) -> None:
    assert set(_functions(stage)) <= set(CONTRACTS)


def test_each_function_is_given_every_variable_it_needs_and_none_it_does_not_read(stage: Synthesized) -> None:
    functions = _functions(stage)
    assert functions
    for handler, properties in functions.items():
        contract = CONTRACTS[handler]
        given = set(properties.get("Environment", {}).get("Variables", {}))
        assert given - contract.READS == set(), f"{handler}: set by the stack, read by nothing"
        assert contract.STACK_SETS - given == set(), f"{handler}: read by the code, not set by the stack"
