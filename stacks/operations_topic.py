"""The operations topic: where every alarm of the stack emails whoever runs it.

Why not the run notification topic: a CloudWatch alarm action publishes without message
attributes, so it cannot carry the `kind` attribute the run emails are filtered on; any
subscriber with a `kind` filter policy would silently drop every alarm. The alarms are also for
whoever runs the stack, not for everyone who uploads data. The topic shares the notification
topic's key, whose policy already lets CloudWatch use it.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import aws_kms as kms
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from core.contracts import PRODUCT_PREFIX


class OperationsTopic(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, key: kms.IKey, emails: Sequence[str]
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(
            self,
            "Topic",
            display_name=f"{PRODUCT_PREFIX} operations",
            master_key=key,
            enforce_ssl=True,
        )
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
