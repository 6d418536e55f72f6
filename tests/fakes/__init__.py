"""In-memory fakes of the domain's ports: they record what happened for tests to assert on.

Each fake keeps the rules of the real adapter it stands for, and a contract test runs one set
of scenarios against both: the runs-table fakes and the DynamoDB adapters (tests/integration/
test_runs_table_contract.py); ScriptedKfp and the KFP adapter on the local KFP API, and
RecordingNotifier and the SNS adapter on moto (tests/integration/test_fakes_contract.py).
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from core import contracts, kfp
from core.run_record import (
    ATTR,
    ORDER_FIELD,
    TIMELINE_MAX_ENTRIES,
    DatasetRef,
    RunRecord,
    announcement_claim_attribute,
    queue_order,
)
from lambdas.logic.ports import (
    Claim,
    ExpiredEndpoints,
    KfpCallFailed,
    KfpExperiment,
    KfpHealth,
    KfpRun,
    KfpRunsApi,
    Notifier,
    OutcomeWrite,
    ProgressWrite,
    PublishFailed,
    RetiredResource,
    RunProgress,
    RunSlots,
    RunsRepository,
    SageMakerCallFailed,
    SlotSignal,
    UploadMetadata,
)


class _InMemoryAnnouncements:
    """The `announced` set and the claims, as the DynamoDB adapter keeps them."""

    items: dict[str, dict[str, Any]]
    writes: list[str]

    def claim_announcement(
        self, run_key: str, kind: str, owner: str, now: int, stale_before: int
    ) -> bool:
        self.writes.append("claim_announcement")
        item = self.items.get(run_key)
        if item is None or kind in item.get(ATTR.announced, ()):
            return False
        claim = item.get(announcement_claim_attribute(kind))
        if claim is not None and claim["owner"] != owner and not claim["at"] < stale_before:
            return False
        item[announcement_claim_attribute(kind)] = {"owner": owner, "at": now}
        return True

    def confirm_announcement(self, run_key: str, kind: str) -> None:
        self.writes.append("confirm_announcement")
        item = self.items.setdefault(run_key, {ATTR.run_key: run_key})
        item[ATTR.announced] = sorted({*item.get(ATTR.announced, ()), kind})
        item.pop(announcement_claim_attribute(kind), None)

    def release_announcement(self, run_key: str, kind: str) -> None:
        self.writes.append("release_announcement")
        (self.items.get(run_key) or {}).pop(announcement_claim_attribute(kind), None)


class InMemoryRuns(_InMemoryAnnouncements, RunsRepository):
    """Same claim rules as the DynamoDB adapter, in a dict of plain items."""

    def __init__(self) -> None:
        self.items: dict[str, dict[str, Any]] = {}
        self.writes: list[str] = []

    @staticmethod
    def _epoch_of(now: str) -> int:
        return int(datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp())

    def record(self, run_key: str) -> RunRecord | None:
        item = self.items.get(run_key)
        return RunRecord.from_item(copy.deepcopy(item)) if item else None

    def claim(
        self, run_key: str, dataset: DatasetRef, now: str, lease_until: int, owner: str
    ) -> Claim:
        self.writes.append("claim")
        item = self.items.get(run_key)
        status = (item or {}).get(ATTR.status)
        holder = (item or {}).get(ATTR.claim_owner)
        lease_over = (item or {}).get(ATTR.claim_expires_at, 0) < self._epoch_of(now)
        own_retry = status == contracts.STATUS_ACCEPTED and holder == owner
        fresh = (
            status is None
            or (status == contracts.STATUS_START_FAILED and holder != owner)
            or (status == contracts.STATUS_ACCEPTED and lease_over and holder != owner)
        )
        if not (fresh or own_retry):
            old = copy.deepcopy(item)
            return Claim(
                False,
                status or "",
                owner=holder or "",
                announced=frozenset(old.get(ATTR.announced, ())),
                record=RunRecord.from_item(old),
            )
        item = self.items.setdefault(run_key, {ATTR.run_key: run_key})
        item.setdefault(ATTR.created_at, now)
        item.setdefault(ATTR.timeline, [])
        item.update(
            {
                ATTR.status: contracts.STATUS_ACCEPTED,
                ATTR.dataset: dataset.as_item(),
                ATTR.updated_at: now,
                ATTR.claim_owner: owner,
                ATTR.claim_attempts: item.get(ATTR.claim_attempts, 0) + 1 if own_retry else 1,
                ATTR.claim_expires_at: lease_until,
                ATTR.start_attempts: item.get(ATTR.start_attempts, 0) + 1,
            }
        )
        if not own_retry:
            item.pop(ATTR.reason, None)
        self._append(item, now, contracts.STATUS_ACCEPTED, dataset.uri)
        return Claim(
            True,
            contracts.STATUS_ACCEPTED,
            attempt=item[ATTR.claim_attempts],
            owner=owner,
            announced=frozenset(item.get(ATTR.announced, ())),
            holds_slot=bool(item.get(ATTR.holds_slot)),
        )

    def _move(
        self, run_key: str, owner: str, status: str, now: str, detail: str, event: str = "",
        **fields: Any,
    ) -> bool:  # fmt: skip
        """Like the adapter: only while ACCEPTED by `owner`; a final status ends the claim."""
        item = self.items[run_key]
        if item.get(ATTR.status) != contracts.STATUS_ACCEPTED:
            return False
        if item.get(ATTR.claim_owner) != owner:
            return False
        item.update({ATTR.updated_at: now, **fields})
        if status:
            item[ATTR.status] = status
            item.pop(ATTR.claim_expires_at, None)
        self._append(item, now, event or status, detail)
        return True

    @staticmethod
    def _append(item: dict[str, Any], now: str, event: str, detail: str) -> None:
        item[ATTR.timeline].append({"at": now, "event": event, "detail": detail[:500]})
        del item[ATTR.timeline][:-TIMELINE_MAX_ENTRIES]

    def record_retry(self, run_key: str, owner: str, reason: str, now: str) -> None:
        self.writes.append("record_retry")
        self._move(run_key, owner, "", now, reason, "START_RETRY", **{ATTR.reason: reason})

    def mark_rejected(self, run_key: str, owner: str, reason: str, now: str) -> bool:
        self.writes.append("mark_rejected")
        return self._move(
            run_key, owner, contracts.STATUS_REJECTED, now, reason, **{ATTR.reason: reason}
        )

    def mark_start_failed(self, run_key: str, owner: str, reason: str, now: str) -> bool:
        self.writes.append("mark_start_failed")
        return self._move(
            run_key, owner, contracts.STATUS_START_FAILED, now, reason, **{ATTR.reason: reason}
        )

    def close_stale_claim(
        self,
        run_key: str,
        owner: str,
        stale_before: int,
        now: str,
        reason: str,
        run: KfpRun | None = None,
        run_url: str = "",
    ) -> bool:
        self.writes.append("close_stale_claim")
        item = self.items.get(run_key) or {}
        if not item.get(ATTR.claim_expires_at, stale_before) < stale_before:
            return False
        if run is None:
            status, fields = contracts.STATUS_START_FAILED, {ATTR.reason: reason}
        else:
            status = contracts.STATUS_RUN_STARTED
            fields = {
                ATTR.kfp_run_id: run.run_id,
                ATTR.kfp_run_url: run_url,
                ATTR.experiment_id: run.experiment_id,
            }
        return self._move(run_key, owner, status, now, reason, **fields)

    def mark_run_started(
        self,
        run_key: str,
        owner: str,
        run: KfpRun,
        run_url: str,
        now: str,
        detail: str,
        run_settings: dict[str, Any] | None = None,
        overridden: tuple[str, ...] = (),
    ) -> bool:
        self.writes.append("mark_run_started")
        ids = {
            ATTR.kfp_run_id: run.run_id,
            ATTR.kfp_run_url: run_url,
            ATTR.experiment_id: run.experiment_id,
        }
        if run_settings:
            ids[ATTR.run_settings] = dict(run_settings)
            ids[ATTR.overridden] = list(overridden)
        moved = self._move(run_key, owner, contracts.STATUS_RUN_STARTED, now, detail, **ids)
        if not moved:
            self.items[run_key].update(ids)  # another invocation moved it on: keep the ids
        return moved


@dataclass
class Published:
    kind: str
    run_key: str
    subject: str
    message: str


# SNS's Publish API reference, Subject: "must be less than 100 characters long": 99 at most
# (moto lets 100 through; this fake refuses it as SNS does).
SNS_SUBJECT_MAX_CHARS = 99


def sns_refusal(message: str) -> PublishFailed:
    """What the SNS adapter raises when SNS refuses a publish (InvalidParameter): not sent."""
    error = {"Code": "InvalidParameter", "Message": message}
    refused = ClientError({"Error": error, "ResponseMetadata": {"HTTPStatusCode": 400}}, "Publish")
    failed = PublishFailed(f"SNS publish failed: {refused}", maybe_sent=False)
    failed.__cause__ = refused
    return failed


class RecordingNotifier(Notifier):
    """Records every publish; `fail_next` publishes raise instead (then it works again): SNS
    not reached, so nothing was sent.

    Refuses what SNS refuses (a subject of 100 characters or more, an empty message attribute
    value) as the SNS adapter reports it (PublishFailed, not sent), and records nothing then."""

    def __init__(self, fail_next: int = 0) -> None:
        self.published: list[Published] = []
        self.fail_next = fail_next

    def publish(self, kind: str, run_key: str, subject: str, message: str) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise PublishFailed(
                "SNS publish failed: could not connect (injected by the test)", maybe_sent=False
            )
        if len(subject) > SNS_SUBJECT_MAX_CHARS:
            raise sns_refusal("Subject must be less than 100 characters")
        for name, value in (
            (contracts.MESSAGE_ATTRIBUTE_KIND, kind),
            (contracts.MESSAGE_ATTRIBUTE_RUN_KEY, run_key),
        ):
            if not value:
                raise sns_refusal(
                    f"The message attribute '{name}' must contain non-empty message attribute"
                    " value for message attribute type 'S'."
                )
        self.published.append(Published(kind, run_key, subject, message))

    def kinds(self) -> list[str]:
        return [p.kind for p in self.published]


# The port's calls, as the KFP adapter names them in its errors (lambdas/dal/kfp_api.py).
KFP_CALLS = {
    "health": "GET /apis/v2beta1/healthz",
    "find_experiments": "GET /apis/v2beta1/experiments",
    "create_experiment": "POST /apis/v2beta1/experiments",
    "find_runs": "GET /apis/v2beta1/runs",
    "create_run": "POST /apis/v2beta1/runs",
    "get_run": "GET /apis/v2beta1/runs/",  # + the run id
}
KFP_CREATES = ("create_experiment", "create_run")


def kfp_http_failure(
    call: str, status: int, text: str = "injected failure", what: str = ""
) -> KfpCallFailed:
    """The KfpCallFailed the KFP adapter raises when KFP answers `call` with HTTP `status`:
    a create answered with a 5xx may have happened anyway (`maybe_done`)."""
    if status in (401, 403):
        kind = KfpCallFailed.AUTH
    elif status == 404:
        kind = KfpCallFailed.NOT_FOUND
    elif status in (408, 409, 429) or status >= 500:
        kind = KfpCallFailed.TRANSIENT
    else:
        kind = KfpCallFailed.PERMANENT
    return KfpCallFailed(
        kind,
        f"{what or KFP_CALLS[call]}: HTTP {status} {text}",
        status,
        maybe_done=call in KFP_CREATES and status >= 500,
    )


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def _reads_task_final_status(spec: dict[str, Any]) -> bool:
    """True when a task of the spec takes a `taskFinalStatus` input (an exit handler's)."""
    pipeline = spec.get("pipeline_spec", spec)
    components = [pipeline.get("root", {}), *pipeline.get("components", {}).values()]
    return any(
        "taskFinalStatus" in value
        for component in components
        for task in component.get("dag", {}).get("tasks", {}).values()
        for value in task.get("inputs", {}).get("parameters", {}).values()
    )


@dataclass
class ScriptedKfp(KfpRunsApi):
    """KFP in memory; `failures` is consumed call by call: (call name, KfpCallFailed).

    Keeps KFP's rules as the KFP adapter reports them from the local KFP API: an experiment
    name exists once (409), an experiment needs a name (400), a run needs an existing
    experiment (404) and starts PENDING, an unknown run id is not found (404), and a backend
    older than core.kfp.MIN_BACKEND_VERSION refuses any run with an exit handler that reads
    the final status (HTTP 500, permanent)."""

    experiments: dict[str, KfpExperiment] = field(default_factory=dict)
    runs: list[KfpRun] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)
    failures: list[tuple[str, KfpCallFailed]] = field(default_factory=list)
    lose_create_response: int = 0
    backend_version: str = kfp.MIN_BACKEND_VERSION
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def fail_with_status(self, call: str, status: int, times: int = 1) -> None:
        """The next `times` calls of `call` are answered with HTTP `status` (work not done)."""
        self.failures += [(call, kfp_http_failure(call, status)) for _ in range(times)]

    def _maybe_fail(self, call: str) -> None:
        self.calls.append(call)
        if self.failures and self.failures[0][0] in (call, "*"):
            raise self.failures.pop(0)[1]

    def health(self) -> KfpHealth:
        self._maybe_fail("health")
        return KfpHealth(self.backend_version, multi_user=False)

    def find_experiments(self, display_name: str) -> list[KfpExperiment]:
        self._maybe_fail("find_experiments")
        return [e for e in self.experiments.values() if e.display_name == display_name]

    def create_experiment(self, display_name: str, description: str) -> KfpExperiment:
        self._maybe_fail("create_experiment")
        if not display_name:
            raise kfp_http_failure("create_experiment", 400, "an experiment needs a display_name")
        if any(e.display_name == display_name for e in self.experiments.values()):
            raise kfp_http_failure(
                "create_experiment", 409, f"experiment {display_name!r} already exists"
            )
        experiment = KfpExperiment(f"exp-{next(self._ids)}", display_name)
        self.experiments[experiment.experiment_id] = experiment
        return experiment

    def get_run(self, run_id: str) -> KfpRun:
        self._maybe_fail("get_run")
        for run in self.runs:
            if run.run_id == run_id:
                return run
        what = f"{KFP_CALLS['get_run']}{run_id}"
        raise kfp_http_failure("get_run", 404, f"run {run_id} not found", what)

    def find_runs(self, experiment_id: str, display_name: str) -> list[KfpRun]:
        self._maybe_fail("find_runs")
        return [
            r
            for r in self.runs
            if r.experiment_id == experiment_id and r.display_name == display_name
        ]

    def create_run(
        self,
        experiment_id: str,
        display_name: str,
        description: str,
        pipeline_spec: dict[str, Any],
        parameters: dict[str, Any],
        service_account: str = "",
    ) -> KfpRun:
        self._maybe_fail("create_run")
        if experiment_id not in self.experiments:
            raise kfp_http_failure("create_run", 404, f"experiment {experiment_id!r} not found")
        if _version(self.backend_version) < _version(kfp.MIN_BACKEND_VERSION) and (
            _reads_task_final_status(pipeline_spec)
        ):
            minimum = kfp.MIN_BACKEND_VERSION
            raise KfpCallFailed(
                KfpCallFailed.PERMANENT,
                f"{KFP_CALLS['create_run']}: HTTP 500: this KFP backend is older than {minimum}"
                f" and refuses the pipeline's exit handler ('{kfp.OLD_BACKEND_REJECTION}');"
                f" upgrade Kubeflow Pipelines to {minimum} or later",
                500,
            )
        # created_at sorts in creation order, as KFP's timestamps do (t000000009 < t000000010)
        created_at = f"t{len(self.runs):09d}"
        run = KfpRun(
            f"run-{next(self._ids)}", display_name, experiment_id, created_at, state="PENDING"
        )
        self.runs.append(run)
        self.created.append(
            {
                "experiment_id": experiment_id,
                "display_name": display_name,
                "pipeline_spec": pipeline_spec,
                "parameters": parameters,
                "service_account": service_account,
            }
        )
        if self.lose_create_response:
            self.lose_create_response -= 1
            raise KfpCallFailed(
                KfpCallFailed.TRANSIENT,
                f"{KFP_CALLS['create_run']}: connection to the KFP API failed (connection reset)",
                maybe_done=True,
            )
        return run


