"""The stuck-run watchdog: a scheduled pass over the runs table that closes what went quiet.

Every few minutes it looks at each record without an outcome and asks KFP, through the same
adapter start-run uses, about the ones that are stuck:

- ACCEPTED past its lease (plus Lambda's retry delays): the invocation holding the claim
  stopped. If KFP has a run named by the run key, the record becomes RUN_STARTED; else
  START_FAILED. Either way with its email.
- RUN_STARTED with no progress for `no_progress_seconds`, or without an outcome
  `max_run_seconds` after the upload: KFP's state for the run decides. FAILED, CANCELED,
  CANCELING, SKIPPED, or no such run: the run is closed as FAILED with a RUN_FAILED email that
  says what was found. PENDING, RUNNING, PAUSED: left alone. SUCCEEDED: left alone and logged
  (the pipeline finished; its events did not arrive, and the watchdog does not announce an
  endpoint it has not seen).
- A finished start whose email did not go out (its publish failed and no retry came): sent.
- Per-run endpoints (`<run key>-endpoint`) older than `endpoint_ttl_hours`: deleted, with the
  endpoint config, model and promoted artifact that only they used (pipeline/steps/retire.py
  decides; one that SageMaker is changing is left for the next pass). SageMaker unreachable:
  logged, and the next pass tries again; the runs are handled all the same.
- Run slots (max_concurrent_runs): a run it closes, a stale claim it ends as START_FAILED, and
  a run KFP says SUCCEEDED (its events lost) give their slot back; so does any finished record
  still holding one (its owner died between the two writes). Then the count is rebuilt from
  the records when it differs, and, when a slot is free and an upload waits as QUEUED, "a slot
  is free" is sent again (the one sent at the run's end may have been lost).

KFP unreachable: nothing is closed; the next pass asks again. Each action is a conditional
write, so a pass that overlaps an invocation, or another pass, changes nothing twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core import contracts
from core.kfp import run_url
from core.run_record import RunRecord
from core.settings import Settings
from lambdas.logic import notifications
from lambdas.logic.announcements import Announcer
from lambdas.logic.ports import (
    ExpiredEndpoints,
    KfpCallFailed,
    KfpRun,
    KfpRunsApi,
    Notifier,
    PublishFailed,
    RunProgress,
    RunSlots,
    RunsRepository,
    SageMakerCallFailed,
    SlotSignal,
)
from lambdas.observability import logger, metrics

# Lambda retries an invocation after one minute, then two (contracts.LAMBDA_ASYNC_RETRIES), each
# up to the function's timeout: a claim is left to its owner this long past its lease.
CLAIM_GRACE_SECONDS = 300
# A finished start's email is left to Lambda's retries this long before the watchdog sends it.
EMAIL_GRACE_SECONDS = 300
# KFP's run states (core.kfp.RUNTIME_STATES) that end a run without an endpoint.
CLOSING_STATES = frozenset({"FAILED", "CANCELED", "CANCELING", "SKIPPED"})
WATCHDOG_SOURCE = "watchdog"  # the event-id part of the watchdog's decisions' order


@dataclass(frozen=True)
class WatchdogPolicy:
    no_progress_seconds: int
    max_run_seconds: int
    claim_grace_seconds: int = CLAIM_GRACE_SECONDS
    email_grace_seconds: int = EMAIL_GRACE_SECONDS
    endpoint_ttl_seconds: int = 24 * 3600

    @classmethod
    def from_settings(cls, settings: Settings) -> WatchdogPolicy:
        return cls(
            no_progress_seconds=settings.watchdog_no_progress_minutes * 60,
            max_run_seconds=settings.watchdog_max_run_hours * 3600,
            endpoint_ttl_seconds=settings.endpoint_ttl_hours * 3600,
        )


@dataclass
class Pass:
    """What one pass did, by run key, for the log and the tests."""

    started: list[str] = field(default_factory=list)  # stale claims whose run KFP had
    start_failed: list[str] = field(default_factory=list)  # stale claims with no run
    closed: list[str] = field(default_factory=list)  # runs KFP ended, or does not have
    running: list[str] = field(default_factory=list)  # stuck-looking, but KFP runs them
    finished: list[str] = field(default_factory=list)  # SUCCEEDED in KFP, events missing
    unreachable: list[str] = field(default_factory=list)  # KFP could not be asked
    emailed: list[str] = field(default_factory=list)  # owed emails sent
    retired: list[str] = field(default_factory=list)  # expired per-run endpoints and theirs
    freed: list[str] = field(default_factory=list)  # run slots given back
    recounted: list[str] = field(default_factory=list)  # "stored -> counted" when they differed
    woke: list[str] = field(default_factory=list)  # "a slot is free" sent for waiting uploads

    def as_dict(self) -> dict[str, list[str]]:
        return {name: list(value) for name, value in vars(self).items()}


def _seconds(iso: str) -> float | None:
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except (AttributeError, ValueError):
        return None


class Watchdog:
    def __init__(
        self,
        records: Callable[[], Iterable[RunRecord]],
        runs: RunsRepository,
        progress: RunProgress,
        notifier: Notifier,
        kfp: KfpRunsApi,
        settings: Settings,
        policy: WatchdogPolicy,
        connection_hint: str = "",
        clock: Callable[[], float] = time.time,
        endpoints: ExpiredEndpoints | None = None,
        *,
        slots: RunSlots,
        slot_signal: SlotSignal,
    ):
        self._slots = slots
        self._slot_signal = slot_signal
        self._records = records
        self._runs = runs
        self._progress = progress
        self._notifier = notifier
        self._kfp = kfp
        self._settings = settings
        self._policy = policy
        self._hint = connection_hint
        self._clock = clock
        self._endpoints = endpoints
        # The watchdog owns no invocation's claims: it takes one over only once it is stale.
        self._announcer = Announcer(runs, notifier, WATCHDOG_SOURCE, clock)

    def run(self) -> dict[str, Any]:
        done = Pass()
        now = self._clock()
        records = list(self._records())
        for record in records:
            if record.is_orphan or record.outcome:
                continue
            logger.append_keys(run_key=record.run_key)
            try:
                self._check(record, now, done)
            except (KfpCallFailed, PublishFailed) as error:
                logger.warning("Watchdog could not finish a run", extra={"error": str(error)})
                done.unreachable.append(record.run_key)
            finally:
                logger.remove_keys(["run_key"])
        self._retire_expired_endpoints(now, done)
        self._slots_pass(records, now, done)
        closed = len(done.closed) + len(done.start_failed)
        if closed:
            metrics.add_metric(name=contracts.METRIC_STUCK_RUNS_CLOSED, unit="Count", value=closed)
        logger.info("Watchdog pass done", extra={"pass": done.as_dict()})
        return done.as_dict()

    def _check(self, record: RunRecord, now: float, done: Pass) -> None:
        if record.status == contracts.STATUS_ACCEPTED:
            expires = record.claim_expires_at
            if expires is not None and expires + self._policy.claim_grace_seconds < now:
                self._close_stale_claim(record, now, done)
            return
        self._send_owed_email(record, now, done)
        if record.status == contracts.STATUS_RUN_STARTED and self._looks_stuck(record, now):
            self._ask_kfp(record, now, done)

    # -- a claim whose invocation stopped --------------------------------------------------

    def _close_stale_claim(self, record: RunRecord, now: float, done: Pass) -> None:
        key = record.run_key
        run = self._find_run(key)  # KfpCallFailed: leave it for the next pass
        stale_before = int(now - self._policy.claim_grace_seconds)
        stamp = _iso(now)
        if run is not None:
            url = run_url(self._settings.kfp_ui_url, run.run_id)
            reason = f"the watchdog found KFP run {run.run_id} for a start that never finished"
            if self._runs.close_stale_claim(
                key, record.claim_owner, stale_before, stamp, reason, run, url
            ):
                done.started.append(key)
                dataset = record.dataset
                note = notifications.run_started(key, dataset, run.run_id, url)
                self._announcer.announce(key, note)
            return
        reason = (
            f"the start stopped at attempt {record.claim_attempts} and KFP has no run named {key}"
            + (f" (last error: {record.reason})" if record.reason else "")
        )
        if self._runs.close_stale_claim(key, record.claim_owner, stale_before, stamp, reason):
            done.start_failed.append(key)
            self._free(key, now, "start never finished", done)
            note = notifications.run_could_not_start(
                key, record.dataset, reason, record.claim_attempts, self._hint
            )
            self._announcer.announce(key, note)

    def _find_run(self, key: str) -> KfpRun | None:
        name = self._settings.kfp_experiment_name
        experiments = [e for e in self._kfp.find_experiments(name) if e.display_name == name]
        for experiment in experiments:
            runs = [
                r
                for r in self._kfp.find_runs(experiment.experiment_id, key)
                if r.display_name == key
            ]
            if runs:
                return min(runs, key=lambda r: (r.created_at, r.run_id))
        return None

    # -- a run that went quiet -------------------------------------------------------------

    def _looks_stuck(self, record: RunRecord, now: float) -> bool:
        accepted = _seconds(record.created_at)
        if accepted is not None and now - accepted > self._policy.max_run_seconds:
            return True
        if record.progress:
            return False
        started = _seconds(record.updated_at)
        return started is not None and now - started > self._policy.no_progress_seconds

    def _ask_kfp(self, record: RunRecord, now: float, done: Pass) -> None:
        key = record.run_key
        try:
            run = self._kfp.get_run(record.kfp_run_id)
        except KfpCallFailed as error:
            if error.kind != KfpCallFailed.NOT_FOUND:
                raise
            self._close(record, now, f"KFP has no run {record.kfp_run_id}", done)
            return
        if run.state in CLOSING_STATES:
            self._close(record, now, f"KFP says run {run.run_id} is {run.state}", done)
        elif run.state == "SUCCEEDED":
            logger.warning(
                "KFP says the run succeeded but its events never arrived; left as it is",
                extra={"kfp_run_id": run.run_id},
            )
            done.finished.append(key)
            self._free(key, now, "KFP says the run succeeded", done)
        else:
            done.running.append(key)

    def _close(self, record: RunRecord, now: float, finding: str, done: Pass) -> None:
        key = record.run_key
        note = notifications.run_closed(record, finding, record.kfp_run_url)
        # The watchdog's decision is ordered by its own time: later than any event so far.
        order = f"{_iso(now)}|{WATCHDOG_SOURCE}"
        decision = self._progress.decide_outcome(key, contracts.STATUS_FAILED, order)
        if not decision.applied:
            return
        done.closed.append(key)
        logger.warning("Run closed by the watchdog", extra={"finding": finding})
        self._free(key, now, "closed by the watchdog", done)
        if note.kind not in record.announced:
            self._announcer.announce(key, note)

    # -- per-run endpoints past their time to live -------------------------------------------

    def _retire_expired_endpoints(self, now: float, done: Pass) -> None:
        if self._endpoints is None:
            return
        try:
            looked_at = self._endpoints.retire_expired(self._policy.endpoint_ttl_seconds, now)
        except SageMakerCallFailed as error:
            logger.warning("Watchdog could not retire endpoints", extra={"error": str(error)})
            return
        for item in looked_at:
            if item.result in ("deleted", "already gone"):
                done.retired.append(f"{item.kind} {item.name}")
            elif item.result == "refused":
                logger.warning(
                    "SageMaker refused a delete",
                    extra={"resource": item.name, "kind": item.kind, "reason": item.reason},
                )

    # -- run slots ---------------------------------------------------------------------------

    def _free(self, key: str, now: float, why: str, done: Pass) -> None:
        if self._slots.release(key, _iso(now)):
            done.freed.append(key)
            self._slot_signal.slot_free(f"{key}: {why}")

    def _slots_pass(self, records: list[RunRecord], now: float, done: Pass) -> None:
        """Free what finished records still hold, rebuild the count, wake start-run if an
        upload waits while a slot is free."""
        finished = (contracts.STATUS_REJECTED, contracts.STATUS_START_FAILED)
        for record in records:
            if record.holds_slot and (record.outcome or record.status in finished):
                self._free(record.run_key, now, "finished, slot still held", done)
        repaired = self._slots.repair()
        if repaired is not None and repaired[0] != repaired[1]:
            logger.warning(
                "Run slot count rebuilt from the records",
                extra={"stored": repaired[0], "counted": repaired[1]},
            )
            done.recounted.append(f"{repaired[0]} -> {repaired[1]}")
        waiting = [r for r in records if r.status == contracts.STATUS_QUEUED]
        limit = self._settings.max_concurrent_runs
        if waiting and self._slots.in_flight() < limit:
            self._slot_signal.slot_free(f"watchdog: {len(waiting)} queued, a slot is free")
            done.woke.append(f"{len(waiting)} queued")

    # -- an email that did not go out ------------------------------------------------------

    def _send_owed_email(self, record: RunRecord, now: float, done: Pass) -> None:
        kind = notifications.OWED_BY_STATUS.get(record.status)
        if not kind or kind in record.announced:
            return
        updated = _seconds(record.updated_at)
        if updated is None or now - updated < self._policy.email_grace_seconds:
            return
        note = notifications.owed(record, kind, self._hint)
        if note is not None and self._announcer.announce(record.run_key, note):
            done.emailed.append(record.run_key)


def _iso(epoch_seconds: float) -> str:
    stamp = datetime.fromtimestamp(epoch_seconds, tz=UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")
