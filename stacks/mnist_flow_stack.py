"""The one stack: assembles a construct per capability and exports what users need."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Stack
from constructs import Construct

from runflow.contracts import INCOMING_PREFIX
from stacks import names
from stacks.data_bucket import DataBucket
from stacks.endpoint_invoke import EndpointInvokePolicy
from stacks.kfp_access import KfpAccess
from stacks.lambda_environment import start_run_environment, track_progress_environment
from stacks.monitoring import Monitoring, WatchedFunction, WatchedQueue
from stacks.notifications import Notifications
from stacks.pipeline_role import PipelinePodRole
from stacks.runs_table import RunsTable
from stacks.sagemaker_role import SageMakerExecutionRole
from stacks.settings import Settings
from stacks.start_run import StartRun
from stacks.tracking import Tracking


class MnistFlowStack(Stack):
    """Data bucket → start-run Lambda → KFP on EKS → SageMaker events → track-progress Lambda;
    runs table, topics, SageMaker and pod roles, alarms."""

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings,
        lambda_code_folder: Path,
        **kwargs,
    ) -> None:
        super().__init__(scope, construct_id, description=names.STACK_DESCRIPTION, **kwargs)

        data = DataBucket(
            self,
            names.DATA_BUCKET_ID,
            runs_retention_days=settings.runs_retention_days,
            access_logs_retention_days=settings.access_logs_retention_days,
        )
        runs = RunsTable(self, names.RUNS_TABLE_ID)
        notifications = Notifications(
            self, names.NOTIFICATIONS_ID, emails=settings.notification_emails
        )
        execution = SageMakerExecutionRole(self, names.SAGEMAKER_ROLE_ID, bucket=data.bucket)
        kfp = KfpAccess(self, names.KFP_ACCESS_ID, settings=settings)

        start_run = StartRun(
            self,
            names.START_RUN_ID,
            code_folder=lambda_code_folder,
            environment=start_run_environment(
                settings,
                kfp_environment=kfp.environment,
                table_name=runs.table.table_name,
                topic_arn=notifications.topic.topic_arn,
                bucket_name=data.bucket.bucket_name,
                sagemaker_role_arn=execution.role.role_arn,
            ),
            table=runs.table,
            topic=notifications.topic,
            log_retention_days=settings.log_retention_days,
            vpc_id=settings.vpc_id,
            subnet_ids=settings.subnet_ids,
        )
        kfp.grant_start_run(start_run.function.role)
        data.start_on_upload(start_run.function)

        pods = PipelinePodRole(
            self,
            names.PIPELINE_POD_ROLE_ID,
            bucket=data.bucket,
            execution_role=execution.role,
            cluster_name=settings.eks_cluster_name,
            namespace=settings.kfp_namespace,
            service_account=settings.kfp_service_account,
        )
        invoke = EndpointInvokePolicy(self, names.ENDPOINT_INVOKE_ID)

        tracking = Tracking(
            self,
            names.TRACKING_ID,
            code_folder=lambda_code_folder,
            environment=track_progress_environment(
                settings,
                table_name=runs.table.table_name,
                topic_arn=notifications.topic.topic_arn,
            ),
            table=runs.table,
            topic=notifications.topic,
            log_retention_days=settings.log_retention_days,
        )
        monitoring = Monitoring(
            self,
            names.MONITORING_ID,
            key=notifications.key,
            emails=settings.operations_emails,
            queues=[
                WatchedQueue(
                    "StartRunFailuresAlarm",
                    start_run.failed_events,
                    "start-run: an upload event was not handled after its retries",
                ),
                WatchedQueue(
                    "TrackingDeadLettersAlarm",
                    tracking.dead_letters,
                    "track-progress: a SageMaker or pipeline event never reached its run record",
                ),
            ],
            functions=[
                WatchedFunction("StartRunErrorsAlarm", start_run.function, "start-run Lambda"),
                WatchedFunction(
                    "TrackProgressErrorsAlarm", tracking.function, "track-progress Lambda"
                ),
            ],
        )

        self.data_bucket = data
        self.runs_table = runs
        self.notifications = notifications
        self.sagemaker_execution = execution
        self.kfp_access = kfp
        self.start_run = start_run
        self.pipeline_pods = pods
        self.endpoint_invoke = invoke
        self.tracking = tracking
        self.monitoring = monitoring

        outputs = {
            names.OUTPUT_BUCKET_NAME: (data.bucket.bucket_name, "Data bucket"),
            names.OUTPUT_UPLOAD_PREFIX: (
                f"s3://{data.bucket.bucket_name}/{INCOMING_PREFIX}",
                "Upload datasets here to start a run",
            ),
            names.OUTPUT_TOPIC_ARN: (notifications.topic.topic_arn, "Run notifications"),
            names.OUTPUT_TABLE_NAME: (runs.table.table_name, "One record per run"),
            names.OUTPUT_SAGEMAKER_ROLE_ARN: (
                execution.role.role_arn,
                "Execution role the pipeline passes to SageMaker",
            ),
            names.OUTPUT_INVOKE_POLICY_ARN: (
                invoke.policy.managed_policy_arn,
                "Attach to whoever calls the mnist-* endpoints",
            ),
            names.OUTPUT_PIPELINE_ROLE_ARN: (
                pods.role.role_arn,
                "Role of the KFP runner's pods (EKS Pod Identity)",
            ),
            names.OUTPUT_START_RUN_FUNCTION: (start_run.function.function_name, "start-run Lambda"),
            names.OUTPUT_START_RUN_FAILURES_QUEUE: (
                start_run.failed_events.queue_url,
                "Upload events the start-run Lambda could not handle",
            ),
            names.OUTPUT_TRACK_PROGRESS_FUNCTION: (
                tracking.function.function_name,
                "track-progress Lambda",
            ),
            names.OUTPUT_TRACKING_DEAD_LETTERS_QUEUE: (
                tracking.dead_letters.queue_url,
                "SageMaker and pipeline events that never reached a run record",
            ),
            names.OUTPUT_OPERATIONS_TOPIC_ARN: (
                monitoring.topic.topic_arn,
                "Operations alarms (dead-letter queues, Lambda errors)",
            ),
        }
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)