class StaticMetadata(UploadMetadata):
    """Uploads' S3 user metadata, by object key (none by default)."""

    def __init__(self, by_key: dict[str, dict[str, str]] | None = None) -> None:
        self.by_key = by_key or {}
        self.asked: list[DatasetRef] = []

    def metadata(self, dataset: DatasetRef) -> dict[str, str]:
        self.asked.append(dataset)
        return dict(self.by_key.get(dataset.key, {}))


class ScriptedEndpoints(ExpiredEndpoints):
    """Per-run endpoints by creation time (epoch seconds): retire_expired deletes those past the
    time to live, records each call, and fails while `unreachable` is set."""

    def __init__(self, created: dict[str, float] | None = None) -> None:
        self.created = dict(created or {})
        self.calls: list[tuple[float, float]] = []
        self.unreachable = False

    def retire_expired(self, ttl_seconds: float, now: float) -> list[RetiredResource]:
        self.calls.append((ttl_seconds, now))
        if self.unreachable:
            raise SageMakerCallFailed("EndpointConnectionError: could not connect")
        out = []
        for name, created in sorted(self.created.items()):
            key = name.removesuffix("-endpoint")
            if now - created >= ttl_seconds:
                del self.created[name]
                out.append(RetiredResource("endpoint", name, key, "deleted", "past its ttl"))
            else:
                out.append(RetiredResource("endpoint", name, key, "kept", "young"))
        return out


