"""ARN patterns for the resources this product owns outside the stack (SageMaker, logs)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Stack

from core.contracts import SAGEMAKER_NAME_PREFIX

# SageMaker resource types a run creates (the ARN's resource part before the name).
SAGEMAKER_RESOURCE_TYPES = ("training-job", "model", "transform-job", "endpoint-config", "endpoint")


def sagemaker_arn(stack: Stack, resource_type: str, name: str = f"{SAGEMAKER_NAME_PREFIX}*") -> str:
    """`arn:<partition>:sagemaker:<region>:<account>:<type>/<name>`; names start `mnist-`."""
    return stack.format_arn(service="sagemaker", resource=resource_type, resource_name=name)


def product_sagemaker_arns(stack: Stack) -> list[str]:
    """Every SageMaker resource this product may create, and nothing else."""
    return [sagemaker_arn(stack, resource_type) for resource_type in SAGEMAKER_RESOURCE_TYPES]


def log_group_arn(stack: Stack, name_pattern: str) -> str:
    return stack.format_arn(
        service="logs",
        resource="log-group",
        resource_name=name_pattern,
        arn_format=ArnFormat.COLON_RESOURCE_NAME,
    )
