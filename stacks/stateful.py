"""The stage's stateful stack: the network and the broker holding queued tasks."""

from __future__ import annotations

from typing import Any

from aws_cdk import CfnOutput, Fn, Stack, Token
from constructs import Construct

from infra.broker import Broker, BrokerSizing
from infra.config import StageConfig
from infra.network import Network
from infra.task_events import TaskEventKey


class StatefulStack(Stack):
    """VPC (when created), broker and the task-event signing key. Termination-protected unless the
    stage opts out.

    Its resources' logical IDs are an API: renaming a construct here replaces the broker and loses
    every queued task. tests/infra/test_logical_ids.py pins them.
    """

    def __init__(
        self, scope: Construct, construct_id: str, *, config: StageConfig, sizing: BrokerSizing, **kwargs: Any
    ) -> None:
        super().__init__(scope, construct_id, termination_protection=config.protect_stateful, **kwargs)

        self.network = Network(self, "Network", config=config.network)
        self.broker = Broker(
            self,
            "Broker",
            vpc=self.network.vpc,
            subnets=self.network.private_subnets,
            config=config.broker,
            sizing=sizing,
        )
        # Here, not with the ingester: a new key would void every running worker's signature.
        self.task_event_key = TaskEventKey(self, "TaskEventKey")

        port = Token.as_string(self.broker.port)
        CfnOutput(
            self, "BrokerEndpoint", value=self.broker.endpoint, description="Primary endpoint of the broker"
        )
        CfnOutput(self, "BrokerPort", value=port, description="Broker port (TLS only)")
        CfnOutput(
            self,
            "BrokerSecretArn",
            value=self.broker.secret.secret_arn,
            description="Secrets Manager secret holding the broker AUTH token",
        )
        CfnOutput(
            self,
            "BrokerSecurityGroupId",
            value=self.broker.security_group.security_group_id,
            description="Broker security group; admit clients with broker.client_security_group_ids",
        )
        CfnOutput(
            self,
            "CeleryBrokerUrlFormat",
            value=Fn.join(
                "", ["rediss://:<AUTH token>@", self.broker.endpoint, ":", port, "/0?ssl_cert_reqs=required"]
            ),
            description="Celery broker_url for clients; replace <AUTH token> with the secret's value",
        )
