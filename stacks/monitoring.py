"""Operations alarms: a dead-letter queue that holds an event, or a Lambda that errs, emails the
operators through a topic of their own.

Why a separate operations topic rather than the run notification topic: a CloudWatch alarm
action publishes without message attributes, so it cannot carry the `kind` attribute the run
emails are filtered on; any subscriber with a `kind` filter policy would silently drop every
alarm. The alarms are also for whoever runs the stack, not for everyone who uploads data. The
topic shares the notification topic's key, whose policy already lets CloudWatch use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from runflow.contracts import PRODUCT_PREFIX

ALARM_PERIOD_MINUTES = 5
ALARM_EVALUATION_PERIODS = 1
# One message left in a dead-letter queue is one event that never reached its run record.
DEAD_LETTER_MESSAGES_THRESHOLD = 1
# One failed invocation in a period: the handlers re-raise, so each one is a real failure.
FUNCTION_ERRORS_THRESHOLD = 1


@dataclass(frozen=True)
class WatchedQueue:
    alarm_id: str
    queue: sqs.IQueue
    what: str  # for the alarm's description


@dataclass(frozen=True)
class WatchedFunction:
    alarm_id: str
    function: lambda_.IFunction
    what: str


class Monitoring(Construct):
    """The operations topic, its email subscriptions, and one alarm per queue and function."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        key: kms.IKey,
        emails: Sequence[str],
        queues: Sequence[WatchedQueue],
        functions: Sequence[WatchedFunction],
    ) -> None:
        super().__init__(scope, construct_id)

        self.topic = sns.Topic(
            self,
            "OperationsTopic",
            display_name=f"{PRODUCT_PREFIX} operations",
            master_key=key,
            enforce_ssl=True,
        )
        for email in emails:
            self.topic.add_subscription(subscriptions.EmailSubscription(email))
        notify = cloudwatch_actions.SnsAction(self.topic)
        period = Duration.minutes(ALARM_PERIOD_MINUTES)

        self.alarms: dict[str, cloudwatch.Alarm] = {}
        for watched in queues:
            self.alarms[watched.alarm_id] = cloudwatch.Alarm(
                self,
                watched.alarm_id,
                alarm_description=(
                    f"{watched.what}: at least one message is waiting in the queue; read it, "
                    "fix the cause, then redrive or delete it."
                ),
                metric=watched.queue.metric_approximate_number_of_messages_visible(
                    period=period, statistic=cloudwatch.Stats.MAXIMUM
                ),
                threshold=DEAD_LETTER_MESSAGES_THRESHOLD,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=ALARM_EVALUATION_PERIODS,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        for watched in functions:
            self.alarms[watched.alarm_id] = cloudwatch.Alarm(
                self,
                watched.alarm_id,
                alarm_description=(
                    f"{watched.what}: at least one invocation failed in "
                    f"{ALARM_PERIOD_MINUTES} minutes; see the function's logs."
                ),
                metric=watched.function.metric_errors(
                    period=period, statistic=cloudwatch.Stats.SUM
                ),
                threshold=FUNCTION_ERRORS_THRESHOLD,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=ALARM_EVALUATION_PERIODS,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            )
        for alarm in self.alarms.values():
            alarm.add_alarm_action(notify)
