"""The stack's alarms, each emailing the operations topic: a queue that holds a message (an event
or a notification nothing will deliver by itself), or a function that errs.

Alarms are named `<ALARM_NAME_PREFIX>...`: the operations topic and its key trust CloudWatch for
alarms whose ARN carries the prefix, and for nothing else.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from core.contracts import PRODUCT_PREFIX

ALARM_NAME_PREFIX = f"{PRODUCT_PREFIX}flow-"
ALARM_PERIOD_MINUTES = 5
ALARM_EVALUATION_PERIODS = 1
# One message left in a last-stop queue is one event, or one email, that nobody will handle.
WAITING_MESSAGES_THRESHOLD = 1
# One failed invocation in a period: the handlers re-raise, so each one is a real failure.
ERRORS_THRESHOLD = 1


def waiting_messages_alarm(
    scope: Construct, construct_id: str, *, queue: sqs.IQueue, name: str, what: str,
    topic: sns.ITopic,
) -> cloudwatch.Alarm:  # fmt: skip
    alarm = cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_name=f"{ALARM_NAME_PREFIX}{name}",
        alarm_description=(
            f"{what}. At least one message is waiting in the queue; read it, fix the cause,"
            " then redrive or delete it."
        ),
        metric=queue.metric_approximate_number_of_messages_visible(
            period=Duration.minutes(ALARM_PERIOD_MINUTES), statistic=cloudwatch.Stats.MAXIMUM
        ),
        threshold=WAITING_MESSAGES_THRESHOLD,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=ALARM_EVALUATION_PERIODS,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
    return alarm


def errors_alarm(
    scope: Construct, construct_id: str, *, function: lambda_.IFunction, name: str, what: str,
    topic: sns.ITopic,
) -> cloudwatch.Alarm:  # fmt: skip
    alarm = cloudwatch.Alarm(
        scope,
        construct_id,
        alarm_name=f"{ALARM_NAME_PREFIX}{name}",
        alarm_description=(
            f"{what}: at least one invocation failed in {ALARM_PERIOD_MINUTES} minutes;"
            " see the function's logs."
        ),
        metric=function.metric_errors(
            period=Duration.minutes(ALARM_PERIOD_MINUTES), statistic=cloudwatch.Stats.SUM
        ),
        threshold=ERRORS_THRESHOLD,
        comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods=ALARM_EVALUATION_PERIODS,
        treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
    )
    alarm.add_alarm_action(cloudwatch_actions.SnsAction(topic))
    return alarm
