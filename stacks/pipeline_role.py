"""The IAM role the pipeline's pods get via EKS Pod Identity (replaces the seed's access keys)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_eks as eks
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core.contracts import PIPELINE_EVENT_SOURCE, RUNS_PREFIX, SAGEMAKER_NAME_PREFIX
from stacks.arns import SAGEMAKER_RESOURCE_TYPES, default_event_bus_arn, product_sagemaker_arns
from stacks.data_bucket import run_data_statements
from stacks.sagemaker_role import SAGEMAKER_SERVICE

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
# What the pipeline's steps do with SageMaker: create, wait (describe), stop on cancel, move a
# named endpoint to a new config, tag what they create.
PIPELINE_SAGEMAKER_ACTIONS = (
    "sagemaker:CreateTrainingJob",
    "sagemaker:DescribeTrainingJob",
    "sagemaker:StopTrainingJob",
    "sagemaker:CreateModel",
    "sagemaker:DescribeModel",
    "sagemaker:CreateTransformJob",
    "sagemaker:DescribeTransformJob",
    "sagemaker:StopTransformJob",
    "sagemaker:CreateEndpointConfig",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:CreateEndpoint",
    "sagemaker:DescribeEndpoint",
    "sagemaker:UpdateEndpoint",
    "sagemaker:AddTags",
    "sagemaker:ListTags",
)
# events:source is a PutEvents condition key (service authorization reference). It holds the
# source of every entry of the request (up to ten), so the grant requires all of them to be the
# pipeline's (ForAllValues) and the key to be present (a set with no value passes ForAllValues).
PUT_PIPELINE_EVENTS_CONDITIONS = {
    "ForAllValues:StringEquals": {"events:source": [PIPELINE_EVENT_SOURCE]},
    "Null": {"events:source": "false"},
}


class PipelinePodRole(Construct):
    """Role for the KFP runner's pods: SageMaker on `mnist-*`, PassRole, the bucket, run events."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        bucket: s3.IBucket,
        execution_role: iam.IRole,
        cluster_name: str,
        namespace: str,
        service_account: str,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.role = iam.Role(
            self,
            "Role",
            # Pod Identity needs sts:TagSession next to sts:AssumeRole.
            assumed_by=iam.SessionTagsPrincipal(iam.ServicePrincipal(POD_IDENTITY_SERVICE)),
            description=f"KFP pipeline pods ({namespace}/{service_account}) of the MNIST product",
        )
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="RunProductSageMakerResources",
                    actions=list(PIPELINE_SAGEMAKER_ACTIONS),
                    resources=product_sagemaker_arns(stack),
                ),
                iam.PolicyStatement(
                    sid="PassTheExecutionRoleToSageMaker",
                    actions=["iam:PassRole"],
                    resources=[execution_role.role_arn],
                    conditions={"StringEquals": {"iam:PassedToService": SAGEMAKER_SERVICE}},
                ),
                *run_data_statements(bucket),
                # The exit handler reports the run's final state on the default bus, where the
                # tracking rule listens; no other bus, no other source.
                iam.PolicyStatement(
                    sid="ReportRunStateToEventBridge",
                    actions=["events:PutEvents"],
                    resources=[default_event_bus_arn(stack)],
                    conditions=PUT_PIPELINE_EVENTS_CONDITIONS,
                ),
            ],
        )
        policy.attach_to_role(self.role)

        bucket_logical_id = stack.get_logical_id(bucket.node.default_child)
        NagSuppressions.add_resource_suppressions(
            policy,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Each run names its SageMaker resources after its run key (mnist-<hash>-"
                        "...); the wildcard is the product's name prefix, no wider."
                    ),
                    applies_to=[
                        "Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                        f"{resource_type}/{SAGEMAKER_NAME_PREFIX}*"
                        for resource_type in SAGEMAKER_RESOURCE_TYPES
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Steps read the uploaded dataset and write run files under keys chosen per "
                        "run; objects of the product's own bucket only, writes limited to runs/."
                    ),
                    applies_to=[
                        f"Resource::<{bucket_logical_id}.Arn>/*",
                        f"Resource::<{bucket_logical_id}.Arn>/{RUNS_PREFIX}*",
                    ],
                ),
            ],
        )

        self.association: eks.CfnPodIdentityAssociation | None = None
        if cluster_name:
            self.association = eks.CfnPodIdentityAssociation(
                self,
                "PodIdentity",
                cluster_name=cluster_name,
                namespace=namespace,
                service_account=service_account,
                role_arn=self.role.role_arn,
            )
