"""The names every part shares: run keys, the data bucket's layout, resource names, tags,
steps, statuses, notification kinds, and the physical names of the stack's data resources.

Standard library only: shipped as is in the Lambda asset and embedded as is in the pipeline's
components; the CDK app, the CLI and the local stack import it too.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import asdict, dataclass
from typing import Any

PRODUCT_PREFIX = "mnist"

# S3 layout of the data bucket.
INCOMING_PREFIX = "incoming/"
RUNS_PREFIX = "runs/"
# Promoted serving artifacts: models/<run key>/model.tar.gz, no lifecycle expiry; each carries
# the run-key tag (RUN_KEY_TAG) so retiring them selects on it.
SERVING_MODELS_PREFIX = "models/"
# The dataset layouts, by file suffix: the classic gzip'd pickle and the Keras npz. Suffixes
# match whatever their case (MNIST.NPZ is an npz), the same way wherever they are checked.
LAYOUT_PKL_GZ = "pkl.gz"
LAYOUT_NPZ = "npz"
DATASET_SUFFIXES = {".pkl.gz": LAYOUT_PKL_GZ, ".npz": LAYOUT_NPZ}


def dataset_layout(key: str) -> str | None:
    """The layout an object key announces by its suffix, or None when it is not a dataset."""
    lowered = key.lower()
    return next(
        (layout for suffix, layout in DATASET_SUFFIXES.items() if lowered.endswith(suffix)), None
    )


# Where a failing step leaves its error for the exit handler: runs/<key>/status/<step>.json
STEP_FAILURE_DIR = "status/"

# An MNIST image: 28 x 28 grey levels, flattened.
IMAGE_SIDE = 28
FEATURE_DIM = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

# Run key: a short, deterministic id of one dataset version.
RUN_KEY_HEX_CHARS = 12
RUN_KEY_PATTERN = re.compile(rf"^{PRODUCT_PREFIX}-[0-9a-f]{{{RUN_KEY_HEX_CHARS}}}")
RUN_KEY_TAG = "mnistflow:run-key"
# Cost-allocation tags: every SageMaker resource a run creates carries them and the run-key
# tag, so Cost Explorer can group the bill by product and by run once both keys are activated
# as user-defined cost allocation tags in the Billing console (docs/deploy.md, "Costs"). Keys
# and values fit botocore's sagemaker Tag shape (Key 1-128, Value 0-256 characters).
PRODUCT_TAG = "mnistflow:product"
COST_TAGS = {PRODUCT_TAG: PRODUCT_PREFIX}
COST_ALLOCATION_TAG_KEYS = (PRODUCT_TAG, RUN_KEY_TAG)


def run_key(bucket: str, key: str, version: str) -> str:
    """The run key of one dataset version; `version` is the S3 versionId, else the ETag."""
    digest = hashlib.sha256(f"{bucket}\n{key}\n{version}".encode()).hexdigest()
    return f"{PRODUCT_PREFIX}-{digest[:RUN_KEY_HEX_CHARS]}"


def run_key_from_name(name: str) -> str | None:
    """The run key a resource name starts with, or None when the resource is not ours."""
    match = RUN_KEY_PATTERN.match(name or "")
    return match.group(0) if match else None


def run_prefix(key: str) -> str:
    """Where a run's own files live in the data bucket."""
    return f"{RUNS_PREFIX}{key}/"


