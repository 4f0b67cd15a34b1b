"""A defect planted in a copy of the cloud assembly makes the matching rehearsal check fail."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rehearse.run import Options, Report, rehearse
from tests.rehearse.conftest import Synthesize, requires_root

pytestmark = [pytest.mark.slow, requires_root()]

Template = dict[str, Any]


def _copy(assembly: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "cdk.out"
    shutil.copytree(assembly, copy, symlinks=True)
    for path in [tmp_path, copy]:
        path.chmod(0o755)
    return copy


def _edit_stateless(assembly: Path, edit: Callable[[Template], None]) -> None:
    path = next(assembly.glob("*-Stateless.template.json"))
    template = json.loads(path.read_text())
    edit(template)
    path.write_text(json.dumps(template))


def _resources(template: Template, kind: str) -> list[tuple[str, dict[str, Any]]]:
    return [(k, v["Properties"]) for k, v in template["Resources"].items() if v["Type"] == kind]


def _function(template: Template, handler_prefix: str) -> tuple[str, dict[str, Any]]:
    return next(
        (k, p)
        for k, p in _resources(template, "AWS::Lambda::Function")
        if str(p.get("Handler", "")).startswith(handler_prefix)
    )


def _asset_dir(assembly: Path, props: dict[str, Any]) -> Path:
    key = json.dumps(props["Code"]["S3Key"])
    return next(p for p in assembly.glob("asset.*") if p.name.removeprefix("asset.") in key)


def _check(report: Report, prefix: str, contains: str = "") -> bool:
    """Whether the check named `prefix`... (and mentioning `contains`) passed; it must exist."""
    found = [c for c in report.checks if c.name.startswith(prefix) and contains in c.name]
    assert found, f"no check {prefix!r} {contains!r} in {[c.name for c in report.checks]}"
    return all(c.passed for c in found)


def _worker_definitions(template: Template) -> list[tuple[str, dict[str, Any]]]:
    return [
        (k, p["ContainerDefinitions"][0])
        for k, p in _resources(template, "AWS::ECS::TaskDefinition")
        if "worker" in p["ContainerDefinitions"][0].get("Command", [])
    ]


def _environment(container: dict[str, Any], name: str) -> dict[str, Any]:
    return next(v for v in container["Environment"] if v["Name"] == name)


def test_lambda_defects_fail_their_checks(assembly_of: Synthesize, tmp_path: Path) -> None:
    """A module removed from the ingester's asset; the publisher's PutMetricData statement removed; the
    workers' task role statement for kept failed messages (s3:PutObject) removed."""
    assembly = _copy(assembly_of("dev"), tmp_path)
    found: dict[str, Any] = {}

    def plant(template: Template) -> None:
        found["publisher"], publisher_props = _function(template, "queue_depth.")
        found["ingester"], found["ingester_props"] = _function(template, "task_events.")
        role = publisher_props["Role"]["Fn::GetAtt"][0]
        for _, policy in _resources(template, "AWS::IAM::Policy"):
            if {"Ref": role} in policy["Roles"]:
                statements = policy["PolicyDocument"]["Statement"]
                policy["PolicyDocument"]["Statement"] = [
                    s for s in statements if "cloudwatch:PutMetricData" not in json.dumps(s["Action"])
                ]
        task_roles = [
            p["TaskRoleArn"]["Fn::GetAtt"][0] for _, p in _resources(template, "AWS::ECS::TaskDefinition")
        ]
        for _, policy in _resources(template, "AWS::IAM::Policy"):
            if any({"Ref": role} in policy["Roles"] for role in task_roles):
                statements = policy["PolicyDocument"]["Statement"]
                policy["PolicyDocument"]["Statement"] = [
                    s for s in statements if "s3:PutObject" not in json.dumps(s["Action"])
                ]

    _edit_stateless(assembly, plant)
    shutil.rmtree(_asset_dir(assembly, found["ingester_props"]) / "celery_fleet")

    report = rehearse(Options(stage="dev", assembly=assembly, requests=2, fetches=1))

    assert not _check(report, f"{found['ingester']} imports")
    assert "celery_fleet" in report.check(f"{found['ingester']} imports").evidence
    assert not _check(report, f"IAM {found['publisher']}")
    assert "denied: cloudwatch:PutMetricData" in report.check(f"IAM {found['publisher']}").evidence
    task_roles = [c for c in report.checks if c.name.endswith("task role") and "s3:PutObject" in c.evidence]
    assert task_roles, [c.line() for c in report.checks if c.name.endswith("task role")]
    assert not any(c.passed for c in task_roles)
    assert "denied: " in task_roles[0].evidence
    # What the defects do not touch still passes: the publisher starts, the workers consume.
    assert _check(report, f"{found['publisher']} imports")
    assert _check(report, "workload drained")


def test_worker_defects_fail_their_checks(assembly_of: Synthesize, tmp_path: Path) -> None:
    """A wrong broker port for one worker group; a renamed environment variable for the other; beat's
    --schedule removed, so that it writes celerybeat-schedule into the image's root-owned /app."""
    assembly = _copy(assembly_of("beat"), tmp_path)
    services: list[str] = []
    beat: list[str] = []

    def plant(template: Template) -> None:
        for logical, props in _resources(template, "AWS::ECS::TaskDefinition"):
            container = props["ContainerDefinitions"][0]
            if "beat" in container.get("Command", []):
                container["Command"] = [w for w in container["Command"] if not w.startswith("--schedule")]
                beat.extend(
                    k
                    for k, p in _resources(template, "AWS::ECS::Service")
                    if p["TaskDefinition"] == {"Ref": logical}
                )
        (first, port_defect), (second, rename_defect) = _worker_definitions(template)[:2]
        port = _environment(port_defect, "CELERY_FLEET_BROKER_PORT")
        port["Value"] = str(int(port["Value"]) + 1)
        _environment(rename_defect, "CELERY_FLEET_BROKER_HOST")["Name"] = "CELERY_FLEET_BROKER_HOSTNAME"
        for definition in (first, second):
            services.append(
                next(
                    k
                    for k, p in _resources(template, "AWS::ECS::Service")
                    if p["TaskDefinition"] == {"Ref": definition}
                )
            )

    _edit_stateless(assembly, plant)

    report = rehearse(
        Options(
            config="tests/rehearse/beat.toml",
            assembly=assembly,
            requests=1,
            fetches=1,
            drain_timeout_s=8,
            healthy_timeout_s=12,
            stop_timeout_cap_s=8,
        )
    )

    wrong_port, renamed = services
    # The worker with the wrong port keeps retrying the connection: it never turns healthy.
    assert not _check(report, f"{wrong_port} health check while consuming")
    # The worker missing its broker host exits at start, naming the variable.
    assert not _check(report, f"{renamed} keeps running")
    assert "CELERY_FLEET_BROKER_HOST" in report.check(f"{renamed} keeps running").evidence
    assert not _check(report, "workload drained")
    # Beat cannot write its schedule where the image's user may not write.
    (service,) = beat
    assert not _check(report, f"{service} keeps running")
    assert "Permission denied" in report.check(f"{service} keeps running").evidence
    # The broker and the Lambdas are not what broke.
    assert _check(report, "broker parameter group applied")
    assert _check(report, "publisher with a backlog and no worker")
