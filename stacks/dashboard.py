"""The operations dashboard: runs and their outcomes, how long they take, the failure queues, the
functions, and the endpoints the runs deploy.

The product's own metrics are the ones core.contracts declares (embedded metric format,
namespace METRICS_NAMESPACE, dimension `service` = the emitting function's name). SageMaker's
endpoints are one per run, so their graphs search for them instead of naming them.
"""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from constructs import Construct

from core import contracts
from stacks.alarms import ALARM_NAME_PREFIX
from stacks.product_function import ProductFunction

# Dashboards are global to the account, not regional ("All dashboards in your account are
# global, not region-specific": https://docs.aws.amazon.com/AWSCloudFormation/latest/
# TemplateReference/aws-resource-cloudwatch-dashboard.html), so the name carries the region.
DASHBOARD_NAME_PREFIX = ALARM_NAME_PREFIX
# Powertools Metrics puts the service name in this dimension of every metric it emits.
SERVICE_DIMENSION = "service"
# Counts and the operational graphs; a run takes tens of minutes, so its durations are
# aggregated per hour.
PERIOD = Duration.minutes(5)
RUN_DURATION_PERIOD = Duration.hours(1)
WIDTH = 12  # two graphs a row (a dashboard is 24 units wide)
HEIGHT = 6
SUM, P50, P95 = cloudwatch.Stats.SUM, cloudwatch.Stats.p(50), cloudwatch.Stats.p(95)
SECONDS_AXIS = cloudwatch.YAxisProps(label="seconds", show_units=False)

# SageMaker endpoint metrics (https://docs.aws.amazon.com/sagemaker/latest/dg/
# monitoring-cloudwatch.html#cloudwatch-metrics-endpoint-invocation): namespace AWS/SageMaker,
# dimensions EndpointName, VariantName; Invocations (statistic Sum), ModelLatency in
# *microseconds* (statistics Average, Sum, Min, Max, Sample Count: no percentiles listed).
# SEARCH('{Namespace,DimensionName,...} SearchTerm', 'Statistic'), with a `Name=value` term a
# partial match on the *tokens* of the value, split at non-alphanumeric characters
# (https://docs.aws.amazon.com/AmazonCloudWatch/latest/monitoring/search-expression-syntax.html).
# SEARCH has no prefix match: `EndpointName=mnist` finds every endpoint whose name has the
# token `mnist`, which includes all of the product's (`mnist-<hash>-endpoint`).
ENDPOINT_NAME_TOKEN = contracts.SAGEMAKER_NAME_PREFIX.strip("-")
SAGEMAKER_SCHEMA = "{AWS/SageMaker,EndpointName,VariantName}"


def endpoint_search(metric_name: str, statistic: str) -> str:
    """`metric_name` of every endpoint named like the product's, a line per endpoint and variant."""
    return (
        f'SEARCH(\'{SAGEMAKER_SCHEMA} MetricName="{metric_name}" '
        f"EndpointName={ENDPOINT_NAME_TOKEN}', '{statistic}')"
    )


class ProductDashboard(Construct):
    """`dashboard`: one CloudWatch dashboard named `mnistflow-<region>`, a row per topic."""

    def __init__(
        self, scope: Construct, construct_id: str, *, functions: Sequence[ProductFunction]
    ) -> None:
        """`functions`: the product's functions, whose errors, durations and queues it draws."""
        super().__init__(scope, construct_id)
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=f"{DASHBOARD_NAME_PREFIX}{Stack.of(self).region}",
            default_interval=Duration.days(7),
            widgets=[
                [runs(), stuck_runs()],
                [upload_to_endpoint(), step_durations()],
                [failure_queues(functions), lambda_errors(functions)],
                [lambda_durations(functions), endpoint_invocations()],
                [endpoint_latency()],
            ],
        )


def graph(title: str, metrics: Sequence[cloudwatch.IMetric], **props) -> cloudwatch.GraphWidget:
    return cloudwatch.GraphWidget(
        title=title, left=list(metrics), width=WIDTH, height=HEIGHT, **props
    )


