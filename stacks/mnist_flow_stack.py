"""The one stack: assembles a construct per capability and exports what users need."""

from __future__ import annotations

from pathlib import Path

from aws_cdk import CfnOutput, Fn, Stack
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_iam as iam
from constructs import Construct

from core import contracts, endpoint_alarms
from core.contracts import ENDPOINT_TYPE_SERVERLESS, INCOMING_PREFIX
from core.settings import Settings, allowed_instance_types
from stacks import names
from stacks.alarms import ALARM_NAME_PREFIX
from stacks.dashboard import ProductDashboard
from stacks.data_bucket import DataBucket
from stacks.endpoint_alarms import EndpointAlarms
from stacks.endpoint_invoke import EndpointInvokePolicy
from stacks.kfp_access import KfpAccess
from stacks.model_registry import ModelRegistry
from stacks.notifications import Notifications
from stacks.operations_topic import OperationsTopic
from stacks.pipeline_role import PipelinePodRole
from stacks.product_function import ProductFunction
from stacks.progress_rules import ProgressRules
from stacks.retire_policy import grant_retire
from stacks.run_slots import RunSlotsQueue, grant_slot_moves
from stacks.runs_table import RunsTable
from stacks.sagemaker_role import SageMakerExecutionRole
from stacks.step_image import StepImage
from stacks.user_policy import ProductUserPolicy
from stacks.watchdog_schedule import WatchdogSchedule