class FakeClock:
    """time.time and time.sleep that never wait: sleeping moves the clock."""

    def __init__(self, start: float = 1_700_000_000.0):
        self.now = start
        self.sleeps: list[float] = []

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class InMemoryRunProgress(_InMemoryAnnouncements, RunProgress):
    """Same write rules as the DynamoDB adapter, in a dict; `writes` counts calls."""

    def __init__(self, items: dict[str, dict[str, Any]] | None = None) -> None:
        self.items: dict[str, dict[str, Any]] = items if items is not None else {}
        self.writes: list[str] = []

    def record(self, run_key: str) -> RunRecord | None:
        item = self.items.get(run_key)
        return RunRecord.from_item(copy.deepcopy(item)) if item else None

    def record_progress(self, run_key: str, attribute: str, entry: dict[str, Any]) -> ProgressWrite:
        self.writes.append("record_progress")
        old = copy.deepcopy(self.items.get(run_key))
        record = RunRecord.from_item(old) if old else None
        stored = (old or {}).get(attribute)
        if stored is not None and not stored[ORDER_FIELD] < entry[ORDER_FIELD]:
            return ProgressWrite(applied=False, old=record)
        item = self.items.setdefault(run_key, {ATTR.run_key: run_key})
        item[attribute] = copy.deepcopy(entry)
        return ProgressWrite(applied=True, old=record)

    def decide_outcome(self, run_key: str, outcome: str, order: str) -> OutcomeWrite:
        self.writes.append("decide_outcome")
        item = self.items.get(run_key)
        if item is None:
            return OutcomeWrite(applied=False, outcome="")
        if ATTR.outcome_ord in item and not item[ATTR.outcome_ord] < order:
            return OutcomeWrite(applied=False, outcome=item.get(ATTR.outcome, ""))
        item.update({ATTR.outcome: outcome, ATTR.outcome_ord: order})
        return OutcomeWrite(applied=True, outcome=outcome)


