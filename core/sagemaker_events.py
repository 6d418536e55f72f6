"""SageMaker's vocabulary for the resources a run creates: one table that the CDK rules, the
event parser, the local watcher and the pipeline steps' waits all read.

Each resource type has a noun (`TrainingJob`): the API and the events name its fields after it
(`TrainingJobName`, `TrainingJobStatus`, `TrainingJobArn`). Statuses are listed as the API spells
them (botocore's sagemaker service model); endpoint events spell them in capitals with
underscores (`IN_SERVICE` for the API's `InService`), job events as the API does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from core import contracts
from core import run_record as rr

SOURCE = "aws.sagemaker"


def upper_snake(status: str) -> str:
    """`InService` -> `IN_SERVICE`: how endpoint events spell the API's statuses."""
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", status).upper()


@dataclass(frozen=True)
class SageMakerResource:
    step: str  # the run record's step this resource reports
    noun: str  # TrainingJob, TransformJob, Endpoint
    detail_type: str  # the EventBridge detail-type of its state changes
    statuses: Mapping[str, str]  # API spelling -> the run record's normalized status
    done: frozenset[str]  # API statuses a step waiting on it takes as success
    failed: frozenset[str]  # API statuses a step waiting on it takes as failure
    first_status: str  # what a new resource reports first
    log_group: str  # under LOG_GROUP_PREFIX; "{name}" when the group is the resource's own
    events_upper_snake: bool = False  # events spell statuses IN_SERVICE, not InService

    def where_logs(self, name: str) -> str:
        """Where SageMaker writes the logs of the resource `name` in CloudWatch Logs."""
        group = LOG_GROUP_PREFIX + self.log_group.format(name=name)
        if "{name}" in self.log_group:
            return f"log group {group}"
        return f"log group {group}, streams starting {name}/"

    @property
    def name_field(self) -> str:
        return f"{self.noun}Name"

    @property
    def status_field(self) -> str:
        return f"{self.noun}Status"

    @property
    def arn_field(self) -> str:
        return f"{self.noun}Arn"

    @property
    def operation_suffix(self) -> str:
        """`training_job`: the API's Describe/Create/Stop operations, as boto3 names them."""
        return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", self.noun).lower()

    def event_status(self, api_status: str) -> str:
        """The status as this resource's events spell it."""
        return upper_snake(api_status) if self.events_upper_snake else api_status

    def normalized(self, status: str) -> str | None:
        """The normalized status of an API or event spelling; None when unknown."""
        for api, normalized in self.statuses.items():
            if status in (api, self.event_status(api)):
                return normalized
        return None


# SageMaker's log groups (SageMaker developer guide, "Log groups and streams that Amazon
# SageMaker AI sends to Amazon CloudWatch Logs"): /aws/sagemaker/TrainingJobs and
# /aws/sagemaker/TransformJobs with a stream per job instance named <job>/..., and
# /aws/sagemaker/Endpoints/<endpoint> per endpoint.
LOG_GROUP_PREFIX = "/aws/sagemaker/"

# Every status botocore's sagemaker service model (2017-07-24) lists for each resource:
# TrainingJobStatus, TransformJobStatus and EndpointStatus. tests/unit/test_sagemaker_statuses.py
# reads the enums from the installed model, so a status AWS adds cannot go unnoticed.
_JOB_STATUSES = {
    "InProgress": rr.IN_PROGRESS,
    "Stopping": rr.STOPPING,
    "Completed": rr.COMPLETED,
    "Failed": rr.FAILED,
    "Stopped": rr.STOPPED,
}
TRAINING_JOB = SageMakerResource(
    step=contracts.STEP_TRAINING,
    noun="TrainingJob",
    detail_type="SageMaker Training Job State Change",
    statuses={**_JOB_STATUSES, "Deleting": rr.DELETING},
    done=frozenset({"Completed"}),
    failed=frozenset({"Failed", "Stopped", "Deleting"}),
    first_status="InProgress",
    log_group="TrainingJobs",
)
TRANSFORM_JOB = SageMakerResource(
    step=contracts.STEP_TRANSFORM,
    noun="TransformJob",
    detail_type="SageMaker Transform Job State Change",
    statuses=_JOB_STATUSES,
    done=frozenset({"Completed"}),
    failed=frozenset({"Failed", "Stopped"}),
    first_status="InProgress",
    log_group="TransformJobs",
)
ENDPOINT = SageMakerResource(
    step=contracts.STEP_ENDPOINT,
    noun="Endpoint",
    detail_type="SageMaker Endpoint State Change",
    statuses={
        "Creating": rr.IN_PROGRESS,
        "Updating": rr.IN_PROGRESS,
        "SystemUpdating": rr.IN_PROGRESS,
        "RollingBack": rr.IN_PROGRESS,
        "OutOfService": rr.OUT_OF_SERVICE,
        "InService": rr.IN_SERVICE,
        "Deleting": rr.DELETING,
        "Failed": rr.FAILED,
        # An update failed and so did its rollback: the endpoint is left in an unknown state.
        "UpdateRollbackFailed": rr.FAILED,
    },
    done=frozenset({"InService"}),
    # A deploy waits through Creating, Updating and SystemUpdating; anything else ends it.
    failed=frozenset({"Failed", "OutOfService", "RollingBack", "UpdateRollbackFailed", "Deleting"}),
    first_status="Creating",
    log_group="Endpoints/{name}",
    events_upper_snake=True,
)
# The resources whose state changes the product follows. A run also creates a model and an
# endpoint config; SageMaker documents state-change events for them too, but neither has a
# status of its own (created or deleted), and a failed create fails its pipeline step, which
# the pipeline's final-state event reports.
RESOURCES = (TRAINING_JOB, TRANSFORM_JOB, ENDPOINT)
BY_DETAIL_TYPE = {resource.detail_type: resource for resource in RESOURCES}
BY_STEP = {resource.step: resource for resource in RESOURCES}
