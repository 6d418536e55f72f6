"""Progress tracking's routes: EventBridge rules that send SageMaker's state changes of this
product's resources, and the pipeline's final-state event, to the track-progress function.

The rules are made from `core.sagemaker_events` (detail types and name fields), the same table
the function parses events with. Two ways an event can fail to reach a run record, and both end
in the function's failure queue: EventBridge could not invoke the function (the target's retry
policy, then the queue as the target's dead-letter queue: the message is the event itself, with
RULE_ARN/ERROR_CODE message attributes), or the function failed on it (Lambda's asynchronous
retries, then its on-failure destination: the message wraps the event in `requestPayload`).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from constructs import Construct

from core import sagemaker_events
from core.contracts import PIPELINE_EVENT_DETAIL_TYPE, PIPELINE_EVENT_SOURCE, SAGEMAKER_NAME_PREFIX
from stacks.product_function import ProductFunction

PIPELINE_RULE_ID = "PipelineRunStateChange"
# EventBridge -> Lambda delivery (throttling, service errors): retried with backoff, then the
# event goes to the dead-letter queue.
TARGET_RETRY_ATTEMPTS = 8
TARGET_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60


def rule_id(resource: sagemaker_events.SageMakerResource) -> str:
    return f"{resource.noun}StateChange"


class ProgressRules(Construct):
    """One rule per SageMaker resource type the product follows, and one for the pipeline."""

    def __init__(self, scope: Construct, construct_id: str, *, target: ProductFunction) -> None:
        super().__init__(scope, construct_id)
        invoke = targets.LambdaFunction(
            target.function,
            retry_attempts=TARGET_RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(TARGET_MAX_EVENT_AGE_SECONDS),
            dead_letter_queue=target.failed_events,
        )
        # On the default bus: where SageMaker's events arrive and the pipeline puts its own.
        self.rules: dict[str, events.Rule] = {}
        for resource in sagemaker_events.RESOURCES:
            self.rules[rule_id(resource)] = events.Rule(
                self,
                rule_id(resource),
                description=f"{resource.detail_type} of {SAGEMAKER_NAME_PREFIX}* resources",
                event_pattern=events.EventPattern(
                    source=[sagemaker_events.SOURCE],
                    detail_type=[resource.detail_type],
                    detail={resource.name_field: events.Match.prefix(SAGEMAKER_NAME_PREFIX)},
                ),
                targets=[invoke],
            )
        self.rules[PIPELINE_RULE_ID] = events.Rule(
            self,
            PIPELINE_RULE_ID,
            description="The MNIST pipeline's final-state event (its exit handler puts it)",
            event_pattern=events.EventPattern(
                source=[PIPELINE_EVENT_SOURCE],
                detail_type=[PIPELINE_EVENT_DETAIL_TYPE],
            ),
            targets=[invoke],
        )
