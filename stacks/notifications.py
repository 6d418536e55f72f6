"""The notification topic: run emails, under a key that EventBridge and alarms can use."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from core.contracts import NOTIFICATION_TOPIC_NAME, PRODUCT_PREFIX

# AWS services that will publish to the topic (EventBridge rules, CloudWatch alarms). They can
# only publish to an encrypted topic whose key lets them use it; the AWS-managed SNS key can't.
PUBLISHING_SERVICES = ("events.amazonaws.com", "cloudwatch.amazonaws.com")
KEY_ACTIONS_FOR_PUBLISHERS = ("kms:Decrypt", "kms:GenerateDataKey*")


class Notifications(Construct):
    """An SNS topic under a customer-managed KMS key, one email subscription per address."""

    def __init__(self, scope: Construct, construct_id: str, *, emails: Sequence[str]) -> None:
        super().__init__(scope, construct_id)

        self.key = kms.Key(
            self,
            "TopicKey",
            description=f"Encrypts the {PRODUCT_PREFIX} notification topic",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowAwsServicesToPublishToTheTopic",
                principals=[iam.ServicePrincipal(service) for service in PUBLISHING_SERVICES],
                actions=list(KEY_ACTIONS_FOR_PUBLISHERS),
                resources=["*"],  # in a key policy, "*" means this key
            )
        )

        self.topic = sns.Topic(
            self,
            "Topic",
            topic_name=NOTIFICATION_TOPIC_NAME,
            display_name=f"{PRODUCT_PREFIX} runs",
            master_key=self.key,
            enforce_ssl=True,
        )
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
