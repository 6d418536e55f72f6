"""The managed policy for whoever calls the product's endpoints (the seed gave nodes `*`)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core.contracts import SAGEMAKER_NAME_PREFIX
from stacks.arns import sagemaker_arn


class EndpointInvokePolicy(Construct):
    """`sagemaker:InvokeEndpoint` on endpoints named `mnist-*` in this account and region."""

    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        endpoints = sagemaker_arn(Stack.of(self), "endpoint")
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description="Invoke the MNIST product's SageMaker endpoints (endpoint/mnist-*)",
            statements=[
                iam.PolicyStatement(
                    sid="InvokeProductEndpoints",
                    actions=["sagemaker:InvokeEndpoint"],
                    resources=[endpoints],
                )
            ],
        )
        NagSuppressions.add_resource_suppressions(
            self.policy,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Each run deploys an endpoint named after its run key (mnist-<hash>-...); "
                        "the wildcard is the product's name prefix, no wider."
                    ),
                    applies_to=[
                        "Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                        f"<AWS::AccountId>:endpoint/{SAGEMAKER_NAME_PREFIX}*"
                    ],
                )
            ],
        )
