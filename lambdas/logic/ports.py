"""What the domain (start-run, track-progress) needs from the outside: small interfaces and
value types."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.run_record import DatasetRef, RunRecord


@dataclass(frozen=True)
class Claim:
    """The outcome of claiming a run key for one invocation (`owner`: its Lambda request id,
    which Lambda keeps across the retries of an asynchronous invocation).

    `won`: this invocation holds the claim, at its `attempt`-th try (1 for a new claim; a retry
    of the owner takes its own claim back and counts on). When lost, `status`, `owner` and
    `announced` are the record's as found.
    """

    won: bool
    status: str = ""
    attempt: int = 0
    owner: str = ""
    announced: frozenset[str] = frozenset()
    record: RunRecord | None = None  # the record as found, when lost
    holds_slot: bool = False  # when won: the record already holds a run slot (a retry's)


@dataclass(frozen=True)
class KfpRun:
    run_id: str
    display_name: str
    experiment_id: str = ""
    created_at: str = ""
    state: str = ""  # v2beta1 RuntimeState (core.kfp.RUNTIME_STATES); "" when not given


@dataclass(frozen=True)
class KfpExperiment:
    experiment_id: str
    display_name: str


@dataclass(frozen=True)
class KfpHealth:
    """KFP's healthz answer (backend/src/apiserver/main.go healthzResponse): its release and
    whether it runs multi-user (then the cluster API's proxy cannot carry the user's identity)."""

    version: str  # tag_name
    multi_user: bool


class KfpCallFailed(Exception):
    """A KFP API call that did not succeed; `kind` says whether trying again can help."""

    TRANSIENT = "transient"  # 5xx, 429, 409, timeouts, dropped connections
    AUTH = "auth"  # 401/403: credentials refreshed once, then give up
    NOT_FOUND = "not_found"  # 404: wrong URL, namespace or proxy path
    UNEXPECTED = "unexpected"  # a 2xx the API never gives (HTML, a list, no id): not KFP's API
    PERMANENT = "permanent"  # 400 and other client errors, TLS failures

    def __init__(
        self, kind: str, message: str, status: int | None = None, *, maybe_done: bool = False
    ):
        super().__init__(message)
        self.kind = kind
        self.status = status
        # True when the request reached KFP and its answer was lost or unreadable: a create may
        # have happened anyway (a timeout after sending, a 5xx, an answer without an id).
        self.maybe_done = maybe_done
        self.attempts = 1  # how many times the start sequence was tried; set by the retry loop


class Announcements(ABC):
    """Which notification kinds a run has announced: each kind at most once per run."""

    @abstractmethod
    def claim_announcement(
        self, run_key: str, kind: str, owner: str, now: int, stale_before: int
    ) -> bool:
        """Claim sending `kind` (epoch seconds `now`); False when it was announced, or another
        owner's claim on it is newer than `stale_before`."""

    @abstractmethod
    def confirm_announcement(self, run_key: str, kind: str) -> None:
        """The claimed email went out: `kind` is announced."""

    @abstractmethod
    def release_announcement(self, run_key: str, kind: str) -> None:
        """Undo a claim whose email was not sent, so a retry can send it."""


class RunsRepository(Announcements):
    """Start-run's writes. Every move after the claim holds only while the record is still
    ACCEPTED by the same owner (a late invocation never overwrites the one that took over)."""

    @abstractmethod
    def claim(
        self, run_key: str, dataset: DatasetRef, now: str, lease_until: int, owner: str
    ) -> Claim:
        """Create the record as ACCEPTED, or take it when it is an orphan (progress only), when
        another invocation's start failed, or when another invocation's lease (epoch seconds)
        ran out; a retry of the owner takes its own claim back. Otherwise leave it alone."""

    @abstractmethod
    def record_retry(self, run_key: str, owner: str, reason: str, now: str) -> None:
        """Note a failed attempt that Lambda's retry will take up (the record stays ACCEPTED)."""

    @abstractmethod
    def mark_rejected(self, run_key: str, owner: str, reason: str, now: str) -> bool: ...

    @abstractmethod
    def mark_run_started(
        self,
        run_key: str,
        owner: str,
        run: KfpRun,
        run_url: str,
        now: str,
        detail: str,
        run_settings: Mapping[str, Any] | None = None,
        overridden: tuple[str, ...] = (),
    ) -> bool:
        """Record RUN_STARTED (with the run's settings, and which the upload set); False when
        the record had already moved on (ids still saved)."""

    @abstractmethod
    def mark_start_failed(self, run_key: str, owner: str, reason: str, now: str) -> bool: ...

    @abstractmethod
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
        """The watchdog's move for a claim whose invocation stopped: RUN_STARTED with `run`,
        else START_FAILED, only while `owner`'s claim is still ACCEPTED and its lease (epoch
        seconds) ended before `stale_before`."""


