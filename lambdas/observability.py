"""Structured logs and metrics for every function (Powertools), in one place.

No Powertools Tracer: it imports the X-Ray SDK, which builds two botocore clients at import
and adds ~0.11 s to every cold start (benchmarks/RESULTS.md). The function's X-Ray segment
comes from Lambda's active tracing instead, set on the function by the CDK stack.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import single_metric

from core.contracts import METRICS_NAMESPACE

logger = Logger()
metrics = Metrics()


def configure_observability(service_name: str, metrics_namespace: str) -> None:
    """Applies the function's validated configuration at the start of each invocation (one
    process may host several functions: the local stack)."""
    metrics.namespace = metrics_namespace
    metrics.service = service_name
    logger.append_keys(service=service_name)


def add_metric_with(name: str, unit: str, value: float, **dimensions: str) -> None:
    """One metric with dimensions of its own beside `service` (its own EMF document)."""
    namespace = metrics.namespace or METRICS_NAMESPACE
    with single_metric(name=name, unit=unit, value=value, namespace=namespace) as metric:
        metric.add_dimension(name="service", value=metrics.service or "")
        for dimension, dimension_value in dimensions.items():
            metric.add_dimension(name=dimension, value=dimension_value)
