"""SageMaker resources of one run: find-or-create by name, wait for a final state, stop on cancel.

Every function takes a SageMaker client, so the same code runs on the cluster, under kfp.local
against an emulator, and in tests. A retried step finds the resource its first attempt created
(names come from the run key) instead of starting a second one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

from botocore.exceptions import ClientError

from core.contracts import COST_TAGS, RUN_KEY_TAG, SAGEMAKER_POLL_SECONDS_VARIABLE
from core.sagemaker_events import ENDPOINT, TRAINING_JOB, TRANSFORM_JOB, SageMakerResource

DEFAULT_POLL_SECONDS = 30.0
# SageMaker names of resources that do not exist come back as a ValidationException.
_NOT_FOUND_MARKERS = ("could not find", "not found", "does not exist")


Sleep = Callable[[float], None]


def configured_poll_seconds() -> float:
    """The pause between two describes: the environment's (the local stack sets it), else 30 s.

    A value that is not a positive number is ignored: a step never polls in a tight loop.
    """
    raw = os.environ.get(SAGEMAKER_POLL_SECONDS_VARIABLE, "")
    try:
        value = float(raw)
    except ValueError:
        return DEFAULT_POLL_SECONDS
    return value if 0 < value <= DEFAULT_POLL_SECONDS else DEFAULT_POLL_SECONDS


class StepFailed(RuntimeError):
    """A SageMaker resource ended in a failed state; the message carries SageMaker's reason."""


def run_tags(run_key: str) -> list[dict[str, str]]:
    """The tags of every resource a run creates: its run key and the cost-allocation tags."""
    cost = [{"Key": key, "Value": value} for key, value in COST_TAGS.items()]
    return [{"Key": RUN_KEY_TAG, "Value": run_key}, *cost]


def is_not_found(error: ClientError) -> bool:
    """SageMaker's answer for a resource it does not have (to a describe, a delete, ListTags)."""
    err = error.response.get("Error", {})
    message = str(err.get("Message", "")).lower()
    return err.get("Code") in ("ValidationException", "ResourceNotFound") and any(
        marker in message for marker in _NOT_FOUND_MARKERS
    )


def describe_or_none(describe: Callable[..., dict], **name: str) -> dict | None:
    """The description of a resource, or None when SageMaker says it does not exist."""
    try:
        return describe(**name)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise


def wait_for(
    describe: Callable[[], dict],
    status_field: str,
    *,
    done: frozenset[str],
    failed: frozenset[str],
    what: str,
    timeout_seconds: float,
    poll_seconds: float | None = None,
    sleep: Sleep = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Polls `describe` until the status is final; raises StepFailed with SageMaker's reason."""
    if poll_seconds is None:
        poll_seconds = configured_poll_seconds()
    deadline = clock() + timeout_seconds
    while True:
        description = describe()
        status = description[status_field]
        if status in done:
            return description
        if status in failed:
            reason = description.get("FailureReason") or "no reason given"
            raise StepFailed(f"{what} ended {status}: {reason}")
        if clock() >= deadline:
            raise StepFailed(f"{what} still {status} after {timeout_seconds:.0f} s")
        sleep(poll_seconds)


@contextlib.contextmanager
def stop_on_cancel(stop: Callable[[], Any]) -> Iterator[None]:
    """While inside, a SIGTERM or SIGINT (KFP cancelling the step) first stops the SageMaker job."""

    def _cancel(signum, _frame):
        with contextlib.suppress(ClientError):  # already finished or never started: nothing to stop
            stop()
        raise KeyboardInterrupt(f"step cancelled by signal {signum}; SageMaker job stop requested")

    previous = {sig: signal.signal(sig, _cancel) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ensure_job(
    sm,
    kind: SageMakerResource,
    request: dict,
    *,
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep,
) -> dict:
    """Creates the job named in `request` unless it exists, then waits for it to finish."""
    name_field, status_field, method = kind.name_field, kind.status_field, kind.operation_suffix
    what = method.replace("_", " ")
    name = request[name_field]
    describe = getattr(sm, f"describe_{method}")
    existing = describe_or_none(describe, **{name_field: name})
    if existing is not None and existing[status_field] in kind.failed:
        raise StepFailed(
            f"{what} {name} ended {existing[status_field]}: "
            f"{existing.get('FailureReason') or 'no reason given'}"
        )
    if existing is None:
        getattr(sm, f"create_{method}")(**request)
    stop = getattr(sm, f"stop_{method}")
    with stop_on_cancel(lambda: stop(**{name_field: name})):
        return wait_for(
            lambda: describe(**{name_field: name}),
            status_field,
            done=kind.done,
            failed=kind.failed,
            what=f"{what} {name}",
            timeout_seconds=timeout_seconds,
            poll_seconds=poll_seconds,
            sleep=sleep,
        )


def ensure_training_job(
    sm,
    request: dict,
    *,
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep = time.sleep,
) -> dict:
    return _ensure_job(
        sm,
        TRAINING_JOB,
        request,
        timeout_seconds=timeout_seconds,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )


def ensure_model(sm, request: dict) -> dict:
    """Creates the model named in `request` unless it exists (models are ready at once)."""
    name = request["ModelName"]
    existing = describe_or_none(sm.describe_model, ModelName=name)
    if existing is None:
        sm.create_model(**request)
        existing = sm.describe_model(ModelName=name)
    return existing


def ensure_transform_job(
    sm,
    request: dict,
    *,
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep = time.sleep,
) -> dict:
    return _ensure_job(
        sm,
        TRANSFORM_JOB,
        request,
        timeout_seconds=timeout_seconds,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )


def ensure_endpoint(
    sm,
    *,
    endpoint_name: str,
    config_request: dict,
    tags: list[dict[str, str]],
    timeout_seconds: float,
    poll_seconds: float | None,
    sleep: Sleep = time.sleep,
) -> dict:
    """Puts the endpoint on the endpoint config in `config_request`: create, update, or keep."""
    config_name = config_request["EndpointConfigName"]
    if describe_or_none(sm.describe_endpoint_config, EndpointConfigName=config_name) is None:
        sm.create_endpoint_config(**config_request)
    existing = describe_or_none(sm.describe_endpoint, EndpointName=endpoint_name)
    if existing is None:
        sm.create_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name, Tags=tags)
    elif existing["EndpointConfigName"] != config_name:
        # A named endpoint shared by runs: move it to this run's model and retag it.
        sm.update_endpoint(EndpointName=endpoint_name, EndpointConfigName=config_name)
        sm.add_tags(ResourceArn=existing["EndpointArn"], Tags=tags)
    # Creating or updating an endpoint cannot be stopped half way, so there is no stop_on_cancel.
    return wait_for(
        lambda: sm.describe_endpoint(EndpointName=endpoint_name),
        ENDPOINT.status_field,
        done=ENDPOINT.done,
        failed=ENDPOINT.failed,
        what=f"endpoint {endpoint_name}",
        timeout_seconds=timeout_seconds,
        poll_seconds=poll_seconds,
        sleep=sleep,
    )
