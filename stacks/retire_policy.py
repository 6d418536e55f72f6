"""IAM for retiring the product's SageMaker resources (pipeline/steps/retire.py): list them,
read their run-key tag, delete only those that carry it, and prune promoted models/.

The same grant goes to the pipeline's pods (retire-superseded, the exit handler) and to the
watchdog (per-run endpoints past their time to live). Service authorization reference, "Actions,
resources, and condition keys for Amazon SageMaker"
(https://docs.aws.amazon.com/service-authorization/latest/reference/list_amazonsagemaker.html):
ListEndpoints, ListEndpointConfigs and ListModels have no resource type (Resource "*");
ListTags, Describe* and Delete* take the endpoint, endpoint-config and model ARNs, whose resource
types carry aws:ResourceTag/${TagKey}.
"""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import IConstruct

from core.contracts import RUN_KEY_TAG, SAGEMAKER_NAME_PREFIX, SERVING_MODELS_PREFIX
from stacks.arns import sagemaker_arn

RETIRED_RESOURCE_TYPES = ("endpoint", "endpoint-config", "model")
LIST_ACTIONS = ("sagemaker:ListEndpoints", "sagemaker:ListEndpointConfigs", "sagemaker:ListModels")
READ_ACTIONS = (
    "sagemaker:ListTags",
    "sagemaker:DescribeEndpoint",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:DescribeModel",
)
DELETE_ACTIONS = (
    "sagemaker:DeleteEndpoint",
    "sagemaker:DeleteEndpointConfig",
    "sagemaker:DeleteModel",
)
# A delete is allowed only on a resource that carries the run-key tag (any value).
TAGGED_CONDITION = {"Null": {f"aws:ResourceTag/{RUN_KEY_TAG}": "false"}}


def retire_statements(stack: Stack, bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    arns = [sagemaker_arn(stack, resource_type) for resource_type in RETIRED_RESOURCE_TYPES]
    return [
        iam.PolicyStatement(
            sid="ListSageMakerResources", actions=list(LIST_ACTIONS), resources=["*"]
        ),
        iam.PolicyStatement(
            sid="ReadProductSageMakerResources", actions=list(READ_ACTIONS), resources=arns
        ),
        iam.PolicyStatement(
            sid="DeleteTaggedProductSageMakerResources",
            actions=list(DELETE_ACTIONS),
            resources=arns,
            conditions=TAGGED_CONDITION,
        ),
        iam.PolicyStatement(
            sid="ListPromotedModels",
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
            conditions={"StringLike": {"s3:prefix": [f"{SERVING_MODELS_PREFIX}*"]}},
        ),
        iam.PolicyStatement(
            sid="PrunePromotedModels",
            actions=["s3:GetObjectTagging", "s3:DeleteObject"],
            resources=[bucket.arn_for_objects(f"{SERVING_MODELS_PREFIX}*")],
        ),
    ]


def grant_retire(role: iam.IRole, bucket: s3.IBucket) -> None:
    stack = Stack.of(role)
    policy = iam.Policy(
        role, "RetireProductSageMakerResources", statements=retire_statements(stack, bucket)
    )
    policy.attach_to_role(role)
    bucket_logical_id = stack.get_logical_id(bucket.node.default_child)
    suppress(policy, bucket_logical_id)


def suppress(policy: IConstruct, bucket_logical_id: str) -> None:
    NagSuppressions.add_resource_suppressions(
        policy,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "ListEndpoints, ListEndpointConfigs and ListModels support no resource-level "
                    "permissions (Resource must be *); they return names only, and deletes are "
                    "limited to the product's names carrying its run-key tag."
                ),
                applies_to=["Resource::*"],
            ),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason=(
                    "Each run names its SageMaker resources after its run key (mnist-<hash>-...); "
                    "the wildcard is the product's name prefix, and deletes need its run-key tag."
                ),
                applies_to=[
                    "Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                    f"{resource_type}/{SAGEMAKER_NAME_PREFIX}*"
                    for resource_type in RETIRED_RESOURCE_TYPES
                ],
            ),
            NagPackSuppression(
                id="AwsSolutions-IAM5",
                reason="Promoted serving models are one object per run under models/ only.",
                applies_to=[f"Resource::<{bucket_logical_id}.Arn>/{SERVING_MODELS_PREFIX}*"],
            ),
        ],
    )