def product_metric(
    name: str, service: str, statistic: str, *, period: Duration = PERIOD, **dimensions: str
) -> cloudwatch.Metric:
    """One of core.contracts' METRIC_*, as the function named `service` emits it."""
    return cloudwatch.Metric(
        namespace=contracts.METRICS_NAMESPACE,
        metric_name=name,
        dimensions_map={SERVICE_DIMENSION: service, **dimensions},
        statistic=statistic,
        period=period,
        label=" ".join([name, *dimensions.values(), statistic]),
    )


def runs() -> cloudwatch.GraphWidget:
    start, track = contracts.START_RUN, contracts.TRACK_PROGRESS
    return graph(
        f"Runs (sum per {PERIOD.to_minutes()} min)",
        [
            product_metric(contracts.METRIC_RUNS_STARTED, start, SUM),
            product_metric(contracts.METRIC_ENDPOINTS_READY, track, SUM),
            product_metric(contracts.METRIC_RUNS_FAILED, track, SUM),
            product_metric(contracts.METRIC_MODELS_REJECTED, track, SUM),
            product_metric(contracts.METRIC_DATASETS_REJECTED, start, SUM),
            product_metric(contracts.METRIC_START_FAILURES, start, SUM),
            product_metric(contracts.METRIC_RUNS_QUEUED, start, SUM),
        ],
    )


def stuck_runs() -> cloudwatch.GraphWidget:
    return graph(
        f"Stuck runs closed by the watchdog (sum per {PERIOD.to_minutes()} min)",
        [product_metric(contracts.METRIC_STUCK_RUNS_CLOSED, contracts.WATCHDOG, SUM)],
    )


def upload_to_endpoint() -> cloudwatch.GraphWidget:
    return graph(
        "Upload to endpoint (per hour)",
        [
            product_metric(
                contracts.METRIC_UPLOAD_TO_ENDPOINT,
                contracts.TRACK_PROGRESS,
                statistic,
                period=RUN_DURATION_PERIOD,
            )
            for statistic in (P50, P95)
        ],
        left_y_axis=SECONDS_AXIS,
    )


def step_durations() -> cloudwatch.GraphWidget:
    return graph(
        "Step durations, p50 (per hour)",
        [
            product_metric(
                contracts.METRIC_STEP_SECONDS,
                contracts.TRACK_PROGRESS,
                P50,
                period=RUN_DURATION_PERIOD,
                **{contracts.METRIC_STEP_DIMENSION: step},
            )
            for step in contracts.STEPS
        ],
        left_y_axis=SECONDS_AXIS,
    )


def failure_queues(functions: Sequence[ProductFunction]) -> cloudwatch.GraphWidget:
    return graph(
        "Failure queues: messages waiting (max)",
        [
            f.failed_events.metric_approximate_number_of_messages_visible(
                period=PERIOD, statistic=cloudwatch.Stats.MAXIMUM, label=f.name
            )
            for f in functions
        ],
    )


def lambda_errors(functions: Sequence[ProductFunction]) -> cloudwatch.GraphWidget:
    return graph(
        f"Lambda errors (sum per {PERIOD.to_minutes()} min)",
        [f.function.metric_errors(period=PERIOD, statistic=SUM, label=f.name) for f in functions],
    )


def lambda_durations(functions: Sequence[ProductFunction]) -> cloudwatch.GraphWidget:
    return graph(
        "Lambda duration",
        [
            f.function.metric_duration(period=PERIOD, statistic=stat, label=f"{f.name} {stat}")
            for f in functions
            for stat in (P50, P95)
        ],
    )


def endpoint_invocations() -> cloudwatch.GraphWidget:
    return graph(
        f"Endpoint invocations (sum per {PERIOD.to_minutes()} min)",
        [cloudwatch.SearchExpression(expression=endpoint_search("Invocations", "Sum"))],
    )


def endpoint_latency() -> cloudwatch.GraphWidget:
    return graph(
        "Endpoint model latency",
        [
            cloudwatch.SearchExpression(
                expression=endpoint_search("ModelLatency", statistic), label=statistic
            )
            for statistic in ("Average", "Maximum")
        ],
        left_y_axis=cloudwatch.YAxisProps(label="microseconds", show_units=False),
    )
