"""The alarm topic: encrypted with a rotating key CloudWatch may use, TLS only, subscribers from config."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Annotations, Capture, Match

from tests.support.synth import Synthesized, config_with, synth

TOPIC = "AWS::SNS::Topic"
EMAILS = ["oncall@example.com", "celery-team@example.com"]
SLACK = {"workspace_id": "T0123ABCDE", "channel_id": "C0123ABCDE"}


@pytest.fixture(scope="module")
def subscribed(tmp_path_factory: pytest.TempPathFactory) -> Synthesized:
    config = config_with("prod", {"monitoring": {"notify_emails": EMAILS, "slack": SLACK}})
    return synth(config, tmp_path_factory.mktemp("subscribed"))


def test_default_stage_deploys_one_alarm_topic(dev: Synthesized) -> None:
    dev.template("stateless").resource_count_is(TOPIC, 1)


def test_topic_is_encrypted_with_a_customer_managed_key_that_rotates(dev: Synthesized) -> None:
    template = dev.template("stateless")
    key = Capture()
    template.has_resource_properties(TOPIC, {"KmsMasterKeyId": {"Fn::GetAtt": [key, "Arn"]}})
    keys = template.find_resources("AWS::KMS::Key")
    assert keys[key.as_string()]["Properties"]["EnableKeyRotation"] is True


def test_key_policy_lets_cloudwatch_alarms_encrypt_notifications(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::KMS::Key",
        {
            "KeyPolicy": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Action": ["kms:Decrypt", "kms:GenerateDataKey*"],
                            }
                        )
                    ]
                )
            }
        },
    )


def test_topic_policy_refuses_publishing_without_tls(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Action": "sns:Publish",
                                "Principal": "*",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_topic_policy_admits_only_this_accounts_alarms(dev: Synthesized) -> None:
    dev.template("stateless").has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Allow",
                                "Action": "sns:Publish",
                                "Principal": {"Service": "cloudwatch.amazonaws.com"},
                                "Condition": {
                                    "ArnLike": {"aws:SourceArn": Match.any_value()},
                                    "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
                                },
                            }
                        )
                    ]
                )
            }
        },
    )


def test_each_configured_address_gets_an_email_subscription(subscribed: Synthesized) -> None:
    subscriptions = subscribed.template("stateless").find_resources(
        "AWS::SNS::Subscription", {"Properties": {"Protocol": "email"}}
    )
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions.values()) == sorted(EMAILS)


def test_no_subscription_unless_configured(dev: Synthesized) -> None:
    dev.template("stateless").resource_count_is("AWS::SNS::Subscription", 0)


def test_configured_slack_channel_receives_the_topic(subscribed: Synthesized) -> None:
    template = subscribed.template("stateless")
    topic = next(iter(template.find_resources(TOPIC)))
    template.has_resource_properties(
        "AWS::Chatbot::SlackChannelConfiguration",
        {"SlackWorkspaceId": "T0123ABCDE", "SlackChannelId": "C0123ABCDE", "SnsTopicArns": [{"Ref": topic}]},
    )


def test_slack_channel_can_only_read(subscribed: Synthesized) -> None:
    guardrails = Capture()
    subscribed.template("stateless").has_resource_properties(
        "AWS::Chatbot::SlackChannelConfiguration", {"GuardrailPolicies": guardrails}
    )
    [policy] = guardrails.as_array()
    assert policy["Fn::Join"][1][-1] == ":iam::aws:policy/ReadOnlyAccess"


def test_no_slack_channel_unless_configured(dev: Synthesized) -> None:
    dev.template("stateless").resource_count_is("AWS::Chatbot::SlackChannelConfiguration", 0)


def test_topic_without_subscriber_is_a_synth_warning(dev: Synthesized) -> None:
    Annotations.from_stack(dev.stacks.stateless).has_warning(
        "/CeleryFleet-dev-Stateless/Monitoring/Notifications", Match.string_like_regexp("notify nobody")
    )


def test_topic_with_subscribers_raises_no_warning(subscribed: Synthesized) -> None:
    Annotations.from_stack(subscribed.stacks.stateless).has_no_warning(
        "/CeleryFleet-prod-Stateless/Monitoring/Notifications", Match.any_value()
    )
