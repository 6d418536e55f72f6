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


def _source_conditions(prefix: str = "mnistflow-") -> dict:
    return {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {
            "aws:SourceArn": {
                "Fn::Join": [
                    "",
                    [
                        "arn:",
                        {"Ref": "AWS::Partition"},
                        ":cloudwatch:",
                        {"Ref": "AWS::Region"},
                        ":",
                        {"Ref": "AWS::AccountId"},
                        f":alarm:{prefix}*",
                    ],
                ]
            }
        },
    }


def test_only_the_products_alarms_may_use_the_topic_key(default_synth):
    # Given the key policy's statements for AWS services
    key_id = default_synth.logical_id(default_synth.stack.notifications.key)
    statements = default_synth.resources[key_id]["Properties"]["KeyPolicy"]["Statement"]
    services = [s for s in statements if "Service" in s.get("Principal", {})]
    # Then CloudWatch alone, for this account's mnistflow- alarms, may encrypt with it (nothing
    # of EventBridge's publishes to the topics)
    (cloudwatch,) = services
    assert cloudwatch["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert set(as_list(cloudwatch["Action"])) == {"kms:Decrypt", "kms:GenerateDataKey*"}
    assert cloudwatch["Condition"] == _source_conditions()


def test_only_the_products_alarms_may_publish_to_the_operations_topic(default_synth):
    # Without an allow, every alarm action fails: "not authorized to perform: SNS:Publish"
    topic_id = default_synth.logical_id(default_synth.stack.operations.topic)
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in default_synth.of_type("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [{"Ref": topic_id}]
    ]
    (allow,) = [s for s in policy if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert allow["Action"] == "sns:Publish" and allow["Resource"] == {"Ref": topic_id}
    assert allow["Condition"] == _source_conditions()
    # And every alarm is named so that it matches
    names = [
        a["Properties"]["AlarmName"]
        for a in default_synth.of_type("AWS::CloudWatch::Alarm").values()
    ]
    assert names and all(name.startswith("mnistflow-") for name in names)


def test_what_sns_cannot_deliver_to_a_subscriber_waits_in_a_queue(default_synth):
    queue_id = default_synth.logical_id(default_synth.stack.notifications.undelivered)
    subscriptions = [
        s["Properties"] for s in default_synth.of_type("AWS::SNS::Subscription").values()
    ]
    assert subscriptions
    for subscription in subscriptions:
        assert subscription["RedrivePolicy"] == {
            "deadLetterTargetArn": {"Fn::GetAtt": [queue_id, "Arn"]}
        }


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
