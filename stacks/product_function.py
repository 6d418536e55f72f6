"""A Lambda function of this product: the one shared asset on Python 3.12, traced, JSON logs.

Every function is built here so they differ only in handler, sizing and configuration, and so
the cdk-nag findings they all raise are answered once, with the same reasons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

LAMBDA_RUNTIME = lambda_.Runtime.PYTHON_3_12
BASIC_EXECUTION_POLICY = "service-role/AWSLambdaBasicExecutionRole"
VPC_EXECUTION_POLICY = "service-role/AWSLambdaVPCAccessExecutionRole"

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


def product_function(
    scope: Construct,
    *,
    description: str,
    handler: str,
    code_folder: Path,
    memory_mb: int,
    timeout_seconds: int,
    environment: Mapping[str, str],
    log_retention_days: int,
    **function_props: Any,
) -> tuple[lambda_.Function, logs.LogGroup]:
    """Add `Logs` and `Function` to `scope`; `function_props` go to the Function as they are."""
    log_group = logs.LogGroup(
        scope,
        "Logs",
        retention=log_retention(log_retention_days),
        removal_policy=RemovalPolicy.DESTROY,
    )
    function = lambda_.Function(
        scope,
        "Function",
        description=description,
        runtime=LAMBDA_RUNTIME,
        architecture=lambda_.Architecture.X86_64,  # the asset's wheels are manylinux x86_64
        code=lambda_.Code.from_asset(str(code_folder)),
        handler=handler,
        memory_size=memory_mb,
        timeout=Duration.seconds(timeout_seconds),
        tracing=lambda_.Tracing.ACTIVE,
        logging_format=lambda_.LoggingFormat.JSON,
        log_group=log_group,
        environment=dict(environment),
        **function_props,
    )
    _suppress_function_findings(function, in_vpc="vpc" in function_props)
    return function, log_group


def grant_runs_and_notifications(
    role: iam.IRole, *, sid: str, table: dynamodb.ITable, topic: sns.ITopic
) -> None:
    """What both functions need: read and write run records, publish notifications."""
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid=sid,
            actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"],
            resources=[table.table_arn],
        )
    )
    topic.grant_publish(role)  # sns:Publish, and kms for the topic's key
    suppress_topic_key_finding(role)


def suppress_topic_key_finding(scope: Construct) -> None:
    """`topic.grant_publish` on an encrypted topic adds kms:GenerateDataKey* on its key."""
    NagSuppressions.add_resource_suppressions(
        scope,
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


def _suppress_function_findings(function: lambda_.Function, *, in_vpc: bool) -> None:
    role = function.role
    assert role is not None  # the Function made it
    managed: Sequence[str] = (
        (BASIC_EXECUTION_POLICY, VPC_EXECUTION_POLICY) if in_vpc else (BASIC_EXECUTION_POLICY,)
    )
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
        ],
        apply_to_children=True,
    )
    NagSuppressions.add_resource_suppressions(
        function,
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
