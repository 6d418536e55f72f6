"""The start-run Lambda: an upload under `incoming/` becomes one KFP run.

S3 invokes it asynchronously. Events it could not handle after the retries go to an SQS
on-failure destination rather than a classic dead-letter queue: the destination record carries
the original event *and* why it failed (error type, message, retry count, condition), and it
also receives events that expired before they could run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stacks.names import START_RUN_HANDLER

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
START_RUN_MEMORY_MB = 256
# KFP calls are retried with backoff inside one invocation; leave room for that.
START_RUN_TIMEOUT_SECONDS = 120
# Asynchronous invocation: S3 events retried by Lambda, then sent to the failure queue.
START_RUN_RETRY_ATTEMPTS = 2
START_RUN_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
FAILED_EVENTS_RETENTION_DAYS = 14


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


class StartRun(Construct):
    """The function, its log group, its failure queue and its (narrow) permissions."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        code_folder: Path,
        environment: Mapping[str, str],
        table: dynamodb.ITable,
        topic: sns.ITopic,
        log_retention_days: int,
        vpc_id: str = "",
        subnet_ids: tuple[str, ...] = (),
    ) -> None:
        super().__init__(scope, construct_id)

        self.failed_events = sqs.Queue(
            self,
            "FailedEvents",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(FAILED_EVENTS_RETENTION_DAYS),
        )
        NagSuppressions.add_resource_suppressions(
            self.failed_events,
            [
                NagPackSuppression(
                    id="AwsSolutions-SQS3",
                    reason=(
                        "This queue is the start-run Lambda's on-failure destination, the last "
                        "stop for events it could not handle; nothing consumes it automatically."
                    ),
                )
            ],
        )

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            retention=log_retention(log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )

        vpc_placement = _vpc_placement(self, vpc_id, subnet_ids)
        self.function = lambda_.Function(
            self,
            "Function",
            description="Starts one Kubeflow Pipelines run per dataset uploaded under incoming/",
            runtime=LAMBDA_RUNTIME,
            architecture=lambda_.Architecture.X86_64,  # the asset's wheels are manylinux x86_64
            code=lambda_.Code.from_asset(str(code_folder)),
            handler=START_RUN_HANDLER,
            memory_size=START_RUN_MEMORY_MB,
            timeout=Duration.seconds(START_RUN_TIMEOUT_SECONDS),
            tracing=lambda_.Tracing.ACTIVE,
            logging_format=lambda_.LoggingFormat.JSON,
            log_group=self.log_group,
            environment=dict(environment),
            retry_attempts=START_RUN_RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(START_RUN_MAX_EVENT_AGE_SECONDS),
            on_failure=destinations.SqsDestination(self.failed_events),
            **vpc_placement,
        )
        role = self.function.role
        assert role is not None  # the Function made it

        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ClaimAndRecordRuns",
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
                resources=[table.table_arn],
            )
        )
        topic.grant_publish(role)  # sns:Publish, and kms for the topic's key

        managed = ["service-role/AWSLambdaBasicExecutionRole"]
        if vpc_placement:
            managed.append("service-role/AWSLambdaVPCAccessExecutionRole")
        NagSuppressions.add_resource_suppressions(
            role,
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


def _vpc_placement(scope: Construct, vpc_id: str, subnet_ids: tuple[str, ...]) -> dict:
    """Function props that put it in the given subnets (for a KFP URL only reachable there)."""
    if not vpc_id:
        return {}
    vpc = ec2.Vpc.from_vpc_attributes(
        scope, "Vpc", vpc_id=vpc_id, availability_zones=Stack.of(scope).availability_zones
    )
    subnets = [
        ec2.Subnet.from_subnet_id(scope, f"Subnet{index}", subnet_id)
        for index, subnet_id in enumerate(subnet_ids)
    ]
    security_group = ec2.SecurityGroup(
        scope,
        "SecurityGroup",
        vpc=vpc,
        description="start-run Lambda: outbound only (KFP URL, AWS APIs)",
        allow_all_outbound=True,
    )
    return {
        "vpc": vpc,
        "vpc_subnets": ec2.SubnetSelection(subnets=subnets),
        "security_groups": [security_group],
    }
