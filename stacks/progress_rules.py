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

from aws_cdk import Duration, Stack
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from constructs import Construct

from core import sagemaker_events
from core.contracts import (
    PIPELINE_DETAIL_TYPES,
    PIPELINE_EVENT_BUS,
    PIPELINE_EVENT_SOURCE,
    SAGEMAKER_NAME_PREFIX,
)
from stacks.product_function import ProductFunction

PIPELINE_RULE_ID = "PipelineRunStateChange"
# EventBridge -> Lambda delivery (throttling, service errors): retried with backoff, then the
# event goes to the dead-letter queue.
TARGET_RETRY_ATTEMPTS = 8
TARGET_MAX_EVENT_AGE_SECONDS = 6 * 60 * 60


def rule_id(resource: sagemaker_events.SageMakerResource) -> str:
    return f"{resource.noun}StateChange"


class ProgressRules(Construct):
    """One rule per SageMaker resource type the product follows (on the default bus, where
    SageMaker puts them), and one for the pipeline's final-state event on the product's own
    bus, `pipeline_bus`, which only the pipeline's pods may write to (`admit_only`)."""

    def __init__(self, scope: Construct, construct_id: str, *, target: ProductFunction) -> None:
        super().__init__(scope, construct_id)
        self.pipeline_bus = events.EventBus(
            self, "PipelineEventBus", event_bus_name=PIPELINE_EVENT_BUS
        )
        invoke = targets.LambdaFunction(
            target.function,
            retry_attempts=TARGET_RETRY_ATTEMPTS,
            max_event_age=Duration.seconds(TARGET_MAX_EVENT_AGE_SECONDS),
            dead_letter_queue=target.failed_events,
        )
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
            event_bus=self.pipeline_bus,
            event_pattern=events.EventPattern(
                source=[PIPELINE_EVENT_SOURCE],
                detail_type=list(PIPELINE_DETAIL_TYPES),
            ),
            targets=[invoke],
        )

    def admit_only(self, writer: iam.IRole) -> None:
        """Deny events:PutEvents on the pipeline's bus to every principal but `writer`.

        Within one account an allow in either the identity's policy or the bus's policy is
        enough ("Policy evaluation for requests within a single account"), so a bus policy that
        only allows would stop nobody: the deny, on aws:PrincipalArn (a role's ARN, not its
        session's), is what keeps others from forging a run's final state.
        """
        deny = iam.PolicyStatement(
            sid="OnlyThePipelinesPodsMayPutEvents",
            effect=iam.Effect.DENY,
            principals=[iam.AnyPrincipal()],
            actions=["events:PutEvents"],
            # The ARN from the bus's name: its own Arn attribute would make the bus depend on
            # itself.
            resources=[
                Stack.of(self).format_arn(
                    service="events", resource="event-bus", resource_name=PIPELINE_EVENT_BUS
                )
            ],
            conditions={"ArnNotEquals": {"aws:PrincipalArn": writer.role_arn}},
        )
        # The bus's own Policy property (AWS::Events::EventBus), rather than a separate
        # AWS::Events::EventBusPolicy, whose CDK class warns of a deprecated property at synth.
        bus = self.pipeline_bus.node.default_child
        assert isinstance(bus, events.CfnEventBus)
        bus.policy = iam.PolicyDocument(statements=[deny]).to_json()
