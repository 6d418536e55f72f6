"""Stands in for SageMaker's EventBridge events, which the emulator does not emit.

Reads the emulator's SageMaker jobs and endpoints that belong to the product (run-key tag or
name) and, for each change it sees, produces the state-change event AWS documents, in order.
A job the watcher first sees already finished still gets its InProgress event first, as
SageMaker would have sent it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from runflow.contracts import RUN_KEY_TAG, run_key_from_name

SOURCE = "aws.sagemaker"
TRAINING_DETAIL_TYPE = "SageMaker Training Job State Change"
TRANSFORM_DETAIL_TYPE = "SageMaker Transform Job State Change"
ENDPOINT_DETAIL_TYPE = "SageMaker Endpoint State Change"
# Endpoint events spell statuses in capitals with underscores (IN_SERVICE); the API does not.
ENDPOINT_EVENT_STATUS = {
    "OutOfService": "OUT_OF_SERVICE",
    "Creating": "CREATING",
    "Updating": "UPDATING",
    "SystemUpdating": "SYSTEM_UPDATING",
    "RollingBack": "ROLLING_BACK",
    "InService": "IN_SERVICE",
    "Deleting": "DELETING",
    "Failed": "FAILED",
}
_FIRST_STATUS = {"training": "InProgress", "transform": "InProgress", "endpoint": "Creating"}


def _millis(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value


def _event_detail(description: dict, tags: dict[str, str]) -> dict:
    detail = {
        key: _millis(value) for key, value in description.items() if key != "ResponseMetadata"
    }
    detail["Tags"] = tags  # events carry tags as a map
    return detail


class SageMakerWatcher:
    """Call `poll()` to emit the events for whatever changed since the last call."""

    def __init__(
        self, sagemaker, *, account: str, region: str, deliver: Callable[[dict], None]
    ) -> None:
        self._sm = sagemaker
        self._account = account
        self._region = region
        self._deliver = deliver
        self._seen: dict[tuple[str, str], str] = {}

    def poll(self) -> int:
        emitted = 0
        for summary in self._sm.list_training_jobs()["TrainingJobSummaries"]:
            emitted += self._check(
                "training",
                summary["TrainingJobName"],
                lambda name: self._sm.describe_training_job(TrainingJobName=name),
                "TrainingJobStatus",
                "TrainingJobArn",
                TRAINING_DETAIL_TYPE,
            )
        for summary in self._sm.list_transform_jobs()["TransformJobSummaries"]:
            emitted += self._check(
                "transform",
                summary["TransformJobName"],
                lambda name: self._sm.describe_transform_job(TransformJobName=name),
                "TransformJobStatus",
                "TransformJobArn",
                TRANSFORM_DETAIL_TYPE,
            )
        for summary in self._sm.list_endpoints()["Endpoints"]:
            emitted += self._check(
                "endpoint",
                summary["EndpointName"],
                lambda name: self._sm.describe_endpoint(EndpointName=name),
                "EndpointStatus",
                "EndpointArn",
                ENDPOINT_DETAIL_TYPE,
            )
        return emitted

    def _check(self, kind, name, describe, status_field, arn_field, detail_type) -> int:
        description = describe(name)
        status = description[status_field]
        previous = self._seen.get((kind, name))
        if status == previous:
            return 0
        tags = {
            tag["Key"]: tag["Value"]
            for tag in self._sm.list_tags(ResourceArn=description[arn_field])["Tags"]
        }
        if RUN_KEY_TAG not in tags and run_key_from_name(name) is None:
            return 0  # not the product's
        statuses = [status]
        if previous is None and status != _FIRST_STATUS[kind]:
            statuses.insert(0, _FIRST_STATUS[kind])
        for shown in statuses:
            detail = _event_detail({**description, status_field: shown}, tags)
            if kind == "endpoint":
                detail[status_field] = ENDPOINT_EVENT_STATUS.get(shown, shown.upper())
            if shown != status:
                detail.pop("FailureReason", None)
            self._deliver(self._envelope(detail_type, description[arn_field], detail))
        self._seen[(kind, name)] = status
        return len(statuses)

    def _envelope(self, detail_type: str, arn: str, detail: dict) -> dict:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": SOURCE,
            "account": self._account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [arn],
            "detail": detail,
        }