class InMemoryRunSlots(RunSlots):
    """The run slots with the DynamoDB adapter's rules (lambdas.dal.runs_table.DynamoRunSlots),
    over the same dict of items as the other runs-table fakes; `count` is the stored count."""

    def __init__(self, items: dict[str, dict[str, Any]] | None = None, count: int = 0) -> None:
        self.items: dict[str, dict[str, Any]] = items if items is not None else {}
        self.count = count
        self.version = 0
        self.writes: list[str] = []
        self.before_queue: list[Any] = []  # callables run between a lost take and the queueing

    def _ours(self, run_key: str, owner: str) -> dict[str, Any] | None:
        item = self.items.get(run_key)
        if (
            item
            and item.get(ATTR.status) == contracts.STATUS_ACCEPTED
            and item.get(ATTR.claim_owner) == owner
        ):
            return item
        return None

    def take_or_queue(self, run_key: str, owner: str, limit: int, now: str) -> str:
        self.writes.append("take_or_queue")
        item = self._ours(run_key, owner)
        if item is None:
            return RunSlots.LOST
        if item.get(ATTR.holds_slot):
            return RunSlots.TAKEN
        if self.count < limit:
            self.count += 1
            self.version += 1
            item[ATTR.holds_slot] = True
            return RunSlots.TAKEN
        for hook in self.before_queue:
            hook()
        if self.count < limit:  # a slot freed meanwhile: the queueing's condition fails
            return self.take_or_queue(run_key, owner, limit, now)
        item.update({ATTR.status: contracts.STATUS_QUEUED, ATTR.updated_at: now})
        item.pop(ATTR.claim_expires_at, None)
        item.setdefault(ATTR.timeline, []).append(
            {"at": now, "event": contracts.STATUS_QUEUED, "detail": "every run slot is held"}
        )
        return RunSlots.QUEUED

    def start_next(self, owner: str, limit: int, now: str, lease_until: int) -> RunRecord | None:
        self.writes.append("start_next")
        queued = sorted(
            (i for i in self.items.values() if i.get(ATTR.status) == contracts.STATUS_QUEUED),
            key=lambda i: queue_order(str(i.get(ATTR.created_at, "")), i[ATTR.run_key]),
        )
        if not queued or self.count >= limit:
            return None
        item = queued[0]
        self.count += 1
        self.version += 1
        item.update(
            {
                ATTR.status: contracts.STATUS_ACCEPTED,
                ATTR.holds_slot: True,
                ATTR.claim_owner: owner,
                ATTR.claim_attempts: 1,
                ATTR.claim_expires_at: lease_until,
                ATTR.updated_at: now,
                ATTR.start_attempts: item.get(ATTR.start_attempts, 0) + 1,
            }
        )
        item.setdefault(ATTR.timeline, []).append(
            {"at": now, "event": "STARTED_FROM_QUEUE", "detail": "a run slot is free"}
        )
        return RunRecord.from_item(copy.deepcopy(item))

    def release(self, run_key: str, now: str) -> bool:
        self.writes.append("release")
        item = self.items.get(run_key)
        if not item or ATTR.holds_slot not in item:
            return False
        del item[ATTR.holds_slot]
        item.setdefault(ATTR.timeline, []).append(
            {"at": now, "event": "SLOT_FREED", "detail": "the run's slot is given back"}
        )
        if self.count > 0:
            self.count -= 1
            self.version += 1
        return True

    def requeue(self, run_key: str, owner: str, now: str, reason: str) -> bool:
        self.writes.append("requeue")
        item = self._ours(run_key, owner)
        if item is None or ATTR.holds_slot not in item:
            return False
        del item[ATTR.holds_slot]
        item.pop(ATTR.claim_expires_at, None)
        item.update({ATTR.status: contracts.STATUS_QUEUED, ATTR.updated_at: now})
        item[ATTR.reason] = reason
        item.setdefault(ATTR.timeline, []).append(
            {
                "at": now,
                "event": contracts.STATUS_QUEUED,
                "detail": f"back in line (its place kept): {reason}",
            }
        )
        if self.count > 0:
            self.count -= 1
            self.version += 1
        return True

    def in_flight(self) -> int:
        return self.count

    def repair(self) -> tuple[int, int] | None:
        self.writes.append("repair")
        counted = sum(1 for i in self.items.values() if ATTR.holds_slot in i)
        stored = self.count
        if counted != stored:
            self.count = counted
            self.version += 1
        return stored, counted

    def holders(self) -> list[str]:
        return sorted(k for k, i in self.items.items() if ATTR.holds_slot in i)


class RecordingSignal(SlotSignal):
    """Records each "a slot is free"; `lose` makes the next ones fail (as the adapter: False)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.lose = 0

    def slot_free(self, reason: str) -> bool:
        if self.lose:
            self.lose -= 1
            return False
        self.sent.append(reason)
        return True


def slot_fakes(runs: InMemoryRunProgress) -> dict[str, Any]:
    """The run-slot keywords a service takes, over the same items as `runs`."""
    return {"slots": InMemoryRunSlots(runs.items), "slot_signal": RecordingSignal()}
