"""What the domain (start-run, track-progress) needs from the outside: small interfaces and
value types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

from core.run_record import DatasetRef, RunRecord


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a run key: `won` is False when another delivery holds it."""

    won: bool
    status: str = ""  # the status found when the claim was lost
    start_attempts: int = 0


@dataclass(frozen=True)
class KfpRun:
    run_id: str
    display_name: str
    experiment_id: str = ""
    created_at: str = ""


@dataclass(frozen=True)
class KfpExperiment:
    experiment_id: str
    display_name: str


class KfpCallFailed(Exception):
    """A KFP API call that did not succeed; `kind` says whether trying again can help."""

    TRANSIENT = "transient"  # 5xx, 429, 409, timeouts, dropped connections
    AUTH = "auth"  # 401/403: credentials refreshed once, then give up
    NOT_FOUND = "not_found"  # 404: wrong URL, namespace or proxy path
    PERMANENT = "permanent"  # 400 and other client errors, TLS failures

    def __init__(self, kind: str, message: str, status: int | None = None):
        super().__init__(message)
        self.kind = kind
        self.status = status
        self.attempts = 1  # how many times the start sequence was tried; set by the retry loop


class RunsRepository(ABC):
    @abstractmethod
    def claim(self, run_key: str, dataset: DatasetRef, now: str, lease_until: int) -> Claim:
        """Create the record as ACCEPTED, or re-claim one whose last start failed or whose
        previous claim's lease (epoch seconds) has run out; otherwise leave it alone."""

    @abstractmethod
    def mark_rejected(self, run_key: str, reason: str, now: str) -> None: ...

    @abstractmethod
    def mark_run_started(
        self, run_key: str, run: KfpRun, run_url: str, now: str, detail: str
    ) -> bool:
        """Record RUN_STARTED; False when the record had already moved on (ids still saved)."""

    @abstractmethod
    def mark_start_failed(self, run_key: str, reason: str, now: str) -> None: ...


class Notifier(ABC):
    @abstractmethod
    def publish(self, kind: str, run_key: str, subject: str, message: str) -> None: ...


class KfpRunsApi(ABC):
    """The part of KFP's v2beta1 REST API that starting a run needs."""

    @abstractmethod
    def find_experiments(self, display_name: str) -> list[KfpExperiment]: ...

    @abstractmethod
    def create_experiment(self, display_name: str, description: str) -> KfpExperiment: ...

    @abstractmethod
    def find_runs(self, experiment_id: str, display_name: str) -> list[KfpRun]: ...

    @abstractmethod
    def create_run(
        self,
        experiment_id: str,
        display_name: str,
        description: str,
        pipeline_spec: dict[str, Any],
        parameters: dict[str, Any],
        service_account: str = "",
    ) -> KfpRun:
        """`service_account`: the Kubernetes service account the run's pods use ("" = KFP's
        default, `pipeline-runner`)."""


@dataclass(frozen=True)
class ProgressWrite:
    """What one progress write did, and the record as it was just before it."""

    applied: bool  # False: the record already held this entry or a newer one for its attribute
    old: RunRecord | None  # None: there was no item


class RunProgress(ABC):
    """Progress tracking's view of the runs table: one conditional write per event."""

    @abstractmethod
    def record_progress(
        self, run_key: str, attribute: str, entry: dict[str, Any], outcome: str
    ) -> ProgressWrite:
        """Set `attribute` to `entry` unless it holds an entry with an equal or greater `ord`;
        with an `outcome`, also set the record's outcome when it has none. One write."""

    @abstractmethod
    def claim_outcome(self, run_key: str, outcome: str) -> bool:
        """Set the outcome if the record has none; False when it already has one."""

    @abstractmethod
    def release_outcome(self, run_key: str, outcome: str) -> None:
        """Remove the outcome if it still is `outcome` (undoes a claim whose email failed)."""
