"""Stands in for SageMaker's EventBridge events, which the emulator does not emit.

Reads the emulator's SageMaker jobs and endpoints that belong to the product (run-key tag or
name) and, for each change it sees, produces the state-change event AWS documents, in order
(detail types, fields and status spellings from `core.sagemaker_events`). A resource the
watcher first sees already past its first status still gets that first event, as SageMaker
would have sent it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from core import sagemaker_events
from core.contracts import RUN_KEY_TAG, run_key_from_name
from core.sagemaker_events import SageMakerResource
from pipeline.steps.sagemaker_jobs import describe_or_none

# boto3's list call for each resource and the key its summaries come under.
_LISTINGS = {
    sagemaker_events.TRAINING_JOB.noun: ("list_training_jobs", "TrainingJobSummaries"),
    sagemaker_events.TRANSFORM_JOB.noun: ("list_transform_jobs", "TransformJobSummaries"),
    sagemaker_events.ENDPOINT.noun: ("list_endpoints", "Endpoints"),
}


def _millis(value: Any) -> Any:
    """Times as events carry them (epoch milliseconds), at any depth."""
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if isinstance(value, dict):
        return {key: _millis(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_millis(item) for item in value]
    return value


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
        self._seen: dict[tuple[str, str], tuple[str, str]] = {}

    def poll(self) -> int:
        emitted = 0
        for resource in sagemaker_events.RESOURCES:
            call, key = _LISTINGS[resource.noun]
            for summary in self._every(call, key):
                emitted += self._check(resource, summary[resource.name_field])
        return emitted

    def _every(self, call: str, key: str) -> list[dict]:
        """Every page of a List call (SageMaker answers 10 a page unless asked for more)."""
        answer = getattr(self._sm, call)()
        found = list(answer[key])
        while answer.get("NextToken"):
            answer = getattr(self._sm, call)(NextToken=answer["NextToken"])
            found += answer[key]
        return found

    def _check(self, resource: SageMakerResource, name: str) -> int:
        description = describe_or_none(
            getattr(self._sm, f"describe_{resource.operation_suffix}"),
            **{resource.name_field: name},
        )
        if description is None:  # deleted since it was listed
            return 0
        status = description[resource.status_field]
        # An endpoint updated from one run's config to the next changes state even when a poll
        # saw it InService both times: the config it serves is part of its state.
        state = (status, description.get("EndpointConfigName", ""))
        seen = self._seen.get((resource.noun, name))
        if state == seen:
            return 0
        previous = seen[0] if seen else None
        arn = description[resource.arn_field]
        tags = {tag["Key"]: tag["Value"] for tag in self._sm.list_tags(ResourceArn=arn)["Tags"]}
        if RUN_KEY_TAG not in tags and run_key_from_name(name) is None:
            return 0  # not the product's
        statuses = [status]
        if previous is None and status != resource.first_status:
            statuses.insert(0, resource.first_status)
        for shown in statuses:
            detail = _event_detail(description, tags)
            detail[resource.status_field] = resource.event_status(shown)
            if shown != status:
                detail.pop("FailureReason", None)
            self._deliver(self._envelope(resource.detail_type, arn, detail))
        self._seen[(resource.noun, name)] = state
        return len(statuses)

    def _envelope(self, detail_type: str, arn: str, detail: dict) -> dict:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": detail_type,
            "source": sagemaker_events.SOURCE,
            "account": self._account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self._region,
            "resources": [arn],
            "detail": detail,
        }
