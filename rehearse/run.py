"""The rehearsal: synthesize, start everything the assembly describes, run the workload, check, stop."""

from __future__ import annotations

import base64
import datetime as dt
import gzip
import json
import logging
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from celery_fleet.contract import queue_depth_env, task_events_env, worker_env

from rehearse import iam
from rehearse.agent import Agent
from rehearse.assembly import ACCOUNT, REGION, Assembly, AssemblyError, Physical, Stack
from rehearse.aws import Cloud
from rehearse.broker import ELASTICACHE_ONLY, TlsBroker, auth_token_problems, make_certificates
from rehearse.ecs import Task, build_image, image_python, make_task
from rehearse.filter_pattern import compile_pattern
from rehearse.lambdas import LambdaFunction, runtime_directory
from rehearse.metric_math import evaluate

ROOT = Path(__file__).resolve().parents[1]
WORKLOAD = Path(__file__).with_name("workload.py")
# kombu's priority sub-queues of a Redis queue: "<queue>\x06\x16<priority>".
PRIORITY_SEPARATOR = "\x06\x16"
PRIORITY_STEPS = (3, 6, 9)


@dataclass
class Options:
    """What to rehearse and how long it may wait; the waits are scaled down from AWS's."""

    stage: str | None = None
    config: str | None = None
    assembly: Path | None = None
    requests: int = 4
    fetches: int = 4
    drain_timeout_s: float = 90.0
    healthy_timeout_s: float = 30.0
    # ECS waits the task definition's stopTimeout (120 s) before SIGKILL; the rehearsal at most this.
    stop_timeout_cap_s: float = 30.0
    # The remaining time a Lambda context reports, at most its timeout: a multi-poll publisher polls once.
    lambda_budget_s: float = 5.0
    # How long every service runs before "keeps running" is judged.
    min_uptime_s: float = 10.0
    # Keep the work directory (task roots, logs, certificates) for a look after the run.
    keep: bool = False


@dataclass
class Check:
    name: str
    passed: bool
    evidence: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}: {self.evidence}"


@dataclass
class Report:
    stage: str
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, name: str, passed: bool, evidence: str) -> Check:
        check = Check(name, passed, evidence)
        self.checks.append(check)
        print(check.line(), flush=True)
        return check

    def note(self, text: str) -> None:
        self.notes.append(text)
        print(f"note  {text}", flush=True)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(check.passed for check in self.checks)

    def failed(self, prefix: str) -> list[Check]:
        return [c for c in self.checks if c.name.startswith(prefix) and not c.passed]

    def check(self, name: str) -> Check:
        return next(c for c in self.checks if c.name == name)

    def summary(self) -> str:
        passed = sum(c.passed for c in self.checks)
        lines = [
            f"### Rehearsal of stage `{self.stage}`: {'PASS' if self.passed else 'FAIL'} "
            f"({passed}/{len(self.checks)} checks, {self.seconds:.0f} s)",
            "",
            "| result | check | evidence |",
            "|---|---|---|",
        ]
        lines += [
            f"| {'PASS' if c.passed else '**FAIL**'} | {c.name} | {c.evidence.replace('|', '/')} |"
            for c in self.checks
        ]
        if self.notes:
            lines += ["", "Not reproduced or not applied here:", *[f"- {n}" for n in self.notes]]
        return "\n".join(lines)


