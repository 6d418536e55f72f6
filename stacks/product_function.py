"""A Lambda function of this product: the one shared asset on Python 3.12, traced, JSON logs,
its log group, its failure queue, its alarms, and the cdk-nag reasons they all need.

Every function is built here so they differ only in handler, sizing and configuration.

The failure queue is the function's on-failure destination for asynchronous invocations (S3,
EventBridge): the destination record carries the original event *and* why it failed (error
type, message, retry count), and it also receives events that expired before they could run.
An EventBridge target may use the same queue as its dead-letter queue (`failed_events`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core import contracts
from core.settings import environment

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
BASIC_EXECUTION_POLICY = "service-role/AWSLambdaBasicExecutionRole"
VPC_EXECUTION_POLICY = "service-role/AWSLambdaVPCAccessExecutionRole"
FAILED_EVENTS_RETENTION_DAYS = 14
# Asynchronous invocations: retried by Lambda, then sent to the failure queue.
RETRY_ATTEMPTS = 2
MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
ALARM_PERIOD_MINUTES = 5
ALARM_EVALUATION_PERIODS = 1
# One message left in a failure queue is one event that was never handled.
FAILED_EVENTS_THRESHOLD = 1
# One failed invocation in a period: the handlers re-raise, so each one is a real failure.
ERRORS_THRESHOLD = 1

# The retention periods CloudWatch Logs accepts, in days.
_RETENTION_BY_DAYS = {
    1: logs.RetentionDays.ONE_DAY,
    3: logs.RetentionDays.THREE_DAYS,
    5: logs.RetentionDays.FIVE_DAYS,
    7: logs.RetentionDays.ONE_WEEK,
    14: logs.RetentionDays.TWO_WEEKS,
    30: logs.RetentionDays.ONE_MONTH,
    60: logs.RetentionDays.TWO_MONTHS,
    90: logs.RetentionDays.THREE_MONTHS,
    180: logs.RetentionDays.SIX_MONTHS,
    365: logs.RetentionDays.ONE_YEAR,
    731: logs.RetentionDays.TWO_YEARS,
    1827: logs.RetentionDays.FIVE_YEARS,
    3653: logs.RetentionDays.TEN_YEARS,
}


def log_retention(days: int) -> logs.RetentionDays:
    """The shortest CloudWatch retention that keeps logs at least `days` days."""
    for allowed in sorted(_RETENTION_BY_DAYS):
        if allowed >= days:
            return _RETENTION_BY_DAYS[allowed]
    return _RETENTION_BY_DAYS[max(_RETENTION_BY_DAYS)]


def construct_id(function: str) -> str:
    """start-run -> StartRun: a function's construct id follows its name."""
    return "".join(part.capitalize() for part in function.split("-"))


