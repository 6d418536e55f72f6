"""Progress tracking: EventBridge routes SageMaker's state changes and the pipeline's final-state
event for this product's resources to the track-progress Lambda, which moves the run record on
and announces the endpoint (or the failure).

Two ways an event can fail to reach a run record, and both end in the one dead-letter queue:
EventBridge could not invoke the function (target retry policy, then the target's dead-letter
queue: the message is the event itself, with RULE_ARN/ERROR_CODE message attributes), or the
function failed on it (Lambda's asynchronous retries, then its on-failure destination: the
message wraps the event in `requestPayload` next to the error).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aws_cdk import Duration
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_lambda_destinations as destinations
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from runflow.contracts import PIPELINE_EVENT_DETAIL_TYPE, PIPELINE_EVENT_SOURCE
from stacks.names import SAGEMAKER_NAME_PREFIX, TRACK_PROGRESS_HANDLER
from stacks.product_function import grant_runs_and_notifications, product_function

SAGEMAKER_EVENT_SOURCE = "aws.sagemaker"


@dataclass(frozen=True)
class SageMakerStateChange:
    """One SageMaker detail type this product follows, and the detail field naming the resource."""

    rule_id: str
    detail_type: str
    name_field: str


# The detail types the track-progress Lambda reads, as AWS documents them. The pipeline also
# creates a model and an endpoint config per run, and SageMaker does document "SageMaker Model
# State Change" and "SageMaker Endpoint Config State Change" events; but neither resource has a
# status of its own (they are created or deleted, nothing in between), a failed create is an API
# error that fails the pipeline step (the pipeline's final-state event reports it), and the
# transform job and endpoint events already show the model and config in use. The Lambda does
# not read them, so they are not routed; add a line here if it ever does.
SAGEMAKER_STATE_CHANGES = (
    SageMakerStateChange(
        "TrainingJobStateChange", "SageMaker Training Job State Change", "TrainingJobName"
    ),
    SageMakerStateChange(
        "TransformJobStateChange", "SageMaker Transform Job State Change", "TransformJobName"
    ),
    SageMakerStateChange("EndpointStateChange", "SageMaker Endpoint State Change", "EndpointName"),
)
PIPELINE_RULE_ID = "PipelineRunStateChange"

TRACK_PROGRESS_MEMORY_MB = 256
# One conditional DynamoDB write and at most one SNS publish per event.
TRACK_PROGRESS_TIMEOUT_SECONDS = 30
# EventBridge -> Lambda delivery (throttling, service errors): retried with backoff, then the
# event goes to the dead-letter queue.
TARGET_RETRY_ATTEMPTS = 8
TARGET_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
# The function's own failures: Lambda's asynchronous retries (0-2), then the dead-letter queue.
# Retrying is safe: the record only moves forward and the announcement is claimed once.
TRACK_PROGRESS_RETRY_ATTEMPTS = 2
TRACK_PROGRESS_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60
DEAD_LETTER_RETENTION_DAYS = 14


class Tracking(Construct):
    """The rules, the track-progress function, its dead-letter queue and its permissions."""

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
    ) -> None:
        super().__init__(scope, construct_id)

        self.dead_letters = sqs.Queue(
            self,
            "DeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(DEAD_LETTER_RETENTION_DAYS),
        )
        NagSuppressions.add_resource_suppressions(
            self.dead_letters,
            [
                NagPackSuppression(
                    id="AwsSolutions-SQS3",
                    reason=(
                        "This queue is itself the dead-letter queue of the tracking rules' "
                        "targets and the track-progress Lambda's on-failure destination; "
                        "nothing consumes it automatically."
                    ),
                )
            ],
        )

        self.function, self.log_group = product_function(
            self,
            description=(
                "Moves run records on from SageMaker and pipeline events; emails the endpoint"
            ),
            handler=TRACK_PROGRESS_HANDLER,
            code_folder=code_folder,
            memory_mb=TRACK_PROGRESS_MEMORY_MB,
            timeout_seconds=TRACK_PROGRESS_TIMEOUT_SECONDS,
            environment=environment,
            log_retention_days=log_retention_days,
            retry_attempts=TRACK_PROGRESS_RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(TRACK_PROGRESS_MAX_EVENT_AGE_SECONDS),
            on_failure=destinations.SqsDestination(self.dead_letters),
        )
        role = self.function.role
        assert role is not None  # the Function made it
        grant_runs_and_notifications(role, sid="RecordRunProgress", table=table, topic=topic)

        target = targets.LambdaFunction(
            self.function,
            retry_attempts=TARGET_RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(TARGET_MAX_EVENT_AGE_SECONDS),
            dead_letter_queue=self.dead_letters,
        )
        # On the default bus: where SageMaker's events arrive and the pipeline puts its own.
        self.rules: dict[str, events.Rule] = {}
        for change in SAGEMAKER_STATE_CHANGES:
            self.rules[change.rule_id] = events.Rule(
                self,
                change.rule_id,
                description=f"{change.detail_type} of {SAGEMAKER_NAME_PREFIX}* resources",
                event_pattern=events.EventPattern(
                    source=[SAGEMAKER_EVENT_SOURCE],
                    detail_type=[change.detail_type],
                    detail={change.name_field: events.Match.prefix(SAGEMAKER_NAME_PREFIX)},
                ),
                targets=[target],
            )
        self.rules[PIPELINE_RULE_ID] = events.Rule(
            self,
            PIPELINE_RULE_ID,
            description="The MNIST pipeline's final-state event (its exit handler puts it)",
            event_pattern=events.EventPattern(
                source=[PIPELINE_EVENT_SOURCE],
                detail_type=[PIPELINE_EVENT_DETAIL_TYPE],
            ),
            targets=[target],
        )
