"""Start exactly one KFP run per uploaded dataset version.

Claim the run key, check the upload, find or create the experiment and the run (by display
name, since KFP has no idempotency token), record the outcome and announce it.
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
from core.run_record import DatasetRef
from core.settings import Settings, run_parameters
from lambdas.logic import notifications
from lambdas.logic.datasets import rejection_reason, uploads_in
from lambdas.logic.ports import (
    KfpCallFailed,
    KfpExperiment,
    KfpRun,
    KfpRunsApi,
    Notifier,
    RunsRepository,
)
from lambdas.observability import logger, metrics

# Retries of the whole find-or-create sequence within one invocation.
KFP_ATTEMPTS = 4
KFP_BASE_DELAY_SECONDS = 1.0
KFP_MAX_DELAY_SECONDS = 8.0
# 401/403/404 do not heal by waiting: one more try (with fresh credentials), then give up.
KFP_ATTEMPTS_AFTER_AUTH_OR_NOT_FOUND = 2
# Time kept back to record START_FAILED and send the email before Lambda's timeout.
FINISH_RESERVE_SECONDS = 5.0
# A claim is held while its invocation can still be running; after that a redelivery may
# take it over (the run lookup by display name keeps that from starting a second run).
CLAIM_LEASE_MARGIN_SECONDS = 30

EXPERIMENT_DESCRIPTION = "MNIST runs started by uploads to the data bucket"


class StartRunFailed(Exception):
    """Raised after START_FAILED was recorded, so Lambda retries or dead-letters the event."""


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = KFP_ATTEMPTS
    base_delay_seconds: float = KFP_BASE_DELAY_SECONDS
    max_delay_seconds: float = KFP_MAX_DELAY_SECONDS
    attempts_after_auth_or_not_found: int = KFP_ATTEMPTS_AFTER_AUTH_OR_NOT_FOUND
    finish_reserve_seconds: float = FINISH_RESERVE_SECONDS

    def delay_seconds(self, attempt: int, rng: Callable[[], float]) -> float:
        """Exponential backoff with full jitter before attempt `attempt + 1`."""
        ceiling = min(self.max_delay_seconds, self.base_delay_seconds * 2 ** (attempt - 1))
        return ceiling * rng()


@dataclass
class Outcome:
    """What one invocation did with each record, for the log and the tests."""

    started: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

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
        self._connection_hint = connection_hint  # what to check when KFP cannot be reached
        self._retry = retry or RetryPolicy()
        self._sleep = sleep
        self._clock = clock
        self._now = now
        self._rng = rng

    def handle_notification(
        self, event: dict[str, Any], seconds_left: Callable[[], float]
    ) -> dict[str, list[str]]:
        """Handles every record; raises StartRunFailed at the end if any run could not start."""
        outcome = Outcome()
        for upload in uploads_in(event, self._settings.data_bucket_name):
            if upload.dataset is None:
                logger.info("Skipping S3 record", extra={"reason": upload.skip_reason})
                outcome.skipped.append(upload.skip_reason)
                continue
            self._handle_dataset(upload.dataset, seconds_left, outcome)
        logger.info("S3 notification handled", extra={"outcome": outcome.as_dict()})
        if outcome.failed:
            raise StartRunFailed(f"KFP run could not be started for {', '.join(outcome.failed)}")
        return outcome.as_dict()

    def _handle_dataset(
        self, dataset: DatasetRef, seconds_left: Callable[[], float], outcome: Outcome
    ) -> None:
        version = dataset.version or dataset.etag
        key = contracts.run_key(dataset.bucket, dataset.key, version)
        logger.append_keys(run_key=key)
        try:
            lease_until = int(self._clock() + seconds_left() + CLAIM_LEASE_MARGIN_SECONDS)
            claim = self._runs.claim(key, dataset, self._now(), lease_until)
            if not claim.won:
                logger.info(
                    "Run key already claimed; duplicate delivery stops here",
                    extra={"status": claim.status, "dataset": dataset.uri},
                )
                metrics.add_metric(name="DuplicateDeliveries", unit="Count", value=1)
                outcome.duplicates.append(key)
                return
            logger.info(
                "Dataset accepted",
                extra={"dataset": dataset.as_item(), "start_attempts": claim.start_attempts},
            )
            reason = rejection_reason(dataset, self._settings.max_dataset_bytes)
            if reason:
                self._reject(key, dataset, reason)
                outcome.rejected.append(key)
                return
            self._start(key, dataset, seconds_left, outcome)
        finally:
            logger.remove_keys(["run_key"])

    def _reject(self, key: str, dataset: DatasetRef, reason: str) -> None:
        self._runs.mark_rejected(key, reason, self._now())
        note = notifications.data_rejected(key, dataset, reason)
        self._notifier.publish(note.kind, key, note.subject, note.message)
        logger.warning("Dataset rejected", extra={"reason": reason, "dataset": dataset.uri})
        metrics.add_metric(name="DatasetsRejected", unit="Count", value=1)

    def _start(
        self, key: str, dataset: DatasetRef, seconds_left: Callable[[], float], outcome: Outcome
    ) -> None:
        try:
            run, created, calls = self._find_or_create_run(key, dataset, seconds_left)
        except KfpCallFailed as error:
            reason = str(error)
            self._runs.mark_start_failed(key, reason, self._now())
            note = notifications.run_could_not_start(
                key, dataset, reason, error.attempts, self._connection_hint
            )
            self._notifier.publish(note.kind, key, note.subject, note.message)
            logger.error(
                "KFP run could not be started", extra={"reason": reason, "kind": error.kind}
            )
            metrics.add_metric(name="RunStartFailures", unit="Count", value=1)
            outcome.failed.append(key)
            return
        url = self.run_url(run.run_id)
        detail = f"KFP run {run.run_id} {'created' if created else 'found by display name'}"
        moved = self._runs.mark_run_started(key, run, url, self._now(), detail)
        logger.info(
            "KFP run started" if created else "Existing KFP run found for this run key",
            extra={"kfp_run_id": run.run_id, "kfp_run_url": url, "kfp_attempts": calls},
        )
        (outcome.started if created else outcome.reused).append(key)
        metrics.add_metric(name="RunsStarted" if created else "RunsReused", unit="Count", value=1)
        if moved:
            note = notifications.run_started(key, dataset, run.run_id, url)
            self._notifier.publish(note.kind, key, note.subject, note.message)

    def run_url(self, run_id: str) -> str:
        return run_url(self._settings.kfp_ui_url, run_id)

    def _find_or_create_run(
        self, key: str, dataset: DatasetRef, seconds_left: Callable[[], float]
    ) -> tuple[KfpRun, bool, int]:
        policy = self._retry
        attempt = 0
        while True:
            attempt += 1
            try:
                run, created = self._find_or_create_once(key, dataset)
                return run, created, attempt
            except KfpCallFailed as error:
                limit = policy.attempts
                if error.kind in (KfpCallFailed.AUTH, KfpCallFailed.NOT_FOUND):
                    limit = min(limit, policy.attempts_after_auth_or_not_found)
                elif error.kind == KfpCallFailed.PERMANENT:
                    limit = 1
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

    def _find_or_create_once(self, key: str, dataset: DatasetRef) -> tuple[KfpRun, bool]:
        experiment = self._experiment()
        existing = [
            r for r in self._kfp.find_runs(experiment.experiment_id, key) if r.display_name == key
        ]
        if existing:
            if len(existing) > 1:
                logger.warning(
                    "Several KFP runs carry this run key; using the oldest",
                    extra={"kfp_run_ids": [r.run_id for r in existing]},
                )
            return min(existing, key=lambda r: (r.created_at, r.run_id)), False
        run = self._kfp.create_run(
            experiment_id=experiment.experiment_id,
            display_name=key,
            description=f"MNIST run for {dataset.uri}"[:1000],
            pipeline_spec=self._pipeline_spec(),
            parameters=self.parameters(key, dataset),
            service_account=self._settings.kfp_service_account,
        )
        return run, True

    def _experiment(self) -> KfpExperiment:
        name = self._settings.kfp_experiment_name
        found = [e for e in self._kfp.find_experiments(name) if e.display_name == name]
        if found:
            return found[0]
        return self._kfp.create_experiment(name, EXPERIMENT_DESCRIPTION)

    def parameters(self, key: str, dataset: DatasetRef) -> dict[str, Any]:
        """The run's KFP runtime parameters: this run's dataset and key, the configured rest."""
        return run_parameters(
            self._settings,
            dataset_uri=dataset.uri,
            dataset_version=dataset.version,
            run_key=key,
            region=self._settings.aws_region,
        )
