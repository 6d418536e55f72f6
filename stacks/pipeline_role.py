"""The IAM role the pipeline's pods get via EKS Pod Identity (replaces the seed's access keys)."""

from __future__ import annotations

from collections.abc import Sequence

from aws_cdk import ArnFormat, Stack
from aws_cdk import aws_eks as eks
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core.contracts import (
    MODEL_PACKAGE_GROUP,
    PIPELINE_EVENT_SOURCE,
    RUNS_PREFIX,
    SAGEMAKER_NAME_PREFIX,
    SERVING_MODELS_PREFIX,
)
from stacks.arns import SAGEMAKER_RESOURCE_TYPES, product_sagemaker_arns
from stacks.data_bucket import run_data_statements
from stacks.model_registry import ModelRegistry
from stacks.sagemaker_role import SAGEMAKER_SERVICE

POD_IDENTITY_SERVICE = "pods.eks.amazonaws.com"
# What the pipeline's steps do with SageMaker: create, wait (describe), stop on cancel, move a
# named endpoint to a new config, tag what they create. The creates that choose instances are
# apart: `sagemaker:InstanceTypes` holds for them (service authorization reference:
# CreateTrainingJob, CreateTransformJob, CreateEndpointConfig; not CreateEndpoint/CreateModel).
SAGEMAKER_CREATES_WITH_INSTANCES = (
    "sagemaker:CreateTrainingJob",
    "sagemaker:CreateTransformJob",
    "sagemaker:CreateEndpointConfig",
)
PIPELINE_SAGEMAKER_ACTIONS = (
    "sagemaker:DescribeTrainingJob",
    "sagemaker:StopTrainingJob",
    "sagemaker:CreateModel",
    "sagemaker:DescribeModel",
    "sagemaker:DescribeTransformJob",
    "sagemaker:StopTransformJob",
    "sagemaker:DescribeEndpointConfig",
    "sagemaker:CreateEndpoint",
    "sagemaker:DescribeEndpoint",
    "sagemaker:UpdateEndpoint",
    "sagemaker:AddTags",
    # A retried deploy reads its endpoint config's tags (was its update rolled back?).
    "sagemaker:ListTags",
    # Autoscaling's caller needs it on the endpoint (developer guide, "Auto scaling
    # prerequisites", Permissions).
    "sagemaker:UpdateEndpointWeightsAndCapacities",
)
# Target tracking on the stable endpoint's variant (pipeline/steps/guardrails.py). Application
# Auto Scaling's scalable-target ARNs carry a generated id, not the endpoint's name, and its
# Describe calls take no resource: these are granted on "*" (the guide's own policy grants
# application-autoscaling:* there).
PIPELINE_AUTOSCALING_ACTIONS = (
    "application-autoscaling:RegisterScalableTarget",
    "application-autoscaling:DeregisterScalableTarget",
    "application-autoscaling:PutScalingPolicy",
    "application-autoscaling:DeleteScalingPolicy",
    "application-autoscaling:DescribeScalableTargets",
    "application-autoscaling:DescribeScalingPolicies",
)
# The service-linked role SageMaker autoscaling uses, which the first registration creates (the
# guide's policy: this role's ARN, iam:AWSServiceName sagemaker.application-autoscaling...).
AUTOSCALING_SERVICE = "sagemaker.application-autoscaling.amazonaws.com"
AUTOSCALING_SERVICE_LINKED_ROLE = (
    f"aws-service-role/{AUTOSCALING_SERVICE}/"
    "AWSServiceRoleForApplicationAutoScaling_SageMakerEndpoint"
)
# A target-tracking policy's alarms, which Application Auto Scaling makes and removes on the
# caller's behalf (the guide's policy: cloudwatch:PutMetricAlarm, DescribeAlarms, DeleteAlarms);
# their names start TargetTracking- (Application Auto Scaling user guide, target tracking).
TARGET_TRACKING_ALARMS = "TargetTracking-*"
TARGET_TRACKING_ALARM_ACTIONS = (
    "cloudwatch:PutMetricAlarm",
    "cloudwatch:DescribeAlarms",
    "cloudwatch:DeleteAlarms",
)
# events:source is a PutEvents condition key (service authorization reference). It holds the
# source of every entry of the request (up to ten), so the grant requires all of them to be the
# pipeline's (ForAllValues) and the key to be present (a set with no value passes ForAllValues).
# The model registry: evaluate registers a version in the stack's group, the exit handler settles
# its approval (pipeline/steps/registry.py). Service authorization reference: CreateModelPackage,
# DescribeModelPackage, UpdateModelPackage and AddTags act on model-package (a version's ARN is
# model-package/<group>/<version>); ListModelPackages names no resource type, so it is granted
# on "*" and reads summaries only.
REGISTRY_PACKAGE_ACTIONS = (
    "sagemaker:CreateModelPackage",
    "sagemaker:DescribeModelPackage",
    "sagemaker:UpdateModelPackage",
    "sagemaker:AddTags",
)
REGISTRY_GROUP_ACTIONS = ("sagemaker:CreateModelPackage", "sagemaker:DescribeModelPackageGroup")
REGISTRY_LIST_ACTIONS = ("sagemaker:ListModelPackages",)
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
        event_bus: events.IEventBus,
        cluster_name: str,
        namespace: str,
        service_account: str,
        instance_types: Sequence[str],
        registry: ModelRegistry,
        rollback_alarm_arns: Sequence[str] = (),
        serverless_endpoints: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.role = iam.Role(
            self,
            "Role",
            # Pod Identity needs sts:TagSession next to sts:AssumeRole, and sends the pod's
            # namespace, service account and cluster as session tags, which the trust checks
            # (EKS user guide, "Create IAM role with trust policy required by EKS Pod Identity").
            assumed_by=iam.SessionTagsPrincipal(
                iam.ServicePrincipal(
                    POD_IDENTITY_SERVICE,
                    conditions={
                        "StringEquals": pod_session_tags(cluster_name, namespace, service_account)
                    },
                )
            ),
            description=f"KFP pipeline pods ({namespace}/{service_account}) of the MNIST product",
        )
        policy = iam.Policy(
            self,
            "Policy",
            statements=[
                iam.PolicyStatement(
                    sid="CreateProductSageMakerResourcesOnAllowedInstances",
                    actions=list(SAGEMAKER_CREATES_WITH_INSTANCES),
                    resources=product_sagemaker_arns(stack),
                    # Multi-valued: every instance type of the request must be allowed, and the
                    # request must carry the key (an empty set passes ForAllValues).
                    conditions={
                        "ForAllValues:StringEquals": {
                            "sagemaker:InstanceTypes": list(instance_types)
                        },
                        "Null": {"sagemaker:InstanceTypes": "false"},
                    },
                ),
                *(
                    # endpoint_type serverless: the endpoint config's variant has a
                    # ServerlessConfig and no instance type, so its CreateEndpointConfig carries
                    # no sagemaker:InstanceTypes, which the statement above requires.
                    [
                        iam.PolicyStatement(
                            sid="CreateProductServerlessEndpointConfigs",
                            actions=["sagemaker:CreateEndpointConfig"],
                            resources=product_sagemaker_arns(stack),
                            conditions={"Null": {"sagemaker:InstanceTypes": "true"}},
                        )
                    ]
                    if serverless_endpoints
                    else []
                ),
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
                iam.PolicyStatement(
                    sid="RegisterModelVersions",
                    actions=list(REGISTRY_PACKAGE_ACTIONS),
                    resources=[registry.package_arns],
                ),
                iam.PolicyStatement(
                    sid="RegisterInTheProductGroup",
                    actions=list(REGISTRY_GROUP_ACTIONS),
                    resources=[registry.group_arn],
                ),
                iam.PolicyStatement(
                    sid="FindARunsModelVersion",
                    actions=list(REGISTRY_LIST_ACTIONS),
                    resources=["*"],
                ),
                *run_data_statements(bucket),
                # The model a run deploys is promoted out of runs/ (steps.promote_artifact):
                # a copy under models/, tagged with its run key.
                iam.PolicyStatement(
                    sid="PromoteServingModels",
                    actions=["s3:PutObject", "s3:PutObjectTagging"],
                    resources=[bucket.arn_for_objects(f"{SERVING_MODELS_PREFIX}*")],
                ),
                iam.PolicyStatement(
                    sid="ScaleTheStableEndpoint",
                    actions=list(PIPELINE_AUTOSCALING_ACTIONS),
                    resources=["*"],
                ),
                iam.PolicyStatement(
                    sid="CreateTheAutoScalingServiceLinkedRole",
                    actions=["iam:CreateServiceLinkedRole"],
                    resources=[
                        stack.format_arn(
                            service="iam",
                            region="",
                            resource="role",
                            resource_name=AUTOSCALING_SERVICE_LINKED_ROLE,
                        )
                    ],
                    conditions={"StringLike": {"iam:AWSServiceName": AUTOSCALING_SERVICE}},
                ),
                iam.PolicyStatement(
                    sid="ManageTargetTrackingAlarms",
                    actions=list(TARGET_TRACKING_ALARM_ACTIONS),
                    resources=[
                        stack.format_arn(
                            service="cloudwatch",
                            resource="alarm",
                            resource_name=TARGET_TRACKING_ALARMS,
                            arn_format=ArnFormat.COLON_RESOURCE_NAME,
                        )
                    ],
                ),
                *(
                    # The guardrails read the rollback alarms' state (developer guide,
                    # "Auto-Rollback Configuration and Monitoring": cloudwatch:DescribeAlarms).
                    [
                        iam.PolicyStatement(
                            sid="ReadTheRollbackAlarms",
                            actions=["cloudwatch:DescribeAlarms"],
                            resources=list(rollback_alarm_arns),
                        )
                    ]
                    if rollback_alarm_arns
                    else []
                ),
                # The exit handler reports the run's final state on the product's own bus,
                # where the tracking rule listens; no other bus, no other source.
                iam.PolicyStatement(
                    sid="ReportRunStateToEventBridge",
                    actions=["events:PutEvents"],
                    resources=[event_bus.event_bus_arn],
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
                        "A model package group's versions are numbered by SageMaker as they are"
                        " registered (model-package/<group>/<version>): the wildcard is the"
                        " versions of the product's one group. Resource::* : ListModelPackages"
                        " supports no resource-level permission (it lists summaries only), and"
                        " Application Auto Scaling's Describe calls take no resource while its"
                        " scalable targets' ARNs carry a generated id (the six actions the deploy"
                        " step uses on the stable endpoint's variant)."
                    ),
                    applies_to=[
                        "Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:<AWS::AccountId>:"
                        f"model-package/{MODEL_PACKAGE_GROUP}/*",
                        "Resource::*",
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Target tracking's alarms are named by Application Auto Scaling "
                        "(TargetTracking-<resource>-AlarmHigh/Low-<id>); the grant covers that "
                        "prefix only."
                    ),
                    applies_to=[
                        "Resource::arn:<AWS::Partition>:cloudwatch:<AWS::Region>:<AWS::AccountId>:"
                        f"alarm:{TARGET_TRACKING_ALARMS}"
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "A deployed model is promoted to models/<run key>/; writes are limited to "
                        "that prefix of the product's own bucket."
                    ),
                    applies_to=[f"Resource::<{bucket_logical_id}.Arn>/{SERVING_MODELS_PREFIX}*"],
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


def pod_session_tags(cluster_name: str, namespace: str, service_account: str) -> dict[str, str]:
    """The session tags Pod Identity sends (eks-cluster-name, kubernetes-namespace,
    kubernetes-service-account), as the trust requires them: only this service account's pods,
    of this cluster when one is named."""
    tags = {
        "aws:RequestTag/kubernetes-namespace": namespace,
        "aws:RequestTag/kubernetes-service-account": service_account,
    }
    if cluster_name:
        tags["aws:RequestTag/eks-cluster-name"] = cluster_name
    return tags
