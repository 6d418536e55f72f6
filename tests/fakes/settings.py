"""A function's configuration as the stack would set it up: the context read through the schema,
the stack's values, the region the Lambda runtime sets, then read back at cold start."""

from __future__ import annotations

from typing import Any

from core import contracts, endpoint_alarms
from core.settings import CONTEXT_KEYS, Settings, environment, read_context, read_environment

REGION = "eu-west-1"
STACK_VALUES = {
    "runs_table_name": "mnistflow-runs",
    "notification_topic_arn": "arn:aws:sns:eu-west-1:123456789012:mnistflow-notifications",
    "data_bucket_name": "mnistflow-data-123456789012",
    "kfp_token_secret_arn": "",
    "pipeline_spec_path": "mnist_pipeline.yaml",
    "step_image_uri": "123456789012.dkr.ecr.eu-west-1.amazonaws.com/mnistflow-step:1",
    "sagemaker_role_arn": "arn:aws:iam::123456789012:role/mnistflow-sagemaker",
    "event_bus_name": contracts.PIPELINE_EVENT_BUS,
    "run_slots_queue_url": "https://sqs.eu-west-1.amazonaws.com/123456789012/mnistflow-run-slots",
    "endpoint_alarm_names": endpoint_alarms.alarm_names("mnist-classifier"),
}
CLUSTER_CONTEXT = {"eks_cluster_name": "mnist-cluster"}


def function_environ(function: str, region: str = REGION, **values: Any) -> dict[str, str]:
    """`values` by settings key: context keys go through the context, the rest are the stack's."""
    context = {k: v for k, v in values.items() if k in CONTEXT_KEYS}
    stack = {k: v for k, v in values.items() if k not in CONTEXT_KEYS}
    settings = read_context({**CLUSTER_CONTEXT, **context})
    return {
        **environment(function, {**settings, **STACK_VALUES, **stack}),
        "AWS_REGION": region,
    }


def function_settings(function: str, region: str = REGION, **values: Any) -> Settings:
    return read_environment(function, function_environ(function, region, **values))
