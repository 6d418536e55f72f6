"""The model registry: one SageMaker model package group per stack, where the pipeline registers
each evaluated model as a version (pipeline/steps/registry.py)."""

from __future__ import annotations

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_sagemaker as sagemaker
from constructs import Construct

from core.contracts import MODEL_PACKAGE_GROUP, MODEL_PACKAGE_GROUP_DESCRIPTION


def model_package_group_arn(stack: Stack) -> str:
    return stack.format_arn(
        service="sagemaker", resource="model-package-group", resource_name=MODEL_PACKAGE_GROUP
    )


def model_package_arns(stack: Stack) -> str:
    """The group's versions: `model-package/<group>/<version>` (SageMaker developer guide,
    "Model Registry Models, Model Versions, and Model Groups"; ARNs are lower-case)."""
    return stack.format_arn(
        service="sagemaker", resource="model-package", resource_name=f"{MODEL_PACKAGE_GROUP}/*"
    )


class ModelRegistry(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        self.group = sagemaker.CfnModelPackageGroup(
            self,
            "Group",
            model_package_group_name=MODEL_PACKAGE_GROUP,
            model_package_group_description=MODEL_PACKAGE_GROUP_DESCRIPTION,
        )
        # The versions are the record of what was evaluated and served: kept when the stack is
        # deleted, as the bucket and the runs table are (a first create that rolls back still
        # removes it). CloudFormation could not delete a group holding versions anyway.
        self.group.apply_removal_policy(RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE)
        stack = Stack.of(self)
        self.group_arn = model_package_group_arn(stack)
        self.package_arns = model_package_arns(stack)
