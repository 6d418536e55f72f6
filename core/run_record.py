"""The run record: one item per run key in the runs table, and the views every reader derives
from it (per-step status, overall status, timeline). Pure functions; standard library only.

`RunRecord`'s fields are the record's attributes, as stored: `ATTR.<name>` is how writers name
them. Progress tracking keeps, per (step, normalized status), the newest event that reported it,
in one top-level attribute `progress:<step>:<status>` holding a `ProgressEntry`; "newest" is by
`ord` (event time, then event id), a total order, so the record is the same whatever order the
events came in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from types import SimpleNamespace
from typing import Any

from core import contracts

# The normalized statuses a step can be in, and their rank: a step shows its highest-ranked
# status, so a late or repeated event never moves it backwards. Terminal failures outrank
# success: if a job ever reported FAILED, the step says so.
IN_PROGRESS = "IN_PROGRESS"
UNKNOWN = "UNKNOWN"  # a final state KFP reported that the product does not know by name
STOPPING = "STOPPING"
OUT_OF_SERVICE = "OUT_OF_SERVICE"
COMPLETED = "COMPLETED"
IN_SERVICE = "IN_SERVICE"
SUCCEEDED = "SUCCEEDED"
DELETING = "DELETING"
STOPPED = "STOPPED"
CANCELED = "CANCELED"
FAILED = "FAILED"
STATUS_RANK = {
    IN_PROGRESS: 1,
    UNKNOWN: 1,
    STOPPING: 2,
    OUT_OF_SERVICE: 2,
    COMPLETED: 3,
    IN_SERVICE: 3,
    SUCCEEDED: 3,
    DELETING: 4,
    STOPPED: 5,
    CANCELED: 5,
    FAILED: 5,
}
PROGRESS_ATTRIBUTE_PREFIX = "progress:"
# The bound on the record's progress: one attribute per (step, status) at most.
PROGRESS_MAX_ATTRIBUTES = len(contracts.PROGRESS_STEPS) * len(STATUS_RANK)
# The field of a progress entry that orders events; a stored entry is replaced only by a later
# one (ProgressEntry.ord).
ORDER_FIELD = "ord"
# start-run's own timeline keeps the most recent entries only.
TIMELINE_MAX_ENTRIES = 50


def progress_attribute(step: str, status: str) -> str:
    return f"{PROGRESS_ATTRIBUTE_PREFIX}{step}:{status}"


# A claim on sending one notification kind: {"owner": request id, "at": epoch seconds}, a
# top-level attribute per kind (like the progress entries), removed when the email is confirmed.
ANNOUNCEMENT_CLAIM_PREFIX = "announcing:"


def announcement_claim_attribute(kind: str) -> str:
    return f"{ANNOUNCEMENT_CLAIM_PREFIX}{kind}"


def _tolerant(cls: type, item: Any) -> Any:
    """`cls` from a stored map, whatever else it holds: unknown names are left out, and a
    missing required field reads as "" (a record written by another version, or by hand, must
    not fail every read of the run)."""
    if not isinstance(item, Mapping):
        return None
    values = {}
    for spec in fields(cls):
        if spec.name in item:
            values[spec.name] = item[spec.name]
        elif spec.default is MISSING and spec.default_factory is MISSING:
            values[spec.name] = ""
    return cls(**values)


@dataclass(frozen=True)
class DatasetRef:
    """One uploaded object version, as the S3 notification described it."""

    bucket: str
    key: str  # decoded
    version: str  # S3 versionId, "" when the bucket is not versioned
    etag: str
    size: int | None = None  # None when the notification did not say

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    def as_item(self) -> dict[str, Any]:
        return {name: value for name, value in asdict(self).items() if value is not None}


@dataclass(frozen=True)
class TimelineEntry:
    """One thing start-run did (ACCEPTED, REJECTED, RUN_STARTED, START_FAILED)."""

    at: str
    event: str
    detail: str = ""


@dataclass(frozen=True)
class ProgressEntry:
    """What the record keeps of one SageMaker or pipeline event: a function of the event alone."""

    status: str  # normalized (a key of STATUS_RANK)
    event_status: str  # as the event spelled it
    at: str  # the event's time
    ord: str  # "<time>|<event id>": the total order of events
    event_id: str
    source: str
    job_name: str = ""
    arn: str = ""
    failure_reason: str = ""
    # Usage, for the run's cost (lambdas/logic/costs.py): training's BillableTimeInSeconds and
    # TrainingTimeInSeconds, transform's end - start; the instances of either job.
    billable_seconds: int | None = None
    training_seconds: int | None = None
    instance_type: str = ""
    instance_count: int | None = None
    managed_spot: bool | None = None  # True: a managed spot training job (else left out)
    metrics: Mapping[str, float] = field(default_factory=dict)
    error: str = ""
    endpoint_name: str = ""
    kfp_run: str = ""

    def as_item(self) -> dict[str, Any]:
        """As stored: empty optional fields are left out."""
        return {name: value for name, value in asdict(self).items() if value not in ("", None, {})}

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> ProgressEntry:
        return _tolerant(cls, item)


@dataclass(frozen=True)
class StepProgress:
    """One progress entry with the step and status its attribute names."""

    step: str
    status: str
    entry: ProgressEntry

    @property
    def rank(self) -> int:
        return STATUS_RANK.get(self.status, 0)


@dataclass(frozen=True)
class RunRecord:
    """A run record as stored. Start-run owns every field but the outcome and the progress;
    `announced` is shared: each kind is claimed once, by whoever sends it."""

    run_key: str
    status: str = ""  # start-run's: ACCEPTED, REJECTED, RUN_STARTED, START_FAILED
    dataset: DatasetRef | None = None  # None: an orphan (progress for a run start-run never saw)
    created_at: str = ""
    updated_at: str = ""
    start_attempts: int = 0  # every claim of the record, by any invocation
    claim_owner: str = ""  # the Lambda request id holding (or last holding) the claim
    claim_attempts: int = 0  # the owner's tries: Lambda retries an invocation with its id
    claim_expires_at: int | None = None  # epoch seconds; while ACCEPTED
    holds_slot: bool = False  # counted in the runs in flight (max_concurrent_runs)
    reason: str = ""  # why REJECTED or START_FAILED, or why the last attempt failed
    kfp_run_id: str = ""
    kfp_run_url: str = ""
    experiment_id: str = ""
    # The run's tunable settings as submitted, and which of them the upload's metadata set.
    run_settings: Mapping[str, Any] = field(default_factory=dict)
    overridden: tuple[str, ...] = ()
    # The run's outcome (SUCCEEDED or FAILED): that of its latest deciding event, by ord.
    outcome: str = ""
    outcome_ord: str = ""
    announced: frozenset[str] = frozenset()  # the notification kinds sent for this run
    # Emails being sent: kind -> {"owner": request id, "at": epoch seconds}
    announcing: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    timeline: tuple[TimelineEntry, ...] = ()
    progress: tuple[StepProgress, ...] = ()  # stored as progress:<step>:<status> attributes

    @classmethod
    def from_item(cls, item: Mapping[str, Any]) -> RunRecord:
        """From a plain item (DynamoDB values already decoded)."""
        dataset = item.get(ATTR.dataset)
        progress = []
        for name, value in item.items():
            if name.startswith(PROGRESS_ATTRIBUTE_PREFIX) and isinstance(value, Mapping):
                step, _, status = name[len(PROGRESS_ATTRIBUTE_PREFIX) :].partition(":")
                progress.append(StepProgress(step, status, ProgressEntry.from_item(value)))
        return cls(
            run_key=str(item[ATTR.run_key]),
            status=str(item.get(ATTR.status, "")),
            dataset=_tolerant(DatasetRef, dataset),
            created_at=str(item.get(ATTR.created_at, "")),
            updated_at=str(item.get(ATTR.updated_at, "")),
            start_attempts=int(item.get(ATTR.start_attempts, 0)),
            claim_owner=str(item.get(ATTR.claim_owner, "")),
            claim_attempts=int(item.get(ATTR.claim_attempts, 0)),
            claim_expires_at=item.get(ATTR.claim_expires_at),
            holds_slot=bool(item.get(ATTR.holds_slot, False)),
            reason=str(item.get(ATTR.reason, "")),
            kfp_run_id=str(item.get(ATTR.kfp_run_id, "")),
            kfp_run_url=str(item.get(ATTR.kfp_run_url, "")),
            experiment_id=str(item.get(ATTR.experiment_id, "")),
            run_settings=dict(item.get(ATTR.run_settings) or {}),
            overridden=tuple(item.get(ATTR.overridden) or ()),
            outcome=str(item.get(ATTR.outcome, "")),
            outcome_ord=str(item.get(ATTR.outcome_ord, "")),
            announced=frozenset(item.get(ATTR.announced) or ()),
            announcing={
                name[len(ANNOUNCEMENT_CLAIM_PREFIX) :]: value
                for name, value in item.items()
                if name.startswith(ANNOUNCEMENT_CLAIM_PREFIX) and isinstance(value, Mapping)
            },
            timeline=tuple(
                entry
                for entry in (_tolerant(TimelineEntry, e) for e in item.get(ATTR.timeline) or ())
                if entry is not None
            ),
            progress=tuple(sorted(progress, key=lambda p: p.entry.ord)),
        )

    @property
    def is_orphan(self) -> bool:
        """True for an item progress tracking made alone: start-run never recorded a dataset."""
        return self.dataset is None

    def entry(self, step: str, status: str) -> ProgressEntry | None:
        for progress in self.progress:
            if progress.step == step and progress.status == status:
                return progress.entry
        return None

    def steps(self) -> dict[str, tuple[str, str]]:
        """{step: (status, time of its event)}: per step the highest-ranked status (ties by ord)."""
        best: dict[str, StepProgress] = {}
        for progress in self.progress:
            current = best.get(progress.step)
            if current is None or (progress.rank, progress.entry.ord) > (
                current.rank,
                current.entry.ord,
            ):
                best[progress.step] = progress
        return {step: (p.status, p.entry.at) for step, p in best.items()}

    @property
    def evaluation(self) -> Mapping[str, float]:
        """The evaluate step's numbers (accuracy, min_accuracy, k, recall_<digit>); {} before
        it ran."""
        for status in (COMPLETED, FAILED):
            entry = self.entry(contracts.STEP_EVALUATE, status)
            if entry is not None and entry.metrics:
                return entry.metrics
        return {}

    @property
    def accuracy(self) -> float | None:
        value = self.evaluation.get("accuracy")
        return float(value) if isinstance(value, int | float) else None

    def weakest_digits(self, count: int = 3) -> list[tuple[int, float]]:
        """The digits the model recognises least well: (digit, recall), lowest first."""
        recall = [
            (int(name.removeprefix("recall_")), float(value))
            for name, value in self.evaluation.items()
            if name.startswith("recall_")
        ]
        return sorted(recall, key=lambda pair: (pair[1], pair[0]))[:count]

    @property
    def overall_status(self) -> str:
        """The announced outcome; else RUNNING once any progress exists; else start-run's."""
        if self.outcome:
            return self.outcome
        if self.progress:
            return contracts.STATUS_RUNNING
        return self.status

    def endpoint_names(self) -> list[str]:
        """The endpoints the run's progress names, first seen first."""
        names = [p.entry.job_name for p in self.progress if p.step == contracts.STEP_ENDPOINT]
        return list(dict.fromkeys(name for name in names if name))


def queue_order(created_at: str, run_key: str) -> tuple[str, str]:
    """The order QUEUED runs start in: as start-run accepted the uploads (`created_at`, which a
    claim never changes), then by run key."""
    return created_at, run_key


def queue_positions(records: Iterable[RunRecord]) -> dict[str, int]:
    """Each QUEUED run's place in line, 1 being the next to start when a slot is free."""
    queued = [r for r in records if r.status == contracts.STATUS_QUEUED]
    ordered = sorted(queued, key=lambda r: queue_order(r.created_at, r.run_key))
    return {record.run_key: place for place, record in enumerate(ordered, start=1)}


# The record's attribute names, as writers name them: ATTR.status == "status", and so on.
ATTR = SimpleNamespace(
    **{f.name: f.name for f in fields(RunRecord) if f.name not in ("progress", "announcing")}
)
