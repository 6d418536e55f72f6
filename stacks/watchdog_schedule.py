"""The watchdog's schedule: an EventBridge rule that invokes it every few minutes.

A rule rather than EventBridge Scheduler: the product's other rules are rules, and a rate
expression needs nothing more. A pass that fails is retried by Lambda (the function's async
retries) and then lands on the watchdog's failure queue; the next pass comes anyway.
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from stacks.product_function import ProductFunction

WATCHDOG_EVERY_MINUTES = 5


class WatchdogSchedule(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, target: ProductFunction) -> None:
        super().__init__(scope, construct_id)
        self.rule = events.Rule(
            self,
            "Rule",
            description=f"Runs the stuck-run watchdog every {WATCHDOG_EVERY_MINUTES} minutes",
            schedule=events.Schedule.rate(Duration.minutes(WATCHDOG_EVERY_MINUTES)),
            targets=[
                targets.LambdaFunction(
                    target.function,
                    # A missed pass is not worth keeping: the next one comes in minutes.
                    max_event_age=Duration.minutes(WATCHDOG_EVERY_MINUTES),
                    retry_attempts=0,
                )
            ],
        )
        NagSuppressions.add_resource_suppressions(
            self.rule,
            [
                NagPackSuppression(
                    id="Serverless-EventBusDLQ",
                    reason=(
                        "A scheduled event carries nothing to keep: a pass that could not be "
                        "delivered is replaced by the next one, minutes later."
                    ),
                )
            ],
        )