def synthesize(options: Options, outdir: Path) -> None:
    """`cdk synth` as the CDK CLI runs the app: cdk.json's context plus -c values, into `outdir`."""
    context: dict[str, Any] = json.loads((ROOT / "cdk.json").read_text())["context"]
    if options.stage:
        context["stage"] = options.stage
    if options.config:
        context["config"] = options.config
    env = {**os.environ, "CDK_OUTDIR": str(outdir), "CDK_CONTEXT_JSON": json.dumps(context)}
    env.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
    done = subprocess.run(
        [sys.executable, "app.py"], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise AssemblyError(f"synth failed:\n{done.stderr[-3000:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Rehearsal:
    def __init__(self, options: Options, assembly: Assembly, work: Path) -> None:
        self.options = options
        self.assembly = assembly
        self.work = work
        self.report = Report(stage=options.stage or options.config or assembly.outdir.name)
        self.cloud: Cloud | None = None
        self.broker: TlsBroker | None = None
        self.tasks: dict[str, Task] = {}
        self.functions: dict[str, LambdaFunction] = {}
        self.namespace = ""
        self.python_bin = Path(sys.executable).parent
        self.python_env: dict[str, str] = {}

    # --- the stateful part -------------------------------------------------------------------
    def start_cloud(self, stack: ExitStack) -> Cloud:
        cloud = Cloud.start(_free_port())
        stack.callback(cloud.stop)
        self.cloud = cloud
        for line in cloud.deploy(self.assembly):
            print(f"  created {line}", flush=True)
        return cloud

    def start_broker(self, stack: ExitStack) -> None:
        assert self.cloud is not None
        groups = list(self.assembly.resources("AWS::ElastiCache::ReplicationGroup"))
        if len(groups) != 1:
            raise AssemblyError(f"expected one ElastiCache replication group, found {len(groups)}")
        owner, logical, props = groups[0]
        port = int(props.get("Port", 6379))
        # A loopback address of its own: the template's port, without colliding with anything else here.
        host = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
        self.assembly.physical[(owner.name, logical)] = Physical(
            ref=logical.lower(),
            attributes={
                "PrimaryEndPoint.Address": host,
                "PrimaryEndPoint.Port": str(port),
                "ReaderEndPoint.Address": host,
                "ReaderEndPoint.Port": str(port),
            },
        )
        reference = str(self.assembly.resolve(owner, props.get("AuthToken", "")))
        match = re.fullmatch(
            r"\{\{resolve:secretsmanager:(.+?):SecretString:([^:]*):[^:]*:[^:]*\}\}", reference
        )
        token = (
            self.cloud.secret_value(match.group(1) + (f":{match.group(2)}::" if match.group(2) else ""))
            if match
            else reference
        )
        problems = auth_token_problems(token)
        self.report.add(
            "broker AUTH token",
            not problems,
            f"{len(token)} characters as GenerateSecretString makes it"
            + (
                f"; ElastiCache refuses it: {'; '.join(problems)}"
                if problems
                else ", a valid ElastiCache AUTH token"
            ),
        )
        directory = self.work / "broker"
        directory.mkdir()
        tls = bool(props.get("TransitEncryptionEnabled"))
        self.report.add(
            "broker TLS only",
            tls and props.get("TransitEncryptionMode", "required") == "required",
            f"TransitEncryptionEnabled={props.get('TransitEncryptionEnabled')}, "
            f"TransitEncryptionMode={props.get('TransitEncryptionMode')}",
        )
        self.ca_file = directory / "ca.pem"
        broker = TlsBroker(
            host=host,
            port=port,
            token=token,
            directory=directory,
            certificates=make_certificates(directory, host),
        )
        broker.start()
        stack.callback(broker.stop)
        self.broker = broker
        parameters = self._parameter_group(owner, props)
        broker.apply_parameters(parameters)
        applied = ", ".join(f"{k}={v}" for k, v in broker.applied.items()) or "none"
        refused = "; ".join(f"{k}={v}" for k, v in broker.refused.items())
        self.report.add(
            "broker parameter group applied",
            not broker.refused,
            f"CONFIG SET {applied}" + (f"; refused: {refused}" if refused else ""),
        )
        for name, value in broker.not_applicable.items():
            self.report.note(
                f"parameter {name}={value} not applied: {ELASTICACHE_ONLY[name]} (no redis-server equivalent)"
            )
        self.report.add(
            "broker refuses plain text", broker.plain_port_refused(), f"{host}:{port} answers TLS only"
        )

    def _parameter_group(self, owner: Stack, props: dict[str, Any]) -> dict[str, str]:
        name = props.get("CacheParameterGroupName")
        if isinstance(name, dict) and "Ref" in name:
            group = owner.resources[name["Ref"]]["Properties"]
            return {
                str(k): str(v) for k, v in self.assembly.resolve(owner, group.get("Properties", {})).items()
            }
        self.report.note(f"parameter group {name!r} is not in the template: the engine's defaults apply")
        return {}

    # --- queues -----------------------------------------------------------------------------
    def queue_depths(self, queues: list[str]) -> tuple[dict[str, int], int]:
        assert self.broker is not None
        client = self.broker.client()
        depths = {}
        for queue in queues:
            names = [queue] + [f"{queue}{PRIORITY_SEPARATOR}{step}" for step in PRIORITY_STEPS]
            depths[queue] = sum(int(client.llen(name)) for name in names)
        return depths, int(client.hlen("unacked"))

    # --- Lambdas ----------------------------------------------------------------------------
    def load_functions(self) -> None:
        for stack, logical, props in self.assembly.resources("AWS::Lambda::Function"):
            if not str(props.get("Runtime", "")).startswith("python"):
                continue  # CDK's own custom-resource providers (Node.js): not the stage's code
            self.functions[logical] = LambdaFunction.from_template(self.assembly, stack, logical, props)
        self.runtime_dir = runtime_directory(self.work / "lambda-runtime")
        self.lambda_env = {"SSL_CERT_FILE": str(self.ca_file)}

    def invoke(self, function: LambdaFunction, events: list[Any]) -> list[Any]:
        assert self.cloud is not None
        return function.invoke(
            events,
            cloud=self.cloud,
            runtime_dir=self.runtime_dir,
            extra_env=self.lambda_env,
            budget_s=self.options.lambda_budget_s,
        )

    def scheduled(self) -> list[tuple[LambdaFunction, str]]:
        found = []
        for _, _, props in self.assembly.resources("AWS::Events::Rule"):
            if "ScheduleExpression" not in props:
                continue
            for target in props.get("Targets", []):
                arn = target.get("Arn", {})
                logical = arn.get("Fn::GetAtt", [""])[0] if isinstance(arn, dict) else ""
                if logical in self.functions:
                    found.append((self.functions[logical], str(props["ScheduleExpression"])))
        return found

    def publish_queue_metrics(self, label: str) -> None:
        """Run each scheduled function once (its schedule's tick) and compare with the broker."""
        assert self.cloud is not None
        for function, schedule in self.scheduled():
            queues = [q for q in function.environment.get(queue_depth_env.QUEUES, "").split(",") if q]
            depths, in_flight = self.queue_depths(queues)
            started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
            invocation = self.invoke(
                function, [{"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}]
            )[0]
            if invocation.error:
                self.report.add(
                    f"publisher {label}", False, f"{function.name} ({schedule}) failed: {invocation.error}"
                )
                continue
            namespace = function.environment.get(queue_depth_env.METRIC_NAMESPACE, "")
            published = {q: self._latest(namespace, "WaitingTasks", {"Queue": q}, started) for q in queues}
            flight = self._latest(namespace, "InFlightTasks", {}, started)
            ok = published == {q: float(d) for q, d in depths.items()} and flight == float(in_flight)
            self.report.add(
                f"publisher {label}",
                ok,
                f"{schedule}: broker held waiting {depths}, in flight {in_flight}; "
                f"published WaitingTasks {published}, InFlightTasks {flight}",
            )

    def _latest(
        self, namespace: str, name: str, dimensions: dict[str, str], since: dt.datetime
    ) -> float | None:
        assert self.cloud is not None
        answer = self.cloud.client("cloudwatch").get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
            StartTime=since,
            EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2),
            Period=60,
            Statistics=["Maximum"],
        )
        points = answer.get("Datapoints", [])
        return max(float(p["Maximum"]) for p in points) if points else None

    # --- ECS ----------------------------------------------------------------------------------
    def services(self) -> list[tuple[Stack, str, dict[str, Any], dict[str, Any]]]:
        found = []
        for stack, logical, props in self.assembly.resources("AWS::ECS::Service"):
            definition = props.get("TaskDefinition", {})
            ref = definition.get("Ref") if isinstance(definition, dict) else None
            if ref is None or ref not in stack.resources:
                raise AssemblyError(
                    f"{stack.name}/{logical}: task definition {definition} is not in its template"
                )
            found.append((stack, logical, props, stack.resources[ref]["Properties"]))
        return found

    def start_tasks(self, stack: ExitStack) -> None:
        assert self.cloud is not None
        self.agent = Agent()
        stack.callback(self.agent.stop)
        for owner, logical, props, definition in self.services():
            task, problems = make_task(
                self.assembly,
                owner,
                logical,
                definition,
                cloud=self.cloud,
                work=self.work,
                extra_env={"SSL_CERT_FILE": str(self.ca_file), **self.python_env},
                stop_timeout_cap_s=self.options.stop_timeout_cap_s,
                python_bin=self.python_bin,
            )
            for note in task.image.notes:
                if note not in self.report.notes:
                    self.report.note(note)
            self.report.add(
                f"{logical} image and task definition",
                not problems,
                "; ".join(problems)
                or f"runs {Path(task.argv[0]).name} {' '.join(task.argv[1:4])}... as {task.user}, "
                f"logs to {task.log_group}",
            )
            role = definition.get("TaskRoleArn", {}).get("Fn::GetAtt", [""])[0]
            statements, _ = self._role_statements(owner, role)
            cluster = str(self.assembly.resolve(owner, props.get("Cluster"))).rsplit("/", 1)[-1]
            task.arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:task/{cluster}/{task.task_id}"
            task.env[worker_env.ECS_AGENT_URI_ENV] = self.agent.register(task.task_id, task.arn, statements)
            task.start()
            stack.callback(task.kill)
            self.tasks[logical] = task
            self._publish_running(owner, logical, 1.0)

    def _publish_running(self, owner: Stack, service_logical: str, count: float) -> None:
        """ECS/ContainerInsights RunningTaskCount, as Container Insights reports the service."""
        assert self.cloud is not None
        cluster = self.assembly.resolve(owner, owner.resources[service_logical]["Properties"].get("Cluster"))
        name = self.assembly.resolve(owner, {"Fn::GetAtt": [service_logical, "Name"]})
        self.cloud.client("cloudwatch").put_metric_data(
            Namespace="ECS/ContainerInsights",
            MetricData=[
                {
                    "MetricName": "RunningTaskCount",
                    "Value": count,
                    "Unit": "Count",
                    "Dimensions": [
                        {"Name": "ClusterName", "Value": str(cluster)},
                        {"Name": "ServiceName", "Value": str(name)},
                    ],
                }
            ],
        )

    def scale_from_zero(self) -> None:
        """Each alarm acting on a step-scaling policy, evaluated on the metrics published so far."""
        assert self.cloud is not None
        for owner, logical, props in self.assembly.resources("AWS::CloudWatch::Alarm"):
            policies = [
                a["Ref"]
                for a in props.get("AlarmActions", [])
                if isinstance(a, dict)
                and "Ref" in a
                and owner.resources.get(a["Ref"], {}).get("Type")
                == "AWS::ApplicationAutoScaling::ScalingPolicy"
            ]
            for policy_logical in policies:
                policy = owner.resources[policy_logical]["Properties"]
                step = policy.get("StepScalingPolicyConfiguration")
                # Scale-out steps only: an idle alarm's scale-in policy sets capacity 0.
                if step is None or not all(
                    int(a["ScalingAdjustment"]) > 0 for a in step.get("StepAdjustments", [])
                ):
                    continue
                target = owner.resources[policy["ScalingTargetId"]["Ref"]]["Properties"]
                if int(target.get("MinCapacity", 0)) > 0:
                    continue
                value = self._alarm_value(owner, props)
                threshold = float(props.get("Threshold", 0))
                breaching = value is not None and _compare(props["ComparisonOperator"], value, threshold)
                capacity = (
                    _step_capacity(step, value - threshold) if breaching and value is not None else None
                )
                ok = breaching and capacity is not None and 1 <= capacity <= int(target.get("MaxCapacity", 1))
                self.report.add(
                    f"scale from zero {logical}",
                    ok,
                    f"alarm value {value} vs threshold {threshold} ({props['ComparisonOperator']}): "
                    + (
                        f"ALARM, {policy_logical} sets capacity {capacity} ({step.get('AdjustmentType')})"
                        if breaching
                        else "no alarm: the backlog would wait with no worker"
                    ),
                )

    def scalable_minimums(self) -> dict[str, int]:
        assert self.cloud is not None
        pages = self.cloud.client("application-autoscaling").get_paginator("describe_scalable_targets")
        return {
            str(t["ResourceId"]): int(t["MinCapacity"])
            for page in pages.paginate(ServiceNamespace="ecs")
            for t in page["ScalableTargets"]
        }

    def woken_from_zero(self, before: dict[str, int]) -> None:
        """A publisher that reads the scalable targets must raise a zero minimum under a backlog."""
        readers = [
            f
            for f, _ in self.scheduled()
            if any(c.action == "application-autoscaling:DescribeScalableTargets" for c in f.calls)
        ]
        if not readers:
            return
        after = self.scalable_minimums()
        for resource_id, minimum in sorted(before.items()):
            if minimum != 0:
                continue
            raised = after.get(resource_id, 0)
            self.report.add(
                f"publisher wakes {resource_id.rsplit('/', 1)[-1]} from zero",
                raised >= 1,
                f"scalable target MinCapacity {minimum} -> {raised} after the publisher saw the backlog",
            )

    def _alarm_value(self, owner: Stack, props: dict[str, Any]) -> float | None:
        values: dict[str, float | None] = {}
        expression = None
        metrics = props.get("Metrics") or [
            {
                "Id": "m",
                "ReturnData": True,
                "MetricStat": {
                    "Metric": {
                        "Namespace": props.get("Namespace"),
                        "MetricName": props.get("MetricName"),
                        "Dimensions": props.get("Dimensions", []),
                    },
                    "Stat": props.get("Statistic", "Average"),
                },
            }
        ]
        for metric in metrics:
            if "MetricStat" in metric:
                stat = self.assembly.resolve(owner, metric["MetricStat"])
                m = stat["Metric"]
                values[metric["Id"]] = self._latest_stat(
                    m["Namespace"],
                    m["MetricName"],
                    {d["Name"]: str(d["Value"]) for d in m.get("Dimensions", [])},
                    stat.get("Stat", "Average"),
                )
            if metric.get("ReturnData", True) and "Expression" in metric:
                expression = metric["Expression"]
        if expression is None:
            return next(iter(values.values()), None)
        return evaluate(expression, values)

    def _latest_stat(self, namespace: str, name: str, dims: dict[str, str], stat: str) -> float | None:
        assert self.cloud is not None
        statistic = stat if stat in {"Maximum", "Minimum", "Sum", "Average", "SampleCount"} else "Maximum"
        answer = self.cloud.client("cloudwatch").get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dims.items()],
            StartTime=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10),
            EndTime=dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2),
            Period=600,
            Statistics=[statistic],
        )
        points = answer.get("Datapoints", [])
        return float(points[-1][statistic]) if points else None

    def wait_drained(self, expected_events: int) -> None:
        queues = sorted(
            {
                q
                for f, _ in self.scheduled()
                for q in f.environment.get(queue_depth_env.QUEUES, "").split(",")
                if q
            }
        )
        started = time.monotonic()
        deadline = started + max(self.options.drain_timeout_s, self.options.min_uptime_s)
        depths: dict[str, int] = {}
        in_flight, events = 0, 0
        while time.monotonic() < deadline:
            depths, in_flight = self.queue_depths(queues)
            events = sum(
                1 for t in self.tasks.values() for _, line in list(t.lines) if '"task_event"' in line
            )
            # Every service gets min_uptime_s before it is judged: one that fails at start (beat
            # unable to write its schedule) may take seconds to get there.
            if time.monotonic() - started < self.options.min_uptime_s:
                time.sleep(0.5)
                continue
            if not any(depths.values()) and in_flight == 0 and events >= expected_events:
                break
            if not all(task.running() for task in self.tasks.values()):
                break
            time.sleep(0.5)
        for name, task in self.tasks.items():
            last = task.lines[-1][1][:160] if task.lines else "no output"
            self.report.add(
                f"{name} keeps running",
                task.running(),
                f"{len(task.lines)} log lines, the last: {last}"
                if task.running()
                else f"exited {task.process.returncode if task.process else '?'}: {last}",
            )
        died = [
            f"{name} exited {t.process.returncode if t.process else '?'}: {t.lines[-1][1] if t.lines else ''}"
            for name, t in self.tasks.items()
            if not t.running()
        ]
        self.report.add(
            "workload drained",
            not any(depths.values()) and in_flight == 0 and not died,
            f"queues {depths}, in flight {in_flight}, {events} task-event lines "
            f"(expected at least {expected_events})" + (f"; stopped: {'; '.join(died)}" if died else ""),
        )

    def health_checks(self, label: str, expect_healthy: bool) -> None:
        for name, task in self.tasks.items():
            deadline = time.monotonic() + (self.options.healthy_timeout_s if expect_healthy else 0)
            while True:
                result = task.health_check()
                if (
                    result is None
                    or result.healthy == expect_healthy
                    or time.monotonic() >= deadline
                    or not task.running()
                ):
                    break
                time.sleep(1)
            if result is None:
                self.report.note(f"{name}: its container defines no health check")
                continue
            self.report.add(
                f"{name} health check {label}",
                result.healthy == expect_healthy,
                f"{'healthy' if result.healthy else 'unhealthy'}: {result.output}",
            )

    # --- task events --------------------------------------------------------------------------
    def ingest(self) -> None:
        assert self.cloud is not None
        for task in self.tasks.values():
            task.push_logs(self.cloud)

        for owner, logical, props in self.assembly.resources("AWS::Logs::SubscriptionFilter"):
            group = str(self.assembly.resolve(owner, props["LogGroupName"]))
            destination = props["DestinationArn"].get("Fn::GetAtt", [""])[0]
            function = self.functions.get(destination)
            if function is None:
                self.report.add(
                    f"subscription {logical}",
                    False,
                    f"destination {props['DestinationArn']} is no Lambda function of the stage",
                )
                continue
            matches = compile_pattern(str(props.get("FilterPattern", "")))
            by_stream: dict[str, list[dict[str, Any]]] = {}
            total = 0
            for stream, timestamp, message in self.cloud.log_events(group):
                total += 1
                if matches(message):
                    by_stream.setdefault(stream, []).append(
                        {"id": str(total), "timestamp": timestamp, "message": message}
                    )
            payloads = []
            for stream, events in by_stream.items():
                for start in range(0, len(events), 500):
                    data = {
                        "messageType": "DATA_MESSAGE",
                        "owner": "123456789012",
                        "logGroup": group,
                        "logStream": stream,
                        "subscriptionFilters": [logical],
                        "logEvents": events[start : start + 500],
                    }
                    payloads.append(
                        {
                            "awslogs": {
                                "data": base64.b64encode(gzip.compress(json.dumps(data).encode())).decode()
                            }
                        }
                    )
            selected = sum(len(e) for e in by_stream.values())
            invocations = self.invoke(function, payloads) if payloads else []
            errors = [i.error for i in invocations if i.error]
            self.report.add(
                f"subscription {logical}",
                selected > 0 and not errors,
                f"pattern {props.get('FilterPattern')!r} selected {selected} of {total} worker log lines "
                f"into {len(payloads)} invocation(s) of {function.name}"
                + (
                    f"; errors: {errors[:2]}"
                    if errors
                    else f"; results {[i.result for i in invocations][:3]}"
                ),
            )

    def check_events(self, expected: dict[str, dict[str, int]]) -> None:
        assert self.cloud is not None
        ingesters = [
            self.functions[p["DestinationArn"]["Fn::GetAtt"][0]]
            for _, _, p in self.assembly.resources("AWS::Logs::SubscriptionFilter")
            if p["DestinationArn"].get("Fn::GetAtt", [""])[0] in self.functions
        ]
        for function in ingesters:
            namespace = function.environment.get(task_events_env.METRIC_NAMESPACE, "")
            metrics = self.cloud.metrics(namespace)
            for outcome, metric in (("succeeded", "Succeeded"), ("failed", "Failed"), ("retried", "Retried")):
                published: Counter[str] = Counter()
                for name, dims in metrics:
                    d = dict(dims)
                    if name == metric and "TaskName" in d:
                        published[d["TaskName"]] += int(self.cloud.metric_sum(namespace, name, d))
                wanted = {k: v for k, v in expected[outcome].items() if v}
                got = {k: v for k, v in published.items() if v}
                self.report.add(
                    f"task events {outcome}",
                    got == wanted,
                    f"{metric} per TaskName published {dict(sorted(got.items()))}; "
                    f"what ran {dict(sorted(wanted.items()))}",
                )
            group = function.environment.get("FAILED_TASKS_LOG_GROUP")
            if group:
                records = [
                    json.loads(m) if m.startswith("{") else {"raw": m}
                    for _, _, m in self.cloud.log_events(group)
                ]
                tasks = Counter(str(r.get("task", r.get("task_name", "?"))) for r in records)
                wanted = {k: v for k, v in expected["failed"].items() if v}
                evidence = [f"{r.get('task')}: {r.get('exc_type')}" for r in records][:3]
                self.report.add(
                    "failure records",
                    dict(tasks) == wanted,
                    f"{len(records)} record(s) in {group}: {evidence}; failures that ran {wanted}",
                )

    # --- IAM and metrics ------------------------------------------------------------------------
    def _role_statements(self, stack: Stack, role_logical: str) -> tuple[list[dict[str, Any]], list[str]]:
        documents: list[dict[str, Any]] = []
        role = stack.resources.get(role_logical, {}).get("Properties", {})
        documents += [self.assembly.resolve(stack, p["PolicyDocument"]) for p in role.get("Policies", [])]
        for _, policy in stack.of_type("AWS::IAM::Policy"):
            if any(isinstance(r, dict) and r.get("Ref") == role_logical for r in policy.get("Roles", [])):
                documents.append(self.assembly.resolve(stack, policy["PolicyDocument"]))
        managed = [str(self.assembly.resolve(stack, arn)) for arn in role.get("ManagedPolicyArns", [])]
        return iam.role_statements(documents, managed)

    def check_iam(self) -> None:
        assert self.cloud is not None
        for function in self.functions.values():
            statements, unknown = self._role_statements(function.stack, function.role_logical)
            self._judge(f"IAM {function.logical}", statements, function.calls, unknown)
        for owner, logical, _, definition in self.services():
            task = self.tasks.get(logical)
            if task is None:
                continue
            role = definition.get("ExecutionRoleArn", {}).get("Fn::GetAtt", [""])[0]
            statements, unknown = self._role_statements(owner, role)
            self._judge(f"IAM {logical} execution role", statements, task.execution_calls, unknown)
            calls = task.task_calls(self.cloud.secret_arn) + self.agent.tasks[task.task_id].calls()
            calls += self._encryption_calls(calls)
            if calls:
                role = definition.get("TaskRoleArn", {}).get("Fn::GetAtt", [""])[0]
                statements, unknown = self._role_statements(owner, role)
                self._judge(f"IAM {logical} task role", statements, calls, unknown)

    def _encryption_calls(self, calls: list[iam.Call]) -> list[iam.Call]:
        """The KMS calls S3 makes with the caller's credentials for a bucket encrypted by a KMS key."""
        keys: dict[str, str] = {}
        for stack, logical, props in self.assembly.resources("AWS::S3::Bucket"):
            for rule in props.get("BucketEncryption", {}).get("ServerSideEncryptionConfiguration", []):
                default = rule.get("ServerSideEncryptionByDefault", {})
                if default.get("SSEAlgorithm") == "aws:kms" and "KMSMasterKeyID" in default:
                    bucket = str(self.assembly.resolve(stack, {"Ref": logical}))
                    keys[bucket] = str(self.assembly.resolve(stack, default["KMSMasterKeyID"]))
        extra = []
        for call in calls:
            if call.action == "s3:PutObject":
                bucket = call.resource.removeprefix("arn:aws:s3:::").split("/", 1)[0]
                if bucket in keys:
                    extra.append(iam.Call("kms:GenerateDataKey", keys[bucket]))
        return extra

    def check_protection(self) -> None:
        for name, task in self.tasks.items():
            requests = self.agent.tasks[task.task_id].requests
            if not requests:
                continue
            enabled = sum(1 for body, _ in requests if body.get("ProtectionEnabled"))
            denied = sum(1 for _, ok in requests if not ok)
            self.report.add(
                f"{name} scale-in protection",
                enabled > 0 and denied == 0,
                f"{len(requests)} request(s) to the ECS agent, {enabled} enabling protection, "
                f"{denied} denied by the task role",
            )

    def check_kept_messages(self, expected: dict[str, dict[str, int]]) -> None:
        """A bucket the workers are given holds one object per task that failed for good."""
        assert self.cloud is not None
        values = {value for task in self.tasks.values() for value in task.env.values()}
        failed = sum(expected["failed"].values())
        for stack, logical, _ in self.assembly.resources("AWS::S3::Bucket"):
            bucket = str(self.assembly.resolve(stack, {"Ref": logical}))
            if bucket not in values:
                continue
            keys = [
                o["Key"] for o in self.cloud.client("s3").list_objects_v2(Bucket=bucket).get("Contents", [])
            ]
            self.report.add(
                f"failed messages kept in {logical}",
                len(keys) == failed,
                f"{len(keys)} object(s) {keys[:2]}; tasks that failed for good: {failed}",
            )

    def _judge(
        self, name: str, statements: list[dict[str, Any]], calls: list[iam.Call], unknown: list[str]
    ) -> None:
        distinct = sorted({(c.action, c.resource, tuple(sorted(c.context.items()))) for c in calls})
        denied = [
            iam.Call(a, r, dict(ctx)).describe()
            for a, r, ctx in distinct
            if not iam.allowed(statements, iam.Call(a, r, dict(ctx)))
        ]
        if unknown:
            self.report.note(f"{name}: managed policies not evaluated: {', '.join(unknown)}")
        self.report.add(
            name,
            not denied,
            f"{len(distinct)} distinct call(s), "
            + (
                f"denied: {'; '.join(denied)}"
                if denied
                else "all allowed: " + ", ".join(sorted({a for a, _, _ in distinct}))
            ),
        )

    def check_metrics_read(self) -> None:
        """Every metric of the stage's namespaces an alarm, scaling policy or dashboard reads was put."""
        assert self.cloud is not None
        namespaces = {
            # The publishers' and the ingesters' namespace: both Lambdas read it under the same name.
            f.environment[queue_depth_env.METRIC_NAMESPACE]
            for f in self.functions.values()
            if queue_depth_env.METRIC_NAMESPACE in f.environment
        }
        wanted: dict[tuple[str, str, frozenset[tuple[str, str]]], set[str]] = {}
        for stack in self.assembly.stacks.values():
            for logical, resource in stack.resources.items():
                kind = resource.get("Type", "")
                props = resource.get("Properties", {})
                if kind == "AWS::CloudWatch::Dashboard":
                    body = json.loads(str(self.assembly.resolve(stack, props["DashboardBody"])))
                    refs = list(_dashboard_metrics(body))
                elif kind in {"AWS::CloudWatch::Alarm", "AWS::ApplicationAutoScaling::ScalingPolicy"}:
                    refs = list(_metric_refs(self.assembly.resolve(stack, props)))
                else:
                    continue
                for ref in refs:
                    if ref[0] in namespaces:
                        wanted.setdefault(ref, set()).add(logical)
        published = {(ns, name, dims) for ns in namespaces for name, dims in self.cloud.metrics(ns)}
        missing = sorted((k for k in wanted if k not in published), key=str)
        described = [
            f"{name}{dict(dims)} (read by {', '.join(sorted(wanted[(ns, name, dims)]))[:80]})"
            for ns, name, dims in missing
        ]
        self.report.add(
            "metrics read were published",
            not missing,
            f"{len(wanted)} metric(s) read in {sorted(namespaces)}; "
            + (
                f"never published: {'; '.join(described[:8])}"
                + (f" and {len(described) - 8} more" if len(described) > 8 else "")
                if missing
                else "all published"
            ),
        )

    # --- stop ----------------------------------------------------------------------------------
    def stop_tasks(self) -> None:
        assert self.cloud is not None
        for task in self.tasks.values():
            task.terminate()
        for name, task in self.tasks.items():
            task.stop()
            task.push_logs(self.cloud)
            clean = task.exit_code == 0
            self.report.add(
                f"{name} stops on SIGTERM",
                clean,
                f"exit {task.exit_code} after {task.stop_seconds:.1f} s "
                f"(stop timeout {task.stop_timeout_s:g} s)"
                if task.stop_seconds is not None
                else f"still running after {task.stop_timeout_s:g} s: SIGKILL",
            )