# SageMaker resources a run creates are named `<run key>-<suffix>` (63 characters at most),
# so every SageMaker name of the product starts with this prefix.
SAGEMAKER_NAME_PREFIX = f"{PRODUCT_PREFIX}-"
TRAINING_JOB_SUFFIX = "train"
MODEL_SUFFIX = "model"
TRANSFORM_JOB_SUFFIX = "transform"
ENDPOINT_CONFIG_SUFFIX = "epc"
ENDPOINT_SUFFIX = "endpoint"
# The stack's one endpoint, updated in place by each run that passes the quality gate; its one
# production variant (the name every endpoint of the product gives it).
STABLE_ENDPOINT_NAME = f"{PRODUCT_PREFIX}-classifier"
ENDPOINT_VARIANT = "AllTraffic"
# How the endpoint serves (the endpoint_type setting): on instances, or serverless
# (ProductionVariant.ServerlessConfig). botocore's sagemaker model, shape
# ProductionVariantServerlessConfig: MemorySizeInMB "1024 MB, 2048 MB, 3072 MB, 4096 MB,
# 5120 MB, or 6144 MB"; MaxConcurrency 1 to 200 (tests/unit/test_costs.py holds both to it).
ENDPOINT_TYPE_INSTANCE = "instance"
ENDPOINT_TYPE_SERVERLESS = "serverless"
ENDPOINT_TYPES = (ENDPOINT_TYPE_INSTANCE, ENDPOINT_TYPE_SERVERLESS)
SERVERLESS_MEMORY_MB = tuple(1024 * n for n in range(1, 7))
SERVERLESS_MAX_CONCURRENCY = (1, 200)
# Where a run's model artifact is promoted (copied) when the run deploys it: no lifecycle
# expiry, so the serving model outlives runs/ (SageMaker reads it whenever it starts an instance).
SERVING_MODELS_PREFIX = "models/"
# The deploy step's error when SageMaker rolled its update back: "... rolled back; <run> ...
# keeps serving ..." (pipeline/steps/sagemaker_jobs.py, EndpointRolledBack).
ROLLED_BACK_ERROR = "was rolled back;"
# Set on a run's endpoint config by its deploy step once the endpoint serves it (InService on
# it), value the UTC time in ISO 8601: the order configs served in, which is not the order they
# were created in (a deploy creates its config, then waits its turn). Retiring keeps the last
# served ones for rollback, and rollback goes back to the one served before (retire.py).
SERVED_AT_TAG = "mnistflow:served-at"
# Set on a run's endpoint config when SageMaker rolled its update back, value the reason: a
# retried deploy step does not try the same model again, and retiring never keeps it for rollback.
ROLLED_BACK_TAG = "mnistflow:rolled-back"


def resource_name(key: str, suffix: str) -> str:
    return f"{key}-{suffix}"


# The steps of a run, in pipeline order, as the run record names them. The pipeline's own
# final-state event counts as a step of its own ("pipeline") unless it names the step that
# failed.
STEP_PREPROCESS = "preprocess"
STEP_TRAINING = "training"
STEP_MODEL = "model"
STEP_TRANSFORM = "transform"
STEP_EVALUATE = "evaluate"
STEP_ENDPOINT = "endpoint"
STEPS = (STEP_PREPROCESS, STEP_TRAINING, STEP_MODEL, STEP_TRANSFORM, STEP_EVALUATE, STEP_ENDPOINT)
PIPELINE_STEP = "pipeline"
PROGRESS_STEPS = (*STEPS, PIPELINE_STEP)

# The pipeline's own final-state event (put on EventBridge by its exit handler).
PIPELINE_EVENT_SOURCE = "mnistflow.pipeline"
PIPELINE_EVENT_DETAIL_TYPE = "MNIST Pipeline Run State Change"


@dataclass(frozen=True)
class PipelineFinalState:
    """The detail of the pipeline's final-state event: its fields are the detail's keys."""

    run_key: str
    state: str  # KFP's final state, as the backend spells it
    failed_step: str = ""  # one of STEPS, or "" when no step left a failure
    error: str = ""  # the failed step's own message
    dataset_uri: str = ""
    endpoint_name: str = ""  # the endpoint the run deploys to
    kfp_run: str = ""  # KFP's name for the run
    model_rejected: bool = False  # the quality gate refused the model (failed_step: evaluate)

    def as_detail(self) -> dict[str, Any]:
        return asdict(self)


# The evaluate step's event, on the same bus: the model's quality, before any deploy.
EVALUATION_EVENT_DETAIL_TYPE = "MNIST Model Evaluated"
PIPELINE_DETAIL_TYPES = (PIPELINE_EVENT_DETAIL_TYPE, EVALUATION_EVENT_DETAIL_TYPE)
# What evaluate writes for the emails, `status` and `predict`: runs/<key>/evaluation.json
EVALUATION_FILE = "evaluation.json"


