"""The execution role the pipeline passes to SageMaker (replaces the seed's FullAccess role)."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core.contracts import RUNS_PREFIX
from stacks.arns import log_group_arn
from stacks.data_bucket import run_data_statements

SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
SAGEMAKER_LOG_GROUPS = "/aws/sagemaker/*"
# Namespaces SageMaker jobs and endpoints publish their metrics under.
SAGEMAKER_METRIC_NAMESPACES = ("/aws/sagemaker/*", "aws/sagemaker/*")
# The built-in algorithm images the pipeline runs (k-means). They live in an AWS-owned
# account that differs per region, so the account part of the ARN stays a wildcard.
BUILT_IN_ALGORITHM_REPOSITORIES = ("kmeans",)


class SageMakerExecutionRole(Construct):
    """Role SageMaker assumes for training, batch transform and hosting: this bucket, its logs."""

    def __init__(self, scope: Construct, construct_id: str, *, bucket: s3.IBucket) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal(SAGEMAKER_SERVICE),
            description="Execution role the MNIST pipeline passes to SageMaker jobs and endpoints",
        )
        statements = [
            *run_data_statements(bucket),
            iam.PolicyStatement(
                sid="PullBuiltInAlgorithmImages",
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                resources=[
                    stack.format_arn(
                        service="ecr", account="*", resource="repository", resource_name=repository
                    )
                    for repository in BUILT_IN_ALGORITHM_REPOSITORIES
                ],
            ),
            iam.PolicyStatement(
                sid="AuthenticateToEcr",
                actions=["ecr:GetAuthorizationToken"],
                resources=["*"],
            ),
            iam.PolicyStatement(
                sid="WriteSageMakerLogs",
                actions=[
                    "logs:CreateLogGroup",
                    "logs:CreateLogStream",
                    "logs:DescribeLogStreams",
                    "logs:PutLogEvents",
                ],
                resources=[
                    log_group_arn(stack, SAGEMAKER_LOG_GROUPS),
                    log_group_arn(stack, f"{SAGEMAKER_LOG_GROUPS}:log-stream:*"),
                ],
            ),
            iam.PolicyStatement(
                sid="PutSageMakerMetrics",
                actions=["cloudwatch:PutMetricData"],
                resources=["*"],
                conditions={
                    "StringLike": {"cloudwatch:namespace": list(SAGEMAKER_METRIC_NAMESPACES)}
                },
            ),
        ]
        policy = iam.Policy(self, "Policy", statements=statements)
        policy.attach_to_role(self.role)

        bucket_logical_id = stack.get_logical_id(bucket.node.default_child)
        NagSuppressions.add_resource_suppressions(
            policy,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "SageMaker reads datasets and writes model artifacts and transform output "
                        "under keys chosen per run; objects of the product's own bucket only, "
                        "writes limited to runs/."
                    ),
                    applies_to=[
                        f"Resource::<{bucket_logical_id}.Arn>/*",
                        f"Resource::<{bucket_logical_id}.Arn>/{RUNS_PREFIX}*",
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Built-in algorithm images live in an AWS-owned account that differs by "
                        "region; the repository is named, the account cannot be."
                    ),
                    applies_to=[
                        f"Resource::arn:<AWS::Partition>:ecr:<AWS::Region>:*:repository/{repo}"
                        for repo in BUILT_IN_ALGORITHM_REPOSITORIES
                    ],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "ecr:GetAuthorizationToken has no resource type; cloudwatch:PutMetricData "
                        "has none either and is limited by the cloudwatch:namespace condition."
                    ),
                    applies_to=["Resource::*"],
                ),
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "SageMaker names its log groups and streams per job and endpoint under "
                        "/aws/sagemaker/; the grant covers that prefix only."
                    ),
                    applies_to=[
                        "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                        "log-group:/aws/sagemaker/*",
                        "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                        "log-group:/aws/sagemaker/*:log-stream:*",
                    ],
                ),
            ],
        )
