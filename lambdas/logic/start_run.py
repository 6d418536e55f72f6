"""Start exactly one KFP run per uploaded dataset version.

Claim the run key, check the upload, find or create the experiment and the run (by display
name, since KFP has no idempotency token), record the outcome and announce it.

At most `max_concurrent_runs` runs are in flight: a run takes a slot before its KFP run is
created, in the same transaction that checks one is free; when none is, the upload waits as
QUEUED (visible in `mnistflow status` with its place in line). Whatever ends a run's hold on
its slot (track-progress deciding the outcome, the watchdog closing a stuck run, start-run
giving up) gives it back and sends "a slot is free" to the run-slots queue, which start-run
consumes (`handle_slot_free`): it starts the queued runs in upload order while slots are free,
so start-run stays the one function that creates KFP runs. What the user sees, fault by fault:

- Two uploads race for the last slot: one transaction wins and starts (RUN_STARTED email); the
  other's fails its condition and the upload is QUEUED instead, in a transaction that sees
  every slot held, so a slot freed in between is never missed (it retries the take).
- A rejected dataset is refused before any slot is taken (DATA_REJECTED email, nothing held).
- A run that cannot be started (START_FAILED email) gives its slot back at once.
- Start-run dies between taking a slot and creating the KFP run: Lambda's retry of the upload
  finds the claim's slot already held and goes on with it (never two slots); if every try
  dies, the watchdog closes the stale claim (RUN_STARTED if KFP has the run, else
  START_FAILED, each with its email) and frees the slot.
- "A slot is free" lost (SQS or the sender failed): the queued runs wait for the watchdog's
  next pass, which sends it again when a slot is free and a run is queued; a duplicate message
  finds no slot or nothing queued and does nothing.
- The same outcome event twice: the slot is freed once (the release is conditional on the
  record holding one); the count can always be rebuilt from the records (the watchdog's
  recount).
- A queued upload whose object is deleted before its turn: DATA_REJECTED, its slot given back.
- A queued run that KFP will not start for good (a 400, a KFP backend too old):
  START_FAILED at once (RUN_FAILED email), its slot given back, the next one started.
- KFP down or unreachable when a queued run starts (a transient error after the in-invocation
  retries): the run goes back to QUEUED in the transaction that gives its slot back, its place
  in line kept, no email; `mnistflow status RUN_KEY` shows it waiting, the reason and the try
  count. Start-run stops starting queued runs for this message (the next in line would meet
  the same outage) and ends the message without an error; the next try comes with the next
  "a slot is free": another run ending, or at the latest the watchdog's next pass, which sends
  it when a slot is free and a run is queued. Not the SQS retry: a raised batch comes back
  only after the visibility timeout and, after RUN_SLOTS_MAX_RECEIVES, lands on the dead-letter
  queue whose alarm means start-run is broken. Only the head of the line spends tries, so an
  outage loses no upload and keeps the order; after START_ATTEMPTS_LIMIT claims of the record
  it is given up (START_FAILED, RUN_FAILED email) and the next in line takes its turn.

Lambda runs an upload event up to three times with the same request id, which owns the claim:
a retry of the owner takes its claim back and counts the attempt, so the start is given up
(START_FAILED, one RUN_FAILED email) at the last attempt only, or at once for an error no
retry can heal. Another delivery of the same upload finds the claim held and stops: the owner
or its retries finish, or the event reaches the failure queue (and the stuck-run watchdog
closes the record).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import contracts
from core.kfp import run_url
from core.run_record import DatasetRef, RunRecord
from core.settings import (
    Settings,
    UploadSettingError,
    recorded_settings,
    run_parameters,
    upload_overrides,
)
from lambdas.logic import notifications
from lambdas.logic.announcements import Announcer
from lambdas.logic.datasets import rejection_reason, uploads_in
from lambdas.logic.kfp_check import check_kfp
from lambdas.logic.notifications import Notification
from lambdas.logic.ports import (
    Claim,
    KfpCallFailed,
    KfpExperiment,
    KfpRun,
    KfpRunsApi,
    Notifier,
    RunSlots,
    RunsRepository,
    SlotSignal,
    UploadGone,
    UploadMetadata,
)
from lambdas.observability import logger, metrics

# Retries of the whole find-or-create sequence within one invocation.
KFP_ATTEMPTS = 4
# A start not made this time but tried again (Lambda's retry, or the queued run back in line).
METRIC_START_RETRIES = "RunStartRetries"
KFP_BASE_DELAY_SECONDS = 1.0
KFP_MAX_DELAY_SECONDS = 8.0
# 401/403/404 and answers that are not KFP's do not heal by waiting: one more try (with fresh
# credentials), then leave it to Lambda's next attempt.
KFP_ATTEMPTS_AFTER_AUTH_OR_NOT_FOUND = 2
# After a create whose answer was lost (a timeout after sending, a 5xx, an answer without an
# id) KFP may still commit the run, after the client gave up: look for it by display name on
# this schedule (15.5 s in all, against a 10 s client timeout) before any new create.
CREATE_LOOKUP_DELAYS_SECONDS = (0.5, 1.0, 2.0, 4.0, 8.0)
# Time kept back to record START_FAILED and send the email before Lambda's timeout.
FINISH_RESERVE_SECONDS = 5.0
# Claims of one record (its `start_attempts`: the upload's own, at most LAMBDA_ASYNC_ATTEMPTS,
# and each start from the queue) before a queued run that KFP keeps refusing with transient
# errors is given up. At least 9 starts from the queue, each at a "slot is free" (at the latest
# the watchdog's pass, every 5 minutes): a KFP outage of about 45 minutes loses no upload; a
# longer one gives up the head of the line (START_FAILED, its email), one run per pass.
START_ATTEMPTS_LIMIT = 12
# A claim is held while its invocation can still be running; after that another delivery may
# take it over (the run lookup by display name keeps that from starting a second run).
CLAIM_LEASE_MARGIN_SECONDS = 30

EXPERIMENT_DESCRIPTION = "MNIST runs started by uploads to the data bucket"


class StartRunFailed(Exception):
    """Raised so Lambda retries the event, or keeps it on the failure queue when given up."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = KFP_ATTEMPTS
    base_delay_seconds: float = KFP_BASE_DELAY_SECONDS
    max_delay_seconds: float = KFP_MAX_DELAY_SECONDS
    attempts_after_auth_or_not_found: int = KFP_ATTEMPTS_AFTER_AUTH_OR_NOT_FOUND
    create_lookup_delays_seconds: tuple[float, ...] = CREATE_LOOKUP_DELAYS_SECONDS
    finish_reserve_seconds: float = FINISH_RESERVE_SECONDS
    invocation_attempts: int = contracts.LAMBDA_ASYNC_ATTEMPTS

    def delay_seconds(self, attempt: int, rng: Callable[[], float]) -> float:
        """Exponential backoff with full jitter before attempt `attempt + 1`."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return ceiling * rng()

    def call_limit(self, error: KfpCallFailed) -> int:
        if error.kind == KfpCallFailed.PERMANENT:
            return 1
        if error.kind in (KfpCallFailed.AUTH, KfpCallFailed.NOT_FOUND, KfpCallFailed.UNEXPECTED):
            return min(self.attempts, self.attempts_after_auth_or_not_found)
        return self.attempts


@dataclass
class Outcome:
    """What one invocation did with each record, for the log and the tests."""

    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    queued: list[str] = field(default_factory=list)  # waiting for a run slot
    retrying: list[str] = field(default_factory=list)  # Lambda's next attempt takes them up
    requeued: list[str] = field(default_factory=list)  # back in line: KFP failed, not for good
    failed: list[str] = field(default_factory=list)  # given up: START_FAILED

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(value) for name, value in vars(self).items()}


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class StartRun:
    def __init__(
        self,
        runs: RunsRepository,
        notifier: Notifier,
        kfp: KfpRunsApi,
        pipeline_spec: Callable[[], dict[str, Any]],
        settings: Settings,
        uploads: UploadMetadata,
        slots: RunSlots,
        slot_signal: SlotSignal,
        connection_hint: str = "",
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        now: Callable[[], str] = utc_now,
        rng: Callable[[], float] = random.random,
    ):
        self._runs = runs
        self._notifier = notifier
        self._kfp = kfp
        self._pipeline_spec = pipeline_spec
        self._settings = settings
        self._uploads = uploads
        self._slots = slots
        self._slot_signal = slot_signal
        self._connection_hint = connection_hint  # what to check when KFP cannot be reached
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._rng = rng

    def handle_notification(
        self, event: dict[str, Any], seconds_left: Callable[[], float], request_id: str
    ) -> dict[str, list[str]]:
        """Handles every record; raises StartRunFailed at the end if a run is not started yet
        (Lambda retries) or was given up (the event goes to the failure queue)."""
        outcome = Outcome()
        for upload in uploads_in(event, self._settings.data_bucket_name):
            if upload.dataset is None:
                logger.info("Skipping S3 record", extra={"reason": upload.skip_reason})
                outcome.skipped.append(upload.skip_reason)
                continue
            self._handle_dataset(upload.dataset, seconds_left, request_id, outcome)
        logger.info("S3 notification handled", extra={"outcome": outcome.as_dict()})
        if outcome.failed or outcome.retrying:
            keys = ", ".join(outcome.failed + outcome.retrying)
            raise StartRunFailed(f"KFP run not started for {keys}")
        return outcome.as_dict()

    def check_kfp(self) -> dict[str, Any]:
        """The dry run (core.contracts.DRY_RUN_EVENT): reach KFP as a start would, change
        nothing (lambdas.logic.kfp_check)."""
        return check_kfp(self._kfp, self._settings, self._connection_hint)

    def _handle_dataset(
        self,
        dataset: DatasetRef,
        seconds_left: Callable[[], float],
        owner: str,
        outcome: Outcome,
    ) -> None:
        version = dataset.version or dataset.etag
        key = contracts.run_key(dataset.bucket, dataset.key, version)
        logger.append_keys(run_key=key)
        try:
            lease_until = int(self._clock() + seconds_left() + CLAIM_LEASE_MARGIN_SECONDS)
            claim = self._runs.claim(key, dataset, self._now(), lease_until, owner)
            if not claim.won:
                self._settle(key, claim, owner, outcome)
                return
            logger.info(
                "Dataset accepted",
                extra={"dataset": dataset.as_item(), "attempt": claim.attempt},
            )
            reason = rejection_reason(dataset, self._settings.max_dataset_bytes)
            overrides: dict[str, Any] = {}
            if not reason:
                try:
                    metadata = self._uploads.metadata(dataset)
                    overrides = upload_overrides(metadata, self._settings)
                except UploadSettingError as error:
                    reason = str(error)
                except UploadGone as gone:
                    reason = f"the uploaded object is gone (deleted before it was read): {gone}"
            if reason:
                self._reject(key, owner, dataset, reason)
                outcome.rejected.append(key)
                return
            if overrides:
                logger.info("Run settings from the upload's metadata", extra={"set": overrides})
            if not claim.holds_slot and not self._take_slot(key, owner, outcome):
                return
            self._start(key, owner, dataset, seconds_left, claim.attempt, outcome, overrides)
        finally:
            logger.remove_keys(["run_key"])

    def _take_slot(self, key: str, owner: str, outcome: Outcome) -> bool:
        """True when this claim now holds a run slot; else the upload waits as QUEUED (or
        another invocation has taken the claim over)."""
        limit = self._settings.max_concurrent_runs
        placed = self._slots.take_or_queue(key, owner, limit, self._now())
        if placed == RunSlots.TAKEN:
            return True
        if placed == RunSlots.QUEUED:
            logger.info(
                "Every run slot is held; the upload waits as QUEUED", extra={"limit": limit}
            )
            metrics.add_metric(name=contracts.METRIC_RUNS_QUEUED, unit="Count", value=1)
            outcome.queued.append(key)
        else:
            logger.info("The claim moved on before a slot was taken; this delivery stops here")
            outcome.duplicates.append(key)
        return False

    def handle_slot_free(
        self, event: dict[str, Any], seconds_left: Callable[[], float], request_id: str
    ) -> dict[str, list[str]]:
        """ "A slot is free" (one or more messages, all meaning the same): start queued runs, the
        oldest upload first, while slots are free and time is left. Never raises for a run it
        gave up (START_FAILED, with its email): the message is done with."""
        outcome = Outcome()
        limit = self._settings.max_concurrent_runs
        messages = len(event.get("Records") or ())
        while True:
            if seconds_left() < self._time_for_one_start():
                # Out of time with work perhaps left: hand it on to the next invocation.
                self._slot_signal.slot_free("start-run ran out of time starting queued runs")
                break
            lease_until = int(self._clock() + seconds_left() + CLAIM_LEASE_MARGIN_SECONDS)
            record = self._slots.start_next(request_id, limit, self._now(), lease_until)
            if record is None or record.dataset is None:
                break
            self._start_queued(record, record.dataset, seconds_left, request_id, outcome)
            if outcome.requeued:
                # KFP failed, not for good: the next in line would meet the same outage.
                break
        logger.info("Slot-free messages handled", extra={"messages": messages, **outcome.as_dict()})
        return outcome.as_dict()

    def _time_for_one_start(self) -> float:
        return self._retry.finish_reserve_seconds * 2

    def _start_queued(
        self,
        record: RunRecord,
        dataset: DatasetRef,
        seconds_left: Callable[[], float],
        owner: str,
        outcome: Outcome,
    ) -> None:
        key = record.run_key
        logger.append_keys(run_key=key)
        try:
            logger.info("Starting a queued run: a slot is free")
            try:
                overrides = upload_overrides(self._uploads.metadata(dataset), self._settings)
            except (UploadSettingError, UploadGone) as error:
                reason = (
                    f"the uploaded object is gone (deleted while the upload waited): {error}"
                    if isinstance(error, UploadGone)
                    else str(error)
                )
                self._reject(key, owner, dataset, reason)
                self.give_back_slot(key, "rejected while queued")
                outcome.rejected.append(key)
                return
            # Not retried by Lambda: a transient failure puts it back in line (_not_started).
            self._start(
                key,
                owner,
                dataset,
                seconds_left,
                record.start_attempts,
                outcome,
                overrides,
                from_queue=True,
            )
        finally:
            logger.remove_keys(["run_key"])

    def give_back_slot(self, key: str, why: str) -> None:
        if self._slots.release(key, self._now()):
            self._slot_signal.slot_free(f"{key} {why}")

    def _settle(self, key: str, claim: Claim, owner: str, outcome: Outcome) -> None:
        """A claim not won: another invocation holds it, or the record is finished. A finished
        record whose email did not go out gets it now."""
        record = claim.record
        kind = notifications.OWED_BY_STATUS.get(claim.status)
        if record is not None and kind and kind not in claim.announced:
            note = notifications.owed(record, kind, self._connection_hint)
            if note is not None and self._announce(owner, key, note):
                logger.info("Sent the notification a finished record owed", extra={"kind": kind})
        if claim.status == contracts.STATUS_START_FAILED and claim.owner == owner:
            # This invocation gave up on an earlier attempt: keep failing, so the event ends on
            # the failure queue, where `mnistflow redrive` can hand it back.
            outcome.failed.append(key)
            return
        logger.info(
            "Run key already claimed; this delivery stops here",
            extra={"status": claim.status, "claim_owner": claim.owner},
        )
        metrics.add_metric(name="DuplicateDeliveries", unit="Count", value=1)
        outcome.duplicates.append(key)

    def _reject(self, key: str, owner: str, dataset: DatasetRef, reason: str) -> None:
        if self._runs.mark_rejected(key, owner, reason, self._now()):
            self._announce(owner, key, notifications.data_rejected(key, dataset, reason))
        logger.warning("Dataset rejected", extra={"reason": reason, "dataset": dataset.uri})
        metrics.add_metric(name=contracts.METRIC_DATASETS_REJECTED, unit="Count", value=1)

    def _start(
        self,
        key: str,
        owner: str,
        dataset: DatasetRef,
        seconds_left: Callable[[], float],
        attempt: int,
        outcome: Outcome,
        overrides: dict[str, Any],
        from_queue: bool = False,
    ) -> None:
        run_settings = recorded_settings({**self._settings, **overrides})
        try:
            run, created, calls = self._find_or_create_run(key, dataset, seconds_left, overrides)
        except KfpCallFailed as error:
            if from_queue:
                self._queued_not_started(key, owner, dataset, attempt, error, outcome)
            else:
                self._not_started(key, owner, dataset, attempt, error, outcome)
            return
        url = self.run_url(run.run_id)
        detail = f"KFP run {run.run_id} {'created' if created else 'found by display name'}"
        moved = self._runs.mark_run_started(
            key, owner, run, url, self._now(), detail, run_settings, tuple(sorted(overrides))
        )
        logger.info(
            "KFP run started" if created else "Existing KFP run found for this run key",
            extra={"kfp_run_id": run.run_id, "kfp_run_url": url, "kfp_attempts": calls},
        )
        (outcome.started if created else outcome.reused).append(key)
        if created:
            metrics.add_metric(name=contracts.METRIC_RUNS_STARTED, unit="Count", value=1)
        else:
            metrics.add_metric(name="RunsReused", unit="Count", value=1)
        if moved:
            note = notifications.run_started(
                key, dataset, run.run_id, url, run_settings, tuple(sorted(overrides))
            )
            self._announce(owner, key, note)

    def _queued_not_started(
        self,
        key: str,
        owner: str,
        dataset: DatasetRef,
        attempt: int,
        error: KfpCallFailed,
        outcome: Outcome,
    ) -> None:
        """A run started from the queue that KFP did not start: back in line when the error
        may heal and tries are left, else given up (START_FAILED)."""
        if error.kind == KfpCallFailed.PERMANENT or attempt >= START_ATTEMPTS_LIMIT:
            self._give_up(key, owner, dataset, attempt, error, outcome)
            return
        reason = (
            f"KFP run not started (try {attempt} of {START_ATTEMPTS_LIMIT}): {error};"
            " waits for the next free slot"
        )
        if not self._slots.requeue(key, owner, self._now(), reason):
            logger.info("The claim moved on before the run went back in line")
            outcome.duplicates.append(key)
            return
        logger.warning(
            "KFP run not started; the queued run is back in line, its place kept",
            extra={"reason": str(error), "kind": error.kind, "attempt": attempt},
        )
        metrics.add_metric(name=METRIC_START_RETRIES, unit="Count", value=1)
        outcome.requeued.append(key)

    def _not_started(
        self,
        key: str,
        owner: str,
        dataset: DatasetRef,
        attempt: int,
        error: KfpCallFailed,
        outcome: Outcome,
    ) -> None:
        reason = str(error)
        last = self._retry.invocation_attempts
        if error.kind != KfpCallFailed.PERMANENT and attempt < last:
            # Not given up: Lambda runs the event again (the claim stays this request's).
            self._runs.record_retry(
                key, owner, f"attempt {attempt} of {last}: {reason}", self._now()
            )
            logger.warning(
                "KFP run not started on this attempt; Lambda retries the event",
                extra={"reason": reason, "kind": error.kind, "attempt": attempt},
            )
            metrics.add_metric(name=METRIC_START_RETRIES, unit="Count", value=1)
            outcome.retrying.append(key)
            return
        self._give_up(key, owner, dataset, attempt, error, outcome)

    def _give_up(
        self,
        key: str,
        owner: str,
        dataset: DatasetRef,
        attempt: int,
        error: KfpCallFailed,
        outcome: Outcome,
    ) -> None:
        reason = str(error)
        if self._runs.mark_start_failed(key, owner, reason, self._now()):
            self.give_back_slot(key, "could not be started")
            note = notifications.run_could_not_start(
                key, dataset, reason, attempt, self._connection_hint
            )
            self._announce(owner, key, note)
        logger.error(
            "KFP run could not be started; given up",
            extra={"reason": reason, "kind": error.kind, "attempt": attempt},
        )
        metrics.add_metric(name=contracts.METRIC_START_FAILURES, unit="Count", value=1)
        outcome.failed.append(key)

    def _announce(self, owner: str, key: str, note: Notification) -> bool:
        return Announcer(self._runs, self._notifier, owner, self._clock).announce(key, note)

    def run_url(self, run_id: str) -> str:
        return run_url(self._settings.kfp_ui_url, run_id)

    def _find_or_create_run(
        self,
        key: str,
        dataset: DatasetRef,
        seconds_left: Callable[[], float],
        overrides: dict[str, Any],
    ) -> tuple[KfpRun, bool, int]:
        policy = self._retry
        attempt = 0
        create_maybe_done = False  # an earlier create of this invocation lost its answer
        while True:
            attempt += 1
            try:
                run, created = self._find_or_create_once(
                    key, dataset, seconds_left, overrides, look_again=create_maybe_done
                )
                return run, created, attempt
            except KfpCallFailed as error:
                create_maybe_done = create_maybe_done or error.maybe_done
                limit = policy.call_limit(error)
                delay = policy.delay_seconds(attempt, self._rng)
                out_of_time = seconds_left() - delay < policy.finish_reserve_seconds
                if attempt >= limit or out_of_time:
                    error.attempts = attempt
                    if out_of_time and attempt < limit:
                        error.args = (f"{error} (gave up: Lambda time running out)",)
                    raise
                logger.warning(
                    "KFP call failed; retrying",
                    extra={
                        "attempt": attempt,
                        "kind": error.kind,
                        "error": str(error),
                        "delay_seconds": round(delay, 3),
                    },
                )
                metrics.add_metric(name="KfpRetries", unit="Count", value=1)
                self._sleep(delay)

    def _find_or_create_once(
        self,
        key: str,
        dataset: DatasetRef,
        seconds_left: Callable[[], float],
        overrides: dict[str, Any],
        *,
        look_again: bool,
    ) -> tuple[KfpRun, bool]:
        experiment = self._experiment()
        existing = self._existing_run(experiment, key)
        if existing is None and look_again:
            existing = self._look_again(experiment, key, seconds_left)
        if existing is not None:
            return existing, False
        try:
            run = self._kfp.create_run(
                experiment_id=experiment.experiment_id,
                display_name=key,
                description=f"MNIST run for {dataset.uri}"[:1000],
                pipeline_spec=self._pipeline_spec(),
                parameters=self.parameters(key, dataset, overrides),
                service_account=self._settings.kfp_service_account,
            )
        except KfpCallFailed as error:
            if error.maybe_done:
                logger.warning(
                    "KFP create's answer lost; the run may exist: looking for it before any"
                    " new create",
                    extra={"error": str(error)},
                )
            raise
        return run, True

    def _existing_run(self, experiment: KfpExperiment, key: str) -> KfpRun | None:
        found = [
            r for r in self._kfp.find_runs(experiment.experiment_id, key) if r.display_name == key
        ]
        if len(found) > 1:
            logger.warning(
                "Several KFP runs carry this run key; using the oldest",
                extra={"kfp_run_ids": [r.run_id for r in found]},
            )
        return min(found, key=lambda r: (r.created_at, r.run_id)) if found else None

    def _look_again(
        self, experiment: KfpExperiment, key: str, seconds_left: Callable[[], float]
    ) -> KfpRun | None:
        """After a create that may have happened: KFP can commit a run after the client's
        timeout, so look on a schedule, within the time left, before creating again."""
        for delay in self._retry.create_lookup_delays_seconds:
            if seconds_left() - delay < self._retry.finish_reserve_seconds:
                break
            self._sleep(delay)
            found = self._existing_run(experiment, key)
            if found is not None:
                logger.info("The create had happened: found the run by its display name")
                return found
        return None

    def _experiment(self) -> KfpExperiment:
        name = self._settings.kfp_experiment_name
        found = [e for e in self._kfp.find_experiments(name) if e.display_name == name]
        if found:
            return found[0]
        return self._kfp.create_experiment(name, EXPERIMENT_DESCRIPTION)

    def parameters(
        self, key: str, dataset: DatasetRef, overrides: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """The run's KFP runtime parameters: this run's dataset and key, the upload's settings,
        the configured rest."""
        return run_parameters(
            {**self._settings, **(overrides or {})},
            dataset_uri=dataset.uri,
            dataset_version=dataset.version,
            run_key=key,
            region=self._settings.aws_region,
        )
