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
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core import contracts
from core.settings import environment
from stacks.alarms import errors_alarm, waiting_messages_alarm
from stacks.price_list import PRICE_LIST_ACTIONS, PRICE_LIST_SID, PRICE_LIST_SUPPRESSION
from stacks.queues import last_stop_queue

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
LAMBDA_SERVICE = "lambda.amazonaws.com"
# What a function in a VPC needs to attach its network interfaces: the EC2 actions of the
# AWS-managed AWSLambdaVPCAccessExecutionRole, without its logs:* on every log group. EC2 offers
# no resource-level permission for them.
VPC_NETWORK_INTERFACE_ACTIONS = (
    "ec2:CreateNetworkInterface",
    "ec2:DescribeNetworkInterfaces",
    "ec2:DescribeSubnets",
    "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses",
    "ec2:UnassignPrivateIpAddresses",
)

# Asynchronous invocations: retried by Lambda, then sent to the failure queue.
RETRY_ATTEMPTS = contracts.LAMBDA_ASYNC_RETRIES
MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
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
        reserved_concurrency: int | None = None,
        **function_props: Any,
    ) -> None:
        """`name` is one of core.contracts.FUNCTIONS; `values` holds what its environment needs,
        by settings key; `failures_mean` says what a message in the failure queue is."""
        super().__init__(scope, construct_id(name))
        self.name = name
        self.failed_events = last_stop_queue(
            self, "FailedEvents", holds=f"events the {name} function could not handle"
        )
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention(log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        # A role of its own, instead of the basic execution policy's logs:* on every log group:
        # the function writes to its own log group and nowhere else.
        role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(LAMBDA_SERVICE),
            description=f"The {name} Lambda function",
        )
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteItsOwnLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                # The log group's Arn attribute ends in `:*`: its streams, no other group's.
                resources=[self.log_group.log_group_arn],
            )
        )
        if "vpc" in function_props:
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="AttachNetworkInterfaces",
                    actions=list(VPC_NETWORK_INTERFACE_ACTIONS),
                    resources=["*"],
                )
            )
        self.function = lambda_.Function(
            self,
            "Function",
            role=role,
            reserved_concurrent_executions=reserved_concurrency,
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
        """What every function needs: write run records (conditional UpdateItem is the only
        call either makes; it returns the item as it was), publish notifications."""
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteRunRecords",
                actions=["dynamodb:UpdateItem"],
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

    def grant_price_list(self) -> None:
        """Read on-demand prices (pricing:GetProducts, only grantable on '*')."""
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid=PRICE_LIST_SID, actions=list(PRICE_LIST_ACTIONS), resources=["*"]
            )
        )
        NagSuppressions.add_resource_suppressions(
            self.role, [PRICE_LIST_SUPPRESSION], apply_to_children=True
        )

    def grant_scan(self, table: dynamodb.ITable) -> None:
        """Read every run record (the watchdog's pass)."""
        self.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ScanRunRecords", actions=["dynamodb:Scan"], resources=[table.table_arn]
            )
        )

    def _alarms(self, topic: sns.ITopic, failures_mean: str) -> dict[str, cloudwatch.Alarm]:
        return {
            "FailedEventsAlarm": waiting_messages_alarm(
                self,
                "FailedEventsAlarm",
                queue=self.failed_events,
                name=f"{self.name}-failed-events",
                what=f"{self.name}: {failures_mean}",
                topic=topic,
            ),
            "ErrorsAlarm": errors_alarm(
                self,
                "ErrorsAlarm",
                function=self.function,
                name=f"{self.name}-errors",
                what=f"{self.name} Lambda",
                topic=topic,
            ),
        }

    def _suppress_findings(self, *, in_vpc: bool) -> None:
        reasons = [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "X-Ray PutTraceSegments/PutTelemetryRecords (active tracing) have no "
                    "resource type, so they can only be granted on '*'."
                ),
                applies_to=["Resource::*"],
            ),
        ]
        if in_vpc:
            reasons.append(
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Attaching the function's network interfaces in its VPC: these EC2 "
                        "actions have no resource-level permissions (the same actions as the "
                        "AWS-managed AWSLambdaVPCAccessExecutionRole, without its logs:*)."
                    ),
                    applies_to=["Resource::*"],
                )
            )
        NagSuppressions.add_resource_suppressions(self.role, reasons, apply_to_children=True)
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
            self.function,
            [
                NagPackSuppression(
                    id="Serverless-LambdaLatestVersion",
                    reason=(
                        "The product targets Python 3.12 (architecture contract): the Lambda "
                        "dependencies are built and tested for 3.12, not the newest runtime."
                    ),
                ),
                NagPackSuppression(
                    id="Serverless-LambdaDLQ",
                    reason=(
                        "Invoked asynchronously only (S3, EventBridge): failed events go to the "
                        "function's on-failure destination (failed_events), which also records "
                        "the error and the retries, what a DeadLetterConfig would not."
                    ),
                ),
            ],
        )
