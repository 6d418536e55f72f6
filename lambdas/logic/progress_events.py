"""Reads one EventBridge event (a SageMaker state change or the pipeline's final state) into a
ProgressEvent, or says in words why it is not one of this product's progress events.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from core import contracts, kfp, sagemaker_events
from core import run_record as rr
from core.run_record import ProgressEntry
from core.sagemaker_events import SageMakerResource

# The keys of the pipeline's final-state detail (core.contracts.PipelineFinalState).
PIPELINE_DETAIL_FIELDS = tuple(f.name for f in fields(contracts.PipelineFinalState))

# Text kept from an event's reason or error; SageMaker's FailureReason is at most 1024 chars.
REASON_MAX_CHARS = 1024
# How many of a training job's final metrics the record keeps.
METRICS_MAX = 20


# The pipeline's final state (core.kfp) -> the run record's normalized status.
_PIPELINE_FINAL_STATES = {
    kfp.SUCCEEDED: rr.SUCCEEDED,
    kfp.FAILED: rr.FAILED,
    kfp.CANCELED: rr.CANCELED,
}


@dataclass(frozen=True)
class ProgressEvent:
    """One state change of one run, as the record and the emails need it."""

    run_key: str
    step: str  # one of contracts.PROGRESS_STEPS
    status: str  # as the event spells it
    normalized: str  # one of run_record.STATUS_RANK
    time: str  # the envelope's `time`
    event_id: str  # the envelope's `id`
    source: str
    region: str
    account: str
    resource_name: str = ""  # job or endpoint name (SageMaker events)
    arn: str = ""
    failure_reason: str = ""  # SageMaker's FailureReason
    billable_seconds: int | None = None
    training_seconds: int | None = None
    instance_type: str = ""
    instance_count: int | None = None
    managed_spot: bool | None = None  # EnableManagedSpotTraining, when true
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""  # the pipeline's: the failed step's own message
    endpoint_name: str = ""  # the pipeline's: the endpoint the run deploys to
    dataset_uri: str = ""  # the pipeline's
    kfp_run: str = ""  # the pipeline's: KFP's name for the run
    model_rejected: bool = False  # the quality gate refused the model

    @property
    def rank(self) -> int:
        return rr.STATUS_RANK[self.normalized]

    @property
    def ord(self) -> str:
        """A total order of events: time first, the event id breaks ties."""
        return f"{self.time}|{self.event_id}"

    @property
    def from_pipeline(self) -> bool:
        return self.source == contracts.PIPELINE_EVENT_SOURCE

    @property
    def announces(self) -> str:
        """The outcome this event announces (SUCCEEDED or FAILED), or "" when it announces none."""
        if self.model_rejected:
            return contracts.STATUS_MODEL_REJECTED
        if self.step == contracts.STEP_EVALUATE:
            return ""  # a model that passed decides nothing: the endpoint will
        if self.from_pipeline:
            if self.normalized == rr.UNKNOWN:
                return ""  # recorded as it came; the stuck-run watchdog asks KFP
            succeeded = self.normalized == rr.SUCCEEDED
            return contracts.STATUS_SUCCEEDED if succeeded else contracts.STATUS_FAILED
        if self.step == contracts.STEP_ENDPOINT and self.normalized == rr.IN_SERVICE:
            return contracts.STATUS_SUCCEEDED
        if self.normalized in (rr.FAILED, rr.STOPPED):
            return contracts.STATUS_FAILED
        return ""

    @property
    def attribute(self) -> str:
        return rr.progress_attribute(self.step, self.normalized)

    def entry(self) -> ProgressEntry:
        """What the record keeps of this event: a function of the event alone."""
        return ProgressEntry(
            status=self.normalized,
            event_status=self.status,
            at=self.time,
            ord=self.ord,
            event_id=self.event_id,
            source=self.source,
            job_name=self.resource_name,
            arn=self.arn,
            failure_reason=self.failure_reason,
            billable_seconds=self.billable_seconds,
            training_seconds=self.training_seconds,
            instance_type=self.instance_type,
            instance_count=self.instance_count,
            managed_spot=self.managed_spot,
            metrics=self.metrics,
            error=self.error,
            endpoint_name=self.endpoint_name,
            kfp_run=self.kfp_run,
        )


@dataclass(frozen=True)
class Ignored:
    """Why an event was not recorded: `not_ours` is expected traffic, `bad_input` is not."""

    kind: str  # "not_ours" | "bad_input"
    problem: str  # says what was wrong, for a person
    received: dict[str, Any]  # what the event carried, for the log

    NOT_OURS = "not_ours"
    BAD_INPUT = "bad_input"


def parse_event(event: Any) -> ProgressEvent | Ignored:
    if not isinstance(event, Mapping):
        return Ignored(
            Ignored.BAD_INPUT, "the event is not a JSON object", {"type": type(event).__name__}
        )
    envelope = {
        "source": event.get("source"),
        "detail-type": event.get("detail-type"),
        "id": event.get("id"),
        "time": event.get("time"),
    }
    detail_type = event.get("detail-type")
    detail = event.get("detail")
    if not isinstance(detail, Mapping):
        return Ignored(Ignored.BAD_INPUT, "the event has no `detail` object", envelope)
    for name in ("id", "time"):
        if not isinstance(event.get(name), str) or not event.get(name):
            return Ignored(
                Ignored.BAD_INPUT,
                f"the event envelope has no `{name}` (EventBridge sets it)",
                envelope,
            )
    source = event.get("source")
    if source == contracts.PIPELINE_EVENT_SOURCE:
        if detail_type == contracts.PIPELINE_EVENT_DETAIL_TYPE:
            return _pipeline_event(event, detail, envelope)
        if detail_type == contracts.EVALUATION_EVENT_DETAIL_TYPE:
            return _evaluation_event(event, detail, envelope)
    kind = (
        sagemaker_events.BY_DETAIL_TYPE.get(detail_type)
        if source == sagemaker_events.SOURCE
        else None
    )
    if kind is None:
        known = ", ".join([*sagemaker_events.BY_DETAIL_TYPE, *contracts.PIPELINE_DETAIL_TYPES])
        return Ignored(
            Ignored.BAD_INPUT,
            f"unknown event type: source {source!r}, detail-type {detail_type!r};"
            f" this function reads {known}. Check the EventBridge rules that target it.",
            envelope,
        )
    return _sagemaker_event(event, detail, kind, envelope)


def _sagemaker_event(
    event: Mapping[str, Any],
    detail: Mapping[str, Any],
    kind: SageMakerResource,
    envelope: dict[str, Any],
) -> ProgressEvent | Ignored:
    name = detail.get(kind.name_field)
    raw_status = detail.get(kind.status_field)
    received = {
        **envelope,
        kind.name_field: name,
        kind.status_field: raw_status,
        "detail_keys": sorted(detail)[:30],
    }
    if not isinstance(name, str) or not name:
        return Ignored(
            Ignored.BAD_INPUT,
            f"the event's detail has no {kind.name_field}, so the run cannot be found",
            received,
        )
    run_key = _run_key(kind, name, detail)
    if run_key is None:
        return Ignored(
            Ignored.NOT_OURS,
            f"{name} is not one of this product's resources: no {contracts.RUN_KEY_TAG} tag"
            f" and its name does not start with a run key ({contracts.PRODUCT_PREFIX}-<hex>)",
            received,
        )
    normalized = kind.normalized(raw_status) if isinstance(raw_status, str) else None
    if normalized is None:
        known = ", ".join(kind.event_status(status) for status in kind.statuses)
        return Ignored(
            Ignored.BAD_INPUT,
            f"unknown {kind.status_field} {raw_status!r} for {name}; known values: {known}",
            {**received, "run_key": run_key},
        )
    return ProgressEvent(
        run_key=run_key,
        step=kind.step,
        status=raw_status,
        normalized=normalized,
        time=event["time"],
        event_id=event["id"],
        source=sagemaker_events.SOURCE,
        region=str(event.get("region") or ""),
        account=str(event.get("account") or ""),
        resource_name=name,
        arn=_text(detail.get(kind.arn_field)),
        failure_reason=_text(detail.get("FailureReason"))[:REASON_MAX_CHARS],
        **_usage(detail),
        metrics=_final_metrics(detail.get("FinalMetricDataList")),
    )


def _usage(detail: Mapping[str, Any]) -> dict[str, Any]:
    """What a job ran on and for how long it is billed, from the fields botocore's
    DescribeTrainingJob / DescribeTransformJob shapes give the event's detail: training's
    BillableTimeInSeconds, TrainingTimeInSeconds and ResourceConfig; transform's
    TransformResources and TransformStartTime / TransformEndTime (epoch milliseconds in the
    event); EnableManagedSpotTraining. Absent or malformed fields leave the usage unknown, never
    fail the event."""
    resources = detail.get("ResourceConfig") or detail.get("TransformResources")
    resources = resources if isinstance(resources, Mapping) else {}
    billable = _whole(detail.get("BillableTimeInSeconds"))
    start, end = detail.get("TransformStartTime"), detail.get("TransformEndTime")
    if billable is None and _finite(start) and _finite(end) and end >= start:
        billable = round((end - start) / 1000)
    instance_type = resources.get("InstanceType")
    return {
        "billable_seconds": billable,
        "training_seconds": _whole(detail.get("TrainingTimeInSeconds")),
        "instance_type": instance_type if isinstance(instance_type, str) else "",
        "instance_count": _whole(resources.get("InstanceCount")),
        "managed_spot": True if detail.get("EnableManagedSpotTraining") is True else None,
    }


def _pipeline_event(
    event: Mapping[str, Any], detail: Mapping[str, Any], envelope: dict[str, Any]
) -> ProgressEvent | Ignored:
    fields = {name: detail.get(name) for name in PIPELINE_DETAIL_FIELDS}
    run_key, state = fields["run_key"], fields["state"]
    failed_step = fields["failed_step"] or ""
    received = {**envelope, "run_key": run_key, "state": state, "failed_step": failed_step}
    if not isinstance(run_key, str) or not run_key:
        return Ignored(
            Ignored.BAD_INPUT,
            "the pipeline's event has no run_key, so the run cannot be found",
            received,
        )
    if contracts.run_key_from_name(run_key) != run_key:
        return Ignored(
            Ignored.NOT_OURS,
            f"the pipeline's run_key {run_key!r} is not a run key"
            f" ({contracts.PRODUCT_PREFIX}-<hex>)",
            received,
        )
    if not isinstance(state, str) or not state.strip():
        return Ignored(
            Ignored.BAD_INPUT,
            "the pipeline's event has no state (SUCCEEDED, FAILED, ...)",
            received,
        )
    state = state.strip().upper()
    # KFP versions spell final states differently (core.kfp): a state this code does not know
    # is recorded as it came (UNKNOWN, the spelling kept), never taken for a failure.
    meaning = kfp.final_state(state)
    normalized = _PIPELINE_FINAL_STATES[meaning] if meaning else rr.UNKNOWN
    step = contracts.PIPELINE_STEP
    if normalized in (rr.FAILED, rr.CANCELED) and failed_step in contracts.STEPS:
        step = failed_step
    return ProgressEvent(
        run_key=run_key,
        step=step,
        status=state,
        normalized=normalized,
        time=event["time"],
        event_id=event["id"],
        source=contracts.PIPELINE_EVENT_SOURCE,
        region=str(event.get("region") or ""),
        account=str(event.get("account") or ""),
        error=_text(fields["error"])[:REASON_MAX_CHARS],
        endpoint_name=_text(fields["endpoint_name"]),
        dataset_uri=_text(fields["dataset_uri"]),
        kfp_run=_text(fields["kfp_run"]),
        model_rejected=fields["model_rejected"] is True,
    )


# The evaluate step's verdicts, as the record's statuses of its step.
EVALUATION_PASSED = "PASSED"
EVALUATION_REJECTED = "REJECTED"


def _evaluation_event(
    event: Mapping[str, Any], detail: Mapping[str, Any], envelope: dict[str, Any]
) -> ProgressEvent | Ignored:
    run_key = detail.get("run_key")
    received = {**envelope, "run_key": run_key}
    if not isinstance(run_key, str) or contracts.run_key_from_name(run_key) != run_key:
        return Ignored(
            Ignored.BAD_INPUT, "the evaluation event has no run key it can be filed under", received
        )
    accuracy, threshold = detail.get("accuracy"), detail.get("min_accuracy")
    if not all(_finite(value) for value in (accuracy, threshold)):
        return Ignored(
            Ignored.BAD_INPUT, "the evaluation event has no accuracy and threshold", received
        )
    passed = detail.get("passed") is True
    # Champion/challenger: False only when the serving model scored better (less tolerance).
    beats_champion = detail.get("beats_champion") is not False
    metrics = {"accuracy": float(accuracy), "min_accuracy": float(threshold)}
    for name in ("k", "champion_accuracy", "deploy_tolerance"):
        if _finite(detail.get(name)):
            metrics[name] = float(detail[name])
    recall = detail.get("recall")
    if isinstance(recall, Mapping):
        metrics.update(
            {f"recall_{d}": float(v) for d, v in sorted(recall.items())[:10] if _finite(v)}
        )
    if passed and not beats_champion and "champion_accuracy" not in metrics:
        return Ignored(
            Ignored.BAD_INPUT,
            "the evaluation event rejects the model for the serving one without its accuracy",
            received,
        )
    if not passed:
        error = f"accuracy {accuracy:.3f} is under the gate {threshold:.3f}"
    elif not beats_champion:
        error = (
            f"{contracts.NOT_BETTER_THAN_SERVING}: accuracy {accuracy:.4f} against the serving"
            f" model's {metrics['champion_accuracy']:.4f} on the same test split, tolerance"
            f" {metrics.get('deploy_tolerance', 0.0):.4f}"
        )
    else:
        error = ""
    passed = passed and beats_champion
    return ProgressEvent(
        run_key=run_key,
        step=contracts.STEP_EVALUATE,
        status=EVALUATION_PASSED if passed else EVALUATION_REJECTED,
        normalized=rr.COMPLETED if passed else rr.FAILED,
        time=event["time"],
        event_id=event["id"],
        source=contracts.PIPELINE_EVENT_SOURCE,
        region=str(event.get("region") or ""),
        account=str(event.get("account") or ""),
        metrics=metrics,
        error=error,
        model_rejected=not passed,
    )


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _run_key(kind: SageMakerResource, name: str, detail: Mapping[str, Any]) -> str | None:
    """The run an event belongs to. An endpoint event names the endpoint config the endpoint
    is on (`<run key>-epc`): on the stable endpoint, updated by run after run, that is the run
    whose model it is about, while the endpoint's tags name the run that created it. Then the
    run-key tag, then the resource's name."""
    if kind is sagemaker_events.ENDPOINT:
        # While an update is under way (UPDATING, ROLLING_BACK) the endpoint is still on the
        # old config and the update's is pending (PendingDeploymentSummary, as DescribeEndpoint
        # and the deployment events show it): the event is about the pending run.
        pending = detail.get("PendingDeploymentSummary")
        configs = [pending.get("EndpointConfigName")] if isinstance(pending, Mapping) else []
        for config in [*configs, detail.get("EndpointConfigName")]:
            if isinstance(config, str) and (key := contracts.run_key_from_name(config)):
                return key
    return _run_key_from_tags(detail.get("Tags")) or contracts.run_key_from_name(name)


def _run_key_from_tags(tags: Any) -> str | None:
    """The run-key tag's value; tags come as a map, or as a list of {Key, Value}."""
    value: Any = None
    if isinstance(tags, Mapping):
        value = tags.get(contracts.RUN_KEY_TAG)
    elif isinstance(tags, list):
        for tag in tags:
            if isinstance(tag, Mapping) and tag.get("Key") == contracts.RUN_KEY_TAG:
                value = tag.get("Value")
    if isinstance(value, str) and contracts.run_key_from_name(value) == value:
        return value
    return None


def _final_metrics(metrics: Any) -> dict[str, float]:
    """FinalMetricDataList as {name: value}; non-finite values cannot be stored and are dropped."""
    found: dict[str, float] = {}
    if not isinstance(metrics, list):
        return found
    for metric in metrics[:METRICS_MAX]:
        if not isinstance(metric, Mapping):
            continue
        name, value = metric.get("MetricName"), metric.get("Value")
        if isinstance(name, str) and isinstance(value, int | float) and not isinstance(value, bool):
            if math.isfinite(value):
                found[name] = value
    return found


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _whole(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None