@dataclass(frozen=True)
class ModelEvaluation:
    """The detail of the evaluation event (and the heart of evaluation.json)."""

    run_key: str
    accuracy: float  # on the test split, clusters mapped to digits on validation
    min_accuracy: float  # the quality gate
    passed: bool
    k: int
    weakest_digits: list[int]  # lowest recall first
    recall: dict[str, float]  # per digit, "0".."9"
    evaluation_uri: str  # s3://.../runs/<key>/evaluation.json
    # Champion/challenger (pipeline/steps/champion.py): the serving model scored on this run's
    # test split. None: nothing was compared (no serving endpoint, or its model unreadable:
    # `champion_note` says which).
    champion_accuracy: float | None = None
    champion_model: str = ""  # the SageMaker model the endpoint served
    deploy_tolerance: float = 0.0
    beats_champion: bool = True  # False: not better than the serving model (MODEL_REJECTED)
    champion_note: str = ""  # in plain words: what was compared, or why nothing was

    def as_detail(self) -> dict[str, Any]:
        return asdict(self)


# The stack's SageMaker model package group (the model registry): each evaluated model is a
# version in it, Approved when deployed and Rejected otherwise (pipeline/steps/registry.py).
MODEL_PACKAGE_GROUP = f"{PRODUCT_PREFIX}flow-models"
MODEL_PACKAGE_GROUP_DESCRIPTION = "MNIST k-means models: one version per evaluated run"
# Why a model that passed the quality gate is not deployed (champion/challenger): the run ends
# MODEL_REJECTED with this reason and both accuracies.
NOT_BETTER_THAN_SERVING = "not better than the serving model"

# Notification kinds, carried as the `kind` message attribute.
KIND_RUN_STARTED = "RUN_STARTED"
KIND_ENDPOINT_READY = "ENDPOINT_READY"
KIND_RUN_FAILED = "RUN_FAILED"
KIND_DATA_REJECTED = "DATA_REJECTED"
KIND_MODEL_REJECTED = "MODEL_REJECTED"
NOTIFICATION_KINDS = (
    KIND_RUN_STARTED,
    KIND_ENDPOINT_READY,
    KIND_RUN_FAILED,
    KIND_DATA_REJECTED,
    KIND_MODEL_REJECTED,
)
# The SNS message attributes every notification carries (subscriptions filter on them).
MESSAGE_ATTRIBUTE_KIND = "kind"
MESSAGE_ATTRIBUTE_RUN_KEY = "run_key"

# Overall status of a run record. The start-run Lambda writes the first four; progress
# tracking moves a started run on to the last three. Status only moves forward.
STATUS_ACCEPTED = "ACCEPTED"
STATUS_REJECTED = "REJECTED"
STATUS_RUN_STARTED = "RUN_STARTED"
STATUS_START_FAILED = "START_FAILED"
STATUS_RUNNING = "RUNNING"
STATUS_SUCCEEDED = "SUCCEEDED"
STATUS_FAILED = "FAILED"
STATUS_MODEL_REJECTED = "MODEL_REJECTED"  # trained and evaluated, below the quality gate
# Accepted, waiting for one of the `max_concurrent_runs` slots; start-run starts it (as ACCEPTED
# again) when a run ends, in the order start-run accepted the uploads.
STATUS_QUEUED = "QUEUED"
# The email each outcome is announced with.
KIND_FOR_OUTCOME = {
    STATUS_SUCCEEDED: KIND_ENDPOINT_READY,
    STATUS_FAILED: KIND_RUN_FAILED,
    STATUS_MODEL_REJECTED: KIND_MODEL_REJECTED,
}

# The product's own EventBridge bus, where only the pipeline's pods may put the pipeline's
# events (SageMaker's arrive on the account's default bus).
PIPELINE_EVENT_BUS = f"{PRODUCT_PREFIX}flow-pipeline-events"

# Kubernetes: the group start-run's EKS access entry puts it in (a Role in the KFP namespace
# lets the group reach the API through the service proxy), and KFP's own runner Role
# (manifests/kustomize/base/pipeline/pipeline-runner-role.yaml), which the pipeline's pods
# get through their own service account.
START_RUN_KUBERNETES_GROUP = f"{PRODUCT_PREFIX}flow-start-run"
KFP_RUNNER_ROLE = "pipeline-runner"

