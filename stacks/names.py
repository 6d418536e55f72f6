"""Names only the CDK app uses: the stack, construct ids and output names.

Names shared with the runtime (physical resource names, handlers, prefixes) live in
`core.contracts`; each function's construct id follows its name (`product_function`).
"""

from __future__ import annotations

from core import contracts

STACK_ID = contracts.STACK_NAME
STACK_DESCRIPTION = (
    "MNIST product: S3 upload starts a Kubeflow Pipelines run on EKS (SageMaker); "
    "SageMaker's events keep each run's record and announce the endpoint"
)

# Construct ids, one per capability.
DATA_BUCKET_ID = "DataBucket"
RUNS_TABLE_ID = "RunsTable"
NOTIFICATIONS_ID = "Notifications"
OPERATIONS_TOPIC_ID = "Operations"
SAGEMAKER_ROLE_ID = "SageMakerExecution"
ENDPOINT_INVOKE_ID = "EndpointInvoke"
USER_POLICY_ID = "ProductUsers"
KFP_ACCESS_ID = "KfpAccess"
PIPELINE_POD_ROLE_ID = "PipelinePods"
PROGRESS_RULES_ID = "ProgressRules"
STEP_IMAGE_ID = "StepImage"
WATCHDOG_SCHEDULE_ID = "WatchdogSchedule"
RUN_SLOTS_ID = "RunSlots"
DASHBOARD_ID = "Dashboard"
MODEL_REGISTRY_ID = "ModelRegistry"
ENDPOINT_ALARMS_ID = "EndpointAlarms"

# EKS: start-run's access entry, whose Kubernetes group a namespaced Role authorizes.
EKS_ACCESS_ENTRY_TYPE = "STANDARD"

# Stack outputs.
OUTPUT_BUCKET_NAME = "DataBucketName"
OUTPUT_UPLOAD_PREFIX = "UploadPrefix"
OUTPUT_TOPIC_ARN = contracts.OUTPUT_NOTIFICATION_TOPIC_ARN
OUTPUT_TABLE_NAME = "RunsTableName"
OUTPUT_SAGEMAKER_ROLE_ARN = "SageMakerExecutionRoleArn"
OUTPUT_INVOKE_POLICY_ARN = "EndpointInvokePolicyArn"
OUTPUT_USER_POLICY_ARN = "ProductUserPolicyArn"
OUTPUT_PIPELINE_ROLE_ARN = contracts.OUTPUT_PIPELINE_ROLE_ARN
OUTPUT_STEP_IMAGE = "StepImageUri"
OUTPUT_START_RUN_FUNCTION = contracts.OUTPUT_START_RUN_FUNCTION
OUTPUT_START_RUN_FAILURES_QUEUE = contracts.OUTPUT_START_RUN_FAILURES_QUEUE
OUTPUT_TRACK_PROGRESS_FUNCTION = contracts.OUTPUT_TRACK_PROGRESS_FUNCTION
OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE = contracts.OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE
OUTPUT_OPERATIONS_TOPIC_ARN = contracts.OUTPUT_OPERATIONS_TOPIC_ARN
