"""The notification topic, its key and its subscriptions."""

from __future__ import annotations

from aws_cdk.assertions import Match

from tests.infra.cfn_text import as_list
from tests.infra.variants import EMAILS


def test_topic_is_encrypted_with_a_rotating_customer_managed_key(default_synth, template):
    # Given the topic's key
    key_id = default_synth.logical_id(default_synth.stack.notifications.key)
    # Then the topic uses it and it rotates
    template.has_resource_properties(
        "AWS::SNS::Topic", {"KmsMasterKeyId": {"Fn::GetAtt": [key_id, "Arn"]}}
    )
    assert default_synth.resources[key_id]["Properties"]["EnableKeyRotation"] is True


def test_eventbridge_and_cloudwatch_may_use_the_topic_key(default_synth):
    # Given the key policy
    key_id = default_synth.logical_id(default_synth.stack.notifications.key)
    statements = default_synth.resources[key_id]["Properties"]["KeyPolicy"]["Statement"]
    # When collecting the service principals allowed to encrypt with it
    services = {
        service
        for statement in statements
        if "kms:GenerateDataKey*" in as_list(statement["Action"])
        and "Service" in statement.get("Principal", {})
        for service in as_list(statement["Principal"]["Service"])
    }
    # Then EventBridge and CloudWatch alarms are among them
    assert {"events.amazonaws.com", "cloudwatch.amazonaws.com"} <= services


def test_topic_accepts_publishing_over_tls_only(template):
    template.has_resource_properties(
        "AWS::SNS::TopicPolicy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        Match.object_like(
                            {
                                "Effect": "Deny",
                                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
                            }
                        )
                    ]
                )
            }
        },
    )


def test_one_email_subscription_per_configured_address(default_synth):
    # Given two addresses in the context, and the run notification topic's subscriptions
    topic_id = default_synth.logical_id(default_synth.stack.notifications.topic)
    subscriptions = [
        s
        for s in default_synth.of_type("AWS::SNS::Subscription").values()
        if s["Properties"]["TopicArn"] == {"Ref": topic_id}
    ]
    # Then each address has exactly one email subscription
    assert sorted(s["Properties"]["Endpoint"] for s in subscriptions) == sorted(EMAILS)
    assert {s["Properties"]["Protocol"] for s in subscriptions} == {"email"}


def test_no_subscription_when_no_address_is_configured(no_email_synth):
    # Given no address (and so no operations address either), then the run notification and
    # operations topics exist but nobody is subscribed to them
    no_email_synth.template.resource_count_is("AWS::SNS::Topic", 2)
    no_email_synth.template.resource_count_is("AWS::SNS::Subscription", 0)
