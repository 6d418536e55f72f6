"""The data bucket: uploads arrive under `incoming/`, the pipeline writes under `runs/`."""

from __future__ import annotations

from aws_cdk import Aws, Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_notifications as s3n
from cdk_nag import NagPackSuppression, NagSuppressions
from constructs import Construct

from core.contracts import INCOMING_PREFIX, RUNS_PREFIX, data_bucket_name

ACCESS_LOGS_PREFIX = "data-bucket/"
NONCURRENT_VERSION_RETENTION_DAYS = 30
INCOMPLETE_UPLOAD_RETENTION_DAYS = 7
# The id CDK gives its singleton Lambda behind `add_event_notification`.
NOTIFICATIONS_HANDLER_ID = "BucketNotificationsHandler050a0587b7544547bf325f094a3db834"


class DataBucket(Construct):
    """Versioned, private, TLS-only, encrypted; its access logs go to a bucket of their own."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        runs_retention_days: int,
        access_logs_retention_days: int,
    ) -> None:
        super().__init__(scope, construct_id)

        self.logs_bucket = s3.Bucket(
            self,
            "AccessLogs",
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # Server access logs can only be delivered to an SSE-S3 bucket.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(expiration=Duration.days(access_logs_retention_days))
            ],
            removal_policy=RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
        )
        NagSuppressions.add_resource_suppressions(
            self.logs_bucket,
            [
                NagPackSuppression(
                    id="AwsSolutions-S1",
                    reason="The server access log bucket; logging it into itself would loop.",
                )
            ],
        )

        self.bucket = s3.Bucket(
            self,
            "Bucket",
            bucket_name=data_bucket_name(Aws.ACCOUNT_ID, Aws.REGION),
            versioned=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.logs_bucket,
            server_access_logs_prefix=ACCESS_LOGS_PREFIX,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-run-outputs",
                    prefix=RUNS_PREFIX,
                    expiration=Duration.days(runs_retention_days),
                    noncurrent_version_expiration=Duration.days(1),
                ),
                s3.LifecycleRule(
                    id="expire-old-versions",
                    noncurrent_version_expiration=Duration.days(NONCURRENT_VERSION_RETENTION_DAYS),
                    abort_incomplete_multipart_upload_after=Duration.days(
                        INCOMPLETE_UPLOAD_RETENTION_DAYS
                    ),
                ),
            ],
            # Datasets and run outputs outlive the stack: delete them on purpose, not by accident.
            # RetainExceptOnCreate: kept when the stack is deleted, but removed when the deploy
            # that created them rolls back, so a failed first deploy leaves no bucket whose
            # fixed name would make the next one fail with "already exists".
            removal_policy=RemovalPolicy.RETAIN_ON_UPDATE_OR_DELETE,
        )

    def grant_read_uploads(self, role: iam.IRole) -> None:
        """Read an upload's metadata (HeadObject needs GetObject, and GetObjectVersion for a
        version) under incoming/ only: it may set the run's settings."""
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadUploadMetadata",
                actions=["s3:GetObject", "s3:GetObjectVersion"],
                resources=[self.bucket.arn_for_objects(f"{INCOMING_PREFIX}*")],
            )
        )
        NagSuppressions.add_resource_suppressions(
            role,
            [
                NagPackSuppression(
                    id="AwsSolutions-IAM5",
                    reason=(
                        "Uploads have any name under incoming/; the grant covers that prefix of "
                        "the product's own bucket, to read an upload's metadata."
                    ),
                    applies_to=[
                        f"Resource::<{Stack.of(self).get_logical_id(self.bucket.node.default_child)}.Arn>/{INCOMING_PREFIX}*"
                    ],
                )
            ],
            apply_to_children=True,
        )

    def start_on_upload(self, function: lambda_.IFunction) -> None:
        """Invoke `function` for every object created under `incoming/`, whatever its suffix.

        No suffix filter on purpose: the Lambda checks the suffix against
        DATASET_SUFFIXES, so an upload of the wrong kind of file is recorded as REJECTED
        and answered with a DATA_REJECTED email instead of vanishing without a trace.
        The pipeline writes only under `runs/`, which the filter does not cover: its
        outputs never start another run.
        """
        self.bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            s3n.LambdaDestination(function),
            s3.NotificationKeyFilter(prefix=INCOMING_PREFIX),
        )
        _suppress_notifications_handler_findings(Stack.of(self))


def _suppress_notifications_handler_findings(stack: Stack) -> None:
    """CDK's own singleton Lambda that writes the bucket's notification configuration."""
    handler = stack.node.try_find_child(NOTIFICATIONS_HANDLER_ID)
    if handler is None:
        return
    NagSuppressions.add_resource_suppressions(
        handler,
        [
            NagPackSuppression(
                id="AwsSolutions-IAM4",
                reason=(
                    "CDK's bucket-notifications custom resource handler logs to CloudWatch "
                    "through the AWS-managed basic execution policy; CDK owns that role."
                ),
                applies_to=[
                    "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
                    "AWSLambdaBasicExecutionRole"
                ],
            ),
        ],
        apply_to_children=True,
    )


def run_data_statements(bucket: s3.IBucket) -> list[iam.PolicyStatement]:
    """What the pipeline's pods and SageMaker both need: read the bucket, write only runs/."""
    return [
        iam.PolicyStatement(
            sid="ReadTheDataBucket",
            actions=["s3:GetObject", "s3:GetObjectVersion"],
            resources=[bucket.arn_for_objects("*")],
        ),
        iam.PolicyStatement(
            sid="ListTheDataBucket",
            actions=["s3:ListBucket", "s3:GetBucketLocation"],
            resources=[bucket.bucket_arn],
        ),
        iam.PolicyStatement(
            sid="WriteRunFiles",
            actions=["s3:PutObject", "s3:AbortMultipartUpload"],
            resources=[bucket.arn_for_objects(f"{RUNS_PREFIX}*")],
        ),
    ]
