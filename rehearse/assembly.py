"""The cloud assembly as data: stacks, templates, assets, and CloudFormation intrinsics resolved."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REGION = "us-east-1"
# moto's default account: ARNs it returns carry it.
ACCOUNT = "123456789012"
PSEUDO: dict[str, str] = {
    "AWS::Region": REGION,
    "AWS::AccountId": ACCOUNT,
    "AWS::Partition": "aws",
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::NoValue": "",
}


class AssemblyError(RuntimeError):
    """The cloud assembly says something the rehearsal cannot resolve."""


@dataclass
class Stack:
    name: str
    template: dict[str, Any]

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.template.get("Resources", {})
        return resources

    def of_type(self, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
        for logical, resource in self.resources.items():
            if resource.get("Type") == kind:
                yield logical, resource.get("Properties", {})


@dataclass
class Physical:
    """What a deployed resource answers to Ref and Fn::GetAtt."""

    ref: str
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class Assembly:
    """A synthesized cloud assembly (cdk.out) and the physical resources the rehearsal made for it."""

    outdir: Path
    stacks: dict[str, Stack]
    image_assets: dict[str, dict[str, Any]]
    physical: dict[tuple[str, str], Physical] = field(default_factory=dict)

    @classmethod
    def load(cls, outdir: Path) -> Assembly:
        manifest = json.loads((outdir / "manifest.json").read_text())
        stacks: dict[str, Stack] = {}
        images: dict[str, dict[str, Any]] = {}
        for name, artifact in manifest["artifacts"].items():
            if artifact.get("type") == "aws:cloudformation:stack":
                template_file = artifact["properties"]["templateFile"]
                stacks[name] = Stack(name, json.loads((outdir / template_file).read_text()))
            elif artifact.get("type") == "cdk:asset-manifest":
                assets = json.loads((outdir / artifact["properties"]["file"]).read_text())
                images.update(assets.get("dockerImages", {}))
        if not stacks:
            raise AssemblyError(f"{outdir}: no CloudFormation stack in the cloud assembly")
        return cls(outdir=outdir, stacks=stacks, image_assets=images)

    def stack_of(self, suffix: str) -> Stack:
        for name, stack in self.stacks.items():
            if name.endswith(suffix):
                return stack
        raise AssemblyError(f"no stack named *{suffix} in {sorted(self.stacks)}")

    def resources(self, kind: str) -> Iterator[tuple[Stack, str, dict[str, Any]]]:
        for stack in self.stacks.values():
            for logical, props in stack.of_type(kind):
                yield stack, logical, props

    def image_asset_for(self, image: Any) -> tuple[Path, str, str]:
        """The asset directory, Dockerfile and platform of a container definition's Image (its hash in it)."""
        text = json.dumps(image)
        for digest, asset in self.image_assets.items():
            if digest in text:
                source = asset["source"]
                directory = self.outdir / source["directory"]
                return (
                    directory,
                    source.get("dockerFile", "Dockerfile"),
                    source.get("platform", "linux/amd64"),
                )
        raise AssemblyError(f"image {text[:200]} is no image asset of the assembly")

    def resolve(self, stack: Stack, value: Any) -> Any:
        """`value` with every intrinsic function replaced by what the rehearsal deployed."""
        return _Resolver(self, stack).resolve(value)


class _Resolver:
    def __init__(self, assembly: Assembly, stack: Stack) -> None:
        self.assembly = assembly
        self.stack = stack
        self.functions: dict[str, Callable[[Any], Any]] = {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Join": self._join,
            "Fn::Sub": self._sub,
            "Fn::Select": self._select,
            "Fn::Split": self._split,
            "Fn::GetStackOutput": self._stack_output,
            "Fn::ImportValue": self._import_value,
        }

    def resolve(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if isinstance(value, dict):
            if len(value) == 1:
                ((key, argument),) = value.items()
                if key in self.functions:
                    return self.functions[key](argument)
                if key.startswith("Fn::"):
                    raise AssemblyError(
                        f"{self.stack.name}: intrinsic {key} is not supported by the rehearsal"
                    )
            return {key: self.resolve(item) for key, item in value.items()}
        return value

    def _physical(self, logical: str) -> Physical:
        found = self.assembly.physical.get((self.stack.name, logical))
        if found is None:
            if logical not in self.stack.resources:
                raise AssemblyError(
                    f"{self.stack.name}: Ref to {logical}, which the template does not define"
                )
            # A resource the rehearsal does not run (VPC, subnets, alarms...): a recognisable stand-in.
            found = Physical(ref=f"{logical}-rehearsal")
        return found

    def _ref(self, name: str) -> str:
        if name in PSEUDO:
            return PSEUDO[name]
        if name == "AWS::StackName":
            return self.stack.name
        parameters = self.stack.template.get("Parameters", {})
        if name in parameters and name not in self.stack.resources:
            return str(parameters[name].get("Default", ""))
        return self._physical(name).ref

    def _get_att(self, argument: Any) -> str:
        logical, attribute = argument if isinstance(argument, list) else str(argument).split(".", 1)
        physical = self._physical(logical)
        if attribute in physical.attributes:
            return physical.attributes[attribute]
        return f"{physical.ref}.{attribute}"

    def _join(self, argument: list[Any]) -> str:
        separator, items = argument
        return str(separator).join(str(item) for item in self.resolve(items))

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else argument
        values = {key: str(self.resolve(item)) for key, item in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name in values:
                return values[name]
            if "." in name and name.split(".", 1)[0] in self.stack.resources:
                return self._get_att(name)
            return self._ref(name)

        return re.sub(r"\$\{([^}!]+)\}", replace, text)

    def _select(self, argument: list[Any]) -> Any:
        index, items = argument
        return self.resolve(items)[int(self.resolve(index))]

    def _split(self, argument: list[Any]) -> list[str]:
        separator, text = argument
        return str(self.resolve(text)).split(separator)

    def _stack_output(self, argument: dict[str, Any]) -> Any:
        stack = self.assembly.stacks.get(str(self.resolve(argument["StackName"])))
        if stack is None:
            raise AssemblyError(
                f"Fn::GetStackOutput names stack {argument['StackName']!r}, not in the assembly"
            )
        output = stack.template.get("Outputs", {}).get(argument["OutputName"])
        if output is None:
            raise AssemblyError(f"{stack.name} has no output {argument['OutputName']}")
        return self.assembly.resolve(stack, output["Value"])

    def _import_value(self, argument: Any) -> Any:
        name = self.resolve(argument)
        for stack in self.assembly.stacks.values():
            for output in stack.template.get("Outputs", {}).values():
                export = output.get("Export", {}).get("Name")
                if export is not None and self.assembly.resolve(stack, export) == name:
                    return self.assembly.resolve(stack, output["Value"])
        raise AssemblyError(f"Fn::ImportValue {name!r}: no stack exports it")
