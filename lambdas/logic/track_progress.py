"""Move a run record on from one SageMaker or pipeline event, and announce the run's outcome.

Normal path: one conditional write per event (the progress entry); the write returns the record
as it was, so nothing is read first. An event that decides the outcome (the endpoint in
service, a failure, the pipeline's final state) takes one more: the outcome is that of the
latest deciding event by (event time, event id), so the record is the same for any order of
the same events. The outcome's email (ENDPOINT_READY or RUN_FAILED) goes out when an event
sets it, at most once per kind per run: a run whose endpoint failed after it was announced gets
both, each true when sent.

The first event that decides the outcome also gives the run's slot back (max_concurrent_runs)
and tells start-run "a slot is free": the release is conditional on the record holding a slot,
so a deciding event delivered twice, or a later one, frees nothing more.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any

from core import contracts
from core import run_record as rr
from core.kfp import run_url
from core.run_record import RunRecord
from lambdas.logic import costs, notifications
from lambdas.logic.announcements import Announcer
from lambdas.logic.notifications import Notification
from lambdas.logic.ports import Notifier, RunProgress, RunSlots, SlotSignal
from lambdas.logic.progress_events import Ignored, ProgressEvent, parse_event
from lambdas.observability import add_metric_with, logger, metrics

# What became of one event: the handler's answer, a metric each, and a log field.
ANNOUNCED = "announced"
APPLIED = "applied"
STALE = "stale"  # the record already held this event or a newer one for its step and status
ORPHAN = "orphan"  # no run record for the run key (start-run never saw the dataset)
IGNORED = "ignored"  # not ours, or bad input
OUTCOME_METRICS = {
    ANNOUNCED: "ProgressAnnounced",
    APPLIED: "ProgressApplied",
    STALE: "ProgressStale",
    ORPHAN: "ProgressOrphans",
    IGNORED: "ProgressIgnored",
}


class TrackProgress:
    def __init__(
        self,
        runs: RunProgress,
        notifier: Notifier,
        kfp_ui_url: str = "",
        emulator_url: str = "",
        prices: costs.PriceLookup | None = None,
        *,
        slots: RunSlots,
        slot_signal: SlotSignal,
    ):
        self._runs = runs
        self._notifier = notifier
        self._slots = slots
        self._slot_signal = slot_signal
        self._kfp_ui_url = kfp_ui_url
        self._emulator_url = emulator_url  # the local stack's AWS emulator, else ""
        # The Price List (lambdas.dal.price_list); None: every price is unknown. Never asked on
        # the local stack, where nothing is billed.
        self._prices = prices

    def handle(self, event: Any, request_id: str = "") -> dict[str, str]:
        """`request_id`: the invocation's (Lambda keeps it across retries); it owns the
        announcements this invocation claims."""
        parsed = parse_event(event)
        if isinstance(parsed, Ignored):
            return self._ignored(parsed)
        logger.append_keys(run_key=parsed.run_key)
        try:
            # Without a request id (a direct call), this call is its own owner.
            announcer = Announcer(self._runs, self._notifier, request_id or str(uuid.uuid4()))
            outcome = self._apply(parsed, announcer)
        finally:
            logger.remove_keys(["run_key"])
        metrics.add_metric(name=OUTCOME_METRICS[outcome], unit="Count", value=1)
        return {"outcome": outcome, "run_key": parsed.run_key}

    def _ignored(self, ignored: Ignored) -> dict[str, str]:
        log = logger.info if ignored.kind == Ignored.NOT_OURS else logger.warning
        log(
            f"Event ignored: {ignored.problem}",
            extra={"reason": ignored.kind, "received": ignored.received},
        )
        metrics.add_metric(name=OUTCOME_METRICS[IGNORED], unit="Count", value=1)
        return {"outcome": IGNORED, "reason": ignored.kind}

    def _apply(self, event: ProgressEvent, announcer: Announcer) -> str:
        write = self._runs.record_progress(event.run_key, event.attribute, event.entry().as_item())
        old = write.old
        context = {
            "step": event.step,
            "status": event.status,
            "resource": event.resource_name or event.endpoint_name,
            "event_id": event.event_id,
            "event_time": event.time,
        }
        if old is None or old.is_orphan:
            logger.warning(
                "Orphan progress: no run record for this run key (start-run did not record the"
                " dataset, or the record was deleted); progress kept, nothing announced",
                extra={**context, "applied": write.applied},
            )
            return ORPHAN
        if write.applied:
            logger.info("Progress recorded", extra=context)
            self._step_metrics(event, old)
        else:
            logger.info("Progress already recorded (duplicate or older event)", extra=context)
        decided = event.announces
        if not decided:
            return APPLIED if write.applied else STALE
        # The run is over (whatever its final outcome): its slot goes to the next upload. The
        # record as it was says whether it held one (no call when not: slots are taken before
        # the KFP run exists, so before any of its events).
        if old.holds_slot and self._slots.release(event.run_key, event.time):
            logger.info("Run slot given back", extra=context)
            self._slot_signal.slot_free(f"{event.run_key} ended: {decided}")
        # The latest deciding event, by (time, event id), decides the outcome: the same record
        # for any order of the same events; the event that decides it announces it.
        note = self._note(event, old)
        if old.outcome_ord and old.outcome_ord >= event.ord:
            # Already decided by this event or a later one: only this very decision's email may
            # still be owed (its publish failed, or the invocation died before it).
            owed = old.outcome_ord == event.ord and note.kind not in old.announced
            decided_here = owed
        else:
            decision = self._runs.decide_outcome(event.run_key, decided, event.ord)
            decided_here = decision.applied and note.kind not in old.announced
        if decided_here and announcer.announce(event.run_key, note):
            self._announced(event, old, note)
            return ANNOUNCED
        return APPLIED if write.applied else STALE

    def _note(self, event: ProgressEvent, record: RunRecord) -> Notification:
        link = self._kfp_link(record)
        if event.announces == contracts.STATUS_SUCCEEDED:
            cost = self._cost(event, record, serving=True)
            return notifications.endpoint_ready(event, record, link, self._emulator_url, cost)
        cost = self._cost(event, record, serving=False)
        if event.announces == contracts.STATUS_MODEL_REJECTED:
            return notifications.model_rejected(event, record, link, cost)
        return notifications.run_failed(event, record, link, cost)

    def _cost(self, event: ProgressEvent, record: RunRecord, *, serving: bool) -> list[str]:
        """The run's cost lines: its usage (the record, and this event's own) priced from the
        Price List; "price unknown" where no price could be had, never an error."""
        this = rr.StepProgress(event.step, event.normalized, event.entry())
        seen = dataclasses.replace(record, progress=(*record.progress, this))
        billed = not self._emulator_url
        prices = self._prices if billed and self._prices is not None else _no_price
        endpoint = costs.serving_of(record) if serving else None
        try:
            cost = costs.run_cost(seen, event.region, prices, endpoint)
        except Exception:  # noqa: BLE001 - the cost is never a reason to lose the email
            logger.exception("The run's cost could not be worked out; the email goes without it")
            return []
        return costs.cost_lines(cost, billed=billed)

    def _announced(self, event: ProgressEvent, record: RunRecord, note: Notification) -> None:
        if note.kind == contracts.KIND_MODEL_REJECTED:
            metrics.add_metric(name=contracts.METRIC_MODELS_REJECTED, unit="Count", value=1)
            return
        if note.kind != contracts.KIND_ENDPOINT_READY:
            metrics.add_metric(name=contracts.METRIC_RUNS_FAILED, unit="Count", value=1)
            return
        metrics.add_metric(name=contracts.METRIC_ENDPOINTS_READY, unit="Count", value=1)
        seconds = _seconds_between(record.created_at, event.time)
        if seconds is not None:
            metrics.add_metric(
                name=contracts.METRIC_UPLOAD_TO_ENDPOINT, unit="Seconds", value=seconds
            )

    def _step_metrics(self, event: ProgressEvent, old: RunRecord) -> None:
        """A step that finished: its duration, from its first IN_PROGRESS event."""
        if event.normalized not in (rr.COMPLETED, rr.IN_SERVICE):
            return
        started = old.entry(event.step, rr.IN_PROGRESS)
        seconds = _seconds_between(started.at, event.time) if started else None
        if seconds is None:
            return
        add_metric_with(
            contracts.METRIC_STEP_SECONDS,
            "Seconds",
            seconds,
            **{contracts.METRIC_STEP_DIMENSION: event.step},
        )

    def _kfp_link(self, record: RunRecord) -> str:
        if record.kfp_run_url:
            return record.kfp_run_url
        return run_url(self._kfp_ui_url, record.kfp_run_id)


def _seconds_between(start: str, end: str) -> float | None:
    """Seconds from one ISO 8601 time to another; None when either is missing or malformed."""
    try:
        first = datetime.fromisoformat(start.replace("Z", "+00:00"))
        last = datetime.fromisoformat(end.replace("Z", "+00:00"))
    except (AttributeError, ValueError):
        return None
    seconds = (last - first).total_seconds()
    return seconds if seconds >= 0 else None


def _no_price(region: str, component: str, instance_type: str) -> float | None:
    return None
