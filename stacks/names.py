"""Names the CDK app fixes: the stack, construct ids, output names and a few resource names.

Values shared with the Lambda code and the pipeline (prefixes, suffixes, the product prefix)
live in `runflow.contracts`; this module only holds what the infrastructure itself names.
"""

from __future__ import annotations

from runflow.contracts import PRODUCT_PREFIX

STACK_ID = "MnistFlow"
STACK_DESCRIPTION = (
    "MNIST product: S3 upload starts a Kubeflow Pipelines run on EKS (SageMaker); "
    "SageMaker's events keep each run's record and announce the endpoint"
)

# Construct ids, one per capability.
DATA_BUCKET_ID = "DataBucket"
RUNS_TABLE_ID = "RunsTable"
NOTIFICATIONS_ID = "Notifications"
SAGEMAKER_ROLE_ID = "SageMakerExecution"
ENDPOINT_INVOKE_ID = "EndpointInvoke"
START_RUN_ID = "StartRun"
KFP_ACCESS_ID = "KfpAccess"
PIPELINE_POD_ROLE_ID = "PipelinePods"
TRACKING_ID = "Tracking"
MONITORING_ID = "Monitoring"

# The Lambda asset and its handlers (one asset, only the handler string differs).
START_RUN_HANDLER = "runflow.handlers.start_run.handler"
TRACK_PROGRESS_HANDLER = "runflow.handlers.track_progress.handler"
PIPELINE_SPEC_FILE = "mnist_pipeline.yaml"
# Powertools: one metric namespace for the product, one service name per function.
POWERTOOLS_SERVICE_NAME = f"{PRODUCT_PREFIX}flow"  # the start-run Lambda's
TRACK_PROGRESS_SERVICE_NAME = f"{PRODUCT_PREFIX}flow-track-progress"
POWERTOOLS_METRICS_NAMESPACE = f"{PRODUCT_PREFIX.upper()}Flow"

# Physical names the stack gives its data resources; the local stack creates the same ones.
RUNS_TABLE_NAME = f"{PRODUCT_PREFIX}flow-runs"
NOTIFICATION_TOPIC_NAME = f"{PRODUCT_PREFIX}flow-notifications"


def data_bucket_name(account: str, region: str) -> str:
    """Bucket names are global: the account and region make this one unique."""
    return f"{PRODUCT_PREFIX}flow-data-{account}-{region}"


# SageMaker resources this product creates are named `mnist-...` (run key first).
SAGEMAKER_NAME_PREFIX = f"{PRODUCT_PREFIX}-"

# EKS: the AWS-managed access policy for the start-run Lambda (see kfp_access.py for why).
EKS_ACCESS_POLICY_NAME = "AmazonEKSEditPolicy"
EKS_ACCESS_SCOPE_NAMESPACE = "namespace"
EKS_ACCESS_ENTRY_TYPE = "STANDARD"

# Stack outputs.
OUTPUT_BUCKET_NAME = "DataBucketName"
OUTPUT_UPLOAD_PREFIX = "UploadPrefix"
OUTPUT_TOPIC_ARN = "NotificationTopicArn"
OUTPUT_TABLE_NAME = "RunsTableName"
OUTPUT_SAGEMAKER_ROLE_ARN = "SageMakerExecutionRoleArn"
OUTPUT_INVOKE_POLICY_ARN = "EndpointInvokePolicyArn"
OUTPUT_PIPELINE_ROLE_ARN = "PipelinePodRoleArn"
OUTPUT_START_RUN_FUNCTION = "StartRunFunctionName"
OUTPUT_START_RUN_FAILURES_QUEUE = "StartRunFailuresQueueUrl"
OUTPUT_TRACK_PROGRESS_FUNCTION = "TrackProgressFunctionName"
OUTPUT_TRACKING_DEAD_LETTERS_QUEUE = "TrackingDeadLetterQueueUrl"
OUTPUT_OPERATIONS_TOPIC_ARN = "OperationsTopicArn"