class ProductFunction(Construct):
    """`function`, `log_group`, `failed_events` and `alarms` of one of the product's functions."""

    def __init__(
        self,
        scope: Construct,
        name: str,
        *,
        description: str,
        code_folder: Path,
        memory_mb: int,
        timeout_seconds: int,
        values: Mapping[str, Any],
        log_retention_days: int,
        operations_topic: sns.ITopic,
        failures_mean: str,
        **function_props: Any,
    ) -> None:
        """`name` is one of core.contracts.FUNCTIONS; `values` holds what its environment needs,
        by settings key; `failures_mean` says what a message in the failure queue is."""
        super().__init__(scope, construct_id(name))
        self.name = name
        self.failed_events = sqs.Queue(
            self,
            "FailedEvents",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(FAILED_EVENTS_RETENTION_DAYS),
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention(log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.function = lambda_.Function(
            self,
            "Function",
            description=description,
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.X86_64,  # the asset's wheels are manylinux x86_64
            code=lambda_.Code.from_asset(str(code_folder)),
            handler=contracts.HANDLERS[name],
            memory_size=memory_mb,
            timeout=Duration.seconds(timeout_seconds),
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            log_group=self.log_group,
            environment=environment(name, values),
            retry_attempts=RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(MAX_EVENT_AGE_SECONDS),
            on_failure=destinations.SqsDestination(self.failed_events),
            **function_props,
        )
        self.alarms = self._alarms(operations_topic, failures_mean)
        self._suppress_findings(in_vpc="vpc" in function_props)

    @property
    def role(self) -> iam.IRole:
        role = self.function.role
        assert role is not None  # the Function made it
        return role

    def grant_runs_and_notifications(self, table: dynamodb.ITable, topic: sns.ITopic) -> None:
        """What every function needs: read and write run records, publish notifications."""
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadAndWriteRunRecords",
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[table.table_arn],
            )
        )
        topic.grant_publish(self.role)  # sns:Publish, and kms for the topic's key
        NagSuppressions.add_resource_suppressions(
            self.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Publishing to the encrypted topic needs GenerateDataKey* on the topic's "
                        "own key (the resource is that key's ARN, not a wildcard)."
                    ),
                    applies_to=["Action::kms:GenerateDataKey*"],
                ),
            ],
            apply_to_children=True,
        )

    def _alarms(self, topic: sns.ITopic, failures_mean: str) -> dict[str, cloudwatch.Alarm]:
        period = Duration.minutes(ALARM_PERIOD_MINUTES)
        alarms = {
            "FailedEventsAlarm": cloudwatch.Alarm(
                self,
                "FailedEventsAlarm",
                alarm_description=(
                    f"{self.name}: {failures_mean}. At least one message is waiting in the "
                    "failure queue; read it, fix the cause, then redrive or delete it."
                ),
                metric=self.failed_events.metric_approximate_number_of_messages_visible(
                    period=period, statistic=cloudwatch.Stats.MAXIMUM
                ),
                threshold=FAILED_EVENTS_THRESHOLD,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=ALARM_EVALUATION_PERIODS,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
            "ErrorsAlarm": cloudwatch.Alarm(
                self,
                "ErrorsAlarm",
                alarm_description=(
                    f"{self.name} Lambda: at least one invocation failed in "
                    f"{ALARM_PERIOD_MINUTES} minutes; see the function's logs."
                ),
                metric=self.function.metric_errors(period=period, statistic=cloudwatch.Stats.SUM),
                threshold=ERRORS_THRESHOLD,
                comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
                evaluation_periods=ALARM_EVALUATION_PERIODS,
                treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
            ),
        }
        notify = cloudwatch_actions.SnsAction(topic)
        for alarm in alarms.values():
            alarm.add_alarm_action(notify)
        return alarms

    def _suppress_findings(self, *, in_vpc: bool) -> None:
        managed = (
            (BASIC_EXECUTION_POLICY, VPC_EXECUTION_POLICY) if in_vpc else (BASIC_EXECUTION_POLICY,)
        )
        NagSuppressions.add_resource_suppressions(
            self.role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM4",
                    reason=(
                        "AWS-managed Lambda execution policies: CloudWatch Logs (and, in a VPC, "
                        "network interfaces) for this function; AWS keeps them current."
                    ),
                    applies_to=[
                        f"Policy::arn:<AWS::Partition>:iam::aws:policy/{name}" for name in managed
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "X-Ray PutTraceSegments/PutTelemetryRecords (active tracing) have no "
                        "resource type, so they can only be granted on '*'."
                    ),
                    applies_to=["Resource::*"],
                ),
            ],
            apply_to_children=True,
        )
        NagSuppressions.add_resource_suppressions(
            self.function,
            [
                NagPackSuppression(
                    id="AwsSolutions-L1",
                    reason=(
                        "The product targets Python 3.12 (architecture contract): the Lambda "
                        "dependencies are built and tested for 3.12."
                    ),
                )
            ],
        )
        NagSuppressions.add_resource_suppressions(
            self.failed_events,
            [
                NagPackSuppression(
                    id="AwsSolutions-SQS3",
                    reason=(
                        "This queue is itself the last stop for events the function could not "
                        "handle (its on-failure destination and dead-letter queue); nothing "
                        "consumes it automatically."
                    ),
                )
            ],
        )
