"""Each Lambda function from its asset directory, with its template environment, on moto."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rehearse.assembly import Assembly, AssemblyError, Stack
from rehearse.aws import Cloud, emf_to_metric_data
from rehearse.iam import Call, call_from_api, calls_from_api

BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")
# What the Python Lambda runtime provides (the AWS SDK) and what the Powertools layer the functions
# attach provides (Powertools with its extras), taken from this environment's pinned packages. A
# module the asset needs and neither provides fails the import, as it would in Lambda.
RUNTIME_PACKAGES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
LAYER_PACKAGES = (
    "aws_lambda_powertools",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "typing_inspection",
    "annotated_types",
)


def runtime_directory(directory: Path) -> Path:
    """A directory holding only the runtime's and the layer's packages (links into site-packages)."""
    site = Path(sysconfig.get_paths()["purelib"])
    directory.mkdir(parents=True, exist_ok=True)
    for name in RUNTIME_PACKAGES + LAYER_PACKAGES:
        found = [p for p in (site / name, site / f"{name}.py") if p.exists()]
        if not found:
            raise RuntimeError(f"{name} is not installed in {site}: scripts/install")
        (directory / found[0].name).symlink_to(found[0])
        dist = name.replace("_", "-")
        for info in site.glob("*.dist-info"):
            if info.name.split("-")[0].lower().replace("_", "-") == dist:
                (directory / info.name).symlink_to(info)
    return directory


@dataclass
class Invocation:
    result: Any = None
    error: str | None = None
    duration_s: float = 0.0


@dataclass
class LambdaFunction:
    """One AWS::Lambda::Function of the assembly, runnable."""

    stack: Stack
    logical: str
    name: str
    handler: str
    asset_dir: Path
    environment: dict[str, str]
    timeout_s: int
    memory_mib: int
    log_group: str
    role_logical: str
    calls: list[Call] = field(default_factory=list)
    log_lines: list[str] = field(default_factory=list)
    init_error: str | None = None
    invocations: list[Invocation] = field(default_factory=list)

    @classmethod
    def from_template(
        cls, assembly: Assembly, stack: Stack, logical: str, props: dict[str, Any]
    ) -> LambdaFunction:
        code = props.get("Code", {})
        key = json.dumps(code.get("S3Key", ""))
        asset_dir = next(
            (
                p
                for p in assembly.outdir.glob("asset.*")
                if p.name.removeprefix("asset.") in key and p.is_dir()
            ),
            None,
        )
        if asset_dir is None:
            raise AssemblyError(f"{stack.name}/{logical}: no asset directory for its code {key}")
        env = {
            k: str(v)
            for k, v in assembly.resolve(stack, props.get("Environment", {}).get("Variables", {})).items()
        }
        name = str(assembly.resolve(stack, {"Ref": logical}))
        logging_config = props.get("LoggingConfig", {})
        log_group = (
            str(assembly.resolve(stack, logging_config["LogGroup"]))
            if "LogGroup" in logging_config
            else f"/aws/lambda/{name}"
        )
        role = props.get("Role", {}).get("Fn::GetAtt", [""])[0]
        return cls(
            stack=stack,
            logical=logical,
            name=name,
            handler=str(props.get("Handler")),
            asset_dir=asset_dir,
            environment=env,
            timeout_s=int(props.get("Timeout", 3)),
            memory_mib=int(props.get("MemorySize", 128)),
            log_group=log_group,
            role_logical=role,
        )

    def invoke(
        self,
        events: list[Any],
        *,
        cloud: Cloud,
        runtime_dir: Path,
        extra_env: dict[str, str],
        budget_s: float,
    ) -> list[Invocation]:
        """Run the handler on `events` in one warm process; its output goes to its log group."""
        with tempfile.TemporaryDirectory(prefix="rehearse-lambda-") as tmp:
            work = Path(tmp)
            (work / "events.json").write_text(json.dumps(events))
            stream = time.strftime("%Y/%m/%d/[$LATEST]") + self.logical
            env = {
                **extra_env,
                **cloud.env(),
                **self.environment,
                "AWS_LAMBDA_FUNCTION_NAME": self.name,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory_mib),
                "AWS_LAMBDA_LOG_GROUP_NAME": self.log_group,
                "AWS_LAMBDA_LOG_STREAM_NAME": stream,
                "LAMBDA_TASK_ROOT": str(self.asset_dir),
                "_HANDLER": self.handler,
            }
            command = [
                sys.executable,
                "-I",
                "-S",
                str(BOOTSTRAP),
                str(self.asset_dir),
                str(runtime_dir),
                self.handler,
                str(work / "events.json"),
                str(work / "results.json"),
                str(work / "calls.jsonl"),
                str(self.timeout_s),
                str(budget_s),
            ]
            done = subprocess.run(
                command,
                env=env,
                capture_output=True,
                text=True,
                timeout=self.timeout_s * len(events) + 60,
                check=False,
            )
            lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
            self.log_lines += lines
            now = int(time.time() * 1000)
            cloud.put_log_lines(self.log_group, stream, [(now, line) for line in lines])
            # Lambda writes the function's output to its log group with the function's role.
            for operation in ("CreateLogStream", "PutLogEvents"):
                self.calls.append(
                    call_from_api(
                        "logs",
                        operation,
                        {"logGroupName": self.log_group, "logStreamName": stream},
                        resolve_secret=cloud.secret_arn,
                    )
                )
            calls_file = work / "calls.jsonl"
            for line in calls_file.read_text().splitlines() if calls_file.exists() else []:
                raw = json.loads(line)
                self.calls += calls_from_api(
                    raw["service"], raw["operation"], raw["params"], resolve_secret=cloud.secret_arn
                )
            extract_emf(lines, cloud)
            results_file = work / "results.json"
            if not results_file.exists():
                raise RuntimeError(f"{self.name}: the runtime died:\n{done.stderr[-2000:]}")
            invocations = []
            for item in json.loads(results_file.read_text()):
                if "init_error" in item:
                    self.init_error = item["init_error"]
                    invocations.append(
                        Invocation(error="init: " + item["init_error"].strip().splitlines()[-1])
                    )
                else:
                    invocations.append(
                        Invocation(
                            result=item.get("result"),
                            error=item.get("error"),
                            duration_s=item.get("duration_s", 0.0),
                        )
                    )
            self.invocations += invocations
            return invocations


def extract_emf(lines: list[str], cloud: Cloud) -> int:
    """Put the metrics of every EMF document among `lines` into CloudWatch; returns how many documents."""
    cloudwatch = cloud.client("cloudwatch")
    documents = 0
    for line in lines:
        start = line.find("{")
        if start < 0 or '"_aws"' not in line:
            continue
        try:
            document = json.loads(line[start:])
        except ValueError:
            continue
        for namespace, data in emf_to_metric_data(document):
            documents += 1
            for offset in range(0, len(data), 1000):
                cloudwatch.put_metric_data(Namespace=namespace, MetricData=data[offset : offset + 1000])
    return documents