def _compare(operator: str, value: float, threshold: float) -> bool:
    return {
        "GreaterThanThreshold": value > threshold,
        "GreaterThanOrEqualToThreshold": value >= threshold,
        "LessThanThreshold": value < threshold,
        "LessThanOrEqualToThreshold": value <= threshold,
    }.get(operator, False)


def _step_capacity(step: dict[str, Any], breach: float) -> int | None:
    for adjustment in step.get("StepAdjustments", []):
        lower = float(adjustment.get("MetricIntervalLowerBound", float("-inf")))
        upper = float(adjustment.get("MetricIntervalUpperBound", float("inf")))
        if lower <= breach < upper:
            return int(adjustment["ScalingAdjustment"])
    return None


def _metric_refs(value: Any) -> Any:
    """(namespace, name, dimensions) of every metric named in a resolved alarm or scaling policy."""
    if isinstance(value, dict):
        if "MetricName" in value and "Namespace" in value:
            dims = value.get("Dimensions", [])
            yield (
                str(value["Namespace"]),
                str(value["MetricName"]),
                frozenset((str(d["Name"]), str(d["Value"])) for d in dims),
            )
        for item in value.values():
            yield from _metric_refs(item)
    elif isinstance(value, list):
        for item in value:
            yield from _metric_refs(item)


