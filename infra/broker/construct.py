"""The broker construct. ElastiCache has no L2 in aws-cdk-lib, so this wraps the L1 resources."""

from __future__ import annotations

from aws_cdk import Annotations, RemovalPolicy, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from celery_fleet.contract import broker_access_env
from constructs import Construct

from infra.broker.metrics import BrokerMetrics
from infra.broker.parameters import parameter_group_family, parameter_values
from infra.broker.sizing import BrokerSizing
from infra.config import BrokerConfig
from infra.logs import retention
from infra.nag import acknowledge


def slow_log_group_name(stack_name: str) -> str:
    """The broker's slow-log group: under /aws/vendedlogs/, unique per stage by its stack's name."""
    return f"/aws/vendedlogs/elasticache/{stack_name}/slow-log"


class Broker(Construct):
    """A cluster-mode-disabled replication group: one primary, optional replicas, TLS and AUTH.

    Celery's Redis transport runs multi-key commands (BRPOP over several lists, pipelined LLEN) that
    Redis Cluster rejects across slots, so cluster mode stays off and the broker scales up, not out.

    Attributes:
        connections: the broker's security group; admit clients in other stacks with `admit`.
        endpoint: the primary endpoint address (follows failover).
        port: the broker port, as a number.
        secret: the AUTH token; grant read access to whoever connects.
        replication_group: the L1 resource, for escape hatches.
        node_type: the nodes' type, as sized.
        metrics: the nodes' CloudWatch metrics (memory, connections, evictions, ...) and the node
            type's maxclients, for alarms and dashboards.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        vpc: ec2.IVpc,
        subnets: ec2.SubnetSelection,
        config: BrokerConfig,
        sizing: BrokerSizing,
    ) -> None:
        super().__init__(scope, construct_id)

        self.secret = secretsmanager.Secret(
            self,
            "AuthToken",
            description="AUTH token of the Celery broker; workers receive it as an ECS secret.",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                # ElastiCache accepts 16-128 printable characters without @, " or /; letters and digits
                # avoid quoting trouble in broker URLs too.
                password_length=64,
                exclude_punctuation=True,
            ),
            # Deleting the token with the broker still standing would lock every client out.
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.secret,
            "AwsSolutions-SMG4",
            "An ElastiCache AUTH token cannot be rotated by a Secrets Manager rotation alone: the "
            "replication group must be told with AuthTokenUpdateStrategy ROTATE then SET while clients "
            "reconnect. Rotation is a deliberate, documented operation (README, 'Rotating the AUTH token').",
        )

        self.security_group = ec2.SecurityGroup(
            self,
            "SecurityGroup",
            vpc=vpc,
            description="Celery broker: admits only clients granted through connections",
            allow_all_outbound=False,
        )
        self.port = config.port
        self.connections = ec2.Connections(
            security_groups=[self.security_group], default_port=ec2.Port.tcp(config.port)
        )
        for index, sg_id in enumerate(config.client_security_group_ids):
            client = ec2.SecurityGroup.from_security_group_id(self, f"Client{index}", sg_id, mutable=False)
            self.connections.allow_default_port_from(client, "Web app that enqueues tasks (from config)")

        subnet_group = elasticache.CfnSubnetGroup(
            self,
            "SubnetGroup",
            description="Private subnets of the Celery broker",
            subnet_ids=vpc.select_subnets(
                subnet_type=subnets.subnet_type, subnets=subnets.subnets
            ).subnet_ids,
        )

        family = parameter_group_family(config.engine, config.engine_version)
        parameter_group = elasticache.CfnParameterGroup(
            self,
            "Parameters",
            cache_parameter_group_family=family,
            description="Celery broker: noeviction and compressed lists (see infra/broker/parameters.py)",
            properties=parameter_values(),
        )

        self.slow_log = logs.LogGroup(
            self,
            "SlowLog",
            # A physical name, because AWS wants this prefix for vended logs: ElastiCache delivers
            # through the account's CloudWatch Logs resource policy, limited to 5,120 characters;
            # groups under /aws/vendedlogs/ share one wildcard grant instead of a statement each.
            # CloudFormation replaces a log group whose name changes, so a stage deployed before this
            # name loses its old slow-log entries once (the old group is deleted); the broker is only
            # updated, without interruption, and the group's logical ID stays the same.
            log_group_name=slow_log_group_name(Stack.of(self).stack_name),
            retention=retention(config.slow_log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )

        snapshots = config.snapshot_retention_days > 0
        nodes = 1 + config.replicas
        self.replication_group = elasticache.CfnReplicationGroup(
            self,
            "ReplicationGroup",
            replication_group_description="Celery broker (cluster mode disabled)",
            engine=config.engine,
            engine_version=config.engine_version,
            cache_node_type=sizing.node_type,
            num_cache_clusters=nodes,
            automatic_failover_enabled=config.multi_az,
            multi_az_enabled=config.multi_az,
            cache_parameter_group_name=parameter_group.ref,
            cache_subnet_group_name=subnet_group.ref,
            security_group_ids=[self.security_group.security_group_id],
            port=config.port,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            at_rest_encryption_enabled=True,
            # A dynamic reference: CloudFormation resolves it at deploy time, the template holds none.
            auth_token=self.secret.secret_value.unsafe_unwrap(),
            auto_minor_version_upgrade=True,
            preferred_maintenance_window=config.maintenance_window,
            snapshot_retention_limit=config.snapshot_retention_days,
            snapshot_window=config.snapshot_window if snapshots else None,
            log_delivery_configurations=[
                elasticache.CfnReplicationGroup.LogDeliveryConfigurationRequestProperty(
                    destination_type="cloudwatch-logs",
                    log_format="json",
                    log_type="slow-log",
                    destination_details=elasticache.CfnReplicationGroup.DestinationDetailsProperty(
                        cloud_watch_logs_details=elasticache.CfnReplicationGroup.CloudWatchLogsDestinationDetailsProperty(
                            log_group=self.slow_log.log_group_name
                        )
                    ),
                )
            ],
        )
        # Queued tasks are data: deleting the stack keeps a final snapshot.
        self.replication_group.apply_removal_policy(RemovalPolicy.SNAPSHOT)

        self.endpoint = self.replication_group.attr_primary_end_point_address
        self.node_type = sizing.node_type
        self.metrics = BrokerMetrics(
            replication_group_id=self.replication_group.ref,
            nodes=nodes,
            node_type=sizing.node_type,
        )

        if config.multi_az is False:
            acknowledge(
                self.replication_group,
                "AwsSolutions-AEC4",
                "Single-node broker chosen in this stage's config (multi_az = false): no failover, "
                "accepted for non-production stages.",
            )
        # cdk-nag's default-port rule inspects the redis engine only; valkey is not flagged.
        if config.engine == "redis" and config.port == 6379:
            acknowledge(
                self.replication_group,
                "AwsSolutions-AEC5",
                "The default port hides nothing from a client inside the VPC; access is limited by "
                "the security group, TLS and the AUTH token. Set broker.port to change it.",
            )

    def lambda_environment(self) -> dict[str, str]:
        """What a Lambda in the VPC needs to reach the broker: endpoint, port and the AUTH token's secret.

        Pair it with `connect_function`, which lets the function read that secret and reach the port.
        """
        return {
            broker_access_env.BROKER_HOST: self.endpoint,
            broker_access_env.BROKER_PORT: str(self.port),
            broker_access_env.BROKER_AUTH_SECRET_ARN: self.secret.secret_arn,
        }

    def connect_function(self, function: lambda_.Function, description: str) -> None:
        """Let `function` read the AUTH token and reach the broker port (see `admit`)."""
        self.secret.grant_read(function)
        self.admit(function, description)

    def admit(self, client: ec2.IConnectable, description: str) -> None:
        """Allow `client` to reach the broker port.

        Called from the client's side so that CDK puts the ingress rule in the client's stack: the
        stateful stack then never depends on the stateless one, and a new worker group changes only
        the stateless stack.
        """
        client.connections.allow_to_default_port(self.connections, description)
        # The egress half of that rule is dropped on clients that already allow all outbound traffic
        # (every client here); CDK warns about it at each synth, which would only be noise in review.
        for group in client.connections.security_groups:
            Annotations.of(group).acknowledge_warning(
                "@aws-cdk/aws-ec2:ipv4IgnoreEgressRule",
                "The client allows all outbound traffic; the broker's ingress rule is what admits it.",
            )
