"""The execution role the pipeline passes to SageMaker (replaces the seed's FullAccess role)."""

from __future__ import annotations

from aws_cdk import ArnFormat, Aws, CfnMapping, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core import images
from core.contracts import RUNS_PREFIX
from core.sagemaker_events import LOG_GROUP_PREFIX
from stacks.arns import log_group_arn
from stacks.data_bucket import run_data_statements

SAGEMAKER_SERVICE = "sagemaker.amazonaws.com"
SAGEMAKER_LOG_GROUPS = f"{LOG_GROUP_PREFIX}*"
# Namespaces SageMaker jobs and endpoints publish their metrics under.
SAGEMAKER_METRIC_NAMESPACES = ("/aws/sagemaker/*", "aws/sagemaker/*")
KMEANS_ACCOUNTS_MAPPING = "KmeansImageAccounts"


class SageMakerExecutionRole(Construct):
    """Role SageMaker assumes for training, batch transform and hosting: this bucket, its logs."""

    def __init__(
        self, scope: Construct, construct_id: str, *, bucket: s3.IBucket, training_image: str
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)

        self.role = iam.Role(
            self,
            "Role",
            # Confused-deputy protection, as SageMaker's docs give it ("Cross-service confused
            # deputy prevention"): only this account's SageMaker resources may assume the role.
            # One role serves training, transform and endpoints, and the inference form must be
            # `arn:...:sagemaker:<region>:<account>:*` (the docs: not narrowed to one endpoint).
            assumed_by=iam.ServicePrincipal(
                SAGEMAKER_SERVICE,
                conditions={
                    "ArnLike": {
                        "aws:SourceArn": stack.format_arn(
                            service="sagemaker", resource="*", arn_format=ArnFormat.NO_RESOURCE_NAME
                        )
                    },
                    "StringEquals": {"aws:SourceAccount": stack.account},
                },
            ),
            description="Execution role the MNIST pipeline passes to SageMaker jobs and endpoints",
        )
        statements = [
            *run_data_statements(bucket),
            iam.PolicyStatement(
                sid="PullTheTrainingImage",
                actions=[
                    "ecr:BatchCheckLayerAvailability",
                    "ecr:BatchGetImage",
                    "ecr:GetDownloadUrlForLayer",
                ],
                resources=[training_image_repository_arn(self, training_image)],
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
                        f"log-group:{SAGEMAKER_LOG_GROUPS}",
                        "Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:"
                        f"log-group:{SAGEMAKER_LOG_GROUPS}:log-stream:*",
                    ],
                ),
            ],
        )


def training_image_repository_arn(scope: Construct, training_image: str) -> str:
    """The ECR repository the training image comes from: the override's, or the built-in
    k-means image's in the stack's region, its AWS-owned account looked up in a mapping made
    from core/kmeans_images.json (a region missing there fails the deploy, naming the key)."""
    stack = Stack.of(scope)
    if training_image:
        match = images.ECR_IMAGE.fullmatch(training_image)
        assert match is not None  # the settings schema checked it
        return stack.format_arn(
            service="ecr",
            region=match["region"],
            account=match["account"],
            resource="repository",
            resource_name=match["repository"],
        )
    mapping = CfnMapping(
        stack,
        KMEANS_ACCOUNTS_MAPPING,
        mapping={
            region: {"account": account} for region, account in images.kmeans_registries().items()
        },
    )
    return stack.format_arn(
        service="ecr",
        account=mapping.find_in_map(Aws.REGION, "account"),
        resource="repository",
        resource_name=images.kmeans_repository(),
    )
