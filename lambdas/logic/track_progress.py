"""Move a run record on from one SageMaker or pipeline event, and announce the run's outcome once.

Normal path: one conditional write per event (the progress entry, plus the outcome claim for an
event that announces), then one email when this write won the claim. The write returns the
record as it was, so nothing is read first.
"""

from __future__ import annotations

from typing import Any

from core import contracts
from core.kfp import run_url
from core.run_record import RunRecord
from lambdas.logic import notifications
from lambdas.logic.ports import Notifier, RunProgress
from lambdas.logic.progress_events import Ignored, ProgressEvent, parse_event
from lambdas.observability import logger, metrics

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
    def __init__(self, runs: RunProgress, notifier: Notifier, kfp_ui_url: str = ""):
        self._runs = runs
        self._notifier = notifier
        self._kfp_ui_url = kfp_ui_url

    def handle(self, event: Any) -> dict[str, str]:
        parsed = parse_event(event)
        if isinstance(parsed, Ignored):
            return self._ignored(parsed)
        logger.append_keys(run_key=parsed.run_key)
        try:
            outcome = self._apply(parsed)
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

    def _apply(self, event: ProgressEvent) -> str:
        announces = event.announces
        write = self._runs.record_progress(
            event.run_key, event.attribute, event.entry().as_item(), announces
        )
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
        unannounced = announces and not old.outcome
        if write.applied:
            logger.info("Progress recorded", extra=context)
            if unannounced:
                # The write above claimed the outcome along with the progress entry.
                self._announce(event, old)
                return ANNOUNCED
            return APPLIED
        logger.info("Progress already recorded (duplicate or older event)", extra=context)
        if unannounced and self._runs.claim_outcome(event.run_key, announces):
            # Failure path only (an extra write): this event, or one like it, was recorded but
            # its email was not sent (the publish failed and the claim was undone). Claim again.
            logger.info("Announcing a recorded outcome whose email was not sent", extra=context)
            self._announce(event, old)
            return ANNOUNCED
        return STALE

    def _announce(self, event: ProgressEvent, record: RunRecord) -> None:
        link = self._kfp_link(record)
        if event.announces == contracts.STATUS_SUCCEEDED:
            note = notifications.endpoint_ready(event, record, link)
        else:
            note = notifications.run_failed(event, record, link)
        try:
            self._notifier.publish(note.kind, event.run_key, note.subject, note.message)
        except Exception:
            # Failure path only (an extra write): give the claim back so a redelivery of this
            # event (EventBridge retries once we raise) can announce; then let the error out.
            logger.exception("Publishing the announcement failed; claim released, will retry")
            self._runs.release_outcome(event.run_key, event.announces)
            raise
        logger.info("Run outcome announced", extra={"kind": note.kind, "subject": note.subject})

    def _kfp_link(self, record: RunRecord) -> str:
        if record.kfp_run_url:
            return record.kfp_run_url
        return run_url(self._kfp_ui_url, record.kfp_run_id)
