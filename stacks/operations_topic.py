"""The operations topic: where every alarm of the stack emails whoever runs it.

Why not the run notification topic: a CloudWatch alarm action publishes without message
attributes, so it cannot carry the `kind` attribute the run emails are filtered on; any
subscriber with a `kind` filter policy would silently drop every alarm. The alarms are also for
whoever runs the stack, not for everyone who uploads data. The topic shares the notification
topic's key, whose policy already lets CloudWatch use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from core.contracts import PRODUCT_PREFIX
from stacks.alarms import waiting_messages_alarm
from stacks.notifications import CLOUDWATCH_SERVICE, alarm_source_conditions, subscribe


class OperationsTopic(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        emails: Sequence[str],
        alarm_name_prefix: str,
        undelivered: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=f"{PRODUCT_PREFIX} operations",
            master_key=key,
            enforce_ssl=True,
        )
        # Without this, every alarm fails to notify: "... is not authorized to perform:
        # SNS:Publish" (re:Post "cloudwatch-receive-sns-for-alarm-trigger").
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="LetTheProductsAlarmsPublish",
                principals=[iam.ServicePrincipal(CLOUDWATCH_SERVICE)],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions=alarm_source_conditions(self, alarm_name_prefix),
            )
        )
        subscribe(self.topic, emails, undelivered)
        self.undelivered_alarm = waiting_messages_alarm(
            self,
            "UndeliveredAlarm",
            queue=undelivered,
            name="undelivered-notifications",
            what="SNS could not deliver a run notification or an alarm to a subscriber",
            topic=self.topic,
        )
