"""One contract, two implementations: the in-memory runs-table fakes the unit tests use and the
DynamoDB adapters (on moto) behave the same for every scenario here, so a unit test that passes
on a fake says something about the real adapter."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from core import contracts
from core.run_record import TIMELINE_MAX_ENTRIES, DatasetRef
from lambdas.dal.runs_table import DynamoRunProgress, DynamoRunsRepository, RunsTableReader
from lambdas.logic.ports import KfpRun
from mnistflow.local.provision import create_runs_table
from tests.fakes import InMemoryRunProgress, InMemoryRuns

pytestmark = pytest.mark.integration

KEY = "mnist-0123456789ab"
DATASET = DatasetRef("mnistflow-data", "incoming/mnist.npz", "v1", "etag", 10)
T0, T1, T2 = "2026-11-28T12:00:00.000Z", "2026-11-28T12:00:30.000Z", "2026-11-28T12:05:00.000Z"
LEASE_AT_T1 = 1795867230  # epoch seconds of T1


class DynamoPair:
    """The two DynamoDB adapters over one table, plus the one reader."""

    def __init__(self) -> None:
        ddb = boto3.client("dynamodb", region_name="us-east-1")
        create_runs_table(lambda service: ddb, contracts.RUNS_TABLE_NAME)
        self.runs = DynamoRunsRepository(contracts.RUNS_TABLE_NAME, lambda: ddb)
        self.progress = DynamoRunProgress(contracts.RUNS_TABLE_NAME, lambda: ddb)
        self._reader = RunsTableReader(contracts.RUNS_TABLE_NAME, lambda: ddb)

    def record(self, run_key: str):
        return self._reader.get(run_key)


class MemoryPair:
    def __init__(self) -> None:
        self.runs = InMemoryRuns()
        self.progress = InMemoryRunProgress(self.runs.items)  # one table, two views

    def record(self, run_key: str):
        return self.runs.record(run_key)


@pytest.fixture(params=["memory", "dynamodb"])
def table(request):
    if request.param == "memory":
        yield MemoryPair()
        return
    with mock_aws():
        yield DynamoPair()


def entry(ord_: str, status: str = "IN_PROGRESS") -> dict:
    return {"status": status, "event_status": "InProgress", "at": ord_[:20], "ord": ord_,
            "event_id": ord_[-1], "source": "aws.sagemaker"}  # fmt: skip


# -- start-run's writes ----------------------------------------------------------------------

OWNER, OTHER = "request-1", "request-2"


def test_a_first_claim_wins_and_records_the_dataset(table):
    claim = table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    assert (claim.won, claim.status, claim.attempt, claim.owner) == (True, "ACCEPTED", 1, OWNER)
    record = table.record(KEY)
    assert record.status == "ACCEPTED" and record.dataset == DATASET
    assert record.created_at == T0 and record.claim_expires_at == LEASE_AT_T1
    assert (record.claim_owner, record.claim_attempts, record.start_attempts) == (OWNER, 1, 1)
    assert [(e.event, e.detail) for e in record.timeline] == [("ACCEPTED", DATASET.uri)]


def test_a_retry_of_the_owner_takes_its_claim_back_and_counts_the_attempt(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    table.runs.record_retry(KEY, OWNER, "attempt 1 of 3: HTTP 503", T1)
    # Lambda's retry carries the same request id, inside the lease or after it
    again = table.runs.claim(KEY, DATASET, T1, LEASE_AT_T1 + 60, OWNER)
    assert (again.won, again.attempt) == (True, 2)
    late = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600, OWNER)
    assert (late.won, late.attempt) == (True, 3)
    record = table.record(KEY)
    assert record.reason == "attempt 1 of 3: HTTP 503"  # the last failure stays visible
    assert [e.event for e in record.timeline] == ["ACCEPTED", "START_RETRY", "ACCEPTED", "ACCEPTED"]


def test_a_held_claim_is_not_taken_by_another_delivery_until_its_lease_runs_out(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    lost = table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1 + 60, OTHER)
    assert (lost.won, lost.status, lost.owner) == (False, "ACCEPTED", OWNER)
    assert lost.record is not None and lost.record.dataset == DATASET
    # After the lease (T2 is past T1), another delivery takes the claim over, as a first try
    taken = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600, OTHER)
    assert (taken.won, taken.attempt, taken.owner) == (True, 1, OTHER)
    assert table.record(KEY).created_at == T0  # the first acceptance stays
    # And the first owner's late writes no longer land
    assert not table.runs.mark_start_failed(KEY, OWNER, "late", T2)
    assert table.record(KEY).status == "ACCEPTED"


def test_after_start_failed_another_delivery_claims_again_and_clears_the_reason(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    assert table.runs.mark_start_failed(KEY, OWNER, "HTTP 500", T1)
    assert table.record(KEY).reason == "HTTP 500"
    # The owner's own retries do not start over (the start was given up)...
    mine = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600, OWNER)
    assert (mine.won, mine.status, mine.owner) == (False, "START_FAILED", OWNER)
    # ...another delivery (a redrive, a new upload event) does
    again = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600, OTHER)
    assert (again.won, again.attempt) == (True, 1)
    record = table.record(KEY)
    assert record.reason == "" and record.status == "ACCEPTED" and record.start_attempts == 2
    assert [e.event for e in record.timeline] == ["ACCEPTED", "START_FAILED", "ACCEPTED"]


def test_an_orphan_never_blocks_a_claim(table):
    # Given progress for a run key start-run never claimed (an orphan item)
    table.progress.record_progress(KEY, "progress:training:IN_PROGRESS", entry("t|a"))
    # Then an upload of that dataset version claims it, keeping the progress
    claim = table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    assert (claim.won, claim.attempt) == (True, 1)
    record = table.record(KEY)
    assert not record.is_orphan and record.entry("training", "IN_PROGRESS") is not None


def test_a_rejected_upload_stays_rejected(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    assert table.runs.mark_rejected(KEY, OWNER, "the object is empty", T1)
    lost = table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1 + 600, OTHER)
    assert (lost.won, lost.status) == (False, "REJECTED")
    record = table.record(KEY)
    assert record.reason == "the object is empty" and record.claim_expires_at is None


def test_run_started_moves_once_and_always_keeps_the_run_ids(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    run = KfpRun("run-1", KEY, "exp-1")
    url = "https://kfp/#/runs/details/run-1"
    assert table.runs.mark_run_started(KEY, OWNER, run, url, T1, "made")
    other = KfpRun("run-2", KEY, "exp-1")
    url2 = "https://kfp/#/runs/details/run-2"
    assert not table.runs.mark_run_started(KEY, OWNER, other, url2, T2, "x")
    record = table.record(KEY)
    assert record.status == "RUN_STARTED" and record.kfp_run_id == "run-2"
    assert [e.event for e in record.timeline] == ["ACCEPTED", "RUN_STARTED"]


def test_the_timeline_keeps_the_newest_entries_only(table):
    for n in range(TIMELINE_MAX_ENTRIES):
        table.runs.claim(KEY, DATASET, T2, LEASE_AT_T1, f"request-{n}")
        table.runs.mark_start_failed(KEY, f"request-{n}", "again", T2)
    timeline = table.record(KEY).timeline
    assert len(timeline) == TIMELINE_MAX_ENTRIES
    assert timeline[-1].event == "START_FAILED"


def test_each_kind_is_announced_once_and_a_release_allows_it_again(table):
    def claim(ledger, kind, owner=OWNER, now=100):
        return ledger.claim_announcement(KEY, kind, owner, now, now - 300)

    assert not claim(table.runs, "RUN_STARTED")  # no record: nothing to claim
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    assert claim(table.runs, "RUN_STARTED")
    assert claim(table.runs, "RUN_STARTED")  # the owner's retry takes its own claim back
    assert not claim(table.runs, "RUN_STARTED", OTHER)  # another invocation: a live claim
    assert table.record(KEY).announcing["RUN_STARTED"] == {"owner": OWNER, "at": 100}
    table.runs.confirm_announcement(KEY, "RUN_STARTED")
    assert not claim(table.runs, "RUN_STARTED")  # sent: never again
    assert table.progress.claim_announcement(KEY, "ENDPOINT_READY", OTHER, 100, -200)
    table.progress.release_announcement(KEY, "ENDPOINT_READY")  # not sent: given back
    assert claim(table.progress, "ENDPOINT_READY", "request-3")
    table.progress.confirm_announcement(KEY, "ENDPOINT_READY")
    record = table.record(KEY)
    assert record.announced == {"RUN_STARTED", "ENDPOINT_READY"} and record.announcing == {}


def test_a_claim_whose_owner_died_is_taken_over_once_stale(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    assert table.runs.claim_announcement(KEY, "RUN_FAILED", OWNER, 100, -200)
    # Another invocation, while the claim is fresh (at 100, stale before 50): refused
    assert not table.runs.claim_announcement(KEY, "RUN_FAILED", "watchdog", 150, 50)
    # Once stale (at 100 < 101): taken over
    assert table.runs.claim_announcement(KEY, "RUN_FAILED", "watchdog", 401, 101)
    assert table.record(KEY).announcing["RUN_FAILED"]["owner"] == "watchdog"


# -- progress tracking's writes -------------------------------------------------------------


def test_progress_for_an_unknown_run_key_leaves_an_orphan(table):
    write = table.progress.record_progress(KEY, "progress:training:IN_PROGRESS", entry("t|a"))
    assert write.applied and write.old is None
    assert table.record(KEY).is_orphan


def test_an_entry_is_replaced_only_by_a_newer_one(table):
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    attribute = "progress:training:IN_PROGRESS"
    assert table.progress.record_progress(KEY, attribute, entry("2|b")).applied
    older = table.progress.record_progress(KEY, attribute, entry("1|z"))
    same = table.progress.record_progress(KEY, attribute, entry("2|b"))
    newer = table.progress.record_progress(KEY, attribute, entry("3|a"))
    assert (older.applied, same.applied, newer.applied) == (False, False, True)
    assert older.old.entry("training", "IN_PROGRESS").ord == "2|b"  # the record as it was
    assert table.record(KEY).entry("training", "IN_PROGRESS").ord == "3|a"


def test_the_latest_deciding_event_decides_the_outcome(table):
    assert not table.progress.decide_outcome(KEY, "FAILED", "1|a").applied  # no record
    table.runs.claim(KEY, DATASET, T0, LEASE_AT_T1, OWNER)
    first = table.progress.decide_outcome(KEY, "SUCCEEDED", "2|a")
    assert (first.applied, first.outcome) == (True, "SUCCEEDED")
    older = table.progress.decide_outcome(KEY, "FAILED", "1|z")
    assert (older.applied, older.outcome) == (False, "SUCCEEDED")
    tie = table.progress.decide_outcome(KEY, "FAILED", "2|a")  # same ord: decided
    assert (tie.applied, tie.outcome) == (False, "SUCCEEDED")
    later = table.progress.decide_outcome(KEY, "FAILED", "2|b")  # same second, greater id
    assert (later.applied, later.outcome) == (True, "FAILED")
    record = table.record(KEY)
    assert (record.outcome, record.outcome_ord) == ("FAILED", "2|b")