def _dashboard_metrics(body: dict[str, Any]) -> Any:
    """(namespace, name, dimensions) of each metric a dashboard widget plots.

    A metric is ["Namespace", "Name", "Dim", "Value", ..., {options}]; "." repeats the previous
    metric's item at that place, and a leading "..." repeats the previous metric with the pairs
    that follow replacing its dimensions of the same name (CloudWatch's dashboard body syntax).
    """
    for widget in body.get("widgets", []):
        previous: list[str] = []
        for metric in widget.get("properties", {}).get("metrics", []) or []:
            if any(isinstance(p, dict) and "expression" in p for p in metric):
                continue
            parts = [p for p in metric if not isinstance(p, dict)]
            if parts[:1] == ["..."] and previous:
                dimensions = dict(zip(previous[2::2], previous[3::2], strict=False))
                dimensions.update(zip(parts[1::2], parts[2::2], strict=False))
                parts = previous[:2] + [item for pair in dimensions.items() for item in pair]
            else:
                parts = [previous[i] if p == "." and i < len(previous) else p for i, p in enumerate(parts)]
            if len(parts) < 2 or not all(isinstance(p, str) for p in parts):
                continue
            previous = parts
            yield (parts[0], parts[1], frozenset(zip(parts[2::2], parts[3::2], strict=False)))


