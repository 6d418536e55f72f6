"""The start-run Lambda: an upload under `incoming/` becomes one KFP run.

S3 invokes it asynchronously. Events it could not handle after the retries go to an SQS
on-failure destination rather than a classic dead-letter queue: the destination record carries
the original event *and* why it failed (error type, message, retry count, condition), and it
also receives events that expired before they could run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from aws_cdk import Duration, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stacks.names import START_RUN_HANDLER
from stacks.product_function import grant_runs_and_notifications, product_function

START_RUN_MEMORY_MB = 256
# KFP calls are retried with backoff inside one invocation; leave room for that.
START_RUN_TIMEOUT_SECONDS = 120
# Asynchronous invocation: S3 events retried by Lambda, then sent to the failure queue.
START_RUN_RETRY_ATTEMPTS = 2
START_RUN_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
FAILED_EVENTS_RETENTION_DAYS = 14


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

        self.function, self.log_group = product_function(
            self,
            description="Starts one Kubeflow Pipelines run per dataset uploaded under incoming/",
            handler=START_RUN_HANDLER,
            code_folder=code_folder,
            memory_mb=START_RUN_MEMORY_MB,
            timeout_seconds=START_RUN_TIMEOUT_SECONDS,
            environment=environment,
            log_retention_days=log_retention_days,
            retry_attempts=START_RUN_RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(START_RUN_MAX_EVENT_AGE_SECONDS),
            on_failure=destinations.SqsDestination(self.failed_events),
            **_vpc_placement(self, vpc_id, subnet_ids),
        )
        role = self.function.role
        assert role is not None  # the Function made it

        grant_runs_and_notifications(role, sid="ClaimAndRecordRuns", table=table, topic=topic)


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
