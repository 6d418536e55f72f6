"""Structured logs and metrics for every function (Powertools), in one place.

No Powertools Tracer: it imports the X-Ray SDK, which builds two botocore clients at import
and adds ~0.11 s to every cold start (benchmarks/RESULTS.md). The function's X-Ray segment
comes from Lambda's active tracing instead, set on the function by the CDK stack.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger, Metrics

logger = Logger()
metrics = Metrics()


def configure_observability(service_name: str, metrics_namespace: str) -> None:
    """Applies the function's validated configuration at the start of each invocation (one
    process may host several functions: the local stack)."""
    metrics.namespace = metrics_namespace
    metrics.service = service_name
    logger.append_keys(service=service_name)
