"""Progress-tracking test material: the run the event payloads belong to, the record start-run
leaves for it, and the event sets of a whole run."""

from __future__ import annotations

import copy
from typing import Any

from tests.conftest import load_event

# tests/events/sagemaker_*.json and pipeline_*.json belong to this run (the s3_put upload).
RUN_KEY = "mnist-d0520a385764"
CREATED_AT = "2026-11-28T12:00:01.250Z"
KFP_RUN_ID = "5e8f2c1a-1b2c-4d5e-8f90-0a1b2c3d4e5f"
KFP_RUN_URL = f"https://kfp.example.com/#/runs/details/{KFP_RUN_ID}"
DATASET = {
    "bucket": "mnistflow-data-123456789012",
    "key": "incoming/mnist.pkl.gz",
    "version": "3HL4kqtJlcpXroDTDmJ+rmSpXd3dIbrHY+MTRCxf3vjVBH40Nr8X8gdRQBpUMLUo",
    "etag": "0123456789abcdef0123456789abcdef",
    "size": 11490434,
}

# A whole run, as SageMaker and the pipeline report it (each event once).
SUCCESSFUL_RUN = (
    "sagemaker_training_in_progress",
    "sagemaker_training_completed",
    "sagemaker_transform_in_progress",
    "sagemaker_transform_completed",
    "sagemaker_endpoint_creating",
    "sagemaker_endpoint_in_service",
    "pipeline_succeeded",
)
FAILED_RUN = (
    "sagemaker_training_in_progress",
    "sagemaker_training_failed",
    "pipeline_failed",
)


def start_run_record(**changes: Any) -> dict[str, Any]:
    """The record as start-run leaves it once the KFP run is started."""
    record = {
        "run_key": RUN_KEY,
        "status": "RUN_STARTED",
        "dataset": dict(DATASET),
        "created_at": CREATED_AT,
        "updated_at": "2026-11-28T12:00:02.900Z",
        "start_attempts": 1,
        "kfp_run_id": KFP_RUN_ID,
        "kfp_run_url": KFP_RUN_URL,
        "experiment_id": "exp-1",
        "timeline": [
            {"at": CREATED_AT, "event": "ACCEPTED", "detail": "s3://..."},
            {"at": "2026-11-28T12:00:02.900Z", "event": "RUN_STARTED", "detail": "created"},
        ],
    }
    record.update(changes)
    return record


def event(name: str, **envelope: Any) -> dict[str, Any]:
    """A payload from tests/events, with envelope fields (id, time, ...) replaced."""
    payload = copy.deepcopy(load_event(name))
    payload.update(envelope)
    return payload


def resent(name: str, event_id: str) -> dict[str, Any]:
    """SageMaker sending the same state change again: same time and detail, another id."""
    return event(name, id=event_id)
