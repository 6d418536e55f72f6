"""The contracts every part shares: run keys, S3 layout, resource names, tags, statuses, kinds.

Standard library only: this module is shipped in the Lambda package and embedded in the
pipeline's components, and the CDK app, the CLI and the local stack import it too.
"""

from __future__ import annotations

import hashlib
import re

PRODUCT_PREFIX = "mnist"

# S3 layout of the data bucket.
INCOMING_PREFIX = "incoming/"
RUNS_PREFIX = "runs/"
DATASET_SUFFIXES = (".pkl.gz", ".npz")
MAX_DATASET_BYTES = 2 * 1024**3  # far larger than any MNIST; refused before reading

# Run key: a short, deterministic id of one dataset version.
RUN_KEY_HEX_CHARS = 12
RUN_KEY_PATTERN = re.compile(rf"^{PRODUCT_PREFIX}-[0-9a-f]{{{RUN_KEY_HEX_CHARS}}}")
RUN_KEY_TAG = "mnistflow:run-key"


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


# SageMaker resources a run creates are named `<run key>-<suffix>` (63 characters at most).
TRAINING_JOB_SUFFIX = "train"
MODEL_SUFFIX = "model"
TRANSFORM_JOB_SUFFIX = "transform"
ENDPOINT_CONFIG_SUFFIX = "epc"
ENDPOINT_SUFFIX = "endpoint"


def resource_name(key: str, suffix: str) -> str:
    return f"{key}-{suffix}"


# The steps of a run, in pipeline order, as the run record names them.
STEPS = ("preprocess", "training", "model", "transform", "evaluate", "endpoint")

# The pipeline's own final-state event (put on EventBridge by its exit handler). Its detail:
# run_key, state (SUCCEEDED | FAILED | CANCELED ...), failed_step (one of STEPS or ""),
# error (the step's own message or ""), dataset_uri, endpoint_name, kfp_run.
PIPELINE_EVENT_SOURCE = "mnistflow.pipeline"
PIPELINE_EVENT_DETAIL_TYPE = "MNIST Pipeline Run State Change"
# Where a failing step leaves its error for the exit handler: runs/<key>/status/<step>.json
STEP_FAILURE_DIR = "status/"

# Notification kinds, carried as the `kind` message attribute.
KIND_RUN_STARTED = "RUN_STARTED"
KIND_ENDPOINT_READY = "ENDPOINT_READY"
KIND_RUN_FAILED = "RUN_FAILED"
KIND_DATA_REJECTED = "DATA_REJECTED"

# Overall status of a run record. The start-run Lambda writes the first four; progress
# tracking moves a started run on to the last three. Status only moves forward.
STATUS_ACCEPTED = "ACCEPTED"
STATUS_REJECTED = "REJECTED"
STATUS_RUN_STARTED = "RUN_STARTED"
STATUS_START_FAILED = "START_FAILED"
STATUS_RUNNING = "RUNNING"
STATUS_SUCCEEDED = "SUCCEEDED"
STATUS_FAILED = "FAILED"

# A run record's timeline keeps the most recent entries only.
TIMELINE_MAX_ENTRIES = 50

# Progress tracking. The pipeline's final-state event counts as a step of its own ("pipeline")
# unless it names the step that failed. Each (step, status) pair the run went through is one
# top-level attribute of the run record, `progress:<step>:<status>`; steps and normalized
# statuses are both fixed sets, which is what bounds the record's timeline.
PIPELINE_STEP = "pipeline"
PROGRESS_STEPS = (*STEPS, PIPELINE_STEP)
PROGRESS_ATTRIBUTE_PREFIX = "progress:"
# The run's announced outcome (SUCCEEDED or FAILED), claimed once with the announcement.
OUTCOME_ATTRIBUTE = "outcome"

# The runs table's partition key: one item per run key.
RUN_KEY_ATTRIBUTE = "run_key"

# Values both the CDK context (stacks.settings) and the Lambdas' environment (runflow.config)
# validate: one definition each.
KFP_MODE_CLUSTER = "cluster"
KFP_MODE_URL = "url"
KFP_MODES = (KFP_MODE_CLUSTER, KFP_MODE_URL)
INSTANCE_TYPE_PATTERN = re.compile(r"^ml\.[a-z0-9]+\.[a-z0-9]+$")
EKS_CLUSTER_NAME_PATTERN = re.compile(r"^[0-9A-Za-z][A-Za-z0-9_-]{0,99}$")
K8S_NAME_PATTERN = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
SECRET_ARN_PATTERN = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+$"
)
