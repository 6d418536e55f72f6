"""The notification topic: run emails, under a key that EventBridge and alarms can use."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from core import contracts
from core.contracts import NOTIFICATION_TOPIC_NAME, PRODUCT_PREFIX
from stacks.queues import last_stop_queue

CLOUDWATCH_SERVICE = contracts.CLOUDWATCH_SERVICE
# What CloudWatch needs on a customer-managed key to publish to a topic encrypted with it (SNS
# docs, "Enable compatibility between event sources from AWS services and encrypted topics");
# the AWS-managed SNS key cannot grant it.
KEY_ACTIONS_FOR_PUBLISHERS = ("kms:Decrypt", "kms:GenerateDataKey*")


def alarm_source_conditions(scope: Construct, alarm_name_prefix: str) -> dict:
    """Confused-deputy conditions for CloudWatch: only this account's alarms whose names start
    with the prefix. CloudWatch sends both keys with its SNS and KMS requests for an alarm
    action (re:Post "cloudwatch-receive-sns-for-alarm-trigger"; AWS's MDAA constructs,
    grantCloudWatchAlarmsTopicAccess, condition both grants the same way)."""
    stack = Stack.of(scope)
    return {
        "StringEquals": {"aws:SourceAccount": stack.account},
        "ArnLike": {
            "aws:SourceArn": stack.format_arn(
                service="cloudwatch",
                resource="alarm",
                resource_name=f"{alarm_name_prefix}*",
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
        },
    }


class Notifications(Construct):
    """An SNS topic under a customer-managed KMS key, one email subscription per address."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        emails: Sequence[str],
        alarm_name_prefix: str,
    ) -> None:
        super().__init__(scope, construct_id)

        self.key = kms.Key(
            self,
            "TopicKey",
            description=f"Encrypts the {PRODUCT_PREFIX} notification and operations topics",
            enable_key_rotation=True,
            removal_policy=RemovalPolicy.DESTROY,
        )
        # The operations topic shares this key: CloudWatch publishes the product's alarms.
        self.key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LetTheProductsAlarmsPublishToEncryptedTopics",
                principals=[iam.ServicePrincipal(CLOUDWATCH_SERVICE)],
                actions=list(KEY_ACTIONS_FOR_PUBLISHERS),
                resources=["*"],  # in a key policy, "*" means this key
                conditions=alarm_source_conditions(self, alarm_name_prefix),
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
        # What SNS cannot deliver to a subscriber after its retries waits here (each
        # subscription's redrive policy), for both topics, instead of vanishing.
        self.undelivered = last_stop_queue(
            self, "Undelivered", holds="notifications SNS could not deliver to a subscriber"
        )
        subscribe(self.topic, emails, self.undelivered)


def subscribe(topic: sns.ITopic, emails: Sequence[str], undelivered: sqs.IQueue) -> None:
    """One email subscription per address; what SNS cannot deliver goes to `undelivered`."""
    for email in emails:
        topic.add_subscription(
            subscriptions.EmailSubscription(email, dead_letter_queue=undelivered)
        )
