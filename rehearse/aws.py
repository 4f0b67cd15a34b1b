"""AWS on loopback: moto in server mode, the stage's resources created from its templates."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import secrets
import string
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
from moto.server import ThreadedMotoServer

from rehearse.assembly import ACCOUNT, REGION, Assembly, Physical

# Credentials moto accepts; nothing leaves loopback.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Secrets Manager's punctuation set for GenerateSecretString.
PUNCTUATION = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"


def generate_secret_string(spec: dict[str, Any]) -> str:
    """A value as Secrets Manager's GenerateSecretString would make it from the template's spec."""
    length = int(spec.get("PasswordLength", 32))
    pools = []
    if not spec.get("ExcludeUppercase"):
        pools.append(string.ascii_uppercase)
    if not spec.get("ExcludeLowercase"):
        pools.append(string.ascii_lowercase)
    if not spec.get("ExcludeNumbers"):
        pools.append(string.digits)
    if not spec.get("ExcludePunctuation"):
        pools.append(PUNCTUATION)
    if spec.get("IncludeSpace"):
        pools.append(" ")
    excluded = set(str(spec.get("ExcludeCharacters", "")))
    pools = [pool for pool in ("".join(c for c in pool if c not in excluded) for pool in pools) if pool]
    if not pools:
        raise ValueError(f"GenerateSecretString {spec}: no character left to generate from")
    alphabet = "".join(pools)
    while True:
        value = "".join(secrets.choice(alphabet) for _ in range(length))
        # RequireEachIncludedType defaults to true.
        if not spec.get("RequireEachIncludedType", True) or all(set(pool) & set(value) for pool in pools):
            break
    key = spec.get("GenerateStringKey")
    if key:
        document = json.loads(spec.get("SecretStringTemplate", "{}"))
        document[key] = value
        return json.dumps(document)
    return value


@dataclass
class Cloud:
    """moto on 127.0.0.1 and the clients the rehearsal itself uses."""

    server: ThreadedMotoServer
    endpoint: str
    secrets_by_arn: dict[str, str] = field(default_factory=dict)

    @classmethod
    def start(cls, port: int) -> Cloud:
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        endpoint = f"http://127.0.0.1:{port}"
        # moto's backends live in this process: an earlier rehearsal in it left its resources behind.
        urllib.request.urlopen(
            urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"), timeout=10
        ).close()
        return cls(server=server, endpoint=endpoint)

    def stop(self) -> None:
        self.server.stop()

    def env(self) -> dict[str, str]:
        """What a process needs to reach moto as it would reach AWS."""
        return {
            **FAKE_CREDENTIALS,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
        }

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            aws_session_token="testing",
        )

    def deploy(self, assembly: Assembly) -> list[str]:  # noqa: PLR0912, PLR0915 (one branch per resource type)
        """Create the resources the rehearsal runs against; returns what it created, one line each."""
        created: list[str] = []
        sm, logs, sqs = self.client("secretsmanager"), self.client("logs"), self.client("sqs")
        for stack in assembly.stacks.values():
            short = stack.name.replace("CeleryFleet-", "")
            for logical, resource in stack.resources.items():
                kind, props = resource.get("Type", ""), resource.get("Properties", {})
                key = (stack.name, logical)
                if kind == "AWS::SecretsManager::Secret":
                    value = props.get("SecretString")
                    if value is None:
                        value = generate_secret_string(props.get("GenerateSecretString", {}))
                    arn = sm.create_secret(Name=f"{short}-{logical}", SecretString=value)["ARN"]
                    self.secrets_by_arn[arn] = value
                    assembly.physical[key] = Physical(ref=arn, attributes={"Id": arn})
                    created.append(
                        f"secret {logical} ({len(value)} characters, generated as the template says)"
                    )
                elif kind == "AWS::Logs::LogGroup":
                    name = props.get("LogGroupName") or f"/rehearsal/{short}/{logical}"
                    logs.create_log_group(logGroupName=name)
                    arn = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}:*"
                    assembly.physical[key] = Physical(ref=name, attributes={"Arn": arn})
                    created.append(f"log group {name}")
                elif kind == "AWS::SQS::Queue":
                    name = props.get("QueueName") or f"{short}-{logical}"
                    url = sqs.create_queue(QueueName=name)["QueueUrl"]
                    arn = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
                    assembly.physical[key] = Physical(
                        ref=url, attributes={"Arn": arn, "QueueName": name, "QueueUrl": url}
                    )
                    created.append(f"queue {name}")
                elif kind == "AWS::Lambda::Function":
                    name = props.get("FunctionName") or f"{short}-{logical}"
                    arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
                    assembly.physical[key] = Physical(ref=name, attributes={"Arn": arn})
                elif kind == "AWS::IAM::Role":
                    name = props.get("RoleName") or f"{short}-{logical}"
                    assembly.physical[key] = Physical(
                        ref=name, attributes={"Arn": f"arn:aws:iam::{ACCOUNT}:role/{name}", "RoleId": name}
                    )
                elif kind == "AWS::ECS::Cluster":
                    name = props.get("ClusterName") or f"{short}-{logical}"
                    assembly.physical[key] = Physical(ref=name, attributes={"Arn": name})
                elif kind == "AWS::ECS::Service":
                    name = props.get("ServiceName") or f"{short}-{logical}"
                    cluster_ref = props.get("Cluster")
                    cluster = str(cluster_ref)
                    if isinstance(cluster_ref, dict) and cluster_ref.get("Ref") in stack.resources:
                        own = stack.resources[cluster_ref["Ref"]].get("Properties", {})
                        cluster = own.get("ClusterName") or f"{short}-{cluster_ref['Ref']}"
                    arn = f"arn:aws:ecs:{REGION}:{ACCOUNT}:service/{cluster}/{name}"
                    assembly.physical[key] = Physical(ref=arn, attributes={"Name": name, "ServiceArn": arn})
                elif kind == "AWS::KMS::Key":
                    metadata = self.client("kms").create_key(
                        Description=str(props.get("Description", logical))
                    )
                    key_id, arn = metadata["KeyMetadata"]["KeyId"], metadata["KeyMetadata"]["Arn"]
                    assembly.physical[key] = Physical(ref=key_id, attributes={"Arn": arn, "KeyId": key_id})
                elif kind == "AWS::S3::Bucket":
                    name = props.get("BucketName") or f"{short}-{logical}".lower()[:63]
                    self.client("s3").create_bucket(Bucket=name)
                    arn = f"arn:aws:s3:::{name}"
                    assembly.physical[key] = Physical(ref=name, attributes={"Arn": arn, "DomainName": name})
                    created.append(f"bucket {name}")
                elif kind == "AWS::CloudWatch::Alarm":
                    name = props.get("AlarmName") or f"{short}-{logical}"
                    arn = f"arn:aws:cloudwatch:{REGION}:{ACCOUNT}:alarm:{name}"
                    assembly.physical[key] = Physical(ref=name, attributes={"Arn": arn})
                elif kind == "AWS::SNS::Topic":
                    arn = f"arn:aws:sns:{REGION}:{ACCOUNT}:{short}-{logical}"
                    assembly.physical[key] = Physical(ref=arn, attributes={"TopicArn": arn})
        return created

    def deploy_control_plane(self, assembly: Assembly) -> list[str]:
        """ECS clusters and services, scalable targets and alarms, for code that reads or changes them.

        Run after the broker's endpoint is known (a task definition's environment refers to it). A
        service starts at the lowest count its scalable target allows: a group that scales to zero
        is rehearsed idle, with no worker, the state a backlog finds it in.
        """
        created: list[str] = []
        ecs, scaling, cloudwatch = (
            self.client("ecs"),
            self.client("application-autoscaling"),
            self.client("cloudwatch"),
        )
        for stack in assembly.stacks.values():
            targets = [
                (str(assembly.resolve(stack, props["ResourceId"])), props)
                for _, props in stack.of_type("AWS::ApplicationAutoScaling::ScalableTarget")
            ]
            minimums = {resource_id: int(props["MinCapacity"]) for resource_id, props in targets}
            for logical, _ in stack.of_type("AWS::ECS::Cluster"):
                ecs.create_cluster(clusterName=str(assembly.resolve(stack, {"Ref": logical})))
            for logical, props in stack.of_type("AWS::ECS::Service"):
                cluster = str(assembly.resolve(stack, props["Cluster"]))
                name = str(assembly.resolve(stack, {"Fn::GetAtt": [logical, "Name"]}))
                definition = stack.resources[props["TaskDefinition"]["Ref"]]["Properties"]
                family = str(definition.get("Family", logical))
                containers = [
                    {
                        "name": c.get("Name", "container"),
                        "image": "rehearsal",
                        "memory": int(definition.get("Memory", 512)),
                    }
                    for c in definition.get("ContainerDefinitions", [])
                ]
                ecs.register_task_definition(family=family, containerDefinitions=containers)
                desired = minimums.get(f"service/{cluster}/{name}", int(props.get("DesiredCount", 1)))
                ecs.create_service(
                    cluster=cluster, serviceName=name, taskDefinition=family, desiredCount=desired
                )
                created.append(f"ECS service {name} (desired {desired})")
            for resource_id, props in targets:
                scaling.register_scalable_target(
                    ServiceNamespace=props["ServiceNamespace"],
                    ResourceId=resource_id,
                    ScalableDimension=props["ScalableDimension"],
                    MinCapacity=int(props["MinCapacity"]),
                    MaxCapacity=int(props["MaxCapacity"]),
                )
                created.append(
                    f"scalable target {resource_id} ({props['MinCapacity']}-{props['MaxCapacity']})"
                )
            for logical, props in stack.of_type("AWS::CloudWatch::Alarm"):
                name = str(assembly.resolve(stack, {"Ref": logical}))
                cloudwatch.put_metric_alarm(
                    AlarmName=name,
                    ComparisonOperator=props["ComparisonOperator"],
                    EvaluationPeriods=int(props.get("EvaluationPeriods", 1)),
                    Threshold=float(props.get("Threshold", 0)),
                    MetricName=str(props.get("MetricName", "RehearsalComposite")),
                    Namespace=str(props.get("Namespace", "Rehearsal")),
                    Period=int(props.get("Period", 60)),
                    Statistic="Maximum",
                )
        return created

    def secret_value(self, secret_id: str) -> str:
        """A secret's value as ECS would inject it: `ARN` or `ARN:json-key:version-stage:version-id`."""
        parts = secret_id.split(":")
        arn, json_key = (":".join(parts[:7]), parts[7]) if len(parts) > 7 else (secret_id, "")
        value = str(self.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"])
        return str(json.loads(value)[json_key]) if json_key else value

    def secret_arn(self, secret_id: str) -> str:
        for arn in self.secrets_by_arn:
            if secret_id == arn or arn.split(":secret:", 1)[-1].startswith(secret_id):
                return arn
        return secret_id

    def log_events(self, group: str) -> Iterator[tuple[str, int, str]]:
        """Every event of `group` as (stream, timestamp ms, message), stream by stream."""
        logs = self.client("logs")
        for stream in logs.describe_log_streams(logGroupName=group).get("logStreams", []):
            name = stream["logStreamName"]
            for event in logs.get_log_events(logGroupName=group, logStreamName=name, startFromHead=True)[
                "events"
            ]:
                yield name, int(event["timestamp"]), str(event["message"])

    def put_log_lines(self, group: str, stream: str, lines: list[tuple[int, str]]) -> None:
        logs = self.client("logs")
        with contextlib.suppress(logs.exceptions.ResourceAlreadyExistsException):
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        for start in range(0, len(lines), 1000):
            batch = [{"timestamp": ts, "message": message} for ts, message in lines[start : start + 1000]]
            logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=batch)

    def metrics(self, namespace: str) -> set[tuple[str, frozenset[tuple[str, str]]]]:
        """Every (metric name, dimensions) CloudWatch holds in `namespace`."""
        found = set()
        paginator = self.client("cloudwatch").get_paginator("list_metrics")
        for page in paginator.paginate(Namespace=namespace):
            for metric in page["Metrics"]:
                dimensions = frozenset((d["Name"], d["Value"]) for d in metric.get("Dimensions", []))
                found.add((metric["MetricName"], dimensions))
        return found

    def metric_sum(self, namespace: str, name: str, dimensions: dict[str, str], stat: str = "Sum") -> float:
        now = dt.datetime.now(dt.UTC)
        answer = self.client("cloudwatch").get_metric_statistics(
            Namespace=namespace,
            MetricName=name,
            Dimensions=[{"Name": k, "Value": v} for k, v in dimensions.items()],
            StartTime=now - dt.timedelta(hours=1),
            EndTime=now + dt.timedelta(minutes=5),
            Period=3600,
            Statistics=[stat],
        )
        points = answer.get("Datapoints", [])
        if not points:
            return 0.0
        if stat == "Maximum":
            return max(float(p[stat]) for p in points)
        return sum(float(p[stat]) for p in points)


