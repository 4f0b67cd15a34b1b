"""The stage's alarm topic: KMS-encrypted, TLS only, with email and optional Slack subscribers."""

from __future__ import annotations

from aws_cdk import Annotations, ArnFormat, Aws, Duration, Fn, RemovalPolicy, Stack
from aws_cdk import aws_chatbot as chatbot
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from infra.config.monitoring import SlackChannelConfig

CLOUDWATCH = "cloudwatch.amazonaws.com"


class AlarmTopic(Construct):
    """An SNS topic every alarm of the stage notifies.

    Encrypted with its own customer-managed key (rotated yearly) whose policy lets CloudWatch alarms
    encrypt what they publish; the topic policy admits only this account's alarms and only over TLS.
    Each address in `emails` is subscribed (SNS mails a confirmation link first); `slack`, when given,
    adds an AWS Chatbot channel with a read-only guardrail.

    Attributes:
        topic: the SNS topic.
        key: its KMS key.
        slack_channel: the Chatbot channel configuration, when configured.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        stage: str,
        emails: list[str],
        slack: SlackChannelConfig | None,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.key = kms.Key(
            self,
            "Key",
            description=f"celery-fleet {stage}: encrypts alarm notifications on their SNS topic",
            enable_key_rotation=True,
            # SNS keeps a message only until it is delivered: nothing outlives the topic under this key,
            # so it may go with the stack (after KMS's shortest waiting period).
            removal_policy=RemovalPolicy.DESTROY,
            pending_window=Duration.days(7),
        )
        # What CloudWatch needs to publish to an encrypted topic (SNS developer guide, "Enable
        # compatibility between event sources from AWS services and encrypted topics"). The key
        # protects this topic alone, and the topic policy below decides which alarms may publish.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsToEncryptNotifications",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                # In a key policy "*" means this key.
                resources=["*"],
            )
        )

        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=f"celery-fleet {stage} alarms",
            master_key=self.key,
            enforce_ssl=True,
        )
        # The topic policy CDK writes for enforce_ssl replaces SNS's default one, so CloudWatch is
        # admitted explicitly, for alarms of this account and region only.
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowThisAccountsAlarmsToPublish",
                principals=[iam.ServicePrincipal(CLOUDWATCH)],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name="*",
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    },
                    "StringEquals": {"aws:SourceAccount": Aws.ACCOUNT_ID},
                },
            )
        )

        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))

        self.slack_channel: chatbot.SlackChannelConfiguration | None = None
        if slack is not None:
            self.slack_channel = chatbot.SlackChannelConfiguration(
                self,
                "Slack",
                # Chatbot configurations are named per account, across regions: the region keeps two
                # deployments of one stage apart.
                slack_channel_configuration_name=Fn.join("-", ["celery-fleet", stage, Aws.REGION]),
                slack_workspace_id=slack.workspace_id,
                slack_channel_id=slack.channel_id,
                notification_topics=[self.topic],
                # Without a guardrail Chatbot applies AdministratorAccess to whatever the channel runs.
                guardrail_policies=[iam.ManagedPolicy.from_aws_managed_policy_name("ReadOnlyAccess")],
                logging_level=chatbot.LoggingLevel.ERROR,
            )

        if not emails and slack is None:
            Annotations.of(self).add_warning_v2(
                "celery-fleet:no-alarm-subscribers",
                f"Stage {stage!r}: the alarm topic has no subscriber, so alarms notify nobody. Set "
                "monitoring.notify_emails or monitoring.slack in the stage's config.",
            )