START_RUN_MEMORY_MB = 256
# KFP calls are retried with backoff inside one invocation; leave room for that.
START_RUN_TIMEOUT_SECONDS = 120
TRACK_PROGRESS_MEMORY_MB = 256
# One conditional DynamoDB write and at most one SNS publish per event.
TRACK_PROGRESS_TIMEOUT_SECONDS = 30
WATCHDOG_MEMORY_MB = 256
# One pass: a scan of the runs table and a KFP call per stuck run, each with a 10 s timeout.
WATCHDOG_TIMEOUT_SECONDS = 120


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
            self,
            names.NOTIFICATIONS_ID,
            emails=settings.notification_emails,
            alarm_name_prefix=ALARM_NAME_PREFIX,
        )
        operations = OperationsTopic(
            self,
            names.OPERATIONS_TOPIC_ID,
            key=notifications.key,
            emails=settings.operations_emails,
            alarm_name_prefix=ALARM_NAME_PREFIX,
            undelivered=notifications.undelivered,
        )
        execution = SageMakerExecutionRole(
            self,
            names.SAGEMAKER_ROLE_ID,
            bucket=data.bucket,
            training_image=settings.training_image,
        )
        kfp = KfpAccess(self, names.KFP_ACCESS_ID, settings=settings)
        step_image = StepImage(self, names.STEP_IMAGE_ID, prebuilt=settings.step_image)
        slots = RunSlotsQueue(
            self,
            names.RUN_SLOTS_ID,
            consumer_timeout_seconds=START_RUN_TIMEOUT_SECONDS,
            operations_topic=operations.topic,
        )
        shared = {
            **settings,
            "runs_table_name": runs.table.table_name,
            "notification_topic_arn": notifications.topic.topic_arn,
            "run_slots_queue_url": slots.queue.queue_url,
        }

        # KFP's API may be reachable from given subnets only: both functions that call it go there.
        placement = _vpc_placement(self, settings)
        start_run = ProductFunction(
            self,
            contracts.START_RUN,
            description="Starts one Kubeflow Pipelines run per dataset uploaded under incoming/",
            code_folder=lambda_code_folder,
            memory_mb=START_RUN_MEMORY_MB,
            timeout_seconds=START_RUN_TIMEOUT_SECONDS,
            values={
                **shared,
                "data_bucket_name": data.bucket.bucket_name,
                "kfp_token_secret_arn": kfp.token_secret_arn,
                "pipeline_spec_path": contracts.PIPELINE_SPEC_FILE,
                "step_image_uri": step_image.uri,
                "sagemaker_role_arn": execution.role.role_arn,
                "event_bus_name": contracts.PIPELINE_EVENT_BUS,  # the exit handler reports there
                # The stable endpoint's rollback alarms (EndpointAlarms below), by name.
                "endpoint_alarm_names": endpoint_alarms.alarm_names(settings.endpoint_name),
            },
            log_retention_days=settings.log_retention_days,
            operations_topic=operations.topic,
            failures_mean="an upload event was not handled after its retries",
            reserved_concurrency=settings.reserved_concurrency,
            **placement,
        )
        start_run.grant_runs_and_notifications(runs.table, notifications.topic)
        kfp.grant_kfp_caller(start_run.role, "StartRunAccessEntry")
        data.start_on_upload(start_run.function)
        data.grant_read_uploads(start_run.role)
        slots.consumed_by(start_run)
        grant_slot_moves(start_run, runs.table, "GetItem", "Scan", "ConditionCheckItem")

        track_progress = ProductFunction(
            self,
            contracts.TRACK_PROGRESS,
            description=(
                "Moves run records on from SageMaker and pipeline events; emails the endpoint"
            ),
            code_folder=lambda_code_folder,
            memory_mb=TRACK_PROGRESS_MEMORY_MB,
            timeout_seconds=TRACK_PROGRESS_TIMEOUT_SECONDS,
            values=shared,
            log_retention_days=settings.log_retention_days,
            operations_topic=operations.topic,
            failures_mean="a SageMaker or pipeline event never reached its run record",
            reserved_concurrency=settings.reserved_concurrency,
        )
        track_progress.grant_runs_and_notifications(runs.table, notifications.topic)
        track_progress.grant_price_list()  # each run's cost in its email
        rules = ProgressRules(self, names.PROGRESS_RULES_ID, target=track_progress)

        watchdog = ProductFunction(
            self,
            contracts.WATCHDOG,
            description="Closes runs that went quiet: stale claims, runs KFP ended, lost emails",
            code_folder=lambda_code_folder,
            memory_mb=WATCHDOG_MEMORY_MB,
            timeout_seconds=WATCHDOG_TIMEOUT_SECONDS,
            values={
                **shared,
                "kfp_token_secret_arn": kfp.token_secret_arn,
                "data_bucket_name": data.bucket.bucket_name,  # promoted models it retires
            },
            log_retention_days=settings.log_retention_days,
            operations_topic=operations.topic,
            failures_mean="a watchdog pass failed after its retries",
            reserved_concurrency=settings.reserved_concurrency,
            **placement,
        )
        watchdog.grant_runs_and_notifications(runs.table, notifications.topic)
        watchdog.grant_scan(runs.table)
        kfp.grant_kfp_caller(watchdog.role, "WatchdogAccessEntry")
        WatchdogSchedule(self, names.WATCHDOG_SCHEDULE_ID, target=watchdog)
        grant_retire(watchdog.role, data.bucket)  # per-run endpoints past their time to live
        grant_slot_moves(watchdog, runs.table, "GetItem")
        slots.sent_by(start_run, track_progress, watchdog)

        registry = ModelRegistry(self, names.MODEL_REGISTRY_ID)
        rollback_alarms = EndpointAlarms(
            self,
            names.ENDPOINT_ALARMS_ID,
            endpoint_name=settings.endpoint_name,
            topic=operations.topic,
        )
        execution.role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="ReadTheRollbackAlarms",
                actions=["cloudwatch:DescribeAlarms"],
                resources=rollback_alarms.arns,
            )
        )
        pods = PipelinePodRole(
            self,
            names.PIPELINE_POD_ROLE_ID,
            bucket=data.bucket,
            execution_role=execution.role,
            event_bus=rules.pipeline_bus,
            cluster_name=settings.eks_cluster_name,
            namespace=settings.kfp_namespace,
            service_account=settings.kfp_service_account,
            instance_types=allowed_instance_types(settings),
            registry=registry,
            rollback_alarm_arns=rollback_alarms.arns,
            serverless_endpoints=settings.endpoint_type == ENDPOINT_TYPE_SERVERLESS,
        )
        rules.admit_only(pods.role)
        grant_retire(pods.role, data.bucket)  # retire-superseded and the exit handler
        invoke = EndpointInvokePolicy(self, names.ENDPOINT_INVOKE_ID)
        users = ProductUserPolicy(self, names.USER_POLICY_ID, bucket=data.bucket, table=runs.table)

        self.data_bucket = data
        self.runs_table = runs
        self.notifications = notifications
        self.operations = operations
        self.sagemaker_execution = execution
        self.kfp_access = kfp
        self.start_run = start_run
        self.track_progress = track_progress
        self.watchdog = watchdog
        self.run_slots = slots
        self.progress_rules = rules
        self.pipeline_pods = pods
        self.model_registry = registry
        self.endpoint_alarms = rollback_alarms
        self.endpoint_invoke = invoke
        self.user_policy = users
        self.step_image = step_image
        self.dashboard = ProductDashboard(
            self, names.DASHBOARD_ID, functions=(start_run, track_progress)
        )

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
            names.OUTPUT_USER_POLICY_ARN: (
                users.policy.managed_policy_arn,
                "Attach to the people who use the product: upload, status, predict, rerun",
            ),
            names.OUTPUT_PIPELINE_ROLE_ARN: (
                pods.role.role_arn,
                "Role of the KFP runner's pods (EKS Pod Identity)",
            ),
            names.OUTPUT_STEP_IMAGE: (step_image.uri, "Image every pipeline step runs in"),
            names.OUTPUT_START_RUN_FUNCTION: (start_run.function.function_name, "start-run Lambda"),
            names.OUTPUT_START_RUN_FAILURES_QUEUE: (
                start_run.failed_events.queue_url,
                "Upload events the start-run Lambda could not handle",
            ),
            names.OUTPUT_TRACK_PROGRESS_FUNCTION: (
                track_progress.function.function_name,
                "track-progress Lambda",
            ),
            names.OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE: (
                track_progress.failed_events.queue_url,
                "SageMaker and pipeline events that never reached a run record",
            ),
            names.OUTPUT_OPERATIONS_TOPIC_ARN: (
                operations.topic.topic_arn,
                "Operations alarms (failure queues, Lambda errors)",
            ),
        }
        # What `mnistflow verify` checks the deployed stack against (core.contracts).
        alarms = [
            *(alarm for f in (start_run, track_progress, watchdog) for alarm in f.alarms.values()),
            operations.undelivered_alarm,
            slots.alarm,
            *rollback_alarms.alarms,
        ]
        outputs |= {
            contracts.OUTPUT_KFP_MODE: (settings.kfp_mode, "How start-run reaches KFP"),
            contracts.OUTPUT_KFP_NAMESPACE: (settings.kfp_namespace, "KFP's namespace"),
            contracts.OUTPUT_KFP_SERVICE_ACCOUNT: (
                settings.kfp_service_account,
                "Service account of the pipeline's pods (Pod Identity)",
            ),
            contracts.OUTPUT_START_RUN_ROLE_ARN: (start_run.role.role_arn, "start-run's role"),
            contracts.OUTPUT_WATCHDOG_ROLE_ARN: (watchdog.role.role_arn, "The watchdog's role"),
            contracts.OUTPUT_ALARM_NAMES: (
                Fn.join(",", [alarm.alarm_name for alarm in alarms]),
                "The stack's alarms (they notify the operations topic)",
            ),
        }
        if settings.eks_cluster_name:
            outputs[contracts.OUTPUT_EKS_CLUSTER_NAME] = (
                settings.eks_cluster_name,
                "The EKS cluster running KFP",
            )
        for output_id, (value, description) in outputs.items():
            CfnOutput(self, output_id, value=value, description=description)


def _vpc_placement(scope: Construct, settings: Settings) -> dict:
    """Function props that put start-run in the given subnets (for a KFP URL only there)."""
    if not settings.vpc_id:
        return {}
    vpc = ec2.Vpc.from_vpc_attributes(
        scope,
        "Vpc",
        vpc_id=settings.vpc_id,
        availability_zones=Stack.of(scope).availability_zones,
    )
    subnets = [
        ec2.Subnet.from_subnet_id(scope, f"Subnet{index}", subnet_id)
        for index, subnet_id in enumerate(settings.subnet_ids)
    ]
    security_group = ec2.SecurityGroup(
        scope,
        "StartRunSecurityGroup",
        vpc=vpc,
        description="start-run and watchdog Lambdas: outbound only (KFP URL, AWS APIs)",
        allow_all_outbound=True,
    )
    return {
        "vpc": vpc,
        "vpc_subnets": ec2.SubnetSelection(subnets=subnets),
        "security_groups": [security_group],
    }