# Physical names the stack gives its data resources; the local stack creates the same ones.
RUNS_TABLE_NAME = f"{PRODUCT_PREFIX}flow-runs"
# The runs table's one item that is not a run: the count of runs holding a slot
# (lambdas.dal.runs_table.DynamoRunSlots). Not a run key (RUN_KEY_PATTERN never matches it).
RUN_SLOTS_ITEM_KEY = f"{PRODUCT_PREFIX}flow:run-slots"
# The run-slots queue ("a slot is free" -> start-run): a message start-run failed on this many
# times goes to the queue's dead-letter queue (its alarm tells the operators; the watchdog sends
# "a slot is free" again on its next pass anyway).
RUN_SLOTS_MAX_RECEIVES = 3
NOTIFICATION_TOPIC_NAME = f"{PRODUCT_PREFIX}flow-notifications"


def data_bucket_name(account: str, region: str) -> str:
    """Bucket names are global: the account and region make this one unique."""
    return f"{PRODUCT_PREFIX}flow-data-{account}-{region}"


# The Lambda functions: one asset, only the handler differs. Each name is the function's
# construct id (CDK), its Powertools service name and its key in the settings schema.
START_RUN = "start-run"
TRACK_PROGRESS = "track-progress"
WATCHDOG = "watchdog"  # reconciles stuck runs on a schedule
# Lambda retries a failed asynchronous invocation this many times (then the failure queue),
# with the same request id (AWS Lambda developer guide, "How Lambda handles errors and retries
# with asynchronous invocation": one minute, then two minutes between attempts).
LAMBDA_ASYNC_RETRIES = 2
LAMBDA_ASYNC_ATTEMPTS = 1 + LAMBDA_ASYNC_RETRIES

# The deployed stack, and the outputs the CLI reads from it (`mnistflow redrive`).
STACK_NAME = "MnistFlow"
OUTPUT_START_RUN_FUNCTION = "StartRunFunctionName"
OUTPUT_START_RUN_FAILURES_QUEUE = "StartRunFailuresQueueUrl"
OUTPUT_TRACK_PROGRESS_FUNCTION = "TrackProgressFunctionName"
OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE = "TrackProgressFailuresQueueUrl"
# The functions whose failed events are worth handing back, with their (function, queue)
# outputs: an upload that did not start a run, a SageMaker or pipeline event not recorded.
REDRIVEN = {
    START_RUN: (OUTPUT_START_RUN_FUNCTION, OUTPUT_START_RUN_FAILURES_QUEUE),
    TRACK_PROGRESS: (OUTPUT_TRACK_PROGRESS_FUNCTION, OUTPUT_TRACK_PROGRESS_FAILURES_QUEUE),
}
# `mnistflow verify` reads these too: the topics, the pod role, how KFP is reached, the roles
# with an EKS access entry, and the alarms (names comma-separated). EksClusterName is there only
# when a cluster is named.
OUTPUT_NOTIFICATION_TOPIC_ARN = "NotificationTopicArn"
OUTPUT_OPERATIONS_TOPIC_ARN = "OperationsTopicArn"
OUTPUT_PIPELINE_ROLE_ARN = "PipelinePodRoleArn"
OUTPUT_KFP_MODE = "KfpMode"
OUTPUT_EKS_CLUSTER_NAME = "EksClusterName"
OUTPUT_KFP_NAMESPACE = "KfpNamespace"
OUTPUT_KFP_SERVICE_ACCOUNT = "KfpServiceAccount"
OUTPUT_START_RUN_ROLE_ARN = "StartRunRoleArn"
OUTPUT_WATCHDOG_ROLE_ARN = "WatchdogRoleArn"
OUTPUT_ALARM_NAMES = "AlarmNames"
VERIFIED_OUTPUTS = (
    OUTPUT_START_RUN_FUNCTION,
    OUTPUT_NOTIFICATION_TOPIC_ARN,
    OUTPUT_OPERATIONS_TOPIC_ARN,
    OUTPUT_PIPELINE_ROLE_ARN,
    OUTPUT_KFP_MODE,
    OUTPUT_KFP_NAMESPACE,
    OUTPUT_KFP_SERVICE_ACCOUNT,
    OUTPUT_START_RUN_ROLE_ARN,
    OUTPUT_WATCHDOG_ROLE_ARN,
    OUTPUT_ALARM_NAMES,
)
# The operations topic's policy admits this service principal for the alarms' actions.
CLOUDWATCH_SERVICE = "cloudwatch.amazonaws.com"
# start-run's dry run (`mnistflow verify`): invoked with this event, the function connects to
# KFP as a start would (healthz, then the experiment lookup), answers what it found under the
# same key, and starts, records and sends nothing.
DRY_RUN_KEY = "mnistflow"
DRY_RUN_VALUE = "verify"
DRY_RUN_EVENT = {DRY_RUN_KEY: DRY_RUN_VALUE}


