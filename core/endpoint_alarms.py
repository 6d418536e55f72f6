"""The two CloudWatch alarms whose ALARM rolls back an update of the stable endpoint (the
deployment guardrails' AutoRollbackConfiguration): one definition, which the CDK stack
(stacks/endpoint_alarms.py) and the local stack (mnistflow/local/provision.py) both build.

From the SageMaker developer guide, "Auto-Rollback Configuration and Monitoring" (deployment
guardrails) and "Amazon SageMaker AI metrics in Amazon CloudWatch":

- the metrics are in the `AWS/SageMaker` namespace with the dimensions EndpointName and
  VariantName (`AllTraffic`); the guide's examples use the `Average` statistic and treat missing
  data as notBreaching (no traffic is no evidence against the model);
- Invocation5XXErrors: invocations whose model answered 5xx; its Average is the share of
  invocations that failed. 5xx, not 4xx: a 4xx is the caller's bad request, which a new model
  does not cause; 5xx is the model (or its container) failing. Both fleets' errors count while
  the update bakes;
- ModelLatency: the model's response time, in microseconds; the guide's example alarms above
  100000 (100 ms). The k-means image answers a request in a few milliseconds.

An alarm must reach ALARM within the baking period (deploy_bake_minutes, 5 by default): one
minute periods, two of them breaching.
Standard library only.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.contracts import ENDPOINT_VARIANT, PRODUCT_PREFIX

# The stack's alarm names start so: the operations topic takes alarms with the prefix only.
NAME_PREFIX = f"{PRODUCT_PREFIX}flow-"

NAMESPACE = "AWS/SageMaker"
PERIOD_SECONDS = 60
EVALUATION_PERIODS = 2
DATAPOINTS_TO_ALARM = 2
TREAT_MISSING_DATA = "notBreaching"
COMPARISON = "GreaterThanThreshold"


@dataclass(frozen=True)
class EndpointAlarm:
    suffix: str  # the alarm's name is `mnistflow-<endpoint name>-<suffix>`
    metric: str
    statistic: str
    threshold: float
    description: str

    def name(self, endpoint_name: str) -> str:
        return f"{NAME_PREFIX}{endpoint_name}-{self.suffix}"

    def dimensions(self, endpoint_name: str) -> dict[str, str]:
        return {"EndpointName": endpoint_name, "VariantName": ENDPOINT_VARIANT}


ERRORS = EndpointAlarm(
    suffix="errors",
    metric="Invocation5XXErrors",
    statistic="Average",
    threshold=0.05,
    description="over 5% of the endpoint's invocations answered 5xx (rolls back an update)",
)
LATENCY = EndpointAlarm(
    suffix="latency",
    metric="ModelLatency",
    statistic="Average",
    threshold=100_000,  # microseconds: 100 ms
    description="the endpoint's model latency averaged over 100 ms (rolls back an update)",
)
ALARMS = (ERRORS, LATENCY)


def alarm_names(endpoint_name: str) -> str:
    """The pipeline parameter: the alarms' names, comma-separated."""
    return ",".join(alarm.name(endpoint_name) for alarm in ALARMS)


def put_metric_alarm_request(alarm: EndpointAlarm, endpoint_name: str) -> dict:
    """CloudWatch PutMetricAlarm's request for the alarm (the local stack's)."""
    return {
        "AlarmName": alarm.name(endpoint_name),
        "AlarmDescription": alarm.description,
        "Namespace": NAMESPACE,
        "MetricName": alarm.metric,
        "Dimensions": [
            {"Name": key, "Value": value} for key, value in alarm.dimensions(endpoint_name).items()
        ],
        "Statistic": alarm.statistic,
        "Period": PERIOD_SECONDS,
        "EvaluationPeriods": EVALUATION_PERIODS,
        "DatapointsToAlarm": DATAPOINTS_TO_ALARM,
        "Threshold": alarm.threshold,
        "ComparisonOperator": COMPARISON,
        "TreatMissingData": TREAT_MISSING_DATA,
    }
