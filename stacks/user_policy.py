"""The managed policy for the people who use the product: upload datasets, follow their runs,
read the evaluations, call the endpoints, rerun. Nothing that changes the product itself."""

from __future__ import annotations

from aws_cdk import Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core.contracts import EVALUATION_FILE, INCOMING_PREFIX, RUNS_PREFIX, SAGEMAKER_NAME_PREFIX
from stacks.arns import sagemaker_arn
from stacks.price_list import PRICE_LIST_ACTIONS, PRICE_LIST_SID, PRICE_LIST_SUPPRESSION


class ProductUserPolicy(Construct):
    """What `aws s3 cp ... incoming/`, `mnistflow status`, `predict` and `rerun` need."""

    def __init__(
        self, scope: Construct, construct_id: str, *, bucket: s3.IBucket, table: dynamodb.ITable
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        uploads = bucket.arn_for_objects(f"{INCOMING_PREFIX}*")
        self.policy = iam.ManagedPolicy(
            self,
            "Policy",
            description="Use the MNIST product: upload datasets, read runs and evaluations,"
            " invoke the endpoints, rerun",
            statements=[
                iam.PolicyStatement(
                    # An upload starts a run; `rerun` copies an upload's version onto its key
                    # (HeadObject and the copy's source need the version's read; CopyObject
                    # copies the source's tags by default, which needs their read and write).
                    # Sources: S3 API reference, CopyObject ("x-amz-tagging-directive ... The
                    # default value is COPY"), and GetObjectTagging ("To retrieve tags of any
                    # other version ... you also need permission for the
                    # s3:GetObjectVersionTagging action").
                    sid="UploadAndRerunDatasets",
                    actions=[
                        "s3:PutObject",
                        "s3:PutObjectTagging",
                        "s3:GetObject",
                        "s3:GetObjectVersion",
                        "s3:GetObjectVersionTagging",
                    ],
                    resources=[uploads],
                ),
                iam.PolicyStatement(
                    sid="ListUploads",
                    actions=["s3:ListBucket", "s3:ListBucketVersions"],
                    resources=[bucket.bucket_arn],
                    conditions={"StringLike": {"s3:prefix": [f"{INCOMING_PREFIX}*"]}},
                ),
                iam.PolicyStatement(
                    sid="ReadEvaluations",
                    actions=["s3:GetObject"],
                    resources=[bucket.arn_for_objects(f"{RUNS_PREFIX}*/{EVALUATION_FILE}")],
                ),
                iam.PolicyStatement(
                    sid="ReadRunRecords",
                    actions=["dynamodb:GetItem", "dynamodb:Scan"],
                    resources=[table.table_arn],
                ),
                iam.PolicyStatement(
                    # `predict` checks the endpoint is in service and finds its run's
                    # evaluation through the endpoint's config and model.
                    sid="UseEndpoints",
                    actions=[
                        "sagemaker:InvokeEndpoint",
                        "sagemaker:DescribeEndpoint",
                    ],
                    resources=[sagemaker_arn(stack, "endpoint")],
                ),
                iam.PolicyStatement(
                    sid="FindEndpointConfigs",
                    actions=["sagemaker:DescribeEndpointConfig"],
                    resources=[sagemaker_arn(stack, "endpoint-config")],
                ),
                iam.PolicyStatement(
                    sid="FindEndpointModels",
                    actions=["sagemaker:DescribeModel"],
                    resources=[sagemaker_arn(stack, "model")],
                ),
                iam.PolicyStatement(
                    # `status <run key>` prices the run (lambdas/dal/price_list.py).
                    sid=PRICE_LIST_SID,
                    actions=list(PRICE_LIST_ACTIONS),
                    resources=["*"],
                ),
            ],
        )
        bucket_id = stack.get_logical_id(bucket.node.default_child)
        NagSuppressions.add_resource_suppressions(
            self.policy,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Uploads are any key under incoming/, evaluations one file per run"
                        " under runs/, and SageMaker resources are named after each run's key"
                        f" ({SAGEMAKER_NAME_PREFIX}<hash>-...): the wildcards are the product's"
                        " own prefixes, no wider."
                    ),
                    applies_to=[
                        f"Resource::<{bucket_id}.Arn>/{INCOMING_PREFIX}*",
                        f"Resource::<{bucket_id}.Arn>/{RUNS_PREFIX}*/{EVALUATION_FILE}",
                        *(
                            "Resource::arn:<AWS::Partition>:sagemaker:<AWS::Region>:"
                            f"<AWS::AccountId>:{kind}/{SAGEMAKER_NAME_PREFIX}*"
                            for kind in ("endpoint", "endpoint-config", "model")
                        ),
                    ],
                ),
                PRICE_LIST_SUPPRESSION,
            ],
        )