def is_dry_run(event: Any) -> bool:
    return isinstance(event, dict) and event.get(DRY_RUN_KEY) == DRY_RUN_VALUE


FUNCTIONS = (START_RUN, TRACK_PROGRESS, WATCHDOG)
HANDLERS = {
    START_RUN: "lambdas.handlers.start_run.handler",
    TRACK_PROGRESS: "lambdas.handlers.track_progress.handler",
    WATCHDOG: "lambdas.handlers.watchdog.handler",
}
METRICS_NAMESPACE = f"{PRODUCT_PREFIX.upper()}Flow"
# The product's own metrics (CloudWatch embedded metric format, namespace METRICS_NAMESPACE,
# dimension `service` = the emitting function's name), declared once: the functions emit them
# and the dashboard draws them.
METRIC_RUNS_STARTED = "RunsStarted"  # start-run, Count: a KFP run created
METRIC_START_FAILURES = "RunStartFailures"  # start-run, Count: START_FAILED (given up)
METRIC_DATASETS_REJECTED = "DatasetsRejected"  # start-run, Count: DATA_REJECTED
METRIC_RUNS_QUEUED = "RunsQueued"  # start-run, Count: an upload waits for a run slot
METRIC_ENDPOINTS_READY = "EndpointsReady"  # track-progress, Count: ENDPOINT_READY announced
METRIC_RUNS_FAILED = "RunsFailed"  # track-progress, Count: RUN_FAILED announced
METRIC_MODELS_REJECTED = "ModelsRejected"  # track-progress, Count: MODEL_REJECTED announced
METRIC_UPLOAD_TO_ENDPOINT = "UploadToEndpointSeconds"  # track-progress, Seconds
METRIC_STEP_SECONDS = "StepSeconds"  # track-progress, Seconds, extra dimension `step`
METRIC_STEP_DIMENSION = "step"
METRIC_STUCK_RUNS_CLOSED = "StuckRunsClosed"  # watchdog, Count
# The compiled pipeline, at the root of the Lambda asset.
PIPELINE_SPEC_FILE = "mnist_pipeline.yaml"
# The image the compiled spec names for every step. The real one (built at deploy, or the
# `step_image` context key) is known only at deploy, so start-run puts it in at submit. The
# word "python" keeps kfp.local from warning that the image may not have Python.
STEP_IMAGE_PLACEHOLDER = "mnistflow-step-python:set-by-start-run"

KFP_MODE_CLUSTER = "cluster"
KFP_MODE_URL = "url"
KFP_MODES = (KFP_MODE_CLUSTER, KFP_MODE_URL)

# The pipeline's steps ask SageMaker for a job's or endpoint's status this often (seconds), when
# this environment variable sets it (pipeline/steps/sagemaker_jobs.DEFAULT_POLL_SECONDS
# otherwise). The local stack sets it: its SageMaker finishes a job in about a second.
SAGEMAKER_POLL_SECONDS_VARIABLE = "MNISTFLOW_SAGEMAKER_POLL_SECONDS"

# S3 user metadata the product itself writes on an upload: `mnistflow rerun` names the run it
# repeats. An upload's other metadata keys are run settings (core/settings.upload_overrides).
RERUN_OF_METADATA = "rerun-of"
PRODUCT_METADATA_KEYS = (RERUN_OF_METADATA,)