def emf_to_metric_data(document: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """PutMetricData payloads (namespace, metric data) for one EMF document, as CloudWatch extracts it."""
    meta = document.get("_aws")
    if not isinstance(meta, dict):
        return []
    timestamp = meta.get("Timestamp")
    out: list[tuple[str, list[dict[str, Any]]]] = []
    for directive in meta.get("CloudWatchMetrics", []):
        namespace = directive["Namespace"]
        data: list[dict[str, Any]] = []
        for dimension_set in directive.get("Dimensions", [[]]) or [[]]:
            dimensions = [{"Name": d, "Value": str(document[d])} for d in dimension_set if d in document]
            if len(dimensions) != len(dimension_set):
                continue  # CloudWatch drops a dimension set whose values are missing
            for metric in directive.get("Metrics", []):
                raw = document.get(metric["Name"])
                if raw is None:
                    continue
                values = raw if isinstance(raw, list) else [raw]
                datum: dict[str, Any] = {
                    "MetricName": metric["Name"],
                    "Dimensions": dimensions,
                    "Values": [float(v) for v in values],
                    "Unit": metric.get("Unit", "None"),
                }
                if metric.get("StorageResolution"):
                    datum["StorageResolution"] = int(metric["StorageResolution"])
                if timestamp is not None:
                    datum["Timestamp"] = dt.datetime.fromtimestamp(int(timestamp) / 1000, dt.UTC)
                data.append(datum)
        if data:
            out.append((namespace, data))
    return out
