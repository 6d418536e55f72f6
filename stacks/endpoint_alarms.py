"""The stable endpoint's two rollback alarms (core/endpoint_alarms.py): CloudWatch alarms on its
variant's 5xx errors and model latency. The deploy step names them in UpdateEndpoint's
AutoRollbackConfiguration (through the `endpoint_alarm_names` stack value), so an update whose
model errs or slows while it bakes is rolled back; each also emails the operations topic.

CDK cannot make the endpoint (the pipeline does), but an alarm needs only the metric's name and
dimensions, which the endpoint's name fixes.
"""

from __future__ import annotations

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_sns as sns
from constructs import Construct

from core import endpoint_alarms
from core.endpoint_alarms import ALARMS

_COMPARISONS = {"GreaterThanThreshold": cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD}
_MISSING = {"notBreaching": cloudwatch.TreatMissingData.NOT_BREACHING}


class EndpointAlarms(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, endpoint_name: str, topic: sns.ITopic
    ) -> None:
        super().__init__(scope, construct_id)
        self.alarms: list[cloudwatch.Alarm] = []
        for alarm in ALARMS:
            made = cloudwatch.Alarm(
                self,
                alarm.suffix.capitalize(),
                alarm_name=alarm.name(endpoint_name),
                alarm_description=f"Endpoint {endpoint_name}: {alarm.description}",
                metric=cloudwatch.Metric(
                    namespace=endpoint_alarms.NAMESPACE,
                    metric_name=alarm.metric,
                    dimensions_map=alarm.dimensions(endpoint_name),
                    statistic=alarm.statistic,
                    period=Duration.seconds(endpoint_alarms.PERIOD_SECONDS),
                ),
                threshold=alarm.threshold,
                comparison_operator=_COMPARISONS[endpoint_alarms.COMPARISON],
                evaluation_periods=endpoint_alarms.EVALUATION_PERIODS,
                datapoints_to_alarm=endpoint_alarms.DATAPOINTS_TO_ALARM,
                treat_missing_data=_MISSING[endpoint_alarms.TREAT_MISSING_DATA],
            )
            made.add_alarm_action(cloudwatch_actions.SnsAction(topic))
            self.alarms.append(made)
        self.names = endpoint_alarms.alarm_names(endpoint_name)
        stack = Stack.of(self)
        # The alarms' ARNs, for cloudwatch:DescribeAlarms (the guardrails read their state).
        self.arns = [
            stack.format_arn(
                service="cloudwatch",
                resource="alarm",
                resource_name=alarm.name(endpoint_name),
                arn_format=ArnFormat.COLON_RESOURCE_NAME,
            )
            for alarm in ALARMS
        ]