def rehearse(options: Options) -> Report:
    """Run the whole rehearsal; every process it starts is stopped before it returns."""
    # moto's server logs every request; the checks are the output.
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    started = time.monotonic()
    with ExitStack() as stack:
        work = Path(tempfile.mkdtemp(prefix="rehearse-"))
        work.chmod(0o755)
        if not options.keep:
            stack.callback(shutil.rmtree, work, ignore_errors=True)
        if options.assembly is None:
            outdir = work / "cdk.out"
            print(f"synthesizing into {outdir}", flush=True)
            synthesize(options, outdir)
        else:
            outdir = options.assembly
        run = Rehearsal(options, Assembly.load(outdir), work)
        try:
            _run(run, stack)
        finally:
            stack.close()
            run.report.seconds = time.monotonic() - started
    return run.report


def _run(run: Rehearsal, stack: ExitStack) -> None:
    cloud = run.start_cloud(stack)
    run.start_broker(stack)
    for line in cloud.deploy_control_plane(run.assembly):
        print(f"  created {line}", flush=True)
    run.load_functions()
    for function in run.functions.values():
        invocation = run.invoke(function, [])
        run.report.add(
            f"{function.logical} imports",
            function.init_error is None,
            f"{function.handler} from {function.asset_dir.name[:18]}: "
            + (function.init_error.strip().splitlines()[-1] if function.init_error else "cold start ok"),
        )
        del invocation
    # The web app's producer: the broker URL as the stateful stack's outputs describe it.
    url = _client_broker_url(run)
    assert run.broker is not None
    tasks_first = run.services()
    app_module = _app_module(tasks_first)
    image_root = run.work / "producer"
    context, dockerfile, platform = run.assembly.image_asset_for(
        tasks_first[0][3]["ContainerDefinitions"][0]["Image"]
    )
    run.python_bin, run.python_env = image_python(run.work)
    image = build_image(context, dockerfile, image_root, run.python_bin, platform=platform)
    env = {
        **os.environ,
        worker_env.BROKER_URL_ENV: url,
        "SSL_CERT_FILE": str(run.ca_file),
        "PYTHONPATH": ":".join(
            [image.remap(image.env.get("PYTHONPATH", image.workdir)), *image.python_paths]
        ),
    }
    done = subprocess.run(
        [sys.executable, str(WORKLOAD), app_module, str(run.options.requests), str(run.options.fetches)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        run.report.add(
            "producer",
            False,
            f"the web app's producer could not send: {done.stderr.strip().splitlines()[-1:]}",
        )
        return
    expected = json.loads(done.stdout.strip().splitlines()[-1])
    sent = sum(expected["succeeded"].values()) + sum(expected["failed"].values())
    run.report.add(
        "producer",
        True,
        f"sent the sample workload through {re.sub(r':[^:@]+@', ':***@', url)}: expects {sent} task outcomes",
    )
    minimums = run.scalable_minimums()
    run.publish_queue_metrics("with a backlog and no worker")
    run.scale_from_zero()
    run.woken_from_zero(minimums)
    run.start_tasks(stack)
    expected_events = sent + sum(expected["retried"].values())
    run.wait_drained(expected_events)
    # The pipeline first: a worker's first heartbeat may still be seconds away.
    run.ingest()
    run.publish_queue_metrics("after the backlog drained")
    run.check_events(expected)
    run.health_checks("while consuming", expect_healthy=True)
    run.stop_tasks()
    run.health_checks("after stopping", expect_healthy=False)
    run.check_protection()
    run.check_kept_messages(expected)
    run.check_iam()
    run.check_metrics_read()
    del cloud


def _client_broker_url(run: Rehearsal) -> str:
    """rediss://:<token>@endpoint:port/0... from the stateful stack's outputs, as the README says."""
    assert run.cloud is not None
    for stack in run.assembly.stacks.values():
        outputs = {
            k: run.assembly.resolve(stack, v["Value"])
            for k, v in stack.template.get("Outputs", {}).items()
            if not k.startswith("PublishOutput")
        }
        url_format = next((str(v) for v in outputs.values() if str(v).startswith("redis")), None)
        secret = next((str(v) for v in outputs.values() if str(v).startswith("arn:aws:secretsmanager")), None)
        if url_format and secret:
            return url_format.replace("<AUTH token>", quote(run.cloud.secret_value(secret), safe=""))
    raise AssemblyError("no stack output gives clients the broker URL format and the AUTH token's secret")


def _app_module(services: list[tuple[Stack, str, dict[str, Any], dict[str, Any]]]) -> str:
    for _, _, _, definition in services:
        command = [str(w) for w in definition["ContainerDefinitions"][0].get("Command", [])]
        for flag in ("-A", "--app"):
            if flag in command:
                return command[command.index(flag) + 1]
    raise AssemblyError("no worker command names its Celery app (-A)")