class RunSlots(ABC):
    """The concurrency limit, kept in the runs table: a record that `holds_slot` counts as in
    flight, and a count of them moves with it in one transaction, so at most `limit` records
    ever hold one. Each call is one transaction (or a few, when a race makes one retry)."""

    TAKEN = "taken"
    QUEUED = "queued"
    LOST = "lost"  # the record is no longer ACCEPTED by this owner: another invocation has it

    @abstractmethod
    def take_or_queue(self, run_key: str, owner: str, limit: int, now: str) -> str:
        """While `owner` holds the ACCEPTED record: take a slot if fewer than `limit` are held
        (TAKEN), else make the record QUEUED (its claim ends) in the same transaction that sees
        every slot held (QUEUED). LOST when the claim has moved on."""

    @abstractmethod
    def start_next(self, owner: str, limit: int, now: str, lease_until: int) -> RunRecord | None:
        """The oldest QUEUED record (by `created_at`, then run key), made ACCEPTED by `owner`
        with a slot, in one transaction; None when every slot is held or nothing is queued."""

    @abstractmethod
    def release(self, run_key: str, now: str) -> bool:
        """Give the record's slot back; True for the one call that did (a repeat is a no-op)."""

    @abstractmethod
    def requeue(self, run_key: str, owner: str, now: str, reason: str) -> bool:
        """While `owner` holds the ACCEPTED record with a slot: give the slot back and make the
        record QUEUED again (its claim ends, `reason` kept), in one transaction; `created_at` is
        not touched, so the record keeps its place in line. False when the claim has moved on
        or holds no slot (nothing written)."""

    @abstractmethod
    def in_flight(self) -> int:
        """The count of slots held, as stored."""

    @abstractmethod
    def repair(self) -> tuple[int, int] | None:
        """Recount: set the stored count to the records that hold a slot, read after the count
        was, unless a slot moved meanwhile (then None: the next pass tries again). Returns
        (stored, counted)."""


class SlotSignal(ABC):
    @abstractmethod
    def slot_free(self, reason: str) -> bool:
        """Tell start-run that a slot may be free (duplicates are harmless). Never raises: False
        when the message may not have gone (the watchdog's next pass sends it again)."""


class UploadGone(Exception):
    """The uploaded object version no longer exists (deleted before start-run read it)."""


class UploadMetadata(ABC):
    @abstractmethod
    def metadata(self, dataset: DatasetRef) -> dict[str, str]:
        """The upload's S3 user metadata (names lower-cased, without x-amz-meta-); UploadGone
        when the version is not there any more."""


class PublishFailed(Exception):
    """A notification that may not have gone out. `maybe_sent`: the request reached SNS and its
    answer was lost (a timeout after sending); False when SNS refused it or was never reached."""

    def __init__(self, message: str, *, maybe_sent: bool):
        super().__init__(message)
        self.maybe_sent = maybe_sent


class Notifier(ABC):
    @abstractmethod
    def publish(self, kind: str, run_key: str, subject: str, message: str) -> None:
        """Raises PublishFailed when the message may not have gone out."""


class KfpRunsApi(ABC):
    """The part of KFP's v2beta1 REST API that starting a run needs."""

    @abstractmethod
    def health(self) -> KfpHealth:
        """GET healthz: the server answers (no change anywhere)."""

    @abstractmethod
    def find_experiments(self, display_name: str) -> list[KfpExperiment]: ...

    @abstractmethod
    def create_experiment(self, display_name: str, description: str) -> KfpExperiment: ...

    @abstractmethod
    def find_runs(self, experiment_id: str, display_name: str) -> list[KfpRun]: ...

    @abstractmethod
    def get_run(self, run_id: str) -> KfpRun:
        """The run by id; KfpCallFailed NOT_FOUND when KFP has no such run."""

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


@dataclass(frozen=True)
class OutcomeWrite:
    """What deciding the outcome did: `outcome` is the record's outcome after the write."""

    applied: bool
    outcome: str


class RunProgress(Announcements):
    """Progress tracking's view of the runs table: one conditional write per event, and one
    more for an event that decides the outcome."""

    @abstractmethod
    def record_progress(self, run_key: str, attribute: str, entry: dict[str, Any]) -> ProgressWrite:
        """Set `attribute` to `entry` unless it holds an entry with an equal or greater `ord`."""

    @abstractmethod
    def decide_outcome(self, run_key: str, outcome: str, order: str) -> OutcomeWrite:
        """Set the outcome to `outcome` unless a deciding event later in the order (`order`,
        the event's ord) already set it: the latest deciding event decides."""


@dataclass(frozen=True)
class RetiredResource:
    """One SageMaker resource (or promoted artifact) a retirement looked at, and what it did."""

    kind: str  # endpoint, endpoint-config, model, artifact
    name: str
    run_key: str
    result: str  # deleted, already gone, kept, refused
    reason: str


class SageMakerCallFailed(Exception):
    """SageMaker (or S3) could not be asked, after botocore's retries: nothing was decided."""


class ExpiredEndpoints(ABC):
    """Per-run endpoints past their time to live, and what they alone used."""

    @abstractmethod
    def retire_expired(self, ttl_seconds: float, now: float) -> list[RetiredResource]:
        """Deletes per-run endpoints created more than `ttl_seconds` before `now` (epoch
        seconds), with their configs, models and artifacts; says what it kept and why.
        Raises SageMakerCallFailed when SageMaker cannot be asked."""
